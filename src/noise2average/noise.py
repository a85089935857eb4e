"""Spatially varying magnitude noise: a g-factor-like map and Rician / noncentral-chi noise.

Noise model
-----------
Each receive channel ``c = 1..L`` of a reconstruction carries complex Gaussian thermal noise
whose real and imaginary parts are independent, zero-mean, with standard deviation
``sigma(x)`` (the same in every channel). Parallel-imaging reconstruction amplifies it by
the geometry factor: ``sigma(x) = sigma_0 g(x)``. The magnitude image is

* ``L = 1`` (one channel, or an adaptive/optimal coil combination):
  ``M = |A + n_r + i n_i|``, Rician distributed with signal ``A``;
* ``L > 1`` (root sum of squares of L channels): ``M = sqrt(sum_c |s_c + n_c|^2)``, which
  depends on the signal only through its total power, so the signal is placed in one
  channel: noncentral chi with ``2L`` degrees of freedom and noncentrality ``A / sigma``
  (Constantinides et al. 1997, MRM 38:852; Dietrich et al. 2008, MRI 26:754).

In the background (``A = 0``) the mean is
``sigma sqrt(pi/2) (2L-1)!! / (2^(L-1) (L-1)!)`` (Rayleigh for L = 1: ``1.2533 sigma``);
well above the noise floor the standard deviation of ``M`` tends to ``sigma``.
`magnitude_noise_mean` gives the exact mean for any signal.
"""

import numpy as np
from scipy import special

__all__ = ["g_factor_map", "add_magnitude_noise", "magnitude_noise_mean"]


def _check_coils(coils):
    if isinstance(coils, bool) or not isinstance(coils, (int, np.integer)) or coils < 1:
        raise ValueError(f"coils={coils!r} must be a positive integer")
    return int(coils)


def g_factor_map(shape, affine, *, g_max, center_mm=None, semi_axes_mm=None):
    """g-factor-like noise amplification, 1 at the periphery rising to ``g_max`` at the centre.

    In parallel imaging the noise amplification is largest where aliased copies of the
    object overlap, i.e. near the centre of the field of view, and close to 1 at its edge.
    This map is a smooth stand-in, fixed to the scanner frame (it does not move with the
    head):

    ``g(x) = 1 + (g_max - 1) cos^2(pi r / 2)`` for ``r < 1``, else 1, with
    ``r = sqrt(sum_i ((x_i - c_i) / a_i)^2)`` the normalised distance from the centre ``c``
    of an ellipsoid of semi-axes ``a`` (world mm).

    Parameters
    ----------
    shape : tuple of 3 int
        Grid shape ``(X, Y, Z)``.
    affine : ndarray, shape (4, 4)
        Voxel-to-world (mm) transform of the grid.
    g_max : float
        Peak amplification (>= 1) at the centre.
    center_mm : array_like of shape (3,), optional
        Centre of the scanner field of view in world mm. None: the centre of this grid.
    semi_axes_mm : array_like of shape (3,), optional
        Semi-axes of the ellipsoid in mm, along the world axes. None: half the extent of
        this grid along each axis (``n_i * voxel_i / 2``), so ``g = 1`` on the faces of the
        field of view and in its corners.

    Returns
    -------
    g : ndarray of float32, shape (X, Y, Z)
        Values in ``[1, g_max]``.
    """
    g_max = float(g_max)
    if not np.isfinite(g_max) or g_max < 1:
        raise ValueError(f"g_max={g_max!r} must be a number >= 1")
    shape = tuple(int(n) for n in shape)
    affine = np.asarray(affine, dtype=np.float64)
    if len(shape) != 3 or affine.shape != (4, 4):
        raise ValueError(f"shape={shape!r} must have 3 entries and affine shape (4, 4)")
    voxel = np.sqrt(np.sum(affine[:3, :3] ** 2, axis=0))
    if center_mm is None:
        center_mm = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    if semi_axes_mm is None:
        semi_axes_mm = np.array(shape) * voxel / 2
    center_mm = np.asarray(center_mm, dtype=np.float64)
    semi_axes_mm = np.asarray(semi_axes_mm, dtype=np.float64)
    if center_mm.shape != (3,) or semi_axes_mm.shape != (3,) or np.any(semi_axes_mm <= 0):
        raise ValueError(
            f"center_mm={center_mm!r} and semi_axes_mm={semi_axes_mm!r} must be 3-vectors "
            "(semi-axes positive)"
        )
    index = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r2 = np.zeros(shape)
    for i in range(3):
        world = sum(affine[i, j] * index[j] for j in range(3)) + affine[i, 3]
        r2 += ((world - center_mm[i]) / semi_axes_mm[i]) ** 2
    g = 1 + (g_max - 1) * np.cos(0.5 * np.pi * np.minimum(np.sqrt(r2), 1.0)) ** 2
    return g.astype(np.float32)


def add_magnitude_noise(image, sigma_map, rng, *, coils=1):
    """Magnitude of an image plus complex Gaussian noise (Rician or noncentral chi).

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        Noise-free magnitude signal ``A`` (>= 0), any intensity unit.
    sigma_map : float or ndarray broadcastable to ``image.shape``
        Standard deviation ``sigma`` of the real and of the imaginary part of the noise in
        each channel, in the unit of ``image`` (e.g. ``sigma_0 * g``). 0 gives ``|A|``.
    rng : numpy.random.Generator
        Source of randomness.
    coils : int, optional
        Number of channels L combined by root sum of squares; 1 gives Rician noise. See
        the module docstring for the model.

    Returns
    -------
    noisy : ndarray of float32, shape (X, Y, Z)
        ``sqrt((A + n_1r)^2 + n_1i^2 + sum_{c=2..L} (n_cr^2 + n_ci^2))``.
    """
    coils = _check_coils(coils)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    image = np.asarray(image, dtype=np.float64)
    sigma = np.asarray(sigma_map, dtype=np.float64)
    if np.any(~np.isfinite(sigma)) or np.any(sigma < 0):
        raise ValueError("sigma_map must be finite and non-negative")
    try:
        sigma = np.broadcast_to(sigma, image.shape)
    except ValueError:
        raise ValueError(
            f"sigma_map of shape {sigma.shape} does not broadcast to image shape {image.shape}"
        ) from None
    power = (image + sigma * rng.standard_normal(image.shape)) ** 2
    for _ in range(2 * coils - 1):
        power += (sigma * rng.standard_normal(image.shape)) ** 2
    return np.sqrt(power).astype(np.float32)


def magnitude_noise_mean(signal, sigma, *, coils=1):
    """Expected magnitude of a signal with complex Gaussian noise (Rician / noncentral chi).

    Parameters
    ----------
    signal : float or ndarray
        Noise-free magnitude ``A`` (>= 0).
    sigma : float or ndarray
        Per-component noise standard deviation (same unit), broadcastable with ``signal``.
    coils : int, optional
        Number of root-sum-of-squares channels L.

    Returns
    -------
    mean : float or ndarray of float64
        ``sigma sqrt(2) Gamma(L + 1/2) / Gamma(L) 1F1(-1/2; L; -A^2 / (2 sigma^2))``;
        ``A`` where ``sigma`` is 0.
    """
    coils = _check_coils(coils)
    signal = np.asarray(signal, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr2 = np.where(sigma > 0, signal**2 / (2 * np.where(sigma > 0, sigma, 1) ** 2), 0.0)
        factor = np.sqrt(2) * np.exp(special.gammaln(coils + 0.5) - special.gammaln(coils))
        mean = sigma * factor * special.hyp1f1(-0.5, coils, -snr2)
    return np.where(sigma > 0, mean, np.abs(signal))
