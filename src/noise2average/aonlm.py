"""Adaptive optimised non-local means (AONLM) for magnitude MR volumes.

A port of the method of Manjon, Coupe, Marti-Bonmati, Collins and Robles, "Adaptive non-local
means denoising of MR images with spatially varying noise levels", J Magn Reson Imaging
2010;31:192-203, built on the blockwise optimised non-local means of Coupe et al., "An
optimized blockwise nonlocal means denoising filter for 3-D magnetic resonance images", IEEE
Trans Med Imaging 2008;27:425-441. Where the papers leave details open, the authors' C code
(MABONLM3D 2.0, as redistributed in naonlm3d) was read and followed; the code here is new.

Algorithm (one pass, patch radius ``f``, search radius ``v``)
------------------------------------------------------------
1. Local statistics of the noisy volume: mean and unbiased variance over 3x3x3.
2. Blocks of ``(2f+1)^3`` voxels centred on every second voxel along each axis (so they
   overlap and cover the volume). For each block centre ``i``, every voxel ``j != i`` of the
   ``(2v+1)^3`` search window is a candidate; it is preselected when the ratio of local means
   lies in ``(0.95, 1/0.95)`` and the ratio of local variances in ``(0.5, 2)`` (Coupe 2008).
   Blocks whose centre is not positive, or whose local mean or variance is numerically zero,
   are not filtered (they keep their own values), as in the authors' code.
3. Adaptive smoothing parameter (Manjon 2010): ``h_i^2`` is the smallest *mean-subtracted*
   patch distance among the preselected candidates (each voxel minus its own 3x3x3 local
   mean, as in the authors' code; mean squared difference over the patch).
4. Weights ``w_ij = exp(-d_ij / h_i^2)`` with ``d_ij`` the mean squared difference of the two
   patches, and ``w_ij = 0`` where ``d_ij > 3 h_i^2``. The block itself gets the largest
   weight of its candidates (1 if there is none).
5. The block estimate is the weighted mean of the candidate blocks (of the squared intensities
   when ``rician=True``); each voxel's estimate is the mean of the estimates of the blocks that
   cover it.
6. Rician bias (``rician=True``): the minimum-distance map (each voxel: the mean ``h^2`` of the
   blocks covering it) is smoothed by averaging its positive values over 11x11x11 (three
   separable passes, as the authors' ``Regularize``); it estimates the local variance of the
   magnitude noise. Koay's correction factor ``xi(SNR)`` (Koay and Basser, J Magn Reson
   2006), with the local SNR taken as local mean over the square root of the smoothed map,
   turns it into a Gaussian variance ``sigma_l^2``, and the estimate is
   ``sqrt(max(E[M^2] - 2 sigma_l^2, 0))``.

Full AONLM runs the pass with patch radius 1 and with patch radius 2 (search radius 3) and
fuses the two by adaptive soft wavelet coefficient mixing (Manjon 2010): the low band from the
small-patch result, each detail band a sigmoid mix of the two results driven by the noisy
volume's coefficient against a threshold from ``sigma``. This re-implements
:func:`dipy.denoise.adaptive_soft_matching.adaptive_soft_matching` (same filters and
formulas; the same output to rounding when dipy pads every axis by at least 8 voxels) but
zero-pads each axis by a fixed margin instead of to the next power of two, and transforms
the difference of the two results instead of each (0.2 s instead of 4.9 s at 145x174x145 on
one core).

Deviations from the authors' C code, all deliberate: the preselection is the published
conjunction of the mean and variance tests (in naonlm3d's version operator precedence lets
the mean test alone pass, and an inverted-intensity test is added); the centre weight is reset for
every block (the C code carries it over between blocks); the bias map is the mean over the
covering blocks rather than whichever thread wrote last, and voxels without a minimum
distance of their own get the smoothed value of their neighbours; "numerically zero" is
relative to the data's maximum (the C code uses 1e-5 absolute, and h^2 = 1 where the minimum
distance is 0; here a floor of 1e-12 max^2).

Implementation
--------------
The kernel is offset-major rather than block-major: the blocks are grouped in tiles (6 x 8
blocks across the first two axes, the whole third axis), and for each search offset the
squared differences between the image and its shifted copy are summed over all patches of a
tile by separable box sums; weights are then formed per block, and the weighted blocks are
spread back onto the voxels by the adjoint box sums. The arithmetic is that of the
block-by-block algorithm (the tests compare with a direct transcription) in float32, at a
cost independent of the patch size per offset. The patch radii run in one sweep over the
tiles (tiled for the largest radius): the offsets, the preselection and the squared
differences are shared, the box sums, weights and estimates are per radius, and each radius'
result is bit for bit that of its pass alone. The rows of a tile's working arrays are
padded to a multiple of 16 float32, so that the inner loops run in whole vectors. Tiles of
one of four colours never write to the same voxel, so each colour runs in parallel (numba
``prange``) and the result does not depend on the number of threads; within a colour the
tiles are dealt to the threads by their estimated cost, so that the static schedule is
balanced. The large arrays are allocated by numpy, which asks the operating system for
transparent huge pages (numba's allocator does not; the tile kernel, with its strided reads,
ran markedly slower on inputs in 4 KiB pages).
"""

from __future__ import annotations

import math
import numbers
import warnings

import numba
import numpy as np
from numba import njit, prange
from scipy import special

__all__ = ["aonlm", "koay_correction_factor"]

_MEAN_RATIO = 0.95  # preselection: mean ratio in (0.95, 1/0.95)  (Coupe 2008)
_VAR_RATIO = 0.5  # preselection: variance ratio in (0.5, 2)     (Coupe 2008)
_BIAS_SMOOTH_RADIUS = 5  # bias map smoothed over 11^3                (Manjon 2010)
_REL_EPS = 1e-6  # "numerically zero", relative to the data's maximum
# The tile kernel's rows are padded to a multiple of 16 float32 (one AVX-512 vector, two
# AVX2 ones), so that its inner loops run without a scalar remainder.
_LANES = 16


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def aonlm(
    data,
    *,
    mask=None,
    sigma=None,
    rician=True,
    search_radius=3,
    patch_radii=(1, 2),
    num_threads=None,
):
    """Denoise a 3D magnitude volume with adaptive optimised non-local means (AONLM).

    Parameters
    ----------
    data : ndarray of shape (X, Y, Z)
        Noisy volume, real-valued and finite, in arbitrary intensity units. With
        ``rician=True`` it must be non-negative (magnitude data). Only voxels whose local
        3x3x3 mean is positive are filtered, as in the published method.
    mask : ndarray of shape (X, Y, Z), optional
        Voxels where the output is computed (bool, or 0/1). Voxels outside it are returned
        unchanged; patches outside it may still serve as similar patches. None: all voxels.
    sigma : float or ndarray of shape (X, Y, Z), optional
        Standard deviation of the Gaussian noise of each real channel (data units), as
        estimated by the caller *from the data* (a global value or a per-voxel map). AONLM
        itself does not need it: the smoothing parameter and the Rician bias are estimated
        locally from the data (that is the method). ``sigma`` is used (1) as the noise level
        of the wavelet mixing of the two patch radii, a map being reduced to its
        root-mean-square over the mask, and (2) as a pass-through mask: voxels where
        ``sigma == 0`` are returned unchanged, so ``sigma=0`` returns the input unchanged.
        None: the mixing uses AONLM's own local noise estimate (the Koay-corrected, smoothed
        minimum-distance map of the first patch radius), its root-mean-square over the
        filtered voxels.
    rician : bool, optional
        True: average squared intensities and subtract the locally estimated Rician bias
        (magnitude data). False: plain weighted average (Gaussian noise).
    search_radius : int, optional
        Radius of the cubic search window, in voxels (3 gives 7x7x7).
    patch_radii : int or sequence of one or two ints, optional
        Patch (block) radius in voxels for each pass. Two values ``(small, large)`` run both
        and mix them in the wavelet domain (the full AONLM: low band from ``small``); one
        value runs a single pass without mixing.
    num_threads : int, optional
        Number of threads for the numba kernels (restored afterwards). None: numba's default
        (all cores, or ``NUMBA_NUM_THREADS``). The result does not depend on it.

    Returns
    -------
    denoised : ndarray of shape (X, Y, Z), float32
        The denoised volume, in the units of ``data``.

    Raises
    ------
    ValueError
        If ``data`` is not a finite real 3D array (or negative with ``rician=True``), if
        ``mask`` or a ``sigma`` map does not match its shape, if ``sigma`` is negative or not
        finite, or if a radius or ``num_threads`` is not a positive integer.

    Notes
    -----
    The mixed output is clipped at 0 with ``rician=True`` (the wavelet mixing can ring
    slightly negative next to zero background). In pure-noise background the Rician
    correction lowers the Rayleigh floor only partly, because the local SNR that enters
    Koay's factor is computed from the biased local mean (as in the authors' code).

    Cost: about ``(2 * search_radius + 1)^3`` separable passes over the volume per patch
    radius, nearly independent of the patch radius (the squared differences are shared by
    the radii); about 6 s for 145x174x145 on one core of an AMD EPYC (Zen 4), up to 1.7x
    that on slower hosts, and 0.4 GB of working memory (docs/benchmarks.md). See the module
    docstring for the algorithm, its sources and the deliberate deviations from the authors'
    code.

    References
    ----------
    Manjon JV, Coupe P, Marti-Bonmati L, Collins DL, Robles M. Adaptive non-local means
    denoising of MR images with spatially varying noise levels. J Magn Reson Imaging
    2010;31:192-203.

    Coupe P, Yger P, Prima S, Hellier P, Kervrann C, Barillot C. An optimized blockwise
    nonlocal means denoising filter for 3-D magnetic resonance images. IEEE Trans Med Imaging
    2008;27:425-441.

    Koay CG, Basser PJ. Analytically exact correction scheme for signal extraction from
    noisy magnitude MR signals. J Magn Reson 2006;179:317-322.
    """
    arr, mask_b, sigma_v, radii, v, nthreads = _check_inputs(
        data, mask, sigma, rician, search_radius, patch_radii, num_threads
    )
    out = arr.astype(np.float32, copy=True)
    if isinstance(sigma_v, np.ndarray):
        mask_b = mask_b & (sigma_v > 0)
    elif sigma_v == 0.0:
        return out
    if not mask_b.any():
        return out
    if isinstance(sigma_v, np.ndarray):
        s_mix = float(np.sqrt(np.mean(sigma_v[mask_b] ** 2)))
    else:
        s_mix = sigma_v

    # Work on the bounding box of the mask. A voxel's estimate reads the data up to
    # 2 f + v + 1 voxels away (block, candidate, patch, local mean) and its bias up to
    # 5 more (smoothing), so with that margin the passes are unaffected by the crop.
    scale = float(max(arr.max(), -arr.min()))  # max |arr|, without a temporary
    box = _bounding_box(mask_b, 2 * max(radii) + v + 1 + _BIAS_SMOOTH_RADIUS)
    # Contiguous copies: the kernels read the box through flat views.
    arr_b, mask_bb = np.ascontiguousarray(arr[box]), np.ascontiguousarray(mask_b[box])

    previous = numba.get_num_threads()
    numba.set_num_threads(nthreads)
    try:
        stats = _local_statistics(arr_b, scale)
        passes = _aonlm_passes(arr_b, mask_bb, stats, radii, v, rician)
        results = [fima for fima, _ in passes]
        noise_var = passes[0][1]
        if len(results) == 1:
            fused = results[0]
        else:
            if s_mix is None:
                sel = mask_bb & (noise_var > 0)
                s_mix = float(np.sqrt(np.mean(noise_var[sel]))) if sel.any() else 0.0
            fused = _wavelet_mix(arr_b, results[0], results[1], s_mix)
            if rician:
                np.maximum(fused, 0.0, out=fused)
    finally:
        numba.set_num_threads(previous)
    out_b = out[box]
    np.copyto(out_b, fused, where=mask_bb)
    return out


