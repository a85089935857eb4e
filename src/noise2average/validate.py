"""Check a denoising job's inputs before any heavy computation.

The ``n2a`` command line and the workflow's BIDS ingestion (:mod:`noise2average.ingest`)
load users' repetitions through this module, so both refuse the same inputs with the same
messages. Every check that needs only headers and text files runs on *all* files first:
existence, format, dimensionality, voxel grids, gradient tables, the mask's grid. Voxel
data are read only once all of them pass, so a bad last file is reported at once rather
than after every image before it has been read.

Every problem raises `InputError`, whose message starts with the offending file (or the
argument, when no file is at fault) and says in plain words what is wrong.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import io as _io

__all__ = [
    "InputError",
    "METHODS",
    "DWI_ONLY_METHODS",
    "Repetitions",
    "OpenRepetitions",
    "check_method",
    "open_repetitions",
    "load_repetitions",
    "load_gradient_table",
]

#: Fewest repetitions each method needs: Noise2Average and Noise2Noise learn from pairs.
METHODS = {"average": 1, "n2a": 2, "n2n": 2, "bm4d": 1, "aonlm": 1, "mppca": 1, "patch2self": 1}

#: Methods that denoise across the volumes of a diffusion series, so need one.
DWI_ONLY_METHODS = ("mppca", "patch2self")

#: Largest distance (mm) between the positions two affines give a corner voxel of one grid
#: for the grids to count as the same.
_GRID_ATOL_MM = 0.01

#: Largest difference between the gradient tables of two DWI repetitions: b-values
#: (s/mm^2, relative) and directions (sign-invariant, 1 - |cos|).
_BVAL_RTOL = 0.02
_BVEC_TOL = 1e-3


class InputError(ValueError):
    """Bad input: the message starts with the offending file or argument and says why."""


@contextmanager
def _as_input_error():
    """Re-raise the ValueErrors of `noise2average.io` (they start with the file) as InputError."""
    try:
        yield
    except ValueError as error:
        raise InputError(str(error)) from error


@dataclass
class Repetitions:
    """Checked repetitions of one acquisition, on one voxel grid.

    Attributes
    ----------
    data : ndarray of float32, shape (X, Y, Z, N) or (X, Y, Z, M, N)
        T1w volumes or diffusion series of M volumes; repetitions on the last axis, as the
        denoisers take them.
    affine : ndarray of shape (4, 4)
        Voxel-to-world transform (mm) shared by all repetitions.
    header : nibabel.Nifti1Header or nibabel.Nifti2Header
        Header of the first repetition, for writing results.
    paths : tuple of Path
        The N repetition files, in the order of the last axis.
    mask : ndarray of bool, shape (X, Y, Z), or None
        The given mask; None when none was given.
    bvals : ndarray of float64, shape (M,), or None
        b-values (s/mm^2) of every repetition (diffusion only).
    bvecs : ndarray of float64, shape (M, 3), or None
        Unit gradient directions (zero for b=0 volumes) in the image's voxel-axis frame.
    """

    data: np.ndarray
    affine: np.ndarray
    header: object
    paths: tuple
    mask: np.ndarray = None
    bvals: np.ndarray = None
    bvecs: np.ndarray = None


@dataclass
class OpenRepetitions:
    """Repetitions whose headers and gradient tables passed every check, data not yet read.

    Attributes
    ----------
    paths : tuple of Path
        The N repetition files.
    images : list of nibabel.Nifti1Image or nibabel.Nifti2Image
        Their images, voxel data still on disk.
    dwi : bool
        Diffusion series (4D) rather than T1w volumes.
    mask_path : Path or None
    mask_image : nibabel.Nifti1Image or nibabel.Nifti2Image or None
        The mask, on the first repetition's grid.
    bvals : ndarray of float64, shape (M,), or None
    bvecs : ndarray of float64, shape (M, 3), or None
        The gradient table shared by the repetitions, directions scaled to unit length.
    """

    paths: tuple
    images: list
    dwi: bool
    mask_path: Path = None
    mask_image: object = None
    bvals: np.ndarray = None
    bvecs: np.ndarray = None

    def read(self, index):
        """Voxel data of repetition ``index``.

        Returns
        -------
        data : ndarray of float32, shape (X, Y, Z) or (X, Y, Z, M)
            A T1w volume (a trailing axis of length 1 dropped) or a diffusion series.

        Raises
        ------
        InputError
            Naming the file when its data are truncated or corrupt or hold NaN or Inf.
        """
        with _as_input_error():
            data = _io.read_nifti_data(self.images[index])
        return data if self.dwi or data.ndim == 3 else data[..., 0]

    def read_mask(self):
        """The mask as bool, shape (X, Y, Z) (voxels above 0), or None when none was given.

        Raises
        ------
        InputError
            Naming the file when its data are truncated, corrupt or hold NaN or Inf, or no
            voxel is above 0.
        """
        if self.mask_image is None:
            return None
        with _as_input_error():
            mask = _io.read_nifti_data(self.mask_image, dtype=None) > 0
        if not mask.any():
            raise InputError(f"{self.mask_path}: the mask is empty (no voxel above 0)")
        return mask


def check_method(method, n_repetitions, *, dwi):
    """Raise unless ``method`` can denoise ``n_repetitions`` repetitions of this data type.

    Needs no file, so it runs before any is opened.

    Parameters
    ----------
    method : str
        One of `METHODS`.
    n_repetitions : int
        Repetitions given.
    dwi : bool
        Diffusion series rather than T1w volumes; `DWI_ONLY_METHODS` need them.

    Raises
    ------
    InputError
        Starting with ``method``: an unknown method (listing those that apply), a
        diffusion-only method on T1w data, or fewer repetitions than the method needs.
    """
    applicable = [name for name in METHODS if dwi or name not in DWI_ONLY_METHODS]
    if method not in METHODS:
        raise InputError(
            f"method: unknown method {method!r}; expected one of {', '.join(applicable)}"
        )
    if method not in applicable:
        raise InputError(
            f"method: {method} denoises diffusion series only, but the input is T1w"
        )
    if n_repetitions < METHODS[method]:
        raise InputError(
            f"method: {method} needs at least {METHODS[method]} repetitions, got {n_repetitions}"
        )


def _open_repetition(path, dwi):
    """The image of one repetition, its dimensionality checked from the header."""
    with _as_input_error():
        image = _io.open_nifti(path, ndim=4 if dwi else (3, 4))
    # Converters often write a T1w volume with a trailing axis of length 1.
    if not dwi and image.ndim == 4 and image.shape[3] != 1:
        raise InputError(
            f"{path}: {image.shape[3]} volumes along the 4th axis, but a T1w repetition is "
            "one 3D volume"
        )
    return image


def _grid_corners_mm(shape, affine):
    """World positions (mm) of the 8 corner voxel centres of a grid, shape (8, 3)."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ corners + affine[:3, 3:]).T


