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
# outside the mask can still be matched against blocks inside it. It is less than the
# two-stage reach (18, bm4d_rician's Notes): the box is not meant to reproduce a whole-volume
# run, whose reference-block grid (_PERIOD) differs from the box's anyway.
_MARGIN = 12
_MIN_SIZE = 5
# Smallest volume each profile accepts (its largest block side per axis).
_MIN_BOX = {"np": (5, 5, 5), "8x8": (8, 8, 5)}
# Slab starts are multiples of this from the box start. bm4d steps its reference blocks by 3
# voxels with a cycling shift (bm4d.get_shift_params), so its reference grid repeats every 3,
# 9 and 6 voxels along axes 0, 1 and 2 (measured, both stages, 'np' and '8x8'). A slab that
# starts off its axis's period gets another grid, and its result differs everywhere by up to
# half a sigma in the basic estimate, not only near its edges; 18 suits every axis.
_PERIOD = 18
# Default largest box (voxels) BM4D processes in one call. With split block extraction
# (`_profile`) bm4d 4.2.5 holds about 0.3 kB per voxel on 64 x 64 x 128 (0.9 kB without), and
# bm4d_rician about 30 B more. A 0.7 mm whole brain (Colin 27 at 259 x 310 x 259, box 230 x
# 281 x 235 = 1.5e7 voxels) runs whole with a peak of 3.9 GB, 2.8 GB (0.19 kB per box voxel)
# above the 1.1 GB of the process before the call (docs/benchmarks.md, "Peak memory at 0.7 mm
# (CPU)"); at 0.3 kB per voxel, 2e7 voxels would still stay under 8 GB.
MAX_VOXELS = 20_000_000
# Split block extraction (`_split_extraction`) from this many voxels (about 128^3) on.
_SPLIT_MIN_VOXELS = 2_000_000
_SPLIT_ABORTS = (16, 17)