def _bounding_box(mask, margin):
    """Slices of the bounding box of ``mask``, widened by ``margin`` voxels per side.

    Each slice starts at an even index, so that the grid of block centres (every second
    voxel) is the same in the box as in the volume.
    """
    box = []
    for axis in range(3):
        hit = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        start = max(hit[0] - margin, 0) // 2 * 2
        box.append(slice(start, min(hit[-1] + 1 + margin, mask.shape[axis])))
    return tuple(box)


def koay_correction_factor(snr):
    """Koay's correction factor xi(theta) for the variance of Rician magnitude data.

    ``sigma_gauss^2 = sigma_magnitude^2 / xi(theta)`` with ``theta = A / sigma_gauss`` (Koay
    and Basser, J Magn Reson 2006;179:317-322, eq. 18):
    ``xi = 2 + theta^2 - pi/8 exp(-theta^2/2) [(2 + theta^2) I0(theta^2/4) +
    theta^2 I1(theta^2/4)]^2``.

    Parameters
    ----------
    snr : array_like
        Signal-to-noise ratio theta (dimensionless, >= 0).

    Returns
    -------
    xi : ndarray
        Correction factor in ``[2 - pi/2, 1]`` (about 0.429 at theta = 0, tends to 1).
    """
    t2 = np.square(np.asarray(snr, dtype=np.float64))
    q = t2 / 4.0
    # exp(-theta^2/2) = exp(-q)^2, folded into the exponentially scaled Bessel functions.
    bracket = (2.0 + t2) * special.i0e(q) + t2 * special.i1e(q)
    xi = 2.0 + t2 - (np.pi / 8.0) * bracket * bracket
    # Cancellation makes the closed form inaccurate at high SNR, where xi -> 1.
    return np.clip(np.where(np.isfinite(xi), xi, 1.0), 2.0 - np.pi / 2.0, 1.0)


_KOAY_STEP = 0.002
_KOAY_MAX = 50.0
_KOAY_TABLE = []


def _koay_bias_variance(smooth, mean, out):
    """Gaussian noise variance from the smoothed minimum-distance map (Koay's factor).

    ``smooth / xi(mean / sqrt(smooth))`` where ``smooth > 0``, 0 elsewhere; ``xi`` by linear
    interpolation in a table of :func:`koay_correction_factor` below SNR 50 and its
    asymptotic form ``1 - 1 / (2 SNR^2)`` above (relative error below 1e-5). Written to
    ``out`` (float64, C-contiguous, of ``smooth``'s shape; it may be ``smooth``).
    """
    if not _KOAY_TABLE:
        grid = np.arange(0.0, _KOAY_MAX + 2 * _KOAY_STEP, _KOAY_STEP)
        _KOAY_TABLE.append(koay_correction_factor(grid))
    _koay_kernel(smooth.ravel(), mean.ravel(), _KOAY_TABLE[0], out.ravel())


@njit(parallel=True, cache=True, nogil=True)
def _koay_kernel(smooth, mean, table, out):
    inv_step = 1.0 / _KOAY_STEP
    for i in prange(smooth.shape[0]):
        s = smooth[i]
        if s <= 0.0:
            out[i] = 0.0
            continue
        snr = max(mean[i] / math.sqrt(s), 0.0)
        if snr >= _KOAY_MAX:
            xi = 1.0 - 0.5 / (snr * snr)  # asymptotic form, error < 1e-7 here
        else:
            t = snr * inv_step
            j = int(t)
            frac = t - j
            xi = table[j] * (1.0 - frac) + table[j + 1] * frac
        out[i] = s / xi


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_inputs(data, mask, sigma, rician, search_radius, patch_radii, num_threads):
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ValueError(f"data must be a 3D array (X, Y, Z), got shape {arr.shape}")
    if min(arr.shape) < 1:
        raise ValueError(f"data must not be empty, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"data must be real-valued, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"data contains {int(np.sum(~np.isfinite(arr)))} non-finite values")
    if rician and arr.min() < 0:
        raise ValueError(
            f"data must be non-negative magnitude data with rician=True, got min {arr.min()!r}"
        )

    if mask is None:
        mask_b = np.ones(arr.shape, dtype=bool)
    else:
        m = np.asarray(mask)
        if m.shape != arr.shape:
            raise ValueError(f"mask shape {m.shape} does not match data shape {arr.shape}")
        mask_b = m.astype(bool)

    if sigma is not None:
        if isinstance(sigma, np.ndarray) and sigma.ndim > 0:
            if sigma.shape != arr.shape:
                raise ValueError(
                    f"sigma map shape {sigma.shape} does not match data shape {arr.shape}"
                )
            sigma = sigma.astype(np.float64)
            if not np.all(np.isfinite(sigma)) or sigma.min() < 0:
                raise ValueError("sigma map must be finite and non-negative")
        else:
            try:
                sigma = float(sigma)
            except (TypeError, ValueError):
                raise ValueError(
                    f"sigma must be None, a number or a 3D array, got {sigma!r}"
                ) from None
            if not math.isfinite(sigma) or sigma < 0:
                raise ValueError(f"sigma must be finite and non-negative, got {sigma!r}")

    v = _positive_int(search_radius, "search_radius")
    radii = (patch_radii,) if isinstance(patch_radii, numbers.Integral) else patch_radii
    try:
        radii = tuple(radii)
    except TypeError:
        raise ValueError(
            f"patch_radii must be an int or a sequence of one or two ints, got {patch_radii!r}"
        ) from None
    if len(radii) not in (1, 2):
        raise ValueError(f"patch_radii must hold one or two radii, got {patch_radii!r}")
    radii = tuple(_positive_int(r, "patch_radii") for r in radii)

    max_threads = numba.config.NUMBA_NUM_THREADS
    if num_threads is None:
        nthreads = max_threads
    else:
        nthreads = _positive_int(num_threads, "num_threads")
        if nthreads > max_threads:
            warnings.warn(
                f"num_threads={nthreads} exceeds NUMBA_NUM_THREADS={max_threads}; "
                f"using {max_threads}",
                stacklevel=3,
            )
            nthreads = max_threads
    return arr, mask_b, sigma, radii, v, nthreads


# --------------------------------------------------------------------------------------
# One AONLM pass
# --------------------------------------------------------------------------------------


