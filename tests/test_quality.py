"""Tests for noise2average.quality: no-reference quality measures."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage

from noise2average.noise import add_magnitude_noise
from noise2average.quality import (
    background_mask,
    background_sigma,
    no_reference_metrics,
    residual_whiteness,
    snr,
)

SHAPE = (40, 40, 24)
SIGMA = 2.0


@pytest.fixture(scope="module")
def head():
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in SHAPE], indexing="ij"), -1)
    return np.linalg.norm(grid, axis=-1) < 10


@pytest.fixture(scope="module")
def clean(head):
    """100 inside the head, 0 (air) outside."""
    return np.where(head, 100.0, 0.0)


def test_background_mask_margin_and_border(head):
    background = background_mask(head, margin_vox=3, border_vox=2)
    assert not (background & ndimage.binary_dilation(head, iterations=3)).any()
    assert not background[:2].any() and not background[:, :, -2:].any()
    assert background[2, 2, 2] and background[-3, -3, -3]
    # No margin and no border: exactly the complement of the head.
    assert np.array_equal(background_mask(head, margin_vox=0, border_vox=0), ~head)


@pytest.mark.parametrize("coils", [1, 4])
def test_background_sigma_recovers_sigma(clean, head, coils):
    noisy = add_magnitude_noise(clean, SIGMA, np.random.default_rng(coils), coils=coils)
    background = background_mask(head)
    assert_allclose(background_sigma(noisy, background, coils=coils), SIGMA, rtol=0.03)
    # Zero-filled voxels carry no noise and are left out.
    noisy[:, :10] = 0
    assert_allclose(background_sigma(noisy, background, coils=coils), SIGMA, rtol=0.03)


def test_background_sigma_nan_below_100_voxels(clean, head):
    noisy = add_magnitude_noise(clean, SIGMA, np.random.default_rng(0))
    background = np.zeros(SHAPE, dtype=bool)
    background.flat[:99] = True  # air voxels of the first rows
    assert np.isnan(background_sigma(noisy, background))
    background.flat[99] = True
    assert np.isfinite(background_sigma(noisy, background))


def test_background_sigma_4d_median_over_volumes(clean, head):
    rng = np.random.default_rng(5)
    series = np.stack(
        [add_magnitude_noise(clean, s, rng) for s in (1.0, SIGMA, 3.0)]
        + [np.zeros(SHAPE)],  # a zeroed background gives no value and is skipped
        axis=-1,
    )
    assert_allclose(background_sigma(series, background_mask(head)), SIGMA, rtol=0.03)
    assert np.isnan(background_sigma(np.zeros(SHAPE + (2,)), background_mask(head)))


def test_residual_whiteness_white_and_smooth(head):
    rng = np.random.default_rng(7)
    white = rng.standard_normal(SHAPE)
    smooth = ndimage.gaussian_filter(white, 2.0)
    assert abs(residual_whiteness(white, head)) < 0.05
    assert residual_whiteness(smooth, head) > 0.5
    both = residual_whiteness(np.stack([white, smooth], -1), head)
    assert_allclose(both, np.mean([residual_whiteness(v, head) for v in (white, smooth)]))
    # A volume left unchanged (zero residual) is skipped, not NaN for the whole series.
    with_unchanged = residual_whiteness(np.stack([np.zeros(SHAPE), smooth], -1), head)
    assert_allclose(with_unchanged, residual_whiteness(smooth, head))
    assert np.isnan(residual_whiteness(np.zeros(SHAPE + (2,)), head))


def test_snr_scales(clean, head):
    assert_allclose(snr(clean, head, SIGMA), 100.0 / SIGMA)
    assert_allclose(snr(2 * clean, head, SIGMA), 2 * snr(clean, head, SIGMA))
    assert_allclose(snr(clean, head, 2 * SIGMA), snr(clean, head, SIGMA) / 2)
    assert_allclose(snr(np.stack([clean, 3 * clean], -1), head, SIGMA), 200.0 / SIGMA)
    assert np.isnan(snr(clean, head, float("nan")))


def test_no_reference_metrics(clean, head):
    noisy = add_magnitude_noise(clean, SIGMA, np.random.default_rng(9))
    # The input itself: the noise left is the input's, also measured in the air around it.
    raw = no_reference_metrics(noisy, noisy, head)
    assert set(raw) == {"background_sigma", "noise_sigma", "snr", "residual_std",
                        "residual_whiteness"}
    assert_allclose(raw["background_sigma"], SIGMA, rtol=0.03)
    assert_allclose(raw["noise_sigma"], SIGMA, rtol=0.1)
    assert_allclose(raw["snr"], noisy[head].mean() / raw["noise_sigma"])
    assert raw["residual_std"] == 0
    # Half the noise removed inside the head: half the noise left, the input's background
    # level unchanged (it describes the input, whatever a method does with the air), a
    # white residual of half the noise.
    half = np.where(head, (noisy + clean) / 2, 0.0)
    halved = no_reference_metrics(half, noisy, head)
    assert halved["background_sigma"] == raw["background_sigma"]
    assert_allclose(halved["noise_sigma"], SIGMA / 2, rtol=0.1)
    assert_allclose(halved["residual_std"], SIGMA / 2, rtol=0.05)
    assert abs(halved["residual_whiteness"]) < 0.05
    # A smoothing denoiser leaves structure (edges) in the residual.
    smoothed = ndimage.gaussian_filter(noisy, 2.0)
    assert no_reference_metrics(smoothed, noisy, head)["residual_whiteness"] > 0.1
    # No air in the field of view (cropped to the head): no background level, the rest
    # still measured.
    tissue = add_magnitude_noise(np.full(SHAPE, 100.0), SIGMA, np.random.default_rng(2))
    filled = no_reference_metrics(tissue, tissue, head)
    assert np.isnan(filled["background_sigma"]) and np.isfinite(filled["noise_sigma"])


def test_errors_name_the_problem(clean, head):
    with pytest.raises(ValueError, match="background is empty"):
        background_mask(head, margin_vox=30)
    with pytest.raises(ValueError, match="background is empty"):
        background_mask(np.zeros((4, 4, 4), dtype=bool), border_vox=2)
    with pytest.raises(ValueError, match="margin_vox must be a non-negative int"):
        background_mask(head, margin_vox=-1)
    with pytest.raises(ValueError, match="background is empty"):
        background_sigma(clean, np.zeros(SHAPE, dtype=bool))
    with pytest.raises(ValueError, match="coils must be a positive int"):
        background_sigma(clean, ~head, coils=0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        snr(clean, head, 0.0)
    with pytest.raises(ValueError, match="image must be 3D or 4D with spatial shape"):
        snr(clean[:-1], head, SIGMA)
    with pytest.raises(ValueError, match="noisy shape"):
        no_reference_metrics(clean, clean[..., None], head)
    with pytest.raises(ValueError, match="no pair of neighbouring voxels"):
        residual_whiteness(clean, np.indices(SHAPE).sum(0) % 2 == 0)  # checkerboard
