"""Noise level of a magnitude volume, estimated from the data alone.

The estimator is the wavelet median-absolute-deviation rule of Donoho and Johnstone (1994),
as used for MR volumes by Coupe et al. (Med Image Anal 2010;14:483-493): the finest
diagonal sub-band of a 3D Haar transform (HHH, high-pass along all three axes) holds almost
only noise, so its median absolute value divided by ``Phi^-1(3/4) = 0.6745`` is the noise
standard deviation.

The HHH coefficients are computed undecimated (one per 2x2x2 neighbourhood) as the
orthonormal Haar difference ``(a - b) / sqrt(2)`` applied along each axis in turn; for
independent noise of standard deviation ``sigma`` each coefficient is therefore a zero-mean
variable of standard deviation ``sigma``. The filter annihilates any signal that is affine
(or constant) along at least one axis, so smooth anatomy leaks in only through its mixed
third derivative, and edges touch only a minority of coefficients that the median ignores.

Assumptions: the noise is additive, Gaussian-like and spatially white. Magnitude (Rician)
data satisfy this inside the head at high SNR (``nu / sigma`` above about 3), where the
Rician standard deviation is within 3 % of ``sigma``; pass a brain or head mask, because in
the air background magnitude noise is Rayleigh distributed with standard deviation
``0.655 sigma`` and would bias the estimate low. For spatially varying noise (parallel
imaging g-factor) `estimate_sigma` returns the median level over the mask and
`estimate_sigma_map` a local one.
"""

import warnings

import numpy as np
from scipy import ndimage

from ._validation import as_mask

__all__ = ["estimate_sigma", "estimate_sigma_map"]

# Phi^-1(3/4): median(|X|) = 0.6745 sigma for X ~ N(0, sigma^2).
_MAD_TO_SIGMA = 0.6744897501960817


def estimate_sigma(data, mask=None):
    """Noise standard deviation of a 3D volume from its finest Haar HHH sub-band.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z)
        Noisy volume (magnitude or real-valued), any intensity unit. Every dimension must
        be at least 2.
    mask : ndarray of bool of shape (X, Y, Z), optional
        Region whose noise is estimated (e.g. the brain). It is eroded by one voxel and a
        coefficient is used only if its whole 2x2x2 neighbourhood lies inside the eroded
        mask, so the mask edge does not leak in (if the erosion leaves nothing, the
        un-eroded mask is used with a warning). None uses the whole volume.

    Returns
    -------
    sigma : float
        Estimated noise standard deviation, in the intensity unit of ``data``. For
        spatially varying noise this is the median level over the mask.

    Notes
    -----
    ``sigma = median(|HHH|) / 0.6745`` over the retained coefficients. Coefficients whose
    neighbourhood contains a voxel exactly equal to zero are skipped: exact zeros mark
    zero-filled or skull-stripped regions, which carry no noise. See the module docstring
    for the assumptions (Gaussian-like noise: use a mask on magnitude data).
    """
    data, mask = _validate(data, mask)
    coefficients, valid = _hhh(data, mask)
    if not valid.any():
        raise ValueError(
            "no 2x2x2 neighbourhood of nonzero voxels lies inside the mask "
            f"({int(mask.sum()) if mask is not None else data.size} voxels): cannot estimate sigma"
        )
    return float(np.median(np.abs(coefficients[valid])) / _MAD_TO_SIGMA)