def bm4d_rician(data, sigma, *, mask=None, profile="np", num_threads=None,
                max_voxels=MAX_VOXELS):
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
        (the block-matching reach of one stage), and voxels outside the mask are returned
        unchanged. BM4D's reference-block grid starts at the box, so the estimates can differ
        from those of a whole-volume run everywhere, as those of a shifted volume would.
        None denoises the whole volume.
    profile : {'np', '8x8'}, optional
        BM4D profile: 'np' is the normal profile (4^3 hard-thresholding and 5^3 Wiener
        blocks), '8x8' uses 8x8x1 blocks. 'lc' (not implemented) and 'refilter' /
        '8x8refilter' (they fail inside bm4d 4.2.5 with numpy 2) raise ValueError.
    num_threads : int, optional
        Number of threads BM4D uses. None lets bm4d decide (all cores).
    max_voxels : int or None, optional
        Largest region BM4D processes in one call, which bounds its memory (0.2-0.3 kB per
        voxel). A bounding box (mask box plus margin) larger than this is processed in
        overlapping slabs along its longest axis: each slab is its share of the box (its
        *core*, a multiple of 18 slices) plus a margin on each side, and only the core is
        kept; the result is that of the whole box (see Notes). The margin is 18 slices ('np';
        36 for '8x8' along the first two axes), so a slab needs at least ``(18 + 2 * 18) *
        cross-section`` voxels. None: always the whole box. The default (2e7) runs a 0.7 mm
        whole brain whole (peak 3.9 GB, measured).

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

    Slabs give the whole-box result (bit for bit with one thread, measured): every slab
    starts at a multiple of 18 from the box start, a period of BM4D's reference-block grid
    along every axis, so its reference blocks are those of the whole box; a voxel's estimate
    depends on data at most ``2 * 7 + b - 1`` voxels away (its block, of side ``b``, is
    matched within the 7-voxel search half-window of a reference block, whose candidates lie
    within 7 more), 18 for 'np', which the margin covers; the basic (hard-thresholding)
    estimate is assembled over the whole box before the Wiener stage uses it as its pilot,
    so a slab's margin sees its neighbours' basic estimate. Each slab costs two margins of
    extra slices; peak memory is that of the largest slab plus a few copies of the box in
    float64 (8 bytes per voxel each).
    """
    data, sigma, mask = _validate(data, sigma, mask, profile, num_threads)
    max_voxels = _check_max_voxels(max_voxels)
    if sigma.ndim == 0 and sigma == 0:
        return data.astype(np.float32)

    box = _bounding_box(mask, data.shape, _MIN_BOX[profile])
    sub_sigma = sigma[box] if sigma.ndim == 3 else sigma
    stabilised = rician_vst(data[box], sub_sigma)
    denoised = _bm4d_slabs(stabilised, profile, num_threads, max_voxels)
    del stabilised
    estimate = rician_vst_inverse(denoised, sub_sigma)
    del denoised

    out = data.astype(np.float32)
    if mask is None:
        out[box] = estimate
    else:
        region = out[box]
        region[mask[box]] = estimate[mask[box]]
    return out


def _check_max_voxels(max_voxels):
    if max_voxels is None:
        return None
    integer = isinstance(max_voxels, (int, np.integer)) and not isinstance(max_voxels, bool)
    if not (integer and max_voxels >= 1):
        raise ValueError(f"max_voxels must be None or a positive integer, got {max_voxels!r}")
    return int(max_voxels)


def _slabs(shape, max_voxels, profile):
    """Slabs of a box of ``shape``: (axis, [(slab slice, core slice within the slab), ...]).

    One slab (the whole box) when it has at most ``max_voxels`` voxels. Otherwise slabs along
    the longest axis: cores of equal thickness (a multiple of `_PERIOD`, the last one
    shorter) that tile the axis, each grown by `_slab_margin` on both sides (clipped to the
    box), so that no slab has more than ``max_voxels`` voxels and every slab starts at a
    multiple of `_PERIOD`.
    """
    shape = tuple(int(n) for n in shape)
    size = int(np.prod(shape))
    if max_voxels is None or size <= max_voxels:
        return 0, [(slice(0, shape[0]), slice(0, shape[0]))]
    axis = int(np.argmax(shape))
    n = shape[axis]
    cross = size // n
    margin = _slab_margin(profile, axis)
    core = (max_voxels // cross - 2 * margin) // _PERIOD * _PERIOD
    if core < _PERIOD:
        thinnest = _PERIOD + 2 * margin
        raise ValueError(
            f"max_voxels={max_voxels} is too small for a box of shape {shape}: a slab along "
            f"axis {axis} needs at least {thinnest * cross} voxels ({thinnest} slices of "
            f"{cross})")
    count = -(-n // core)
    core = -(-n // (count * _PERIOD)) * _PERIOD  # as many slabs, balanced
    slabs = []
    for start in range(0, n, core):
        stop = min(start + core, n)
        lo, hi = max(start - margin, 0), min(stop + margin, n)
        slabs.append((slice(lo, hi), slice(start - lo, stop - lo)))
    return axis, slabs


def _slab_margin(profile, axis):
    """Reach of a voxel's BM4D estimate along ``axis``, rounded up to a multiple of `_PERIOD`.

    Twice the search half-window plus the block side minus one, the larger of the two stages.
    """
    options = _profile(profile, None)
    reach = max(2 * window[axis] + block[axis] - 1 for window, block in (
        (options.search_window_ht, options.bs_ht),
        (options.search_window_wiener, options.bs_wiener)))
    return -(-reach // _PERIOD) * _PERIOD


def _bm4d_slabs(stabilised, profile, num_threads, max_voxels):
    """bm4d(stabilised, 1) as float64, slab by slab when the box exceeds ``max_voxels``.

    Slab mode runs the two stages separately (see `bm4d_rician`, Notes). bm4d caps the
    block-matching distance at ``tau * range**2``, with the range (max - min) of the input it
    is given (of the pilot in the Wiener stage); each slab's ``tau`` is rescaled so that the
    cap is that of the whole box.
    """
    import bm4d

    axis, slabs = _slabs(stabilised.shape, max_voxels, profile)
    if len(slabs) == 1:
        options = _profile(profile, num_threads, stabilised.shape)
        return np.asarray(bm4d.bm4d(stabilised, 1.0, profile=options), dtype=np.float64)

    def run(pilot):
        """Hard thresholding (``pilot`` None) or Wiener filtering with ``pilot``, slab by slab."""
        whole_range = float(np.ptp(stabilised if pilot is None else pilot))
        out = np.empty(stabilised.shape, dtype=np.float64)
        for slab, core in slabs:
            piece = np.ascontiguousarray(stabilised[_along(axis, slab)])
            # The array whose range sets the matching cap: the input, or the pilot.
            guide = piece if pilot is None else np.ascontiguousarray(pilot[_along(axis, slab)])
            slab_range = float(np.ptp(guide))
            scale = (whole_range / slab_range) ** 2 if slab_range > 0 else 1.0
            options = _profile(profile, num_threads, piece.shape)
            if pilot is None:
                options.tau_match *= scale
                stage = bm4d.BM4DStages.HARD_THRESHOLDING
            else:
                options.tau_match_wiener *= scale
                stage = guide
            result = bm4d.bm4d(piece, 1.0, profile=options, stage_arg=stage)
            written = slice(slab.start + core.start, slab.start + core.stop)
            out[_along(axis, written)] = result[_along(axis, core)]
        return out

    return run(run(None))


def _along(axis, index):
    """Index tuple that applies the slice ``index`` to ``axis`` of a 3D array."""
    return tuple(index if a == axis else slice(None) for a in range(3))


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


def _profile(name, num_threads, shape=None):
    """bm4d's profile object for ``name``; ``shape`` (of the array it will filter) enables
    split block extraction where that is safe and pays (see `_split_extraction`)."""
    from bm4d.profiles import BM4DProfile, BM4DProfile2D

    profile = {"np": BM4DProfile, "8x8": BM4DProfile2D}[name]()
    profile.num_threads = 0 if num_threads is None else int(num_threads)
    if shape is not None and _split_extraction(shape):
        profile.split_block_extraction = (False, False, True)
    return profile


def _split_extraction(shape):
    """Whether bm4d should extract blocks slice by slice along the third axis for ``shape``.

    Split extraction gives the same result (bit for bit, measured) at a third of the memory
    (0.32 instead of 0.91 kB per voxel at 64 x 64 x 128) and no slower. It is used only on
    arrays of at least `_SPLIT_MIN_VOXELS` voxels, where the memory matters, and never with
    16 or 17 slices along the third axis: bm4d 4.2.5 then aborts the process on an assertion
    (``collHTWie->getHasData()``, BM4D.h:63; found for 20 x 20, 40 x 40 and 64 x 64 cross
    sections, every other depth from 5 to 60 passed).
    """
    return int(np.prod(shape)) >= _SPLIT_MIN_VOXELS and shape[2] not in _SPLIT_ABORTS
