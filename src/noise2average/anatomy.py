"""Colin 27 anatomy on a working grid, tissue fractions, per-subject deformation and bias field.

The embedded anatomy is Colin 27 (``data/ch2.nii.gz`` with its brain-extracted companion
``data/ch2bet.nii.gz``; see ``data/NOTICE.md``): a 1 mm, high-SNR, single-subject T1-weighted
head in MNI space. It stands in for the noise-free object of the simulations.

Pipeline
--------
1. `load_colin27`: the 1 mm image (intensities as stored, 0-254, arbitrary units; the
   background outside the head is exactly 0) and a brain mask (largest connected component
   of ``ch2bet > 0``, holes filled).
2. `tissue_fractions`: CSF / grey matter / white matter volume fractions of every 1 mm brain
   voxel from a two-compartment linear partial-volume model (see its docstring).
3. `working_anatomy`: crop to the brain bounding box plus a margin of head and air, and
   downsample to the working voxel size with an anti-aliasing (partial-volume) filter; the
   fractions are downsampled with the same filter, so voxels on tissue borders get mixed
   fractions. The result is an `Anatomy` whose affine maps its voxels to the MNI mm of the
   source exactly.
4. `slab_grid` / `ventricle_slab`: an optional axial slab of whole working-grid slices
   centred on the lateral ventricles.
5. Per subject: `random_deformation` (a smooth random displacement field in world mm, with a
   positive Jacobian determinant) and `random_bias_field` (a smooth multiplicative receive
   field), both `SmoothField` objects that can be evaluated at any world coordinate, and
   `sample_anatomy`, which evaluates the deformed anatomy at any world coordinates (a grid,
   or a rigidly moved grid for head motion) in one interpolation from the working grid.

All coordinates called ``points_mm`` are world (scanner / MNI) millimetres, shape
``(..., 3)``.
"""

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
from scipy import ndimage, signal

__all__ = [
    "TISSUES",
    "Anatomy",
    "SmoothField",
    "load_colin27",
    "pure_tissue_intensities",
    "tissue_fractions",
    "labels_from_fractions",
    "downsample",
    "working_anatomy",
    "ventricle_slab",
    "slab_grid",
    "grid_points",
    "sample_anatomy",
    "random_smooth_field",
    "random_deformation",
    "random_bias_field",
    "jacobian_determinant",
]

#: Tissue order of the last axis of every ``fractions`` array (dseg labels 1, 2, 3).
TISSUES = ("csf", "gm", "wm")