def estimate_sigma_map(data, mask=None, *, radius=5):
    """Local noise standard deviation: `estimate_sigma` in a sliding cube, interpolated.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z)
        Noisy volume, any intensity unit; every dimension at least 2.
    mask : ndarray of bool of shape (X, Y, Z), optional
        Region whose coefficients are used, eroded as in `estimate_sigma`. None uses the
        whole volume.
    radius : int, optional
        Half side of the cube, in voxels, over which each local median is taken (the cube
        has ``2 * radius + 1`` coefficients per side). Local estimates are computed on a grid
        with a step of ``radius`` voxels and trilinearly interpolated.

    Returns
    -------
    sigma_map : ndarray of float32 of shape (X, Y, Z)
        Local noise standard deviation, in the intensity unit of ``data``. Cubes with too
        few usable coefficients (fewer than half the cube or 50, whichever is smaller) take
        the value of the nearest cube that has enough; outside the mask the map is extended
        from the nearest estimates.
    """
    data, mask = _validate(data, mask)
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 1:
        raise ValueError(f"radius must be an integer >= 1, got {radius!r}")
    radius = int(radius)
    coefficients, valid = _hhh(data, mask)
    if not valid.any():
        raise ValueError("no 2x2x2 neighbourhood of nonzero voxels lies inside the mask")
    values = np.where(valid, np.abs(coefficients), np.nan).astype(np.float32)

    width = 2 * radius + 1
    step = radius
    n_centres = [(n - 1) // step + 1 for n in values.shape]
    # Pad with NaN so that the window of the centre at coefficient index k * step starts at
    # padded index k * step.
    padded_shape = [(c - 1) * step + width for c in n_centres]
    padded = np.full(padded_shape, np.nan, dtype=np.float32)
    padded[tuple(slice(radius, radius + n) for n in values.shape)] = values
    windows = np.lib.stride_tricks.sliding_window_view(padded, (width,) * 3)[::step, ::step, ::step]
    min_count = min(50, (width**3 + 1) // 2)
    local = np.empty(n_centres, dtype=np.float64)
    for i in range(n_centres[0]):
        rows = windows[i].reshape(n_centres[1] * n_centres[2], width**3)
        local[i] = _nan_median_rows(rows, min_count).reshape(n_centres[1], n_centres[2])
    missing = np.isnan(local)
    if missing.all():
        raise ValueError(
            f"no cube of radius {radius} has {min_count} usable coefficients: increase radius"
        )
    if missing.any():
        nearest = ndimage.distance_transform_edt(
            missing, return_distances=False, return_indices=True
        )
        local = local[tuple(nearest)]
    local /= _MAD_TO_SIGMA

    # Coefficient k sits at voxel coordinate k + 0.5; centre j at coefficient j * step.
    axes = [(np.arange(n, dtype=np.float64) - 0.5) / step for n in data.shape]
    grid = np.meshgrid(*axes, indexing="ij")
    sigma_map = ndimage.map_coordinates(local, grid, order=1, mode="nearest")
    return sigma_map.astype(np.float32)


def _validate(data, mask):
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"data must be a 3D array (X, Y, Z), got shape {data.shape}")
    if min(data.shape) < 2:
        raise ValueError(f"every dimension of data must be at least 2, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ValueError(f"data must be real-valued, got dtype {data.dtype}")
    data = data.astype(np.float64, copy=False)
    if not np.isfinite(data).all():
        raise ValueError(f"data contains {int((~np.isfinite(data)).sum())} non-finite values")
    mask = as_mask(mask, data.shape)
    return data, mask


def _hhh(data, mask):
    """Undecimated finest Haar HHH coefficients, shape (X-1, Y-1, Z-1), and their validity."""
    coefficients = data
    for axis in range(3):
        upper = [slice(None)] * 3
        lower = [slice(None)] * 3
        upper[axis] = slice(1, None)
        lower[axis] = slice(None, -1)
        coefficients = (coefficients[tuple(upper)] - coefficients[tuple(lower)]) / np.sqrt(2.0)

    usable = data != 0
    if mask is not None:
        eroded = ndimage.binary_erosion(mask, iterations=1, border_value=0)
        if _support(eroded & usable).any():
            usable &= eroded
        else:
            warnings.warn(
                "the mask is too thin to erode; using it without erosion, so its edge may "
                "bias the noise estimate",
                stacklevel=3,
            )
            usable &= mask
    return coefficients, _support(usable)


def _support(voxels):
    """True where all eight voxels of a coefficient's 2x2x2 neighbourhood are True."""
    nx, ny, nz = (n - 1 for n in voxels.shape)
    out = np.ones((nx, ny, nz), dtype=bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                out &= voxels[dx : dx + nx, dy : dy + ny, dz : dz + nz]
    return out


def _nan_median_rows(rows, min_count):
    """Median of the non-NaN values of each row; NaN where fewer than ``min_count``."""
    ordered = np.sort(rows, axis=1)  # NaN sorts last
    count = np.count_nonzero(~np.isnan(rows), axis=1)
    safe = np.maximum(count, 1)
    lower = np.take_along_axis(ordered, ((safe - 1) // 2)[:, None], axis=1)[:, 0]
    upper = np.take_along_axis(ordered, (safe // 2)[:, None], axis=1)[:, 0]
    median = 0.5 * (lower.astype(np.float64) + upper)
    median[count < min_count] = np.nan
    return median