def _check_grid(path, image, reference_path, reference, advice):
    """Raise unless ``image`` has the spatial grid (shape and affine) of ``reference``."""
    shape, reference_shape = image.shape[:3], reference.shape[:3]
    if shape != reference_shape:
        raise InputError(
            f"{path}: grid shape {shape} differs from {reference_shape} of {reference_path}; "
            + advice
        )
    # Corner displacement turns rotation, scaling and shift differences into one mm figure.
    distance = np.linalg.norm(
        _grid_corners_mm(shape, image.affine) - _grid_corners_mm(shape, reference.affine),
        axis=1,
    ).max()
    if distance > _GRID_ATOL_MM:
        raise InputError(
            f"{path}: its affine places voxels up to {distance:.3g} mm away from those of "
            f"{reference_path}; " + advice
        )


def _unit_directions(bvecs):
    """Directions scaled to unit length (files carry 4-6 decimals); zero rows stay zero."""
    norms = np.linalg.norm(bvecs, axis=1, keepdims=True)
    return np.where(norms > 1e-6, bvecs / np.where(norms > 1e-6, norms, 1.0), 0.0)


def _gradient_table(paths, images, bval_paths, bvec_paths, b0_threshold):
    """The gradient table all diffusion repetitions share, each file checked."""
    for name, files in (("bvals", bval_paths), ("bvecs", bvec_paths)):
        count = 0 if files is None else len(files)
        if count != len(paths):
            raise InputError(
                f"{name}: {count} file(s) for {len(paths)} repetitions; a diffusion series "
                "needs one gradient table per repetition"
            )
    tables = []
    for image, bval, bvec in zip(images, bval_paths, bvec_paths):
        with _as_input_error():
            bvals, bvecs = _io.load_gradients(
                bval, bvec, n_volumes=image.shape[3], b0_threshold=b0_threshold
            )
        tables.append((bvals, _unit_directions(bvecs)))
    bvals0, bvecs0 = tables[0]
    for bval, bvec, (bvals, bvecs) in zip(bval_paths[1:], bvec_paths[1:], tables[1:]):
        differing = np.flatnonzero(np.abs(bvals - bvals0) > _BVAL_RTOL * np.maximum(bvals0, 1.0))
        if differing.size:
            raise InputError(
                f"{bval}: b-values of volume(s) {differing.tolist()} differ from those of "
                f"{bval_paths[0]}; the repetitions of a diffusion series need one gradient table"
            )
        # Only diffusion-weighted volumes have a direction; its sign carries no meaning.
        cosine = np.abs(np.sum(bvecs * bvecs0, axis=1))
        differing = np.flatnonzero((bvals0 > b0_threshold) & (1 - cosine > _BVEC_TOL))
        if differing.size:
            raise InputError(
                f"{bvec}: directions of volume(s) {differing.tolist()} differ from those of "
                f"{bvec_paths[0]}; the repetitions of a diffusion series need one gradient table"
            )
    return bvals0, bvecs0