_CHUNK = 65536  # points per chunk when evaluating smooth fields (bounds temporary memory)
_BIG_CHUNK = 1 << 20  # points per chunk for gradients and interpolation


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Noise-free anatomy on a voxel grid.

    Attributes
    ----------
    image : ndarray of float32, shape (X, Y, Z)
        T1-weighted intensity (Colin 27 units, arbitrary; air is 0).
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask: voxels whose brain volume fraction is at least 0.5.
    fractions : ndarray of float32, shape (X, Y, Z, 3)
        Volume fractions of CSF, grey matter and white matter (order `TISSUES`). They sum
        to the brain fraction of the voxel: 1 inside the brain, between 0 and 1 on its
        border, 0 outside (the rest is non-brain head tissue or air).
    dseg : ndarray of int8, shape (X, Y, Z)
        Hard labels: 0 background (outside ``mask``), 1 CSF, 2 GM, 3 WM (largest fraction).
    affine : ndarray of float64, shape (4, 4)
        Voxel-to-world (mm) transform.
    """

    image: np.ndarray
    mask: np.ndarray
    fractions: np.ndarray
    dseg: np.ndarray
    affine: np.ndarray

    @property
    def shape(self):
        """Grid shape ``(X, Y, Z)``."""
        return self.image.shape

    @property
    def voxel_size(self):
        """Voxel size in mm, shape (3,)."""
        return _voxel_size(self.affine)


# ---------------------------------------------------------------------------------------------
# Source data
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _colin27_cached():
    import nibabel as nib

    folder = resources.files("noise2average") / "data"
    with resources.as_file(folder / "ch2.nii.gz") as path:
        nifti = nib.load(path)
        image = np.asarray(nifti.dataobj, dtype=np.float32)
        affine = np.array(nifti.affine, dtype=np.float64)
    with resources.as_file(folder / "ch2bet.nii.gz") as path:
        brain = np.asarray(nib.load(path).dataobj) > 0
    labels, count = ndimage.label(brain)
    if count == 0:
        raise ValueError("ch2bet.nii.gz: empty brain mask")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = ndimage.binary_fill_holes(labels == np.argmax(sizes))
    for array in (image, mask, affine):
        array.flags.writeable = False
    return image, mask, affine


def load_colin27():
    """Load the embedded Colin 27 T1w head and its brain mask.

    Returns
    -------
    image : ndarray of float32, shape (181, 217, 181)
        T1-weighted intensities as stored (0-254, arbitrary units), 1 mm isotropic, MNI
        space; the background outside the head is exactly 0.
    mask : ndarray of bool, shape (181, 217, 181)
        Brain mask: the largest connected component of ``ch2bet > 0`` with holes filled.
    affine : ndarray of float64, shape (4, 4)
        Voxel-to-MNI (mm) transform.

    Notes
    -----
    Read-only arrays shared between calls (the files are read once per process); copy
    before modifying.
    """
    return _colin27_cached()


# ---------------------------------------------------------------------------------------------
# Tissue fractions
# ---------------------------------------------------------------------------------------------


def pure_tissue_intensities(image, mask, *, smoothing=0.01):
    """Intensities of pure CSF, grey matter and white matter from the brain histogram.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        T1-weighted image (CSF darkest, WM brightest).
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask.
    smoothing : float, optional
        Standard deviation of the Gaussian that smooths the histogram before peak finding,
        as a fraction of the 99.9th intensity percentile.

    Returns
    -------
    intensities : ndarray of float64, shape (3,)
        CSF, GM and WM intensities (ascending): the three most prominent peaks (modes) of
        the smoothed brain histogram.

    Raises
    ------
    ValueError
        If the histogram has fewer than three peaks.

    Notes
    -----
    Bins are 1/256 of the 99.9th percentile wide, or one intensity unit for integer-valued
    data (finer bins would alias the integer comb into spurious peaks).
    """
    values = np.asarray(image)[np.asarray(mask, dtype=bool)].astype(np.float64)
    if values.size == 0:
        raise ValueError("mask selects no voxels")
    top = np.percentile(values, 99.9)
    if not top > 0:
        raise ValueError(f"brain intensities must be positive, 99.9th percentile is {top!r}")
    width = top / 256
    if np.all(values == np.round(values)):
        width = max(width, 1.0)
    edges = np.arange(values.min() - width / 2, top + width, width)
    counts, edges = np.histogram(values, bins=edges)
    centres = 0.5 * (edges[:-1] + edges[1:])
    smooth = ndimage.gaussian_filter1d(counts.astype(np.float64), smoothing * top / width)
    peaks, props = signal.find_peaks(smooth, prominence=0)
    if peaks.size < 3:
        raise ValueError(f"brain histogram has {peaks.size} peaks, need 3 (CSF, GM, WM)")
    best = peaks[np.argsort(props["prominences"])[-3:]]
    return np.sort(centres[best])


def tissue_fractions(image, mask, *, intensities=None):
    """CSF / GM / WM volume fractions from a linear partial-volume model.

    Each brain voxel is modelled as a mixture of at most two adjacent tissues whose
    intensities mix linearly (the voxel integrates the signal): with pure intensities
    ``I_csf < I_gm < I_wm``, a voxel of intensity ``v`` between ``I_csf`` and ``I_gm`` has
    ``f_gm = (v - I_csf) / (I_gm - I_csf)`` and ``f_csf = 1 - f_gm``; between ``I_gm`` and
    ``I_wm`` likewise for GM and WM; below ``I_csf`` it is pure CSF, above ``I_wm`` pure WM.
    A 3-class Gaussian mixture was rejected for Colin 27: its histogram has a wide
    partial-volume plateau between the GM and WM peaks (and a CSF/GM ramp) that a mixture
    assigns wholesale to a broad GM class (24 % WM by volume instead of about 38 %).

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        T1-weighted image.
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask; fractions are 0 outside it.
    intensities : array_like of shape (3,), optional
        Pure CSF, GM, WM intensities (strictly ascending). None estimates them with
        `pure_tissue_intensities`.

    Returns
    -------
    fractions : ndarray of float32, shape (X, Y, Z, 3)
        Fractions in order `TISSUES`; they sum to 1 inside ``mask`` and to 0 outside.
    """
    image = np.asarray(image, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    if intensities is None:
        intensities = pure_tissue_intensities(image, mask)
    csf, gm, wm = np.asarray(intensities, dtype=np.float64)
    if not csf < gm < wm:
        raise ValueError(f"intensities={intensities!r} must be strictly ascending (CSF, GM, WM)")
    fractions = np.zeros(image.shape + (3,), dtype=np.float32)
    values = image[mask]
    f_wm = np.clip((values - gm) / (wm - gm), 0.0, 1.0)
    f_csf = np.clip((gm - values) / (gm - csf), 0.0, 1.0)
    fractions[mask, 0] = f_csf
    fractions[mask, 1] = 1.0 - f_csf - f_wm
    fractions[mask, 2] = f_wm
    return fractions


def labels_from_fractions(fractions):
    """Brain mask and hard tissue labels from volume fractions.

    Parameters
    ----------
    fractions : ndarray, shape (X, Y, Z, 3)
        CSF, GM, WM fractions (order `TISSUES`).

    Returns
    -------
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels whose brain fraction (sum of the three) is at least 0.5.
    dseg : ndarray of int8, shape (X, Y, Z)
        0 outside ``mask``; inside it 1 CSF, 2 GM, 3 WM, whichever fraction is largest.
    """
    fractions = np.asarray(fractions)
    if fractions.ndim != 4 or fractions.shape[-1] != 3:
        raise ValueError(f"fractions must have shape (X, Y, Z, 3), got {fractions.shape}")
    mask = fractions.sum(axis=-1) >= 0.5
    dseg = (np.argmax(fractions, axis=-1) + 1).astype(np.int8)
    dseg[~mask] = 0
    return mask, dseg


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------


def _voxel_size(affine):
    return np.sqrt(np.sum(np.asarray(affine, dtype=np.float64)[:3, :3] ** 2, axis=0))


def _translate(affine, start):
    """Affine of the sub-grid whose voxel 0 is voxel ``start`` of ``affine``'s grid."""
    shift = np.eye(4)
    shift[:3, 3] = start
    return np.asarray(affine, dtype=np.float64) @ shift


