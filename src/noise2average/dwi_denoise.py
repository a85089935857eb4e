"""Denoising of diffusion-weighted series (4D), volume by volume or jointly.

Per-volume methods (`bm4d_dwi`, `aonlm_dwi`, or any 3D denoiser through `denoise_volumes`)
treat each of the M volumes as an independent 3D image; the noise level of each volume is
estimated from that volume alone with `noise2average.noise_estimate.estimate_sigma` (over
the mask), never from a ground truth. Joint methods use the redundancy across volumes:
`mppca_dwi` (Marchenko-Pastur PCA, Veraart et al. 2016; dipy's ``localpca.mppca``) and
`patch2self_dwi` (Fadnavis et al. 2020; dipy's ``patch2self``, version 3, which needs the
optional dependency scikit-learn).

Every DWI method ends with `check_volume_means`, a guard against silent intensity shifts: in
dipy 1.12.1, for example, Patch2Self ``version=1`` returns mean-removed volumes and its
``shift_intensity`` option does nothing, which no shape check would catch.

Parallelism
-----------
`denoise_volumes` runs the volumes in a *thread* pool. Both 3D denoisers of this package
release the GIL for their heavy work: BM4D runs in a C library called through
``ctypes.CDLL`` (ctypes drops the GIL during foreign calls), and AONLM's numba kernels are
compiled with ``nogil=True`` and use numba's OpenMP threading layer, which accepts parallel
launches from several threads. Checked: a pure-Python loop in a second thread was not held
up for the length of a BM4D or AONLM call (0.64 s alone, 1.16 s next to a 1.4 s BM4D call
on a busy 2-core machine; at least 2 s had the GIL been held), and threaded and serial
outputs were bitwise identical. Processes were
not chosen: they would copy the 4D array to every worker, and GNU OpenMP, once initialised
by numba, is not fork-safe. A Python-level denoiser that holds the GIL gains nothing from
threads; pass ``num_workers=1`` for it.
"""

import numbers
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._validation import as_mask

__all__ = [
    "VolumeMeanWarning",
    "aonlm_dwi",
    "bm4d_dwi",
    "check_volume_means",
    "denoise_volumes",
    "mppca_dwi",
    "patch2self_dwi",
]


class VolumeMeanWarning(UserWarning):
    """A denoiser changed the mean intensity of a volume by more than the tolerance."""


def denoise_volumes(dwi, denoiser, *, mask=None, num_workers=None):
    """Apply a 3D denoiser to every volume of a 4D series, in parallel over volumes.

    Parameters
    ----------
    dwi : ndarray of shape (X, Y, Z, M)
        Series of M volumes (real-valued, finite), any intensity unit.
    denoiser : callable
        ``denoiser(volume) -> denoised``, with ``volume`` a float64 array of shape
        (X, Y, Z) and ``denoised`` an array of the same shape. It is called from several
        threads at once when ``num_workers > 1``, so it must be thread-safe, and it only
        runs in parallel if it releases the GIL (see the module docstring).
    mask : ndarray of bool of shape (X, Y, Z), optional
        Voxels whose denoised values are kept; the others keep their input values (the
        denoiser still sees the whole volume). None keeps every denoised voxel.
    num_workers : int, optional
        Number of volumes denoised at the same time (threads). None uses all the cores
        available to this process (never more than M); 1 runs serially in this thread.

    Returns
    -------
    denoised : ndarray of float32 of shape (X, Y, Z, M)
        The denoised volumes, in the order of ``dwi``.
    """
    dwi, mask = _validate(dwi, mask)
    if not callable(denoiser):
        raise ValueError(f"denoiser must be callable, got {type(denoiser).__name__}")
    workers = _workers(num_workers, dwi.shape[3])
    return _map_volumes(dwi, lambda m, volume: denoiser(volume), mask, workers)


