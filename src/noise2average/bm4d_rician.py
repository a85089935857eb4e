"""BM4D for magnitude MR volumes through the Rician variance-stabilising transform.

BM4D (Maggioni et al., IEEE Trans Image Process 2013; PyPI package ``bm4d``) removes
additive white Gaussian noise. Magnitude data are Rician, so this module applies the
forward transform of Foi (2011) (`noise2average.vst.rician_vst`), which makes the noise
approximately Gaussian with unit variance, runs BM4D with ``sigma_psd = 1``, and maps the
result back with the exact unbiased inverse (`noise2average.vst.rician_vst_inverse`).

The ``bm4d`` package is free for non-commercial use only and may not be redistributed: it is
an optional dependency, installed from PyPI, and imported only when `bm4d_rician` runs.
"""

import numpy as np

from ._validation import as_mask
from .vst import rician_vst, rician_vst_inverse

__all__ = ["bm4d_rician"]

_PROFILES = ("np", "8x8")
# bm4d 4.2.5 raises for these: 'lc' is not implemented, and the residual refiltering of
# 'refilter' / '8x8refilter' fails on a shape mismatch (scalar sigma) or on np.trapz, removed
# in numpy 2 (PSD input).
_UNAVAILABLE = {
    "lc": "is not implemented in bm4d 4.2.5",
    "refilter": "fails in bm4d 4.2.5 (residual refiltering bug)",
    "8x8refilter": "fails in bm4d 4.2.5 (residual refiltering bug)",
}
# Search half-window (7) plus the largest block side (5) of the 3D profiles: voxels this far
# outside the mask can still be matched against blocks inside it.
_MARGIN = 12
_MIN_SIZE = 5
# Smallest volume each profile accepts (its largest block side per axis).
_MIN_BOX = {"np": (5, 5, 5), "8x8": (8, 8, 5)}


def bm4d_rician(data, sigma, *, mask=None, profile="np", num_threads=None):
    """Denoise a Rician magnitude volume with BM4D through the variance-stabilising transform.

    ``data -> rician_vst(data, sigma) -> bm4d(., sigma_psd=1) -> rician_vst_inverse(., sigma)``.

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z)
        Magnitude volume (finite; Rician data are nonnegative), any intensity unit. Every
        dimension must be at least 5 (X and Y at least 8 for the '8x8' profile).
    sigma : float or ndarray of shape (X, Y, Z)
        Rician noise level (the standard deviation of each of the real and imaginary
        Gaussian channels) in the intensity unit of ``data``, estimated from the data, e.g.
        with `noise2average.noise_estimate.estimate_sigma` on the mask. A float >= 0;
        ``sigma == 0`` returns the input unchanged (as float32). An array is a noise map
        (all values > 0): the transform makes the noise unit-variance everywhere, so BM4D
        still runs with one noise level.
    mask : ndarray of bool of shape (X, Y, Z), optional
        Voxels to denoise. BM4D runs on the mask's bounding box plus a margin of 12 voxels
        (the block-matching reach), and voxels outside the mask are returned unchanged.
        None denoises the whole volume.
    profile : {'np', '8x8'}, optional
        BM4D profile: 'np' is the normal profile (4^3 hard-thresholding and 5^3 Wiener
        blocks), '8x8' uses 8x8x1 blocks. 'lc' (not implemented) and 'refilter' /
        '8x8refilter' (they fail inside bm4d 4.2.5 with numpy 2) raise ValueError.
    num_threads : int, optional
        Number of threads BM4D uses. None lets bm4d decide (all cores).

    Returns
    -------
    denoised : ndarray of float32 of shape (X, Y, Z)
        Estimate of the noise-free magnitude, in the intensity unit of ``data``.

    Notes
    -----
    The average of N magnitude repetitions is not Rician: its mean is that of one
    repetition, ``E{z | nu, sigma}``, not that of a Rician with ``sigma / sqrt(N)``. Passing
    the average with the sigma estimated on it is exact at high SNR (Gaussian-like) but
    under-corrects the bias at low SNR: for N = 2 the transform's unbiased estimate exceeds
    ``nu`` by about 0.37, 0.15, 0.09 and 0.05 single-repetition sigma at ``nu`` = 1, 2, 3 and
    5 such sigma (against 0.55, 0.27, 0.17, 0.10 for the plain mean). Multi-coil
    (noncentral chi) magnitudes are likewise handled correctly only at high SNR.

    BM4D is deterministic with one thread; with several, the aggregation order can change
    the output in the last bits of float32 precision. bm4d itself takes about 46 s for a
    96^3 volume on 2 cores; the transforms add well under a second.
    """
    data, sigma, mask = _validate(data, sigma, mask, profile, num_threads)
    if sigma.ndim == 0 and sigma == 0:
        return data.astype(np.float32)

    import bm4d

    box = _bounding_box(mask, data.shape, _MIN_BOX[profile])
    sub_sigma = sigma[box] if sigma.ndim == 3 else sigma
    stabilised = rician_vst(data[box], sub_sigma)
    denoised = bm4d.bm4d(stabilised, 1.0, profile=_profile(profile, num_threads))
    estimate = rician_vst_inverse(np.asarray(denoised, dtype=np.float64), sub_sigma)

    out = data.astype(np.float32)
    if mask is None:
        out[box] = estimate
    else:
        region = out[box]
        region[mask[box]] = estimate[mask[box]]
    return out