def grid_points(shape, affine):
    """World coordinates of the voxel centres of a grid.

    Parameters
    ----------
    shape : tuple of 3 int
        Grid shape ``(X, Y, Z)``.
    affine : ndarray, shape (4, 4)
        Voxel-to-world (mm) transform.

    Returns
    -------
    points_mm : ndarray of float64, shape (X, Y, Z, 3)
        World coordinates in mm.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must have shape (4, 4), got {affine.shape}")
    index = np.indices(tuple(int(n) for n in shape), dtype=np.float64)
    return np.moveaxis(np.tensordot(affine[:3, :3], index, axes=1), 0, -1) + affine[:3, 3]


def _extract_box(volume, start, size):
    """Sub-array ``volume[start:start+size]`` on the first three axes, zero-filled outside."""
    out = np.zeros(tuple(size) + volume.shape[3:], dtype=volume.dtype)
    src = [slice(max(s, 0), min(s + n, dim)) for s, n, dim in zip(start, size, volume.shape)]
    dst = [slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start)]
    out[tuple(dst)] = volume[tuple(src)]
    return out


def downsample(volume, affine, *, voxel_size_mm):
    """Anti-aliased downsampling of a volume to a coarser isotropic grid.

    Parameters
    ----------
    volume : ndarray, shape (X, Y, Z) or (X, Y, Z, C)
        Image (channels on the last axis are downsampled independently).
    affine : ndarray, shape (4, 4)
        Voxel-to-world (mm) transform of ``volume`` (axis-aligned voxels).
    voxel_size_mm : float
        Output voxel size in mm, not smaller than the input voxel size.

    Returns
    -------
    volume : ndarray of float32, shape (X', Y', Z'[, C])
        Downsampled volume.
    affine : ndarray of float64, shape (4, 4)
        Its voxel-to-world transform: output voxel ``i`` is centred on input voxel
        coordinate ``f i + (f - 1) / 2`` with ``f`` the size ratio, so the output covers the
        same field of view.

    Notes
    -----
    For an integer ratio ``f`` each output voxel is the mean of the ``f^3`` input voxels it
    covers (an ideal voxel that integrates the signal: exact partial volume); trailing
    voxels that do not fill a block are dropped. For a non-integer ratio the volume is
    smoothed with a Gaussian of the variance of that box, ``sigma^2 = (f^2 - 1) / 12``
    input voxels, then sampled with linear interpolation.
    """
    volume = np.asarray(volume)
    affine = np.asarray(affine, dtype=np.float64)
    if volume.ndim not in (3, 4):
        raise ValueError(f"volume must be 3D or 4D, got shape {volume.shape}")
    size = _voxel_size(affine)
    voxel_size_mm = float(voxel_size_mm)
    if not np.isfinite(voxel_size_mm) or voxel_size_mm <= 0:
        raise ValueError(f"voxel_size_mm={voxel_size_mm!r} must be a positive number")
    ratio = voxel_size_mm / size
    if np.any(ratio < 1 - 1e-6):
        raise ValueError(
            f"voxel_size_mm={voxel_size_mm!r} is finer than the input voxel size {size.tolist()} mm"
        )
    out_shape = np.floor(np.array(volume.shape[:3]) / ratio + 1e-6).astype(int)
    if np.any(out_shape < 1):
        raise ValueError(f"voxel_size_mm={voxel_size_mm!r} leaves an empty grid")
    scale = np.eye(4)
    scale[:3, :3] = np.diag(ratio)
    scale[:3, 3] = (ratio - 1) / 2
    new_affine = affine @ scale
    integer = np.allclose(ratio, np.round(ratio), atol=1e-6)
    data = volume.astype(np.float32, copy=False)
    if integer:
        f = np.round(ratio).astype(int)
        data = data[: out_shape[0] * f[0], : out_shape[1] * f[1], : out_shape[2] * f[2]]
        blocks = data.reshape(
            out_shape[0], f[0], out_shape[1], f[1], out_shape[2], f[2], *data.shape[3:]
        )
        return blocks.mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32), new_affine
    sigma = np.sqrt(np.maximum(ratio**2 - 1, 0) / 12)
    coords = [f * np.arange(n) + (f - 1) / 2 for f, n in zip(ratio, out_shape)]
    grid = np.stack(np.meshgrid(*coords, indexing="ij"))
    channels = data[..., None] if data.ndim == 3 else data
    out = np.empty(tuple(out_shape) + (channels.shape[-1],), dtype=np.float32)
    for c in range(channels.shape[-1]):
        smooth = ndimage.gaussian_filter(channels[..., c], sigma, mode="nearest")
        out[..., c] = ndimage.map_coordinates(smooth, grid, order=1, mode="nearest")
    return (out[..., 0] if data.ndim == 3 else out), new_affine


@functools.lru_cache(maxsize=4)
def _working_anatomy_cached(voxel_size_mm, margin_mm):
    image, mask, affine = load_colin27()
    size = _voxel_size(affine)
    ratio = voxel_size_mm / size
    if np.any(ratio < 1 - 1e-6):
        raise ValueError(
            f"voxel_size_mm={voxel_size_mm!r} is finer than the Colin 27 voxel size "
            f"{size.tolist()} mm"
        )
    fractions = tissue_fractions(image, mask)
    # Brain bounding box plus margin, rounded up to whole output voxels.
    index = np.argwhere(mask)
    lo, hi = index.min(axis=0), index.max(axis=0) + 1
    margin = np.ceil(margin_mm / size).astype(int)
    lo, hi = lo - margin, hi + margin
    block = np.where(np.isclose(ratio, np.round(ratio)), np.round(ratio), 1).astype(int)
    extra = (-(hi - lo)) % block
    lo = lo - extra // 2
    hi = hi + extra - extra // 2
    shape = hi - lo
    crop_affine = _translate(affine, lo)
    image_c = _extract_box(image, lo, shape)
    fractions_c = _extract_box(fractions, lo, shape)
    image_w, work_affine = downsample(image_c, crop_affine, voxel_size_mm=voxel_size_mm)
    fractions_w, _ = downsample(fractions_c, crop_affine, voxel_size_mm=voxel_size_mm)
    image_w = np.maximum(image_w, 0)
    fractions_w = np.clip(fractions_w, 0, 1)
    mask_w, dseg_w = labels_from_fractions(fractions_w)
    arrays = (image_w, mask_w, fractions_w, dseg_w, work_affine)
    for array in arrays:
        array.flags.writeable = False
    return Anatomy(*arrays)


def working_anatomy(*, voxel_size_mm=2.0, margin_mm=12.0):
    """Colin 27 on the working grid: cropped, downsampled, with tissue fractions.

    Parameters
    ----------
    voxel_size_mm : float, optional
        Isotropic working voxel size in mm (at least the 1 mm of Colin 27).
    margin_mm : float, optional
        Margin around the brain bounding box, in mm, kept in the crop. The default keeps
        the scalp and some air in the corners of the field of view, which noise estimators
        need (the Colin 27 background is exactly 0, so after simulation it holds pure
        noise). Regions outside the 1 mm source are zero-filled.

    Returns
    -------
    anatomy : Anatomy
        Whole-brain working anatomy; its arrays are read-only and shared between calls with
        the same arguments (copy before modifying).

    Notes
    -----
    Fractions come from `tissue_fractions` at 1 mm and are downsampled with the same
    partial-volume filter as the image (see `downsample`); ``mask`` and ``dseg`` follow
    from them with `labels_from_fractions`.
    """
    voxel_size_mm = float(voxel_size_mm)
    margin_mm = float(margin_mm)
    if not np.isfinite(voxel_size_mm) or voxel_size_mm <= 0:
        raise ValueError(f"voxel_size_mm={voxel_size_mm!r} must be a positive number")
    if not np.isfinite(margin_mm) or margin_mm < 0:
        raise ValueError(f"margin_mm={margin_mm!r} must be a non-negative number")
    return _working_anatomy_cached(voxel_size_mm, margin_mm)


def ventricle_slab(anatomy, *, slab_slices, depth_mm=15.0):
    """Axial slab of whole slices centred on the lateral ventricles.

    Parameters
    ----------
    anatomy : Anatomy
        Working anatomy; axis 2 is the inferior-superior (slice) axis.
    slab_slices : int
        Number of slices.
    depth_mm : float, optional
        CSF voxels deeper than this below the brain surface count as ventricular (sulcal
        CSF lies at the surface); their centroid along axis 2 is the slab centre.

    Returns
    -------
    start, stop : int
        Slice range ``[start, stop)`` on axis 2, shifted to lie inside the grid.
    """
    slab_slices = _check_slab(slab_slices, anatomy.shape[2])
    depth = ndimage.distance_transform_edt(anatomy.mask, sampling=anatomy.voxel_size)
    ventricles = (anatomy.dseg == 1) & (depth > depth_mm)
    if not ventricles.any():
        raise ValueError(f"no CSF deeper than depth_mm={depth_mm!r} below the brain surface")
    centre = np.argwhere(ventricles)[:, 2].mean()
    start = int(round(centre + 0.5 - slab_slices / 2))
    start = min(max(start, 0), anatomy.shape[2] - slab_slices)
    return start, start + slab_slices


def _check_slab(slab_slices, n_slices):
    if isinstance(slab_slices, bool) or not isinstance(slab_slices, (int, np.integer)):
        raise ValueError(f"slab_slices={slab_slices!r} must be an integer or None")
    if not 1 <= slab_slices <= n_slices:
        raise ValueError(f"slab_slices={slab_slices!r} must be between 1 and {n_slices}")
    return int(slab_slices)


def slab_grid(anatomy, *, slab_slices=None):
    """Output grid: the whole working grid, or an axial slab centred on the ventricles.

    Parameters
    ----------
    anatomy : Anatomy
        Working anatomy (from `working_anatomy`).
    slab_slices : int or None, optional
        Number of axial slices (axis 2); None keeps the whole grid.

    Returns
    -------
    shape : tuple of 3 int
        Output grid shape.
    affine : ndarray of float64, shape (4, 4)
        Output voxel-to-world transform (voxel ``(i, j, k)`` of the slab is voxel
        ``(i, j, k + start)`` of the working grid).
    start : int
        First slice of the slab on the working grid (0 for the whole grid).
    """
    if slab_slices is None:
        return tuple(anatomy.shape), np.array(anatomy.affine, dtype=np.float64), 0
    start, stop = ventricle_slab(anatomy, slab_slices=slab_slices)
    shape = (anatomy.shape[0], anatomy.shape[1], stop - start)
    return shape, _translate(anatomy.affine, (0, 0, start)), start


def sample_anatomy(anatomy, points_mm, *, deformation=None, fractions=True):
    """Evaluate the (deformed) anatomy at world coordinates.

    The subject's anatomy is ``S(x) = A(x + u(x))``: the working anatomy ``A`` pulled back
    through the displacement field ``u`` (`random_deformation`). For head motion pass
    rigidly moved points: ``S(T^-1 x)`` is the object moved by ``T``. One interpolation from
    the working grid is used whatever the composition, so motion adds no extra blur to the
    noise-free object.

    Parameters
    ----------
    anatomy : Anatomy
        Working anatomy (the source grid).
    points_mm : ndarray, shape (..., 3)
        World coordinates in mm.
    deformation : SmoothField or None, optional
        Displacement field ``u`` in mm (3 components); None is the identity.
    fractions : bool, optional
        Also return the tissue fractions.

    Returns
    -------
    image : ndarray of float32, shape (...)
        Intensity, cubic B-spline interpolation, clipped at 0 (spline overshoot next to the
        zero background).
    fractions : ndarray of float32, shape (..., 3)
        Tissue fractions, linear interpolation (keeps them in [0, 1] and their sum equal to
        the interpolated brain fraction). Only when ``fractions`` is True.

    Notes
    -----
    Points outside the working grid take the value of the nearest edge voxel.
    """
    points = np.asarray(points_mm, dtype=np.float64)
    if points.shape[-1] != 3:
        raise ValueError(f"points_mm must have shape (..., 3), got {points.shape}")
    flat = points.reshape(-1, 3)
    inverse = np.linalg.inv(anatomy.affine)
    coefficients = _spline_coefficients(anatomy)
    image = np.empty(flat.shape[0], dtype=np.float32)
    out = np.empty((flat.shape[0], 3), dtype=np.float32) if fractions else None
    for s in range(0, flat.shape[0], _BIG_CHUNK):
        chunk = flat[s : s + _BIG_CHUNK]
        if deformation is not None:
            chunk = chunk + deformation(chunk)
        coords = (chunk @ inverse[:3, :3].T + inverse[:3, 3]).T
        values = ndimage.map_coordinates(
            coefficients, coords, order=3, mode="nearest", prefilter=False
        )
        image[s : s + _BIG_CHUNK] = np.maximum(values, 0)
        if fractions:
            for c in range(3):
                out[s : s + _BIG_CHUNK, c] = ndimage.map_coordinates(
                    anatomy.fractions[..., c], coords, order=1, mode="nearest"
                )
    image = image.reshape(points.shape[:-1])
    if not fractions:
        return image
    return image, np.clip(out, 0, 1).reshape(points.shape[:-1] + (3,))


_SPLINE_CACHE = {}


def _spline_coefficients(anatomy):
    """Cubic B-spline coefficients of ``anatomy.image`` (cached for the shared anatomies)."""
    key = id(anatomy.image)
    entry = _SPLINE_CACHE.get(key)
    if entry is None or entry[0] is not anatomy.image:
        coefficients = ndimage.spline_filter(
            anatomy.image.astype(np.float64), order=3, mode="nearest"
        )
        if len(_SPLINE_CACHE) >= 4:
            _SPLINE_CACHE.clear()
        entry = (anatomy.image, coefficients)
        _SPLINE_CACHE[key] = entry
    return entry[1]


# ---------------------------------------------------------------------------------------------
# Smooth random fields
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SmoothField:
    """Smooth random field in world coordinates, ``f(x) = offset + sum_j a_j cos(k_j.x + phi_j)``.

    A random-Fourier-feature draw of a Gaussian process with squared-exponential covariance
    ``exp(-|r|^2 / (2 l^2))`` (wave vectors ``k_j ~ N(0, I / l^2)``, phases uniform), so it
    is defined (and differentiable) at any point, on or off a grid.

    Attributes
    ----------
    wavevectors : ndarray, shape (K, 3)
        Wave vectors in rad/mm.
    phases : ndarray, shape (K,)
        Phases in rad.
    amplitudes : ndarray, shape (K, C)
        Amplitude of each feature for each of the C components (output unit).
    offset : ndarray, shape (C,)
        Constant added to each component.
    """

    wavevectors: np.ndarray
    phases: np.ndarray
    amplitudes: np.ndarray
    offset: np.ndarray

    @property
    def n_components(self):
        """Number of components C."""
        return self.amplitudes.shape[1]

    def _phases(self, flat):
        # float32 phases: numpy's float32 cosine is vectorised (about 10x faster than
        # float64) and the phase error (~1e-6 rad over a head) is negligible.
        k = self.wavevectors.astype(np.float32)
        return flat.astype(np.float32) @ k.T + self.phases.astype(np.float32)

    def __call__(self, points_mm):
        """Field values, float64 of shape ``points_mm.shape[:-1] + (C,)``."""
        points = np.asarray(points_mm, dtype=np.float64)
        flat = points.reshape(-1, 3)
        out = np.empty((flat.shape[0], self.n_components))
        amplitudes = self.amplitudes.astype(np.float32)
        for s in range(0, flat.shape[0], _CHUNK):
            out[s : s + _CHUNK] = np.cos(self._phases(flat[s : s + _CHUNK])) @ amplitudes
        out += self.offset
        return out.reshape(points.shape[:-1] + (self.n_components,))

    def gradient(self, points_mm):
        """Spatial derivatives per mm, float64 of shape ``points_mm.shape[:-1] + (C, 3)``.

        Entry ``[..., c, i]`` is the derivative of component ``c`` along world axis ``i``.
        """
        points = np.asarray(points_mm, dtype=np.float64)
        flat = points.reshape(-1, 3)
        n_c = self.n_components
        weights = -(self.amplitudes[:, :, None] * self.wavevectors[:, None, :]).reshape(-1, n_c * 3)
        weights = weights.astype(np.float32)
        out = np.empty((flat.shape[0], n_c * 3))
        for s in range(0, flat.shape[0], _CHUNK):
            out[s : s + _CHUNK] = np.sin(self._phases(flat[s : s + _CHUNK])) @ weights
        return out.reshape(points.shape[:-1] + (n_c, 3))

    def scaled(self, factor):
        """The field ``offset + factor (f - offset)``."""
        return SmoothField(self.wavevectors, self.phases, self.amplitudes * factor, self.offset)


def random_smooth_field(rng, *, n_components, correlation_length_mm, n_features=64, offset=0.0):
    """Draw a zero-mean, unit-variance smooth random field (random Fourier features).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n_components : int
        Number of field components C (3 for a displacement, 1 for a scalar field).
    correlation_length_mm : float
        Length ``l`` of the squared-exponential covariance ``exp(-|r|^2 / (2 l^2))``, in mm.
    n_features : int, optional
        Number of cosines K shared by the components (independent amplitudes per
        component).
    offset : float, optional
        Constant added to every component.

    Returns
    -------
    field : SmoothField
        Each component has variance 1 in expectation over draws.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not correlation_length_mm > 0:
        raise ValueError(f"correlation_length_mm={correlation_length_mm!r} must be positive")
    if int(n_components) < 1 or int(n_features) < 1:
        raise ValueError(
            f"n_components={n_components!r} and n_features={n_features!r} must be positive"
        )
    k = rng.normal(size=(int(n_features), 3)) / float(correlation_length_mm)
    phases = rng.uniform(0, 2 * np.pi, size=int(n_features))
    amplitudes = rng.normal(size=(int(n_features), int(n_components))) * np.sqrt(2 / n_features)
    return SmoothField(k, phases, amplitudes, np.full(int(n_components), float(offset)))


def jacobian_determinant(deformation, points_mm):
    """Jacobian determinant of the map ``x -> x + u(x)``.

    Parameters
    ----------
    deformation : SmoothField
        Displacement field ``u`` in mm (3 components).
    points_mm : ndarray, shape (..., 3)
        World coordinates in mm.

    Returns
    -------
    det : ndarray of float64, shape (...)
        ``det(I + grad u)``; positive everywhere means the map is locally invertible and
        preserves orientation (no folding).
    """
    points = np.asarray(points_mm, dtype=np.float64)
    flat = points.reshape(-1, 3)
    out = np.empty(flat.shape[0])
    for s in range(0, flat.shape[0], _BIG_CHUNK):
        out[s : s + _BIG_CHUNK] = _det3(np.eye(3) + deformation.gradient(flat[s : s + _BIG_CHUNK]))
    return out.reshape(points.shape[:-1])


def _det3(m):
    """Determinants of a stack of 3x3 matrices, shape (..., 3, 3) -> (...)."""
    return (
        m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
        - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
        + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0])
    )