def open_repetitions(paths, *, dwi=False, mask=None, bvals=None, bvecs=None,
                     min_repetitions=1, b0_threshold=50.0, same_grid=True):
    """Check everything about the repetitions that needs no voxel data.

    Parameters
    ----------
    paths, dwi, mask, bvals, bvecs, min_repetitions, b0_threshold
        As in `load_repetitions`.
    same_grid : bool, optional
        Require the repetitions to share the first one's voxel grid. False leaves grids
        free for a caller that registers the repetitions (their number of diffusion
        volumes must still agree); the mask is always checked against the first.

    Returns
    -------
    OpenRepetitions
        Read the data with its ``read`` and ``read_mask``.

    Raises
    ------
    InputError
        As `load_repetitions`, for every problem but those in the voxel data.
    """
    paths = tuple(Path(path) for path in paths)
    # At least one whatever is asked: the first repetition defines the grid.
    needed = max(min_repetitions, 1)
    if len(paths) < needed:
        culprit = paths[0] if paths else "paths"
        raise InputError(f"{culprit}: {len(paths)} repetition(s) given, at least {needed} needed")
    if not dwi and (bvals is not None or bvecs is not None):
        raise InputError(
            f"{'bvals' if bvals is not None else 'bvecs'}: gradient tables belong to "
            "diffusion series (dwi=True)"
        )
    images = [_open_repetition(path, dwi) for path in paths]
    advice = "the repetitions must share one voxel grid (register them rigidly onto the first)"
    for path, image in zip(paths[1:], images[1:]):
        if dwi and image.shape[3] != images[0].shape[3]:
            raise InputError(
                f"{path}: {image.shape[3]} volumes, but {paths[0]} has {images[0].shape[3]}; "
                "the repetitions of a diffusion series need one gradient table"
            )
        if same_grid:
            _check_grid(path, image, paths[0], images[0], advice)
    bvals, bvecs = (
        _gradient_table(paths, images, bvals, bvecs, b0_threshold) if dwi else (None, None)
    )
    mask_image = None
    if mask is not None:
        mask = Path(mask)
        with _as_input_error():
            mask_image = _io.open_nifti(mask, ndim=3)
        _check_grid(mask, mask_image, paths[0], images[0],
                    "a mask must be on the grid of the first repetition")
    return OpenRepetitions(paths=paths, images=images, dwi=dwi, mask_path=mask,
                           mask_image=mask_image, bvals=bvals, bvecs=bvecs)


