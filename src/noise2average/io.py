"""NIfTI and JSON input/output with early validation and atomic writes.

Images are read as float32 arrays and written as float32 with the source header's geometry
(affine, qform/sform codes) kept. Every write goes to a temporary file in the destination
folder and is renamed only when complete, so a killed job never leaves a file that looks
finished.
"""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from ._files import temporary_beside

__all__ = [
    "open_nifti",
    "read_nifti_data",
    "load_nifti",
    "save_nifti",
    "write_json",
    "read_json",
    "save_gradients",
    "load_gradients",
]


def open_nifti(path, *, ndim=None):
    """Open a NIfTI image and check its header, without reading the voxel data.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz`` file.
    ndim : int or tuple of int, optional
        Accepted dimensionalities (e.g. ``3`` or ``(3, 4)``); None accepts any.

    Returns
    -------
    image : nibabel.Nifti1Image or nibabel.Nifti2Image
        Its data stay on disk until `read_nifti_data`.

    Raises
    ------
    ValueError
        Naming the file when it is missing, empty, unreadable, not NIfTI or of the wrong
        dimensionality.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes)")
    try:
        image = nib.load(path)
    except Exception as error:
        raise ValueError(f"{path}: not a readable NIfTI image ({error})") from error
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path}: not a NIfTI image ({type(image).__name__})")
    accepted = (ndim,) if isinstance(ndim, int) else ndim
    if accepted is not None and image.ndim not in accepted:
        raise ValueError(
            f"{path}: expected a {' or '.join(f'{n}D' for n in accepted)} image, "
            f"got shape {image.shape}"
        )
    return image


def read_nifti_data(image, *, dtype=np.float32):
    """Read and check the voxel data of an image from `open_nifti`.

    Parameters
    ----------
    image : nibabel.Nifti1Image or nibabel.Nifti2Image
    dtype : numpy dtype, optional
        Type of the returned array; None keeps the stored type.

    Returns
    -------
    data : ndarray of shape ``image.shape``

    Raises
    ------
    ValueError
        Naming the file when its data are truncated or corrupt or hold NaN or Inf.
    """
    path = image.get_filename()
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as error:
        raise ValueError(f"{path}: truncated or corrupt image data ({error})") from error
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise ValueError(f"{path}: contains {np.count_nonzero(~np.isfinite(data))} NaN or Inf voxels")
    return data


def load_nifti(path, *, ndim=None, dtype=np.float32):
    """Load a NIfTI image and check it before any computation.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz`` file.
    ndim : int or tuple of int, optional
        Accepted dimensionalities (e.g. ``3`` or ``(3, 4)``); None accepts any.
    dtype : numpy dtype, optional
        Type of the returned array; None keeps the stored type.

    Returns
    -------
    data : ndarray
    affine : ndarray of shape (4, 4)
        Voxel-to-world (mm) transform.
    header : nibabel.Nifti1Header

    Raises
    ------
    ValueError
        Naming the file when it is missing, empty, unreadable, not NIfTI, of the wrong
        dimensionality, truncated, or holds NaN or Inf (`open_nifti`, `read_nifti_data`).
    """
    image = open_nifti(path, ndim=ndim)
    return read_nifti_data(image, dtype=dtype), image.affine.copy(), image.header


def _atomic_target(path):
    """Temporary file beside ``path`` keeping its extension (nibabel infers the format)."""
    handle, tmp = temporary_beside(path, "".join(Path(path).suffixes) or ".tmp")
    os.close(handle)
    return tmp


def save_nifti(path, data, affine, *, header=None, dtype=np.float32):
    """Write an image atomically.

    Parameters
    ----------
    path : str or Path
        Destination ``.nii.gz``.
    data : ndarray
        Image data; bool arrays are written as uint8.
    affine : ndarray of shape (4, 4)
        Voxel-to-world transform in mm.
    header : nibabel.Nifti1Header, optional
        Source header whose geometry (qform/sform codes, zooms, units) is kept.
    dtype : numpy dtype, optional
        Stored type (float32 by default; integer labels pass ``np.int8`` or ``np.uint8``).
    """
    import nibabel as nib

    data = np.asarray(data)
    if data.dtype == bool:
        dtype = np.uint8
    image = nib.Nifti1Image(data.astype(dtype, copy=False), affine, header=header)
    image.set_data_dtype(dtype)
    if header is None:
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
    else:
        image.set_qform(affine, code=int(header["qform_code"]) or 1)
        image.set_sform(affine, code=int(header["sform_code"]) or 1)
    # Scaling would turn float data into something else on reading; store values as they are.
    image.header.set_slope_inter(1.0, 0.0)
    tmp = _atomic_target(path)
    try:
        nib.save(image, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, content):
    """Write ``content`` as indented JSON atomically (numpy values and dataclasses converted)."""

    def convert(value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, Path):
            return str(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    tmp = _atomic_target(path)
    try:
        tmp.write_text(json.dumps(content, indent=2, default=convert) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path):
    """Read a JSON file, naming it in the error when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read JSON ({error})") from error