def bm4d_dwi(dwi, *, mask=None, num_workers=None, mean_tolerance=0.1, on_mean_shift="warn",
             **options):
    """BM4D (through the Rician variance-stabilising transform) on each volume of a series.

    Each volume ``m`` is denoised with `noise2average.bm4d_rician.bm4d_rician` and the
    sigma that `noise2average.noise_estimate.estimate_sigma` finds in that volume over
    ``mask``. Needs the optional, non-commercial package ``bm4d``.

    Parameters
    ----------
    dwi : ndarray of shape (X, Y, Z, M)
        Magnitude series (nonnegative, finite); every spatial dimension at least 5.
    mask : ndarray of bool of shape (X, Y, Z), optional
        Brain (or head) mask: sigma is estimated inside it, BM4D runs on its bounding box
        plus a margin, and voxels outside it are returned unchanged. None uses the whole
        volume; then the air background (Rayleigh noise, standard deviation 0.655 sigma)
        biases sigma low: pass a mask for magnitude data.
    num_workers : int, optional
        Volumes denoised at the same time. None: all available cores. With more than one
        worker each BM4D call uses one thread; with one, BM4D uses all cores.
    mean_tolerance : float, optional
        Largest accepted relative change of a volume's mean inside the mask (see
        `check_volume_means`). The default 0.1 leaves room for the legitimate drop from
        Rician bias removal (about 13 % of the mean at an SNR of 2).
    on_mean_shift : {'warn', 'raise'}, optional
        What a larger change does: a `VolumeMeanWarning` or a ValueError.
    **options
        Further keyword arguments of `noise2average.bm4d_rician.bm4d_rician` (``profile``).

    Returns
    -------
    denoised : ndarray of float32 of shape (X, Y, Z, M)
    """
    from .bm4d_rician import bm4d_rician

    return _per_volume(
        dwi, mask, num_workers, mean_tolerance, on_mean_shift,
        lambda volume, sigma, mask, threads: bm4d_rician(
            volume, sigma, mask=mask, num_threads=threads, **options
        ),
    )


def aonlm_dwi(dwi, *, mask=None, num_workers=None, mean_tolerance=0.1, on_mean_shift="warn",
              **options):
    """Adaptive optimised non-local means (AONLM) on each volume of a series.

    Each volume is denoised with `noise2average.aonlm.aonlm` (Rician mode, patch radii 1
    and 2, search radius 3 unless ``options`` say otherwise); the sigma of its wavelet
    mixing is the one `noise2average.noise_estimate.estimate_sigma` finds in that volume
    over ``mask``.

    Parameters
    ----------
    dwi : ndarray of shape (X, Y, Z, M)
        Magnitude series (nonnegative, finite).
    mask, num_workers, mean_tolerance, on_mean_shift
        As in `bm4d_dwi` (AONLM filters only the mask's voxels; with one worker its numba
        kernels use all cores, otherwise one thread each).
    **options
        Further keyword arguments of `noise2average.aonlm.aonlm` (e.g. ``search_radius``).

    Returns
    -------
    denoised : ndarray of float32 of shape (X, Y, Z, M)
    """
    from .aonlm import aonlm

    return _per_volume(
        dwi, mask, num_workers, mean_tolerance, on_mean_shift,
        lambda volume, sigma, mask, threads: aonlm(
            volume, mask=mask, sigma=sigma, num_threads=threads, **options
        ),
    )


def mppca_dwi(dwi, *, mask=None, patch_radius=2, mean_tolerance=0.05, on_mean_shift="warn"):
    """Marchenko-Pastur PCA denoising of a series (`dipy.denoise.localpca.mppca`).

    Parameters
    ----------
    dwi : ndarray of shape (X, Y, Z, M)
        Series of M volumes, real-valued and finite. MP-PCA needs many volumes (tens) and a
        patch of at least M voxels: ``(2 * patch_radius + 1)^3 >= M``.
    mask : ndarray of bool of shape (X, Y, Z), optional
        Voxels to denoise; the others are returned unchanged (dipy would set them to 0).
        None denoises every voxel.
    patch_radius : int, optional
        Radius of the cubic local patch, in voxels (2 gives 5x5x5 = 125 voxels).
    mean_tolerance, on_mean_shift
        As in `bm4d_dwi`; MP-PCA does not remove the Rician bias, so the means should be
        kept closely (default 5 %).

    Returns
    -------
    denoised : ndarray of float32 of shape (X, Y, Z, M)
        dipy clips the estimate at 0.
    """
    dwi, mask_b = _validate(dwi, mask)
    _check_guard(mean_tolerance, on_mean_shift)
    if isinstance(patch_radius, bool) or not isinstance(patch_radius, numbers.Integral) \
            or patch_radius < 1:
        raise ValueError(f"patch_radius must be an integer >= 1, got {patch_radius!r}")
    if (2 * patch_radius + 1) ** 3 < dwi.shape[3]:
        raise ValueError(
            f"patch_radius {patch_radius} gives {(2 * patch_radius + 1) ** 3} voxels per patch, "
            f"fewer than the {dwi.shape[3]} volumes: increase it"
        )
    from dipy.denoise.localpca import mppca

    with np.errstate(invalid="ignore", divide="ignore"):  # dipy divides 0/0 outside the mask
        denoised = mppca(dwi, mask=mask_b, patch_radius=int(patch_radius), out_dtype=np.float64)
    out = _finish(dwi, denoised, mask_b)
    check_volume_means(dwi, out, mask_b, tolerance=mean_tolerance, on_failure=on_mean_shift)
    return out