def _validate(data, sigma, mask, profile, num_threads):
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"data must be a 3D array (X, Y, Z), got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ValueError(f"data must be real-valued magnitudes, got dtype {data.dtype}")
    if min(data.shape) < _MIN_SIZE:
        raise ValueError(f"every dimension of data must be at least {_MIN_SIZE}, got {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError(f"data contains {int((~np.isfinite(data)).sum())} non-finite values")

    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim == 0:
        if not (np.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be a finite float >= 0, got {float(sigma)}")
    elif sigma.shape != data.shape:
        raise ValueError(f"sigma map shape {sigma.shape} differs from data shape {data.shape}")
    elif not (np.isfinite(sigma).all() and (sigma > 0).all()):
        raise ValueError(f"a sigma map must be finite and > 0, its minimum is {np.nanmin(sigma)}")

    mask = as_mask(mask, data.shape)

    if isinstance(profile, str) and profile in _UNAVAILABLE:
        raise ValueError(f"profile {profile!r} {_UNAVAILABLE[profile]}; use one of {_PROFILES}")
    if profile not in _PROFILES:
        raise ValueError(f"profile must be one of {_PROFILES}, got {profile!r}")
    if profile == "8x8" and min(data.shape[:2]) < 8:
        raise ValueError(f"profile {profile!r} needs X and Y of at least 8, got {data.shape}")
    integer = isinstance(num_threads, (int, np.integer)) and not isinstance(num_threads, bool)
    if num_threads is not None and not (integer and num_threads >= 1):
        raise ValueError(f"num_threads must be None or an integer >= 1, got {num_threads!r}")
    return data, sigma, mask


def _bounding_box(mask, shape, min_size=(_MIN_SIZE,) * 3):
    """Slices of the mask's bounding box grown by the margin, at least ``min_size`` per side."""
    if mask is None:
        return tuple(slice(0, n) for n in shape)
    box = []
    for axis, n in enumerate(shape):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        start = max(int(present[0]) - _MARGIN, 0)
        stop = min(int(present[-1]) + 1 + _MARGIN, n)
        if stop - start < min_size[axis]:
            start = max(min(start, n - min_size[axis]), 0)
            stop = min(start + min_size[axis], n)
        box.append(slice(start, stop))
    return tuple(box)


def _profile(name, num_threads):
    from bm4d.profiles import BM4DProfile, BM4DProfile2D

    profile = {"np": BM4DProfile, "8x8": BM4DProfile2D}[name]()
    profile.num_threads = 0 if num_threads is None else int(num_threads)
    return profile
