"""No-reference quality measures of a (denoised) magnitude image.

Real data have no ground truth, so results are also judged by what the data alone tell:

background sigma
    The noise level from the air background. There the magnitude of L-channel complex
    Gaussian noise (per-component std ``sigma``, see `noise2average.noise`) is Rayleigh
    (L = 1) or central chi with 2L degrees of freedom, so ``E[m^2] = 2 L sigma^2`` and
    ``sigma = sqrt(mean(m^2) / (2 L))``. Unlike the mean or the standard deviation of
    ``m`` this needs no distribution constant beyond ``2 L``. Voxels that are exactly 0
    (zero-filled k-space, masked-out or clipped voxels) carry no noise and are excluded.
noise sigma
    The noise level left in a result inside the brain, from its finest wavelet sub-band
    (`noise_estimate.estimate_sigma`).
SNR
    Mean signal inside a mask divided by a noise level.
residual whiteness
    Mean over the three axes of the lag-1 autocorrelation of a residual (noisy minus
    denoised) inside a mask: about 0 when the denoiser removed spatially white noise only,
    near 1 when the residual holds smooth structure (removed anatomy, bias).

Intensities are in the unit of the image; sigma is in that unit, SNR and whiteness are
dimensionless.
"""

import numbers

import numpy as np
from scipy import ndimage

from ._validation import check_shapes

__all__ = [
    "background_mask",
    "background_sigma",
    "snr",
    "residual_whiteness",
    "no_reference_metrics",
]

# Below this many non-zero background voxels the sigma estimate is not trusted (its
# relative standard error is about 1 / sqrt(2 L n), 7 % for n = 100 and L = 1).
_MIN_BACKGROUND_VOXELS = 100


def _non_negative_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative int (voxels), got {value!r}")
    return int(value)


def _mask3d(mask, name):
    """``mask`` as a 3D bool array with at least one True voxel."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 3:
        raise ValueError(f"{name} must be 3D (X, Y, Z), got shape {mask.shape}")
    if not mask.any():
        raise ValueError(f"{name} is empty (no True voxel)")
    return mask


def _volumes(image, mask_shape, name):
    """``image`` as a float array of shape (X, Y, Z, N) (N = 1 for a 3D image)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim not in (3, 4) or image.shape[:3] != tuple(mask_shape):
        raise ValueError(
            f"{name} must be 3D or 4D with spatial shape {tuple(mask_shape)}, got shape "
            f"{image.shape}"
        )
    return image.reshape(image.shape[:3] + (-1,))


def background_mask(head_mask, *, margin_vox=3, border_vox=2):
    """Air background: outside the dilated head mask, away from the field-of-view border.

    Parameters
    ----------
    head_mask : array_like of bool, shape (X, Y, Z)
        Head (or brain) mask; True inside.
    margin_vox : int, optional
        The head mask is dilated by this many voxels (6-connected steps) so that the
        partial-volume edge of the head, and ringing just outside it, stay out.
    border_vox : int, optional
        Voxels within this distance of a face of the field of view are excluded: ghosts
        and zero-padding from reconstruction collect there.

    Returns
    -------
    background : ndarray of bool, shape (X, Y, Z)

    Raises
    ------
    ValueError
        For a non-3D mask, negative or non-integer widths, or an empty background.
    """
    head = np.asarray(head_mask).astype(bool)
    if head.ndim != 3:
        raise ValueError(f"head_mask must be 3D (X, Y, Z), got shape {head.shape}")
    margin_vox = _non_negative_int(margin_vox, "margin_vox")
    border_vox = _non_negative_int(border_vox, "border_vox")
    # binary_dilation with iterations=0 would dilate until nothing changes.
    if margin_vox:
        head = ndimage.binary_dilation(head, iterations=margin_vox)
    inner = np.zeros(head.shape, dtype=bool)
    inner[tuple(slice(border_vox, n - border_vox) for n in head.shape)] = True
    background = inner & ~head
    if not background.any():
        raise ValueError(
            f"the background is empty: no voxel of the {head.shape} field of view lies "
            f"beyond the head mask dilated by margin_vox={margin_vox} and inside "
            f"border_vox={border_vox} of the edges"
        )
    return background


def background_sigma(image, background, *, coils=1):
    """Noise std per real/imaginary component from the magnitude background.

    Parameters
    ----------
    image : array_like of shape (X, Y, Z) or (X, Y, Z, N)
        Magnitude image or series.
    background : array_like of bool, shape (X, Y, Z)
        Air voxels, e.g. from `background_mask`.
    coils : int, optional
        Number L of root-sum-of-squares channels (1: Rician / Rayleigh background).

    Returns
    -------
    sigma : float
        ``sqrt(mean(m^2) / (2 L))`` over the non-zero background voxels, in the unit of
        ``image``; NaN when fewer than 100 are non-zero. For a series, the median over
        volumes with a value (NaN if none has one).
    """
    if isinstance(coils, bool) or not isinstance(coils, numbers.Integral) or coils < 1:
        raise ValueError(f"coils must be a positive int, got {coils!r}")
    background = _mask3d(background, "background")
    volumes = _volumes(image, background.shape, "image")[background]  # (n, N)
    sigmas = []
    for values in volumes.T:
        values = values[values != 0]
        if values.size >= _MIN_BACKGROUND_VOXELS:
            sigmas.append(np.sqrt(np.mean(values**2) / (2 * coils)))
    return float(np.median(sigmas)) if sigmas else float("nan")