def patch2self_dwi(
    dwi,
    bvals,
    *,
    b0_threshold=50,
    mask=None,
    model="ols",
    alpha=1.0,
    b0_denoising=True,
    clip_negative_vals=False,
    tmp_dir=None,
    mean_tolerance=0.05,
    on_mean_shift="warn",
):
    """Patch2Self denoising of a series (`dipy.denoise.patch2self.patch2self`, version 3).

    Version 3 is fixed: in dipy 1.12.1 version 1 returns mean-removed volumes and its
    ``shift_intensity`` does nothing (the shift it computes is always 0). The volume means
    are checked afterwards with `check_volume_means`. Needs scikit-learn (optional).

    Parameters
    ----------
    dwi : ndarray of shape (X, Y, Z, M)
        Series of M volumes (at least 10 recommended by dipy), real-valued and finite.
    bvals : ndarray of shape (M,)
        b-values in s/mm^2.
    b0_threshold : float, optional
        Volumes with ``bvals <= b0_threshold`` (s/mm^2) are b=0 volumes, denoised among
        themselves (if ``b0_denoising``).
    mask : ndarray of bool of shape (X, Y, Z), optional
        Voxels whose denoised values are kept, and where the means are checked; the others
        keep their input values (Patch2Self itself fits on every voxel). None: all voxels.
    model : {'ols', 'ridge', 'lasso'} or sklearn regressor, optional
        Regression model of dipy's Patch2Self.
    alpha : float, optional
        Regularisation of 'ridge' and 'lasso'.
    b0_denoising : bool, optional
        Whether the b=0 volumes are denoised.
    clip_negative_vals : bool, optional
        Clip negative outputs at 0 (raises low-SNR means slightly).
    tmp_dir : str, optional
        Folder for version 3's temporary files. None: the system's temporary folder.
    mean_tolerance, on_mean_shift
        As in `bm4d_dwi` (default 5 %).

    Returns
    -------
    denoised : ndarray of float32 of shape (X, Y, Z, M)
    """
    dwi, mask_b = _validate(dwi, mask)
    _check_guard(mean_tolerance, on_mean_shift)
    bvals = np.asarray(bvals, dtype=np.float64)
    if bvals.shape != (dwi.shape[3],):
        raise ValueError(f"bvals shape {bvals.shape} does not match {dwi.shape[3]} volumes")
    if not np.isfinite(bvals).all() or (bvals < 0).any():
        raise ValueError(f"bvals must be finite and >= 0, got {bvals}")
    if not (np.isfinite(b0_threshold) and b0_threshold >= 0):
        raise ValueError(f"b0_threshold must be a finite value >= 0, got {b0_threshold!r}")
    try:
        import sklearn  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "patch2self_dwi needs scikit-learn (dipy's Patch2Self regresses with it); "
            "install scikit-learn to use it"
        ) from error
    from dipy.denoise.patch2self import patch2self

    try:
        denoised = patch2self(
            dwi, bvals, model=model, b0_threshold=b0_threshold, out_dtype=np.float64,
            alpha=alpha, b0_denoising=b0_denoising, clip_negative_vals=clip_negative_vals,
            shift_intensity=False, tmp_dir=tmp_dir, version=3,
        )
    except ValueError as error:
        if "could not broadcast" not in str(error):
            raise
        # dipy 1.12.1's version 3 mis-sizes its output for some volume counts (14 of 8-38
        # tried), independent of the b0 layout.
        raise ValueError(
            f"dipy's Patch2Self (version 3) failed on a series of {dwi.shape[3]} volumes "
            f"({error}); this dipy release cannot denoise this volume count"
        ) from error
    out = _finish(dwi, denoised, mask_b)
    check_volume_means(dwi, out, mask_b, tolerance=mean_tolerance, on_failure=on_mean_shift)
    return out