def load_repetitions(paths, *, dwi=False, mask=None, bvals=None, bvecs=None,
                     min_repetitions=1, b0_threshold=50.0):
    """Load and check the repetitions of one acquisition, headers of all files first.

    Parameters
    ----------
    paths : sequence of str or Path
        NIfTI files (``.nii`` or ``.nii.gz``), one per repetition: T1w volumes (3D, or 4D
        with one volume) or diffusion series (4D).
    dwi : bool, optional
        The repetitions are diffusion series; ``bvals`` and ``bvecs`` are then required.
    mask : str or Path, optional
        Brain mask (3D, voxels above 0 are inside) on the first repetition's grid.
    bvals, bvecs : sequence of str or Path, optional
        FSL ``.bval`` and ``.bvec`` file of each repetition; the tables must agree.
    min_repetitions : int, optional
        Fewest repetitions accepted.
    b0_threshold : float, optional
        Largest b-value (s/mm^2) counted as b=0: other volumes need a unit direction.

    Returns
    -------
    Repetitions

    Raises
    ------
    InputError
        Starting with the file at fault, in this order: fewer than ``min_repetitions``
        files; a file missing, empty, unreadable or not NIfTI, or of the wrong
        dimensionality; a repetition whose grid (shape, affine) or number of diffusion
        volumes differs from the first's; a gradient table that is unreadable, has a
        negative or non-finite b-value, counts that differ from the series', a non-unit
        direction, a zero direction above ``b0_threshold``, or differs from the first
        repetition's; a mask that is not 3D or not on the first repetition's grid. Only
        then, voxel data that are truncated, corrupt or hold NaN or Inf, and a mask
        without a voxel above 0.
    """
    opened = open_repetitions(
        paths, dwi=dwi, mask=mask, bvals=bvals, bvecs=bvecs,
        min_repetitions=min_repetitions, b0_threshold=b0_threshold,
    )
    first = opened.images[0]
    # Filled in place: stacking a list would hold every repetition twice.
    data = np.empty(first.shape[: 4 if dwi else 3] + (len(opened.paths),), dtype=np.float32)
    for index in range(len(opened.paths)):
        data[..., index] = opened.read(index)
    return Repetitions(
        data=data, affine=first.affine, header=first.header, paths=opened.paths,
        mask=opened.read_mask(), bvals=opened.bvals, bvecs=opened.bvecs,
    )


def load_gradient_table(bval_path, bvec_path, *, b0_threshold=50.0):
    """Read and check one FSL gradient table on its own (no series to match).

    Parameters
    ----------
    bval_path, bvec_path : str or Path
    b0_threshold : float, optional
        Largest b-value (s/mm^2) counted as b=0: other volumes need a unit direction.

    Returns
    -------
    bvals : ndarray of float64, shape (M,)
    bvecs : ndarray of float64, shape (M, 3)
        Directions scaled to unit length (zero rows stay zero).

    Raises
    ------
    InputError
        Naming the file, for the problems :func:`noise2average.io.load_gradients` finds.
    """
    with _as_input_error():
        bvals, bvecs = _io.load_gradients(bval_path, bvec_path, b0_threshold=b0_threshold)
    return bvals, _unit_directions(bvecs)
