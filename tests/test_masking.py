"""Tests for noise2average.masking: DWI brain mask and T1w head-region mask."""

import numpy as np
import pytest

from noise2average import masking

SHAPE = (36, 40, 32)


def _ellipsoid(radii, shape=SHAPE):
    """Normalised radius ((x/a)^2 + ...)^(1/2) about the volume centre, in voxels."""
    index = np.indices(shape, dtype=np.float64)
    center = (np.array(shape) - 1) / 2
    return np.sqrt(sum(((index[i] - center[i]) / radii[i]) ** 2 for i in range(3)))


def _noisy(image, sigma, seed):
    """Magnitude of the image plus complex Gaussian noise (Rician background, as in MRI)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=image.shape) + 1j * rng.normal(size=image.shape)
    return np.abs(image + sigma * noise)


def _t1w_head():
    """Bright scalp/skull shell, brain, dark ventricles inside, air outside, and a bright
    skin marker (vitamin capsule) in the air beside the head."""
    r = _ellipsoid((14, 16, 12))
    ventricles = _ellipsoid((3, 5, 3)) < 1
    image = np.where(r < 1, 100.0, 0.0)
    image[(r < 0.8) & (r >= 0.7)] = 20.0  # dark CSF/skull ring between scalp and brain
    image[ventricles] = 15.0
    marker = np.zeros(SHAPE, bool)
    marker[1:4, 1:4, 13:17] = True
    image[marker] = 150.0
    return _noisy(image, 4.0, seed=1), r, ventricles, marker


def test_t1w_mask_covers_head_with_ventricles_and_leaves_background_out():
    volume, r, ventricles, marker = _t1w_head()
    mask = masking.t1w_brain_mask(volume)
    assert mask.dtype == bool
    assert mask[ventricles].all()
    assert not mask[marker].any()
    assert mask[(r < 1) & ~ventricles].mean() > 0.97
    assert mask[r > 1.15].mean() < 0.01


def test_t1w_mask_keeps_head_touching_the_field_of_view_edge():
    volume, r, _, _ = _t1w_head()
    # Crop through the head, as a neck cut by the field of view.
    cropped, inside = volume[:, :, 8:], (r < 0.95)[:, :, 8:]
    mask = masking.t1w_brain_mask(cropped)
    assert mask[inside].all()


def test_t1w_mask_rejects_image_without_background():
    volume = np.full(SHAPE, 100.0)
    volume[_ellipsoid((5, 5, 5)) < 1] = 10.0
    with pytest.raises(ValueError, match="whole field of view"):
        masking.t1w_brain_mask(_noisy(volume, 2.0, seed=2))
    with pytest.raises(ValueError, match="constant"):
        masking.t1w_brain_mask(np.zeros(SHAPE))


def test_dwi_mask_from_mean_b0():
    r = _ellipsoid((12, 14, 10))
    bvals = np.array([0, 5] + [1000] * 30)
    b0 = bvals <= 50
    # Tissue inside, CSF around it: bright at b=0 but almost fully attenuated at b=1000
    # (free water), so a mask from the mean of all volumes would leave the CSF out.
    tissue = np.where(b0, 100.0, 45.0)
    csf = np.where(b0, 150.0, 7.0)
    signal = np.where((r < 0.75)[..., None], tissue, np.where((r < 1)[..., None], csf, 0.0))
    series = _noisy(signal, 4.0, seed=3)
    mask = masking.dwi_brain_mask(series, bvals)
    assert mask.shape == SHAPE and mask.dtype == bool
    assert mask[r < 0.9].mean() > 0.99
    assert mask[r > 1.2].mean() < 0.01


def test_dwi_mask_needs_b0_volume_and_matching_bvals():
    series = np.ones(SHAPE + (3,))
    with pytest.raises(ValueError, match="no b=0 volume"):
        masking.dwi_brain_mask(series, [1000, 1000, 2000])
    with pytest.raises(ValueError, match="bvals shape"):
        masking.dwi_brain_mask(series, [0, 1000])
