"""Evaluation masks for real data: a brain mask for DWI, a head-region mask for T1w."""

import numpy as np
from scipy import ndimage

__all__ = ["dwi_brain_mask", "t1w_brain_mask"]


def dwi_brain_mask(series, bvals, *, b0_threshold=50.0):
    """Brain mask of a DWI series from its mean b=0 volume (dipy's median_otsu).

    Parameters
    ----------
    series : ndarray, shape (X, Y, Z, M)
        Diffusion-weighted series.
    bvals : array_like, shape (M,)
        b-values (s/mm^2).
    b0_threshold : float, optional
        Largest b-value (s/mm^2) counted as b=0.

    Returns
    -------
    mask : ndarray of bool, shape (X, Y, Z)

    Raises
    ------
    ValueError
        When ``bvals`` does not match the series, no volume has b <= ``b0_threshold``, or
        the mask is empty.
    """
    from dipy.segment.mask import median_otsu

    series = np.asarray(series, dtype=np.float64)
    bvals = np.asarray(bvals, dtype=np.float64)
    if series.ndim != 4 or bvals.shape != (series.shape[3],):
        raise ValueError(
            f"series shape {series.shape} and bvals shape {bvals.shape} must be (X, Y, Z, M) "
            "and (M,)"
        )
    b0 = bvals <= b0_threshold
    if not b0.any():
        raise ValueError(f"no b=0 volume (b <= {b0_threshold} s/mm^2); smallest b is {bvals.min()}")
    _, mask = median_otsu(series[..., b0].mean(axis=3), median_radius=2, numpass=1)
    if not mask.any():
        raise ValueError("median_otsu gave an empty mask on the mean b=0 volume")
    return mask.astype(bool)


def t1w_brain_mask(volume, *, smoothing_voxels=1.0, closing_iterations=2):
    """Head-region evaluation mask of a T1w volume, without a skull-stripping tool.

    Otsu's threshold on the lightly smoothed volume, the largest connected component,
    binary closing, then holes filled. The mask covers the head (scalp, skull and brain),
    not the brain alone: it is meant to restrict metrics to tissue and leave out the
    background air, not to replace a skull strip.

    Parameters
    ----------
    volume : ndarray, shape (X, Y, Z)
        T1w magnitude image.
    smoothing_voxels : float, optional
        Gaussian sigma (voxels) applied before thresholding, so noise does not break the
        head into pieces or add speckles in the background.
    closing_iterations : int, optional
        Iterations of the 6-connected closing that bridges thin dark gaps (sulci, skull).

    Returns
    -------
    mask : ndarray of bool, shape (X, Y, Z)

    Raises
    ------
    ValueError
        When the volume is not 3D or constant, or the mask is empty or covers the whole
        field of view (no background to separate the head from).
    """
    from dipy.segment.threshold import otsu

    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"t1w_brain_mask needs a 3D volume, got shape {volume.shape}")
    smooth = ndimage.gaussian_filter(volume, smoothing_voxels)
    if smooth.max() == smooth.min():
        raise ValueError("T1w volume is constant: no head to separate from background")
    foreground = smooth > otsu(smooth)
    labels, count = ndimage.label(foreground)
    if count == 0:
        raise ValueError("T1w mask is empty: no voxel above the Otsu threshold")
    sizes = np.bincount(labels.ravel())[1:]
    mask = labels == 1 + np.argmax(sizes)
    # Padding keeps the closing's erosion from eating the head where it touches the
    # field-of-view edge (the neck, a cropped vertex).
    pad = closing_iterations
    mask = ndimage.binary_closing(np.pad(mask, pad), iterations=closing_iterations)
    mask = mask[pad:-pad, pad:-pad, pad:-pad] if pad else mask
    mask = ndimage.binary_fill_holes(mask)
    if mask.all():
        raise ValueError(
            "T1w mask covers the whole field of view: the image has no background (already "
            "masked or cropped to the head?)"
        )
    return mask