def check_volume_means(before, after, mask=None, *, tolerance=0.05, on_failure="warn"):
    """Relative change of each volume's mean intensity, flagged beyond a tolerance.

    Parameters
    ----------
    before, after : ndarray of shape (X, Y, Z, M)
        Series before and after denoising.
    mask : ndarray of bool of shape (X, Y, Z), optional
        Voxels over which the means are taken (e.g. the brain). None: all voxels.
    tolerance : float, optional
        Largest accepted ``|change|`` (0.05 is 5 %).
    on_failure : {'warn', 'raise', 'ignore'}, optional
        What a volume beyond the tolerance does: a `VolumeMeanWarning`, a ValueError
        naming the volumes, or nothing (the caller reads the returned changes).

    Returns
    -------
    change : ndarray of float64 of shape (M,)
        ``(mean_after - mean_before) / |mean_before|`` per volume; 0 where both means are
        0 and inf where only the mean before is 0.
    """
    before = np.asarray(before)
    after = np.asarray(after)
    if before.ndim != 4:
        raise ValueError(f"before must be a 4D array (X, Y, Z, M), got shape {before.shape}")
    if after.shape != before.shape:
        raise ValueError(f"after shape {after.shape} does not match before shape {before.shape}")
    mask = as_mask(mask, before.shape[:3])
    if not (isinstance(tolerance, numbers.Real) and np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if on_failure not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_failure must be 'warn', 'raise' or 'ignore', got {on_failure!r}")
    if mask is None:
        mean_before = before.mean(axis=(0, 1, 2), dtype=np.float64)
        mean_after = after.mean(axis=(0, 1, 2), dtype=np.float64)
    else:
        mean_before = before[mask].mean(axis=0, dtype=np.float64)
        mean_after = after[mask].mean(axis=0, dtype=np.float64)
    diff = mean_after - mean_before
    scale = np.abs(mean_before)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0),
                          np.where(diff == 0, 0.0, np.inf))
    bad = np.flatnonzero(~(np.abs(change) <= tolerance))
    if bad.size and on_failure != "ignore":
        listed = ", ".join(f"{int(m)}: {change[m]:+.1%}" for m in bad[:10])
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        message = (
            f"denoising changed the mean intensity of {bad.size} of {change.size} volumes by "
            f"more than {tolerance:.1%} (volume: change) {listed}{more}"
        )
        if on_failure == "raise":
            raise ValueError(message)
        warnings.warn(message, VolumeMeanWarning, stacklevel=2)
    return change


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _validate(dwi, mask):
    dwi = np.asarray(dwi)
    if dwi.ndim != 4:
        raise ValueError(f"dwi must be a 4D array (X, Y, Z, M), got shape {dwi.shape}")
    if dwi.shape[3] < 1 or min(dwi.shape[:3]) < 1:
        raise ValueError(f"dwi has an empty dimension, shape {dwi.shape}")
    if not np.issubdtype(dwi.dtype, np.number) or np.iscomplexobj(dwi):
        raise ValueError(f"dwi must be real-valued, got dtype {dwi.dtype}")
    dwi = dwi.astype(np.float64, copy=False)
    if not np.isfinite(dwi).all():
        raise ValueError(f"dwi contains {int((~np.isfinite(dwi)).sum())} non-finite values")
    return dwi, as_mask(mask, dwi.shape[:3])


def _check_guard(mean_tolerance, on_mean_shift):
    if isinstance(mean_tolerance, bool) or not isinstance(mean_tolerance, numbers.Real) \
            or not (np.isfinite(mean_tolerance) and mean_tolerance >= 0):
        raise ValueError(f"mean_tolerance must be a finite number >= 0, got {mean_tolerance!r}")
    if on_mean_shift not in ("warn", "raise"):
        raise ValueError(f"on_mean_shift must be 'warn' or 'raise', got {on_mean_shift!r}")


def _workers(num_workers, n_volumes):
    if num_workers is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not available on macOS / Windows
            cores = os.cpu_count() or 1
        return max(1, min(cores, n_volumes))
    if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) \
            or num_workers < 1:
        raise ValueError(f"num_workers must be None or an integer >= 1, got {num_workers!r}")
    return int(min(num_workers, n_volumes))


def _map_volumes(dwi, function, mask, workers):
    """``function(m, volume)`` for every volume, in ``workers`` threads, assembled in order."""
    def one(m):
        volume = np.ascontiguousarray(dwi[..., m])
        result = np.asarray(function(m, volume))
        if result.shape != volume.shape:
            raise ValueError(
                f"the denoiser returned shape {result.shape} for volume {m} of shape "
                f"{volume.shape}"
            )
        return result

    n = dwi.shape[3]
    if workers == 1:
        results = [one(m) for m in range(n)]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, range(n)))
    return _finish(dwi, np.stack(results, axis=-1), mask)


def _finish(dwi, denoised, mask):
    """float32 output, with the input's values outside ``mask``."""
    out = np.asarray(denoised, dtype=np.float32)
    if mask is not None:
        out = np.where(mask[..., None], out, dwi.astype(np.float32))
    return out


def _per_volume(dwi, mask, num_workers, mean_tolerance, on_mean_shift, run):
    """Per-volume denoising with sigma estimated in each volume, then the mean check."""
    from .noise_estimate import estimate_sigma

    dwi, mask_b = _validate(dwi, mask)
    workers = _workers(num_workers, dwi.shape[3])
    threads = None if workers == 1 else 1
    _check_guard(mean_tolerance, on_mean_shift)

    def denoise(m, volume):
        sigma = estimate_sigma(volume, mask_b)
        return run(volume, sigma, mask_b, threads)

    out = _map_volumes(dwi, denoise, mask_b, workers)
    check_volume_means(dwi, out, mask_b, tolerance=mean_tolerance, on_failure=on_mean_shift)
    return out