def random_deformation(
    rng, points_mm, *, max_displacement_mm, smoothness_mm, min_jacobian=0.5, n_features=64
):
    """Smooth random displacement field with a given peak and a positive Jacobian.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    points_mm : ndarray, shape (..., 3)
        World coordinates (mm) over which the peak and the Jacobian are controlled (the
        working grid of the head).
    max_displacement_mm : float
        Peak displacement magnitude ``max |u|`` over ``points_mm``, in mm.
    smoothness_mm : float
        Correlation length of the field, in mm (see `random_smooth_field`).
    min_jacobian : float, optional
        Lower bound on ``det(I + grad u)`` over ``points_mm``: when the drawn field at the
        requested peak would compress or fold tissue beyond it, the whole field is scaled
        down until the bound holds (the peak is then smaller than requested). With a peak
        of a few mm and a correlation length of centimetres the bound is far from active.
    n_features : int, optional
        Number of random Fourier features.

    Returns
    -------
    deformation : SmoothField
        Displacement ``u`` in mm, 3 components along the world axes; the deformed anatomy
        is ``A(x + u(x))`` (`sample_anatomy`).
    """
    if not max_displacement_mm >= 0:
        raise ValueError(f"max_displacement_mm={max_displacement_mm!r} must be non-negative")
    if not 0 < min_jacobian < 1:
        raise ValueError(f"min_jacobian={min_jacobian!r} must be in (0, 1)")
    field = random_smooth_field(
        rng, n_components=3, correlation_length_mm=smoothness_mm, n_features=n_features
    )
    points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    peak = 0.0
    for s in range(0, points.shape[0], _BIG_CHUNK):
        values = field(points[s : s + _BIG_CHUNK])
        peak = max(peak, float(np.sqrt(np.sum(values**2, axis=-1)).max()))
    scale = float(max_displacement_mm) / peak if peak > 0 else 0.0
    # Largest scale <= the requested one at which det(I + s grad) >= min_jacobian at every
    # point (det is 1 at s = 0); bisection per chunk keeps the memory bounded.
    for s in range(0, points.shape[0], _BIG_CHUNK):
        if scale == 0:
            break
        gradient = field.gradient(points[s : s + _BIG_CHUNK])
        if _det3(np.eye(3) + scale * gradient).min() >= min_jacobian:
            continue
        lo, hi = 0.0, scale
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if _det3(np.eye(3) + mid * gradient).min() >= min_jacobian:
                lo = mid
            else:
                hi = mid
        scale = lo
    return field.scaled(scale)