def snr(image, mask, sigma):
    """Mean signal inside a mask over a noise level.

    Parameters
    ----------
    image : array_like of shape (X, Y, Z) or (X, Y, Z, N)
        Magnitude image or series.
    mask : array_like of bool, shape (X, Y, Z)
        Region of the signal (e.g. the brain).
    sigma : float
        Noise std in the unit of ``image`` (positive; NaN gives NaN).

    Returns
    -------
    snr : float
        ``mean(image[mask]) / sigma`` (for a series the mean over volumes too).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    mask = _mask3d(mask, "mask")
    volumes = _volumes(image, mask.shape, "image")
    return float(volumes[mask].mean() / sigma)


def _lag1_autocorrelation(volume, mask):
    """Mean over the axes (with at least one pair) of the in-mask lag-1 autocorrelation."""
    centred = volume - volume[mask].mean()
    correlations = []
    for axis in range(3):
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        pairs = mask[tuple(first)] & mask[tuple(second)]
        if not pairs.any():
            continue
        a = centred[tuple(first)][pairs]
        b = centred[tuple(second)][pairs]
        # Pearson form (about the in-mask mean): bounded by 1 and 0 for white noise.
        with np.errstate(invalid="ignore", divide="ignore"):
            correlations.append(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))
    if not correlations:
        raise ValueError("the mask holds no pair of neighbouring voxels along any axis")
    return float(np.mean(correlations))


def residual_whiteness(residual, mask):
    """Lag-1 spatial autocorrelation of a residual inside a mask.

    Parameters
    ----------
    residual : array_like of shape (X, Y, Z) or (X, Y, Z, N)
        Residual image or series, e.g. noisy minus denoised.
    mask : array_like of bool, shape (X, Y, Z)
        Voxels used; a pair of neighbours counts only when both are inside.

    Returns
    -------
    whiteness : float
        For each axis, ``sum(a b) / sqrt(sum(a^2) sum(b^2))`` over the in-mask pairs of
        neighbours ``(a, b)``, values taken about the in-mask mean; the mean over the
        axes (axes without a pair, e.g. a single slice, are skipped) and, for a series,
        over the volumes whose residual is not constant (a volume the method left
        unchanged, such as the shared b0 of SDnDTI repetitions, has nothing to judge).
        About 0 for white noise, near 1 for smooth structure; NaN when the residual is
        constant in the mask in every volume (e.g. zero: nothing removed).
    """
    mask = _mask3d(mask, "mask")
    volumes = _volumes(residual, mask.shape, "residual")
    values = [_lag1_autocorrelation(v, mask) for v in np.moveaxis(volumes, -1, 0)]
    finite = [value for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def _input_background(noisy):
    """Air around the head of the noisy input, or None when it has no air to find.

    The head is `masking.t1w_brain_mask` of the mean over volumes (a head-region mask,
    scalp included), dilated by `background_mask`'s margin; a brain mask would leave the
    scalp and skull in the "background".
    """
    from .masking import t1w_brain_mask

    try:
        return background_mask(t1w_brain_mask(noisy.mean(axis=-1)))
    except ValueError:
        return None


def no_reference_metrics(image, noisy, brain_mask, *, coils=1):
    """Quality measures of a denoised image that need no ground truth.

    Parameters
    ----------
    image : array_like of shape (X, Y, Z) or (X, Y, Z, N)
        Denoised magnitude image or series.
    noisy : array_like, shape of ``image``
        A noisy input it was computed from (the workflow passes the first repetition).
    brain_mask : array_like of bool, shape (X, Y, Z)
        Region where the measures look at the result.
    coils : int, optional
        Root-sum-of-squares channels of the magnitude data (`background_sigma`).

    Returns
    -------
    metrics : dict of str to float
        ``background_sigma``: the noise level of the *input*, from the air around its head
        (`background_sigma`; NaN without air in the field of view), the same for every
        method of a subject: the scale for the next two. ``noise_sigma``: the noise level
        left in the result inside the mask, from its finest wavelet sub-band
        (`noise_estimate.estimate_sigma`, median over volumes). ``snr``: mean of the result
        in the mask over ``noise_sigma``. ``residual_std`` and ``residual_whiteness``: of
        ``noisy - image`` in the mask (`residual_whiteness`).

    Notes
    -----
    ``noise_sigma`` measures what is left at the finest scale, noise and fine detail alike:
    blurring lowers it as much as denoising does. Read it with ``residual_whiteness``,
    which rises when a method removes structure rather than noise.
    """
    from .noise_estimate import estimate_sigma

    brain = _mask3d(brain_mask, "brain_mask")
    check_shapes(image, reference_name="image", noisy=noisy)
    image = _volumes(image, brain.shape, "image")
    noisy = _volumes(noisy, brain.shape, "noisy")
    background = _input_background(noisy)
    residual = noisy - image
    left = float(np.median([estimate_sigma(volume, brain) for volume in np.moveaxis(image, -1, 0)]))
    return {
        "background_sigma": (float("nan") if background is None
                             else background_sigma(noisy, background, coils=coils)),
        "noise_sigma": left,
        "snr": snr(image, brain, left) if left > 0 else float("inf"),
        "residual_std": float(residual[brain].std()),
        "residual_whiteness": residual_whiteness(residual, brain),
    }