def _local_statistics(arr, scale):
    """3x3x3 local mean and unbiased variance, their parity-split copies, and thresholds.

    ``scale`` (the data's maximum magnitude) sets what counts as numerically zero. The
    means are those of ``scipy.ndimage.uniform_filter(..., size=3, mode="reflect")`` (the
    same separable running sums, axis by axis), computed in two fused numba passes.
    """
    eps_mean = _REL_EPS * scale
    # Relative to the data's squared scale: float64 cancellation in var is ~1e-16 scale^2.
    eps_var = (_REL_EPS * scale) ** 2
    h2_floor = 1e-12 * scale * scale if scale > 0 else 1e-30
    # Voxel 2 b + p (p in {0, 1} per axis) sits at [p..., b...] of the parity-split copies,
    # so the neighbours of a row of block centres at one offset form a contiguous row.
    half = tuple((n + 1) // 2 for n in arr.shape)
    pmean = np.ones((2, 2, 2) + half, dtype=np.float32)
    pvar = np.ones((2, 2, 2) + half, dtype=np.float32)
    pvalid = np.zeros((2, 2, 2) + half, dtype=np.bool_)
    mean = np.empty(arr.shape, dtype=np.float64)
    m0 = np.empty(arr.shape, dtype=np.float64)
    q0 = np.empty(arr.shape, dtype=np.float64)
    _box3_axis0(arr, m0, q0)
    _box3_planes(arr, m0, q0, eps_mean, eps_var, mean, pmean, pvar, pvalid)
    return {
        "mean": mean,
        "pmean": pmean,
        "pvar": pvar,
        "pvalid": pvalid,
        "h2_floor": h2_floor,
    }


@njit(parallel=True, cache=True, nogil=True)
def _box3_axis0(x, m, q):
    """3-point means of ``x`` and ``x * x`` along axis 0 (reflected borders) into ``m``, ``q``.

    The running sum of ``scipy.ndimage.uniform_filter1d`` (sum of the first window, then
    add the entering and subtract the leaving sample, divide each sum by 3), vectorised
    over the last axis; all arrays float64 of shape (X, Y, Z).
    """
    n0, n1, n2 = x.shape
    for j in prange(n1):
        s = np.zeros(n2)
        t = np.zeros(n2)
        for i in range(-1, 2):
            row = x[_reflect(i, n0), j]
            for k in range(n2):
                s[k] += row[k]
                t[k] += row[k] * row[k]
        for k in range(n2):
            m[0, j, k] = s[k] / 3.0
            q[0, j, k] = t[k] / 3.0
        for i in range(1, n0):
            hi = x[_reflect(i + 1, n0), j]
            lo = x[_reflect(i - 2, n0), j]
            for k in range(n2):
                s[k] += hi[k] - lo[k]
                t[k] += hi[k] * hi[k] - lo[k] * lo[k]
                m[i, j, k] = s[k] / 3.0
                q[i, j, k] = t[k] / 3.0


@njit(cache=True, nogil=True)
def _box3_rows(x, out):
    """3-point running means along axis 0 of the 2D ``x`` into ``out`` (reflected borders)."""
    n, nb = x.shape
    s = np.zeros(nb)
    for i in range(-1, 2):
        row = x[_reflect(i, n)]
        for k in range(nb):
            s[k] += row[k]
    for k in range(nb):
        out[0, k] = s[k] / 3.0
    for i in range(1, n):
        hi = x[_reflect(i + 1, n)]
        lo = x[_reflect(i - 2, n)]
        for k in range(nb):
            s[k] += hi[k] - lo[k]
            out[i, k] = s[k] / 3.0


@njit(cache=True, nogil=True)
def _box3_line(x, out):
    """3-point running means along the 1D ``x`` into ``out`` (reflected borders)."""
    n = x.shape[0]
    s = 0.0
    for i in range(-1, 2):
        s += x[_reflect(i, n)]
    out[0] = s / 3.0
    for i in range(1, n):
        s += x[_reflect(i + 1, n)] - x[_reflect(i - 2, n)]
        out[i] = s / 3.0


@njit(parallel=True, cache=True, nogil=True)
def _box3_planes(arr, m0, q0, eps_mean, eps_var, mean, pmean, pvar, pvalid):
    """Finish the 3x3x3 means along axes 1 and 2, plane by plane, and write the statistics.

    ``m0``, ``q0``: the axis-0 means of ``arr`` and ``arr**2``. Writes the local ``mean``
    (float64, ``arr``'s shape) and, parity-split, the mean, the unbiased variance
    ``max(E[x^2] - E[x]^2, 0) * 27/26`` and the filterable flag (positive voxel, mean above
    ``eps_mean``, variance above ``eps_var``).
    """
    n0, n1, n2 = arr.shape
    for i in prange(n0):
        m1 = np.empty((n1, n2))
        q1 = np.empty((n1, n2))
        _box3_rows(m0[i], m1)
        _box3_rows(q0[i], q1)
        mrow = np.empty(n2)
        qrow = np.empty(n2)
        for j in range(n1):
            _box3_line(m1[j], mrow)
            _box3_line(q1[j], qrow)
            mean[i, j] = mrow
            a = arr[i, j]
            for k in range(n2):
                mu = mrow[k]
                var = max(qrow[k] - mu * mu, 0.0) * (27.0 / 26.0)
                p = (i % 2, j % 2, k % 2, i // 2, j // 2, k // 2)
                pmean[p] = mu
                pvar[p] = var
                pvalid[p] = (a[k] > 0.0) and (mu > eps_mean) and (var > eps_var)


def _block_support(mask, f):
    """Blocks (centres on every second voxel) whose (2f+1)^3 support meets ``mask``.

    ``maximum_filter(mask, 2 f + 1, mode="constant")[::2, ::2, ::2]``, computed axis by axis
    on the decimated grid. Returns a C-contiguous bool array of shape ``ceil(n / 2)`` per
    axis.
    """
    out = np.asarray(mask, dtype=np.bool_)
    for axis in range(3):
        h = (out.shape[axis] + 1) // 2
        widths = [(f, f) if a == axis else (0, 0) for a in range(3)]
        padded = np.pad(out, widths)
        # Block b holds padded indices 2 b .. 2 b + 2 f along the axis.
        take = [slice(None)] * 3
        take[axis] = slice(0, 2 * h - 1, 2)
        res = padded[tuple(take)].copy()
        for j in range(1, 2 * f + 1):
            take[axis] = slice(j, j + 2 * h - 1, 2)
            res |= padded[tuple(take)]
        out = res
    return np.ascontiguousarray(out)


def _padded_copies(arr, mean, pad, rician):
    """The kernel's inputs: image, mean-subtracted image and averaged quantity, float32.

    Each is ``arr`` (resp. ``arr - mean``, ``arr**2`` with ``rician``, else ``arr``)
    mirror-padded by ``pad`` voxels per side (``np.pad(..., mode="symmetric")``) and
    parity-split along z: ``out[x, y, p, k]`` holds padded column ``2 k + p`` (zero past
    the end), shape ``(X + 2 pad, Y + 2 pad, 2, ceil((Z + 2 pad) / 2) + _LANES)``: the
    kernel's loops over padded rows read up to ``_LANES - 1`` columns past a row's end.
    """
    half = (arr.shape[2] + 2 * pad + 1) // 2
    shape = tuple(n + 2 * pad for n in arr.shape[:2]) + (2, half + _LANES)
    # Allocated by numpy, which asks for transparent huge pages (numba's allocator does
    # not): the kernel's strided reads ran markedly slower on 4 KiB pages.
    qimg, qres, qacc = (np.zeros(shape, dtype=np.float32) for _ in range(3))
    _fill_padded_copies(arr, mean, pad, rician, qimg, qres, qacc)
    return qimg, qres, qacc


@njit(parallel=True, cache=True, nogil=True)
def _fill_padded_copies(arr, mean, pad, rician, qimg, qres, qacc):
    """Fill the zero-initialised outputs of :func:`_padded_copies`."""
    n0, n1, n2 = arr.shape
    m0, m1, m2 = n0 + 2 * pad, n1 + 2 * pad, n2 + 2 * pad
    zsrc = np.empty(m2, dtype=np.int64)
    for k in range(m2):
        zsrc[k] = _reflect(k - pad, n2)
    for i in prange(m0):
        si = _reflect(i - pad, n0)
        for j in range(m1):
            sj = _reflect(j - pad, n1)
            a = arr[si, sj]
            mu = mean[si, sj]
            for par in range(2):
                gi = qimg[i, j, par]
                gr = qres[i, j, par]
                ga = qacc[i, j, par]
                for k in range((m2 - par + 1) // 2):
                    z = zsrc[2 * k + par]
                    p = np.float32(a[z])
                    gi[k] = p
                    gr[k] = np.float32(a[z] - mu[z])
                    ga[k] = p * p if rician else p


def _aonlm_passes(arr, mask_b, stats, radii, v, rician):
    """The blockwise passes for the patch radii ``radii``, in one sweep over the tiles.

    The passes share the search offsets, the preselection and the squared differences of
    the image and its shifted copies; only the box sums, weights and estimates are per
    radius (each computed exactly as a pass of its own). Returns, for each radius in the
    order given, the estimate (float64, ``arr`` where no block covers a voxel) and the
    local Gaussian noise variance (Koay-corrected smoothed minimum-distance map;
    uncorrected with ``rician=False``).
    """
    mean = stats["mean"]
    shape = arr.shape
    order = sorted(range(len(radii)), key=lambda i: radii[i])
    rs = np.asarray([radii[i] for i in order], dtype=np.int64)
    fm = int(rs[-1])
    pad = v + fm
    # Image, mean-subtracted image and the averaged quantity, mirror-padded for the patches
    # and search windows at the borders, parity-split along z for the kernel.
    qimg, qres, qacc = _padded_copies(arr, mean, pad, rician)

    # Blocks whose (2f+1)^3 support meets the mask, on the grid of every second voxel; the
    # largest radius has the most, and its tiles serve all radii.
    active = np.stack([_block_support(mask_b, int(f)) for f in rs])
    nworkers = numba.get_num_threads()
    tiles, tile_start = _tiles(active[-1], fm, nworkers)
    # Search offsets, the block itself first.
    r = np.arange(-v, v + 1)
    offs = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    offs = np.concatenate([np.zeros((1, 3), np.int64), offs[np.any(offs != 0, axis=1)]])
    offs = np.ascontiguousarray(offs, dtype=np.int64)

    nr = rs.size
    est = np.zeros((nr,) + shape, dtype=np.float64)  # sum of the covering blocks' estimates
    # The counts are exact in float32 (integers below 2^24) and take half the fresh memory,
    # whose first touch is a large part of the call's system time.
    cnt = np.zeros((nr,) + shape, dtype=np.float32)  # number of covering blocks
    dsum = np.zeros((nr,) + shape, dtype=np.float64)  # sum of their minimum distances
    dcnt = np.zeros((nr,) + shape, dtype=np.float32)  # number of those that have one
    for c in range(4):  # one parallel launch per colour
        _blockwise_kernel(
            qimg, qres, qacc, stats["pmean"], stats["pvar"], stats["pvalid"], active,
            tiles, tile_start[c * nworkers : (c + 1) * nworkers + 1], rs, pad, offs,
            np.float32(stats["h2_floor"]), est, cnt, dsum, dcnt,
        )  # fmt: skip
    del qimg, qres, qacc

    results = [None] * nr
    work = (np.empty(shape), np.empty(shape))  # the smoothing's passes, shared by the radii
    for k, i in enumerate(order):
        # In place: est becomes the estimate, dsum the minimum-distance map and then the
        # local noise variance.
        _normalise_pass(
            arr.ravel(), est[k].ravel(), cnt[k].ravel(), dsum[k].ravel(), dcnt[k].ravel()
        )
        fima, noise_var = est[k], dsum[k]
        # Local noise: the minimum-distance map, smoothed over 11^3 (positive values only).
        _positive_mean_filter(noise_var, _BIAS_SMOOTH_RADIUS, out=noise_var, work=work)
        if rician:
            _koay_bias_variance(noise_var, mean, noise_var)
            _subtract_rician_bias(fima.ravel(), noise_var.ravel(), cnt[k].ravel())
        results[i] = (fima, noise_var)
    return results


@njit(parallel=True, cache=True, nogil=True)
def _normalise_pass(arr, est, cnt, dsum, dcnt):
    """In place on flat views: ``est`` to ``est / cnt`` (``arr`` where ``cnt == 0``) and
    ``dsum`` to the minimum-distance map ``dsum / dcnt`` (0 where ``dcnt == 0``)."""
    for i in prange(est.shape[0]):
        est[i] = est[i] / cnt[i] if cnt[i] > 0.0 else arr[i]
        dsum[i] = dsum[i] / dcnt[i] if dcnt[i] > 0.0 else 0.0


@njit(parallel=True, cache=True, nogil=True)
def _subtract_rician_bias(fima, gauss_var, cnt):
    """In place on flat views, where a block covers the voxel (``cnt > 0``):
    ``fima = sqrt(max(fima - 2 gauss_var, 0))`` (``fima``: the estimate of E[M^2])."""
    for i in prange(fima.shape[0]):
        if cnt[i] > 0.0:
            fima[i] = math.sqrt(max(fima[i] - 2.0 * gauss_var[i], 0.0))


# Fixed cost of a block row in the tile kernel (slicing and loop set-up of its voxel rows),
# in units of the cost of one block of the row: about 35 ns against 1 ns when the distance
# loops were timed alone on rows of 8 to 73 blocks.
_ROW_COST = 32


def _tiles(active, f, nworkers, tile_blocks=(6, 8)):
    """Tiles of the block grid holding active blocks, grouped by colour and by worker.

    Tiles cover ``tile_blocks`` blocks along axes 0 and 1 and the active span along axis 2.
    They are grouped in four colours by the parity of their tile index on axes 0 and 1: two
    tiles of one colour are a whole tile (>= 2 f + 1 voxels) apart on one axis, so their
    outputs are disjoint and a colour's tiles run in parallel without write conflicts.
    Within a colour the tiles are dealt to ``nworkers`` workers, largest first, each to
    the least loaded (cost: active block rows times their length plus ``_ROW_COST``), so
    that the static schedule of the parallel loop over the workers is balanced.

    Returns ``tiles`` (n, 6) of (bx0, bx1, by0, by1, bz0, bz1), int64, ordered by colour
    and then by worker, and ``starts`` (4 nworkers + 1): worker ``w`` of colour ``c``
    processes ``tiles[starts[c * nworkers + w] : starts[c * nworkers + w + 1]]``.
    """
    tx = max(tile_blocks[0], f + 1)
    ty = max(tile_blocks[1], f + 1)
    bx, by, _ = active.shape
    groups = [[] for _ in range(4)]
    for ix, x0 in enumerate(range(0, bx, tx)):
        for iy, y0 in enumerate(range(0, by, ty)):
            sub = active[x0 : x0 + tx, y0 : y0 + ty]
            zs = np.nonzero(sub.any(axis=(0, 1)))[0]
            if zs.size:
                rows = int(sub.any(axis=2).sum())
                cost = rows * (int(zs[-1] + 1 - zs[0]) + _ROW_COST)
                tile = (x0, min(x0 + tx, bx), y0, min(y0 + ty, by), zs[0], zs[-1] + 1)
                groups[2 * (ix % 2) + iy % 2].append((cost, tile))
    tiles, starts = [], [0]
    for g in groups:
        load = [0] * nworkers
        work = [[] for _ in range(nworkers)]
        for cost, tile in sorted(g, key=lambda ct: -ct[0]):  # stable: ties keep grid order
            w = load.index(min(load))
            load[w] += cost
            work[w].append(tile)
        for w in work:
            tiles.extend(w)
            starts.append(len(tiles))
    tiles = np.asarray(tiles, dtype=np.int64).reshape(-1, 6)
    return tiles, np.asarray(starts, dtype=np.int64)


def _positive_mean_filter(x, r, *, out=None, work=None):
    """Separable mean of the positive values over 2r+1 per axis; zero where there are none.

    Three passes (axis 0, 1, 2), each averaging the positive values of a line window with
    reflected borders, as the authors' ``Regularize``. Returns ``out`` (float64 of ``x``'s
    shape, C-contiguous; it may be ``x`` itself; None: a new array). ``work``: two such
    arrays for the intermediate passes (None: new ones), so that repeated calls need no
    fresh memory.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    n0, n1, n2 = x.shape
    # numpy's allocations get transparent huge pages
    a, b = work if work is not None else (np.empty_like(x), np.empty_like(x))
    out = np.empty_like(x) if out is None else out
    _positive_mean_mid(x.reshape(1, n0, n1 * n2), r, a.reshape(1, n0, n1 * n2))
    _positive_mean_mid(a, r, b)
    _positive_mean_mid(b.reshape(n0 * n1, n2, 1), r, out.reshape(n0 * n1, n2, 1))
    return out


@njit(cache=True, nogil=True)
def _split_row(nbz, f):
    """Layout of the tile kernel's parity-split rows along z for ``nbz`` blocks of radius
    ``f``: ``ne`` even and ``no`` odd columns; a row holds the even ones, then the odd ones
    from ``nep`` on, each part padded to a multiple of ``_LANES`` (``nep``, ``nop``)."""
    ne = nbz + f
    no = nbz + f - 1
    return ne, no, (ne + _LANES - 1) // _LANES * _LANES, (no + _LANES - 1) // _LANES * _LANES


@njit(cache=True, nogil=True)
def _reflect(i, n):
    """Index of a reflected border (period 2n: ... b a | a b ... z | z y ...)."""
    if 0 <= i < n:
        return i  # the common case, without an integer division
    i = i % (2 * n)
    return 2 * n - 1 - i if i >= n else i


@njit(cache=True, nogil=True)
def _wrap(i, n):
    """``i mod n``, without an integer division when ``0 <= i < n``."""
    return i if 0 <= i < n else i % n


@njit(parallel=True, cache=True, nogil=True)
def _positive_mean_mid(x, r, out):
    """Positive-value window mean along the middle axis of (A, N, B) into ``out``,
    vectorised over B."""
    na, n, nb = x.shape
    chunk = 1024 if nb > 1 else 1
    nchunk = (nb + chunk - 1) // chunk
    if nb == 1:
        # Lines along the last axis of the volume: slide over N directly, on a copy of the
        # line with its reflected borders (ext[j] = line[reflect(j - r)]).
        for a in prange(na):
            ext = np.empty(n + 2 * r)
            for j in range(n + 2 * r):
                ext[j] = x[a, _reflect(j - r, n), 0]
            s = 0.0
            c = 0
            for j in range(2 * r):
                e = ext[j]
                if e > 0.0:
                    s += e
                    c += 1
            for i in range(n):
                e = ext[i + 2 * r]
                if e > 0.0:
                    s += e
                    c += 1
                out[a, i, 0] = s / c if c > 0 else 0.0
                e = ext[i]
                if e > 0.0:
                    s -= e
                    c -= 1
        return
    for job in prange(na * nchunk):
        a = job // nchunk
        b0 = (job % nchunk) * chunk
        b1 = min(b0 + chunk, nb)
        m = b1 - b0
        s = np.zeros(m)
        c = np.zeros(m)
        for j in range(-r, r):
            row = x[a, _reflect(j, n), b0:b1]
            for k in range(m):
                pos = row[k] > 0.0
                s[k] += row[k] if pos else 0.0
                c[k] += 1.0 if pos else 0.0
        for i in range(n):
            row = x[a, _reflect(i + r, n), b0:b1]
            for k in range(m):
                pos = row[k] > 0.0
                s[k] += row[k] if pos else 0.0
                c[k] += 1.0 if pos else 0.0
            orow = out[a, i, b0:b1]
            for k in range(m):
                orow[k] = s[k] / c[k] if c[k] > 0.0 else 0.0
            row = x[a, _reflect(i - r, n), b0:b1]
            for k in range(m):
                pos = row[k] > 0.0
                s[k] -= row[k] if pos else 0.0
                c[k] -= 1.0 if pos else 0.0


@njit(parallel=True, cache=True, nogil=True)
def _blockwise_kernel(
    qimg, qres, qacc, pmean, pvar, pvalid, active, tiles, starts, radii, pad, offs,
    h2_floor, est, cnt, dsum, dcnt,
):  # fmt: skip
    """Process the tiles of one colour in parallel (their outputs do not overlap): worker
    ``w`` takes ``tiles[starts[w] : starts[w + 1]]``."""
    for w in prange(starts.shape[0] - 1):
        for t in range(starts[w], starts[w + 1]):
            _process_tile(
                tiles[t], qimg, qres, qacc, pmean, pvar, pvalid, active, offs, radii, pad,
                h2_floor, est, cnt, dsum, dcnt,
            )  # fmt: skip


@njit(cache=True, nogil=True)
def _exp_neg(t):
    """exp(-t) for 0 <= t <= 3 as (Taylor_9(t/4))^4: relative error < 1e-6, vectorises."""
    s = t * np.float32(0.25)
    p = np.float32(1.0 / 362880.0)
    p = np.float32(1.0 / 40320.0) - s * p
    p = np.float32(1.0 / 5040.0) - s * p
    p = np.float32(1.0 / 720.0) - s * p
    p = np.float32(1.0 / 120.0) - s * p
    p = np.float32(1.0 / 24.0) - s * p
    p = np.float32(1.0 / 6.0) - s * p
    p = np.float32(0.5) - s * p
    p = np.float32(1.0) - s * p
    p = np.float32(1.0) - s * p
    p = p * p
    return p * p


@njit(cache=True, nogil=True)
def _process_tile(
    tile, qimg, qres, qacc, pmean, pvar, pvalid, active, offs, radii, pad, h2_floor,
    est, cnt, dsum, dcnt,
):  # fmt: skip
    """All blocks of one tile, for every patch radius: distances (shared), then weights and
    the weighted blocks onto the voxels (``est[i]`` etc. for ``radii[i]``)."""
    bx0, bx1, by0, by1, bz0, bz1 = tile[0], tile[1], tile[2], tile[3], tile[4], tile[5]
    nbx, nby, nbz = bx1 - bx0, by1 - by0, bz1 - bz0
    nblk = nbx * nby * nbz
    nr = radii.shape[0]
    # Per-block flags: active (output needed) and filterable (centre passes the tests).
    act = np.zeros((nr, nblk), dtype=np.bool_)
    filt = np.zeros((nr, nblk), dtype=np.bool_)
    for ri in range(nr):
        for bxl in range(nbx):
            for byl in range(nby):
                for bzl in range(nbz):
                    b = (bxl * nby + byl) * nbz + bzl
                    a = active[ri, bx0 + bxl, by0 + byl, bz0 + bzl]
                    act[ri, b] = a
                    filt[ri, b] = a and pvalid[0, 0, 0, bx0 + bxl, by0 + byl, bz0 + bzl]
    wst, dmin, ncand = _tile_distances(
        tile, qimg, qres, pmean, pvar, pvalid, filt, offs, radii, pad
    )
    extra = np.zeros((3, nblk), dtype=np.float32)
    for ri in range(nr):
        _tile_weights(wst[ri], dmin[ri], ncand[ri], act[ri], h2_floor)
        for b in range(nblk):
            hasd = act[ri, b] and ncand[ri, b] > 0
            extra[0, b] = np.float32(1.0) if act[ri, b] else np.float32(0.0)
            extra[1, b] = np.float32(1.0) if hasd else np.float32(0.0)
            extra[2, b] = dmin[ri, b] if hasd else np.float32(0.0)
        _tile_spread(
            tile, wst[ri], extra, qacc, offs, radii[ri], pad, est[ri], cnt[ri], dcnt[ri],
            dsum[ri],
        )  # fmt: skip


@njit(cache=True, nogil=True)
def _tile_distances(tile, qimg, qres, pmean, pvar, pvalid, filt, offs, radii, pad):
    """Preselection and patch distances of the tile's blocks for every search offset.

    ``filt`` (radii, blocks): the filterable blocks for each patch radius (``radii``
    ascending; ``pad``: the padding of ``qimg`` and ``qres``, at least search radius plus
    the largest patch radius). Returns ``wst`` (radii, offsets, blocks): the mean squared
    patch difference, -1 where the candidate is not preselected (row 0, the block itself,
    is left unset); ``dmin`` (radii, blocks): the smallest mean-subtracted distance per
    block (inf if none); ``ncand``: the number of preselected candidates. The squared
    differences between the image and its copy shifted by the offset are formed once, over
    the patches of the largest radius, and summed over all patches of the tile for every
    radius by separable box sums (along y and x on contiguous rows kept parity-split along
    z, then along z at the even block positions); voxel rows that no block row with a
    preselected candidate needs are skipped.
    """
    hx, hy, hz = pmean.shape[3], pmean.shape[4], pmean.shape[5]
    bx0, bx1, by0, by1, bz0, bz1 = tile[0], tile[1], tile[2], tile[3], tile[4], tile[5]
    nbx, nby, nbz = bx1 - bx0, by1 - by0, bz1 - bz0
    nblk = nbx * nby * nbz
    nq = offs.shape[0]
    nr = radii.shape[0]
    fm = radii[nr - 1]
    mu_lo = np.float32(_MEAN_RATIO)
    mu_hi = np.float32(1.0 / _MEAN_RATIO)
    var_lo = np.float32(_VAR_RATIO)
    var_hi = np.float32(1.0 / _VAR_RATIO)
    inf32 = np.float32(np.inf)
    # The voxel planes and rows under the tile's largest patches; a patch of radius
    # f <= fm of block row b holds local rows 2 b + (fm - f) .. 2 b + (fm - f) + 2 f.
    nxl = 2 * nbx + 2 * fm - 1
    nyl = 2 * nby + 2 * fm - 1
    xa = 2 * bx0 - fm + pad  # their first index in the padded arrays
    ya = 2 * by0 - fm + pad
    za = 2 * bz0 - fm + pad
    _, _, nep, nop = _split_row(nbz, fm)
    nzl = nep + nop
    inv_n = np.empty(nr, dtype=np.float32)
    e_base = np.empty(nr, dtype=np.int64)  # where the patch columns of block 0 start
    o_base = np.empty(nr, dtype=np.int64)
    for ri in range(nr):
        f = radii[ri]
        ps = 2 * f + 1
        inv_n[ri] = np.float32(1.0 / (ps * ps * ps))
        # Patch columns of block bzl: 2 bzl + d + t, t = 0..2f (d = fm - f); the even t
        # (summed first, as column by column) and the odd t, in the parity-split row.
        d = fm - f
        e_base[ri] = d // 2 if d % 2 == 0 else nep + d // 2
        o_base[ri] = nep + d // 2 if d % 2 == 0 else (d + 1) // 2

    wst = np.empty((nr, nq, nblk), dtype=np.float32)
    dmin = np.full((nr, nblk), inf32, dtype=np.float32)
    ncand = np.zeros((nr, nblk), dtype=np.int32)
    sel = np.zeros((nr, nblk), dtype=np.bool_)
    ok = np.empty(nbz, dtype=np.bool_)
    erow_p = np.empty(nzl, dtype=np.float32)
    erow_m = np.empty(nzl, dtype=np.float32)
    sy_p = np.empty((nr, nby * nzl), dtype=np.float32)
    sy_m = np.empty((nr, nby * nzl), dtype=np.float32)
    sxy_p = np.empty((nr, nbx * nby * nzl), dtype=np.float32)
    sxy_m = np.empty((nr, nbx * nby * nzl), dtype=np.float32)
    zs_p = np.empty(nbz, dtype=np.float32)
    zs_m = np.empty(nbz, dtype=np.float32)
    rowsel = np.zeros((nr, nbx * nby), dtype=np.bool_)  # block row has a candidate
    plane_sel = np.zeros((nr, nbx), dtype=np.bool_)
    colsel = np.zeros((nr, nby), dtype=np.bool_)
    nsel = np.zeros(nr, dtype=np.int64)
    anyx = np.zeros(nr, dtype=np.bool_)
    anyy = np.zeros(nr, dtype=np.bool_)
    for q in range(1, nq):
        dx, dy, dz = offs[q, 0], offs[q, 1], offs[q, 2]
        # Neighbour of block b: voxel 2 b + d = 2 (b + d // 2) + d % 2 (parity-split copy).
        px, py, pz = dx % 2, dy % 2, dz % 2
        ddx, ddy, ddz = dx // 2, dy // 2, dz // 2
        zlo = max(bz0, -ddz)  # blocks whose neighbour lies inside the volume along z
        zhi = min(bz1, hz - ddz)
        nsel[:] = 0
        sel[:] = False
        for bxl in range(nbx):
            ix = bx0 + bxl + ddx
            for byl in range(nby):
                iy = by0 + byl + ddy
                r = bxl * nby + byl
                for ri in range(nr):
                    rowsel[ri, r] = False
                if ix < 0 or ix >= hx or iy < 0 or iy >= hy or zhi <= zlo:
                    continue
                rb = r * nbz
                nz = zhi - zlo
                mc = pmean[0, 0, 0, bx0 + bxl, by0 + byl, zlo:zhi]
                vc = pvar[0, 0, 0, bx0 + bxl, by0 + byl, zlo:zhi]
                mn = pmean[px, py, pz, ix, iy, zlo + ddz : zhi + ddz]
                vn = pvar[px, py, pz, ix, iy, zlo + ddz : zhi + ddz]
                okn = pvalid[px, py, pz, ix, iy, zlo + ddz : zhi + ddz]
                for i in range(nz):
                    a = mc[i]
                    m = mn[i]
                    c = vc[i]
                    w = vn[i]
                    ok[i] = (
                        okn[i]
                        & (a > mu_lo * m)
                        & (a < mu_hi * m)
                        & (c > var_lo * w)
                        & (c < var_hi * w)
                    )
                for ri in range(nr):
                    fr = filt[ri, rb + zlo - bz0 : rb + zhi - bz0]
                    sr = sel[ri, rb + zlo - bz0 : rb + zhi - bz0]
                    for i in range(nz):
                        sr[i] = fr[i] & ok[i]
                    cnt_row = 0
                    for i in range(nz):  # a separate loop: both vectorise
                        cnt_row += sr[i]
                    nsel[ri] += cnt_row
                    rowsel[ri, r] = cnt_row > 0
        for ri in range(nr):
            wst[ri, q] = -1.0
        if nsel.max() == 0:
            continue
        # Skip the voxel rows that no block row with a preselected candidate needs.
        for ri in range(nr):
            for bxl in range(nbx):
                plane_sel[ri, bxl] = False
                for byl in range(nby):
                    if rowsel[ri, bxl * nby + byl]:
                        plane_sel[ri, bxl] = True
        sxy_p[:] = 0.0
        sxy_m[:] = 0.0
        n2 = nby * nzl
        for xl in range(nxl):
            anyxx = False
            for ri in range(nr):
                f = radii[ri]
                xs = xl - (fm - f)  # the plane in the radius' own local coordinates
                xlo = max(0, (xs - 2 * f + 1) // 2)
                xhi = min(nbx - 1, xs // 2) if xs >= 0 else -1
                anyx[ri] = False
                for bxl in range(xlo, xhi + 1):
                    anyx[ri] = anyx[ri] or plane_sel[ri, bxl]
                anyxx = anyxx or anyx[ri]
                if not anyx[ri]:
                    continue
                for byl in range(nby):
                    colsel[ri, byl] = False
                    for bxl in range(xlo, xhi + 1):
                        if rowsel[ri, bxl * nby + byl]:
                            colsel[ri, byl] = True
                sy_p[ri] = 0.0
                sy_m[ri] = 0.0
            if not anyxx:
                continue
            for yl in range(nyl):
                anyyy = False
                for ri in range(nr):
                    f = radii[ri]
                    ys = yl - (fm - f)
                    ylo = max(0, (ys - 2 * f + 1) // 2)
                    yhi = min(nby - 1, ys // 2) if ys >= 0 else -1
                    anyy[ri] = False
                    if anyx[ri]:
                        for byl in range(ylo, yhi + 1):
                            anyy[ri] = anyy[ri] or colsel[ri, byl]
                    anyyy = anyyy or anyy[ri]
                if not anyyy:
                    continue
                # Rows are kept parity-split along z: even columns, then odd columns.
                for par in range(2):
                    z0 = za + par
                    z1 = za + dz + par
                    n = nep if par == 0 else nop
                    o = 0 if par == 0 else nep
                    a0 = qimg[xa + xl, ya + yl, z0 % 2, z0 // 2 : z0 // 2 + n]
                    a1 = qimg[xa + xl + dx, ya + yl + dy, z1 % 2, z1 // 2 : z1 // 2 + n]
                    r0 = qres[xa + xl, ya + yl, z0 % 2, z0 // 2 : z0 // 2 + n]
                    r1 = qres[xa + xl + dx, ya + yl + dy, z1 % 2, z1 // 2 : z1 // 2 + n]
                    ep = erow_p[o : o + n]
                    em = erow_m[o : o + n]
                    for z in range(n):
                        e = a0[z] - a1[z]
                        ep[z] = e * e
                        g = r0[z] - r1[z]
                        em[z] = g * g
                # Block rows whose patches hold this voxel row: 0 <= ys - 2 byl <= 2 f.
                for ri in range(nr):
                    if not anyy[ri]:
                        continue
                    f = radii[ri]
                    ys = yl - (fm - f)
                    ylo = max(0, (ys - 2 * f + 1) // 2)
                    yhi = min(nby - 1, ys // 2)
                    syp = sy_p[ri]
                    sym = sy_m[ri]
                    for byl in range(ylo, yhi + 1):
                        tp = syp[byl * nzl : (byl + 1) * nzl]
                        tm = sym[byl * nzl : (byl + 1) * nzl]
                        for z in range(nzl):
                            tp[z] += erow_p[z]
                            tm[z] += erow_m[z]
            for ri in range(nr):
                if not anyx[ri]:
                    continue
                f = radii[ri]
                xs = xl - (fm - f)
                xlo = max(0, (xs - 2 * f + 1) // 2)
                xhi = min(nbx - 1, xs // 2)
                syp = sy_p[ri]
                sym = sy_m[ri]
                for bxl in range(xlo, xhi + 1):
                    tp = sxy_p[ri, bxl * n2 : (bxl + 1) * n2]
                    tm = sxy_m[ri, bxl * n2 : (bxl + 1) * n2]
                    for i in range(n2):
                        tp[i] += syp[i]
                        tm[i] += sym[i]
        for ri in range(nr):
            f = radii[ri]
            eb, ob = e_base[ri], o_base[ri]
            wq = wst[ri, q]
            for r in range(nbx * nby):
                if not rowsel[ri, r]:
                    continue
                rp = sxy_p[ri, r * nzl : (r + 1) * nzl]
                rm = sxy_m[ri, r * nzl : (r + 1) * nzl]
                # Patch of block bzl along z: the even t first, then the odd t. (Element
                # loops rather than slice assignments or one fused loop: these vectorise.)
                tp = rp[eb : eb + nbz]
                tm = rm[eb : eb + nbz]
                for bzl in range(nbz):
                    zs_p[bzl] = tp[bzl]
                    zs_m[bzl] = tm[bzl]
                for j in range(1, f + 1):
                    tp = rp[eb + j : eb + j + nbz]
                    tm = rm[eb + j : eb + j + nbz]
                    for bzl in range(nbz):
                        zs_p[bzl] += tp[bzl]
                        zs_m[bzl] += tm[bzl]
                for j in range(f):
                    tp = rp[ob + j : ob + j + nbz]
                    tm = rm[ob + j : ob + j + nbz]
                    for bzl in range(nbz):
                        zs_p[bzl] += tp[bzl]
                        zs_m[bzl] += tm[bzl]
                sr = sel[ri, r * nbz : (r + 1) * nbz]
                wr = wq[r * nbz : (r + 1) * nbz]
                dr = dmin[ri, r * nbz : (r + 1) * nbz]
                cr = ncand[ri, r * nbz : (r + 1) * nbz]
                inv = inv_n[ri]
                for bzl in range(nbz):
                    wr[bzl] = zs_p[bzl] * inv if sr[bzl] else np.float32(-1.0)
                for bzl in range(nbz):
                    dr[bzl] = min(dr[bzl], zs_m[bzl] * inv if sr[bzl] else inf32)
                for bzl in range(nbz):
                    cr[bzl] += sr[bzl]
    return wst, dmin, ncand


@njit(cache=True, nogil=True)
def _tile_weights(wst, dmin, ncand, act, h2_floor):
    """Turn distances into normalised weights in place (row 0: the block's own weight).

    ``h^2 = dmin`` (floored at ``h2_floor``), ``w = exp(-d / h^2)`` for ``d <= 3 h^2`` and
    0 otherwise; the block itself gets the largest candidate weight (1 without any); all
    weights of a block are divided by their sum. Inactive blocks get all-zero weights.
    """
    nq, nblk = wst.shape
    inv_h2 = np.empty(nblk, dtype=np.float32)
    wsum = np.zeros(nblk, dtype=np.float32)
    wmax = np.zeros(nblk, dtype=np.float32)
    for b in range(nblk):
        h2 = dmin[b] if dmin[b] > h2_floor else h2_floor
        inv_h2[b] = np.float32(1.0) / h2  # 0 where there is no candidate (h2 = inf)
    three = np.float32(3.0)
    zero = np.float32(0.0)
    for q in range(1, nq):
        wq = wst[q]
        for b in range(nblk):
            d = wq[b]
            t = d * inv_h2[b]
            w = _exp_neg(t) if (d >= zero and t <= three) else zero
            wq[b] = w
            wsum[b] += w
            wmax[b] = max(wmax[b], w)
    w0 = wst[0]
    for b in range(nblk):
        if not act[b]:
            w0[b] = 0.0
            wsum[b] = 1.0
            continue
        if wmax[b] == 0.0:
            wmax[b] = 1.0
        w0[b] = wmax[b]
        wsum[b] = np.float32(1.0) / (wsum[b] + wmax[b])
    for q in range(nq):
        wq = wst[q]
        for b in range(nblk):
            wq[b] *= wsum[b]


@njit(cache=True, nogil=True)
def _tile_spread(tile, wst, extra, qacc, offs, f, pad, est, cnt, dcnt, dsum):
    """Add the tile's weighted blocks onto the voxels (adjoint separable box sums).

    Sources 0..nq-1: the normalised weights of each offset, times the image shifted by the
    offset (``qacc``, parity-split along z), into ``est``; sources nq..nq+2: ``extra`` rows
    (coverage, count and sum of the minimum distances) into ``cnt``, ``dcnt`` and ``dsum``.
    Rows along z run over the unclipped columns ``2 bz0 - f .. 2 (bz1 - 1) + f``, kept
    parity-split (even columns, then odd ones) so that every inner loop is contiguous.
    ``qacc`` is padded by ``pad`` voxels per side (at least search radius plus ``f``).
    """
    nx, ny, nz = est.shape
    bx0, bx1, by0, by1, bz0, bz1 = tile[0], tile[1], tile[2], tile[3], tile[4], tile[5]
    nbx, nby, nbz = bx1 - bx0, by1 - by0, bz1 - bz0
    nq = wst.shape[0]
    ne, no, nep, nop = _split_row(nbz, f)
    nzl = nep + nop
    za = 2 * bz0 - f  # first column
    xo0 = max(2 * bx0 - f, 0)
    xo1 = min(2 * (bx1 - 1) + f + 1, nx)
    yo0 = max(2 * by0 - f, 0)
    yo1 = min(2 * (by1 - 1) + f + 1, ny)
    nxo = xo1 - xo0
    nyo = yo1 - yo0
    n2 = nyo * nzl
    g1 = np.empty(nbx * nby * nzl, dtype=np.float32)
    g2 = np.empty(nbx * n2, dtype=np.float32)
    g3 = np.empty(n2, dtype=np.float32)
    acc = np.zeros((4, nxo * n2), dtype=np.float32)  # estimate, then the three extras
    rowany = np.zeros(nbx * nby, dtype=np.bool_)  # block row with a nonzero weight
    g2nz = np.zeros(nbx * nyo, dtype=np.bool_)  # nonzero rows of g2
    zero = np.float32(0.0)
    for s in range(nq + 3):
        wq = wst[s] if s < nq else extra[s - nq]
        anyu = False
        for r in range(nbx * nby):
            ur = wq[r * nbz : (r + 1) * nbz]
            npos = 0  # a count rather than a maximum: integer sums vectorise
            for bzl in range(nbz):
                npos += ur[bzl] > zero
            rowany[r] = npos > 0
            if npos > 0:
                anyu = True
                # Column 2k holds blocks k-f..k, column 2k+1 blocks k-f+1..k.
                gr = g1[r * nzl : (r + 1) * nzl]
                gr[:] = 0.0
                for j in range(f + 1):
                    ge = gr[j : j + nbz]
                    for bzl in range(nbz):
                        ge[bzl] += ur[bzl]
                for j in range(f):
                    go = gr[nep + j : nep + j + nbz]
                    for bzl in range(nbz):
                        go[bzl] += ur[bzl]
        if not anyu:
            continue
        g2[:] = 0.0
        g2nz[:] = False
        for bxl in range(nbx):
            for byl in range(nby):
                if not rowany[bxl * nby + byl]:
                    continue
                src = g1[(bxl * nby + byl) * nzl : (bxl * nby + byl + 1) * nzl]
                for c in range(2 * f + 1):
                    y = 2 * (by0 + byl) - f + c - yo0
                    if 0 <= y < nyo:
                        g2nz[bxl * nyo + y] = True
                        dst = g2[(bxl * nyo + y) * nzl : (bxl * nyo + y + 1) * nzl]
                        for z in range(nzl):
                            dst[z] += src[z]
        target = acc[0] if s < nq else acc[s - nq + 1]
        dx, dy, dz = 0, 0, 0
        if s < nq:
            dx, dy, dz = offs[s, 0], offs[s, 1], offs[s, 2]
        ze = za + dz + pad  # padded column of the shifted image at even columns
        zo = ze + 1
        for x in range(xo0, xo1):
            # Tile blocks whose support holds plane x: |x - 2 (bx0 + bxl)| <= f.
            blo = max(0, (x - f + 1) // 2 - bx0)
            bhi = min(nbx - 1, (x + f) // 2 - bx0)
            ar = target[(x - xo0) * n2 : (x - xo0 + 1) * n2]
            if s < nq and bhi - blo <= 2:
                # Sum the (at most three) covering planes on the fly.
                px = x + dx + pad
                ga = g2[blo * n2 : (blo + 1) * n2]
                gb = g2[min(blo + 1, bhi) * n2 : (min(blo + 1, bhi) + 1) * n2]
                gc = g2[bhi * n2 : (bhi + 1) * n2]
                k = bhi - blo + 1
                for y in range(nyo):
                    if not (g2nz[blo * nyo + y] or g2nz[bhi * nyo + y] or (
                        k == 3 and g2nz[(blo + 1) * nyo + y]
                    )):  # fmt: skip
                        continue
                    py = yo0 + y + dy + pad
                    for par in range(2):
                        zz = ze if par == 0 else zo
                        n = nep if par == 0 else nop
                        o = y * nzl + (0 if par == 0 else nep)
                        pr = qacc[px, py, zz % 2, zz // 2 : zz // 2 + n]
                        a_ = ar[o : o + n]
                        ra = ga[o : o + n]
                        rb = gb[o : o + n]
                        rc = gc[o : o + n]
                        if k == 1:
                            for z in range(n):
                                a_[z] += ra[z] * pr[z]
                        elif k == 2:
                            for z in range(n):
                                a_[z] += (ra[z] + rc[z]) * pr[z]
                        else:
                            for z in range(n):
                                a_[z] += (ra[z] + rb[z] + rc[z]) * pr[z]
                continue
            g3[:] = g2[blo * n2 : (blo + 1) * n2]
            for bxl in range(blo + 1, bhi + 1):
                src = g2[bxl * n2 : (bxl + 1) * n2]
                for i in range(n2):
                    g3[i] += src[i]
            if s < nq:
                px = x + dx + pad
                for y in range(nyo):
                    py = yo0 + y + dy + pad
                    pe = qacc[px, py, ze % 2, ze // 2 : ze // 2 + nep]
                    po = qacc[px, py, zo % 2, zo // 2 : zo // 2 + nop]
                    ae = ar[y * nzl : y * nzl + nep]
                    ao = ar[y * nzl + nep : (y + 1) * nzl]
                    ge = g3[y * nzl : y * nzl + nep]
                    go = g3[y * nzl + nep : (y + 1) * nzl]
                    for z in range(nep):
                        ae[z] += ge[z] * pe[z]
                    for z in range(nop):
                        ao[z] += go[z] * po[z]
            else:
                for i in range(n2):
                    ar[i] += g3[i]
    # Interleave the parity-split rows back and clip them to the volume.
    klo = max(0, (1 - za) // 2)  # first even / odd column inside [0, nz)
    khi = min(ne, (nz - za + 1) // 2)
    jlo = max(0, -za // 2)
    jhi = min(no, (nz - za) // 2)
    for x in range(nxo):
        for y in range(nyo):
            o = (x * nyo + y) * nzl
            # One call per output: the counts are float32, the sums float64.
            _add_interleaved(est[xo0 + x, yo0 + y], acc[0], o, nep, za, klo, khi, jlo, jhi)
            _add_interleaved(cnt[xo0 + x, yo0 + y], acc[1], o, nep, za, klo, khi, jlo, jhi)
            _add_interleaved(dcnt[xo0 + x, yo0 + y], acc[2], o, nep, za, klo, khi, jlo, jhi)
            _add_interleaved(dsum[xo0 + x, yo0 + y], acc[3], o, nep, za, klo, khi, jlo, jhi)


@njit(cache=True, nogil=True)
def _add_interleaved(row, acc, o, nep, za, klo, khi, jlo, jhi):
    """Add the parity-split row at ``acc[o:]`` (even columns, then the odd ones from
    ``o + nep``) onto ``row``: column ``za + 2 k`` for ``klo <= k < khi``, ``za + 2 k + 1``
    for ``jlo <= k < jhi``."""
    for k in range(klo, khi):
        row[za + 2 * k] += acc[o + k]
    for k in range(jlo, jhi):
        row[za + 2 * k + 1] += acc[o + nep + k]


# --------------------------------------------------------------------------------------
# Wavelet mixing of the two patch radii (adaptive soft coefficient matching)
# --------------------------------------------------------------------------------------

# One-level 3D periodic filter bank of dipy.core.wavelet with the 10-tap near-symmetric
# orthogonal (Farras) analysis filters used by dipy.denoise.adaptive_soft_matching;
# columns: low pass, high pass. Synthesis filters are the time-reversed ones.
_AF = np.array(
    [
        [0.0, -0.01122679215254],
        [0.0, 0.01122679215254],
        [-0.08838834764832, 0.08838834764832],
        [0.08838834764832, 0.08838834764832],
        [0.69587998903400, -0.69587998903400],
        [0.69587998903400, 0.69587998903400],
        [0.08838834764832, -0.08838834764832],
        [-0.08838834764832, -0.08838834764832],
        [0.01122679215254, 0.0],
        [0.01122679215254, 0.0],
    ]
)
_AF_LO, _AF_HI = np.ascontiguousarray(_AF[:, 0]), np.ascontiguousarray(_AF[:, 1])
_SF_LO, _SF_HI = np.ascontiguousarray(_AF[::-1, 0]), np.ascontiguousarray(_AF[::-1, 1])
_WAVELET_MARGIN = 8  # zeros appended per axis: the periodic transform never wraps data


@njit(parallel=True, cache=True, nogil=True)
def _analysis_last(x, h0, h1, lo, hi):
    """Periodic two-band analysis along the last axis into lo, hi (half its length).

    ``lo[i] = sum_k h0[k] x[(2 i + T/2 - k) mod n]`` (T taps), as dipy.core.wavelet. The
    periodic extension is split into its even and odd samples, so that every tap is a
    contiguous, vectorised pass over the outputs (the taps are summed in order).
    """
    na, nb, n = x.shape
    m = n // 2
    nt = h0.shape[0]
    half = nt // 2
    ne = m + nt // 2 + 1  # ext[j] = x[(j - (nt - 1 - half)) mod n], j < n + nt
    for a in prange(na):
        ev = np.empty(ne)  # ev[j] = ext[2 j], od[j] = ext[2 j + 1]
        od = np.empty(ne)
        s0 = np.empty(m)
        s1 = np.empty(m)
        for b in range(nb):
            row = x[a, b]
            for j in range(ne):
                ev[j] = row[_wrap(2 * j - (nt - 1 - half), n)]
                od[j] = row[_wrap(2 * j + 1 - (nt - 1 - half), n)]
            s0[:] = 0.0
            s1[:] = 0.0
            for k in range(nt):
                # ext[2 i + nt - 1 - k]: an even or an odd sample, shifted by c // 2.
                c = nt - 1 - k
                src = ev[c // 2 : c // 2 + m] if c % 2 == 0 else od[c // 2 : c // 2 + m]
                c0 = h0[k]
                c1 = h1[k]
                for i in range(m):
                    s0[i] += c0 * src[i]
                    s1[i] += c1 * src[i]
            lo[a, b] = s0
            hi[a, b] = s1


@njit(parallel=True, cache=True, nogil=True)
def _synthesis_last(lo, hi, g0, g1, y):
    """Inverse of :func:`_analysis_last` (periodic upsampling and filtering) into ``y``.

    ``y[i] = sum_k g[k] up[(i + T/2 - 1 - k) mod n]`` with ``up`` the zero-interleaved
    band; only taps of the parity of ``i`` meet a sample (polyphase form). T = 10. Each tap
    is a vectorised pass over the even and the odd outputs (the taps summed in order).
    """
    na, nb, m = lo.shape
    n = 2 * m
    nt = g0.shape[0]
    nh = nt // 2  # taps per phase
    c = (nh - 1) // 2  # y[2t] and y[2t+1] use band samples t + c - u, u = 0..nh-1
    lead = nh - 1 - c
    for a in prange(na):
        el = np.empty(m + nh)  # el[j] = band[(j - lead) mod m]
        eh = np.empty(m + nh)
        se = np.empty(m)
        so = np.empty(m)
        for b in range(nb):
            rl = lo[a, b]
            rh = hi[a, b]
            for j in range(m + nh):
                src = _wrap(j - lead, m)
                el[j] = rl[src]
                eh[j] = rh[src]
            se[:] = 0.0
            so[:] = 0.0
            for u in range(nh):
                le = el[nh - 1 - u : nh - 1 - u + m]
                he = eh[nh - 1 - u : nh - 1 - u + m]
                e0, e1 = g0[2 * u], g1[2 * u]
                o0, o1 = g0[2 * u + 1], g1[2 * u + 1]
                for t in range(m):
                    se[t] += e0 * le[t] + e1 * he[t]
                    so[t] += o0 * le[t] + o1 * he[t]
            ry = y[a, b]
            for t in range(m):
                ry[2 * t] = se[t]
                ry[2 * t + 1] = so[t]


_CHUNK = 512  # accumulator length along the vectorised axis: stays in L1


@njit(parallel=True, cache=True, nogil=True)
def _analysis_mid(x, h0, h1, lo, hi):
    """:func:`_analysis_last` along the middle axis of (A, N, B), vectorised over B.

    Outputs are accumulated over the taps in chunks of B that stay in L1 (taps in order);
    each job runs down one chunk column, so the rows that consecutive outputs share are
    read from cache.
    """
    na, n, nb = x.shape
    m = n // 2
    nt = h0.shape[0]
    half = nt // 2
    nchunk = (nb + _CHUNK - 1) // _CHUNK
    for job in prange(na * nchunk):
        a = job // nchunk
        b0 = job % nchunk * _CHUNK
        w = min(_CHUNK, nb - b0)
        s0 = np.empty(w)
        s1 = np.empty(w)
        for i in range(m):
            s0[:] = 0.0
            s1[:] = 0.0
            for k in range(nt):
                row = x[a, _wrap(2 * i + half - k, n), b0 : b0 + w]
                c0 = h0[k]
                c1 = h1[k]
                for b in range(w):
                    s0[b] += c0 * row[b]
                    s1[b] += c1 * row[b]
            lo[a, i, b0 : b0 + w] = s0
            hi[a, i, b0 : b0 + w] = s1


@njit(parallel=True, cache=True, nogil=True)
def _synthesis_mid(lo, hi, g0, g1, y):
    """:func:`_synthesis_last` along the middle axis of (A, M, B), vectorised over B.

    Outputs are accumulated over the taps in chunks of B that stay in L1 (taps in order);
    each job runs down one chunk column (band rows shared by consecutive outputs hit the
    cache).
    """
    na, m, nb = lo.shape
    nt = g0.shape[0]
    nh = nt // 2
    c = (nh - 1) // 2
    nchunk = (nb + _CHUNK - 1) // _CHUNK
    for job in prange(na * nchunk):
        a = job // nchunk
        b0 = job % nchunk * _CHUNK
        w = min(_CHUNK, nb - b0)
        ye = np.empty(w)
        yo = np.empty(w)
        for t in range(m):
            ye[:] = 0.0
            yo[:] = 0.0
            for u in range(nh):
                j = _wrap(t + c - u, m)
                rl = lo[a, j, b0 : b0 + w]
                rh = hi[a, j, b0 : b0 + w]
                e0, e1 = g0[2 * u], g1[2 * u]
                o0, o1 = g0[2 * u + 1], g1[2 * u + 1]
                for b in range(w):
                    ye[b] += e0 * rl[b] + e1 * rh[b]
                    yo[b] += o0 * rl[b] + o1 * rh[b]
            y[a, 2 * t, b0 : b0 + w] = ye
            y[a, 2 * t + 1, b0 : b0 + w] = yo


def _analysis(x, axis):
    """Periodic two-band analysis of a 3D array along ``axis`` (no transposes).

    The bands are allocated here, by numpy (transparent huge pages; numba's allocator
    gets none).
    """
    n0, n1, n2 = x.shape
    shape = [n0, n1, n2]
    shape[axis] //= 2
    lo, hi = np.empty(shape), np.empty(shape)
    if axis == 2:
        _analysis_last(x, _AF_LO, _AF_HI, lo, hi)
    elif axis == 1:
        _analysis_mid(x, _AF_LO, _AF_HI, lo, hi)
    else:
        _analysis_mid(
            x.reshape(1, n0, n1 * n2), _AF_LO, _AF_HI,
            lo.reshape(1, n0 // 2, n1 * n2), hi.reshape(1, n0 // 2, n1 * n2),
        )  # fmt: skip
    return lo, hi


def _synthesis(lo, hi, axis):
    """Inverse of :func:`_analysis`."""
    m0, m1, m2 = lo.shape
    shape = [m0, m1, m2]
    shape[axis] *= 2
    y = np.empty(shape)
    if axis == 2:
        _synthesis_last(lo, hi, _SF_LO, _SF_HI, y)
    elif axis == 1:
        _synthesis_mid(lo, hi, _SF_LO, _SF_HI, y)
    else:
        _synthesis_mid(
            lo.reshape(1, m0, m1 * m2), hi.reshape(1, m0, m1 * m2), _SF_LO, _SF_HI,
            y.reshape(1, 2 * m0, m1 * m2),
        )  # fmt: skip
    return y


def _dwt3(x):
    """One-level 3D DWT: (low band, [7 detail bands]) in dipy's sub-band order."""
    bands = [np.ascontiguousarray(x, dtype=np.float64)]
    for axis in range(3):
        bands = [b for band in bands for b in _analysis(band, axis)]
    # bands are ordered by (axis0, axis1, axis2) in {L, H}: LLL, LLH, LHL, ..., HHH.
    return bands[0], bands[1:]


def _idwt3(low, highs):
    """Inverse of :func:`_dwt3`."""
    bands = [low] + [np.ascontiguousarray(h) for h in highs]
    for axis in (2, 1, 0):
        bands = [_synthesis(lo, hi, axis) for lo, hi in zip(bands[0::2], bands[1::2])]
    return bands[0]


def _wavelet_mix(arr, fima_small, fima_large, sigma):
    """Adaptive soft coefficient matching of two filtered volumes (Manjon 2010).

    The algorithm of :func:`dipy.denoise.adaptive_soft_matching.adaptive_soft_matching`:
    one-level 3D DWT of the noisy volume and of both filtered volumes; the low band comes
    from ``fima_small``; each detail band mixes the two filtered volumes with a sigmoid of
    the noisy coefficient's magnitude against a BayesShrink-like threshold
    ``sigma^2 / sqrt(max(var(band) - sigma^2, 0))``. Unlike dipy, each axis is zero-padded
    to an even length plus a fixed margin instead of the next power of two (the same
    results whenever dipy's padding is at least the margin; much less work otherwise).
    The transform is linear and perfectly reconstructing, so the mix is computed as
    ``fima_large + IDWT(DWT(fima_small - fima_large) weighted band by band)``: two forward
    transforms instead of three (the same result to rounding, about 1e-13 relative).
    """
    shape = arr.shape
    widths = [(0, n % 2 + _WAVELET_MARGIN) for n in shape]
    large = np.asarray(fima_large, dtype=np.float64)
    w_noisy = _dwt3(np.pad(np.asarray(arr, dtype=np.float64), widths))
    w_diff = _dwt3(np.pad(np.asarray(fima_small, dtype=np.float64) - large, widths))
    sub = tuple(slice(0, max(n // 2, 1)) for n in shape)  # the bands over the volume
    s2 = float(sigma) ** 2
    for y3, diff in zip(w_noisy[1], w_diff[1]):
        band = y3[sub]
        sig_x2 = np.var(band, ddof=1) - s2 if band.size > 1 else -1.0
        # dist = 1 / (1 + exp(-0.01 (|y3| - thr))); the band's share of the small-patch
        # result: mixed = large + dist (small - large), in place (y3 is not needed after).
        dist = np.abs(y3, out=y3)
        thr = dist.max() if sig_x2 <= 0 else s2 / np.sqrt(sig_x2)
        dist -= thr
        dist *= -0.01
        np.exp(dist, out=dist)
        dist += 1.0
        diff /= dist
    correction = _idwt3(w_diff[0], w_diff[1])
    return large + correction[: shape[0], : shape[1], : shape[2]]