def random_bias_field(rng, points_mm, *, amplitude, smoothness_mm=60.0, n_features=32):
    """Smooth multiplicative receive (bias) field with a given peak deviation from 1.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    points_mm : ndarray, shape (..., 3)
        World coordinates (mm) over which the peak deviation is set (the head's grid).
    amplitude : float
        Peak deviation ``max |b - 1|`` over ``points_mm``, in [0, 1).
    smoothness_mm : float, optional
        Correlation length of the field, in mm. Receive-profile variation left after
        prescan normalisation varies over several centimetres.
    n_features : int, optional
        Number of random Fourier features.

    Returns
    -------
    bias : SmoothField
        One component, ``b(x)`` in ``[1 - amplitude, 1 + amplitude]`` over ``points_mm``
        (the extreme on one side reached exactly).
    """
    if not 0 <= amplitude < 1:
        raise ValueError(f"amplitude={amplitude!r} must be in [0, 1)")
    field = random_smooth_field(
        rng, n_components=1, correlation_length_mm=smoothness_mm, n_features=n_features
    )
    values = field(np.asarray(points_mm, dtype=np.float64).reshape(-1, 3))
    peak = np.abs(values).max()
    scale = float(amplitude) / peak if peak > 0 else 0.0
    return SmoothField(field.wavevectors, field.phases, field.amplitudes * scale, np.ones(1))