def save_gradients(bval_path, bvec_path, bvals, bvecs):
    """Write a gradient table as FSL text files, atomically.

    Parameters
    ----------
    bval_path, bvec_path : str or Path
        Destinations: one row of M b-values (s/mm^2); three rows (x, y, z) of M directions.
    bvals : array-like, shape (M,)
    bvecs : array-like, shape (M, 3)
        Unit directions (zero rows for b=0 volumes) in the image's voxel-axis frame.
    """
    bvals = np.asarray(bvals, dtype=np.float64)
    bvecs = np.asarray(bvecs, dtype=np.float64)
    if bvals.ndim != 1 or bvecs.shape != (bvals.size, 3):
        raise ValueError(
            f"bvals {bvals.shape} and bvecs {bvecs.shape} must be (M,) and (M, 3)"
        )
    for path, rows in ((bval_path, bvals[None]), (bvec_path, bvecs.T)):
        text = "\n".join(" ".join(f"{value:.10g}" for value in row) for row in rows)
        tmp = _atomic_target(path)
        try:
            tmp.write_text(text + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def load_gradients(bval_path, bvec_path, *, n_volumes=None, b0_threshold=None):
    """Read an FSL gradient table and check it.

    Parameters
    ----------
    bval_path, bvec_path : str or Path
        FSL ``.bval`` (M b-values in s/mm^2, one row) and ``.bvec`` (3 rows of M components,
        or M rows of 3) files.
    n_volumes : int, optional
        Volumes of the series the table belongs to; a different M raises.
    b0_threshold : float, optional
        Largest b-value (s/mm^2) counted as b=0: a zero direction on a volume above it
        raises. None accepts zero directions on any volume.

    Returns
    -------
    bvals : ndarray of float64, shape (M,)
    bvecs : ndarray of float64, shape (M, 3)

    Raises
    ------
    ValueError
        Naming the file: unreadable numbers, negative or non-finite b-values, counts that
        disagree, a bvec that is neither 3 x M nor M x 3, nonzero directions that are not
        unit vectors (within 1e-2), or a zero direction on a diffusion-weighted volume.
    """
    def read(path):
        try:
            return np.loadtxt(path, dtype=np.float64, ndmin=2)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read a numeric gradient table ({error})") from None

    bvals = read(bval_path).ravel()
    if not np.isfinite(bvals).all() or (bvals < 0).any():
        raise ValueError(f"{bval_path}: b-values must be finite and >= 0")
    # Checked before the bvec so that a short .bval is blamed on itself, not on its .bvec.
    if n_volumes is not None and bvals.size != n_volumes:
        raise ValueError(
            f"{bval_path}: {bvals.size} b-values for a series of {n_volumes} volumes"
        )
    bvecs = read(bvec_path)
    if bvecs.shape == (3, bvals.size):
        bvecs = bvecs.T
    elif bvecs.shape != (bvals.size, 3):
        raise ValueError(
            f"{bvec_path}: shape {bvecs.shape} does not match the {bvals.size} b-values of "
            f"{bval_path} (expected 3 x {bvals.size})"
        )
    norms = np.linalg.norm(bvecs, axis=1)
    zero = norms <= 1e-6
    # dipy's tolerance: tables written with 3-4 decimals are off by up to ~1e-3.
    not_unit = np.flatnonzero(~zero & ~np.isclose(norms, 1.0, atol=1e-2))
    if not_unit.size:
        raise ValueError(
            f"{bvec_path}: directions must be unit vectors (or zero for b=0); volume(s) "
            f"{not_unit.tolist()} have norm(s) {np.round(norms[not_unit], 3).tolist()}"
        )
    if b0_threshold is not None:
        weighted_zero = np.flatnonzero(zero & (bvals > b0_threshold))
        if weighted_zero.size:
            raise ValueError(
                f"{bvec_path}: zero direction on diffusion-weighted volume(s) "
                f"{weighted_zero.tolist()} (b = {bvals[weighted_zero].tolist()} s/mm^2 > "
                f"{b0_threshold:g})"
            )
    return bvals, bvecs
