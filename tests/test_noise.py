"""Tests for noise2average.noise: g-factor map and Rician / noncentral-chi magnitude noise."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from noise2average import noise as nz

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def test_g_factor_map_is_one_at_periphery_and_g_max_at_centre():
    g = nz.g_factor_map((41, 51, 31), AFFINE, g_max=1.4)
    assert g.dtype == np.float32 and g.shape == (41, 51, 31)
    assert g.min() >= 1.0 and g.max() <= 1.4 + 1e-6
    assert_allclose(g[20, 25, 15], 1.4, rtol=1e-6)  # centre voxel
    assert_allclose(g[0, 25, 15], 1.0, atol=2e-3)  # face of the field of view
    assert_allclose(g[0, 0, 0], 1.0)  # corner
    # Monotone and smooth along a line from the centre outwards.
    profile = g[20:, 25, 15]
    assert np.all(np.diff(profile) <= 1e-7)
    assert np.abs(np.diff(profile, 2)).max() < 0.02


def test_g_factor_map_is_fixed_to_the_given_scanner_frame():
    # A sub-grid (slab) evaluated with the parent grid's field of view equals the parent's
    # map cut to the slab.
    parent = nz.g_factor_map((30, 30, 30), AFFINE, g_max=1.5)
    slab_affine = AFFINE.copy()
    slab_affine[2, 3] = 2.0 * 10
    slab = nz.g_factor_map(
        (30, 30, 8),
        slab_affine,
        g_max=1.5,
        center_mm=[29.0, 29.0, 29.0],
        semi_axes_mm=[30.0, 30.0, 30.0],
    )
    assert_allclose(slab, parent[:, :, 10:18], rtol=1e-6)
    with pytest.raises(ValueError, match="g_max=0.5"):
        nz.g_factor_map((4, 4, 4), AFFINE, g_max=0.5)


def test_rician_noise_high_snr_std_matches_sigma_map():
    rng = np.random.default_rng(0)
    shape = (40, 40, 40)
    g = nz.g_factor_map(shape, AFFINE, g_max=1.4)
    sigma = 2.0 * g
    image = np.full(shape, 100.0)
    noisy = nz.add_magnitude_noise(image, sigma, rng)
    assert noisy.dtype == np.float32
    z = (noisy - image) / sigma
    assert_allclose(z.std(), 1.0, rtol=0.01)
    # Where g is high the noise is high: std in the central and peripheral shells.
    centre = g > 1.3
    edge = g < 1.05
    ratio = (noisy - image)[centre].std() / (noisy - image)[edge].std()
    assert_allclose(ratio, g[centre].mean() / g[edge].mean(), rtol=0.03)


def test_rician_background_is_rayleigh():
    rng = np.random.default_rng(1)
    noisy = nz.add_magnitude_noise(np.zeros((50, 50, 40)), 3.0, rng)
    assert_allclose(noisy.mean(), 3.0 * np.sqrt(np.pi / 2), rtol=0.01)
    assert_allclose(noisy.std(), 3.0 * np.sqrt(2 - np.pi / 2), rtol=0.01)


def test_noncentral_chi_background_mean_for_four_coils():
    rng = np.random.default_rng(2)
    noisy = nz.add_magnitude_noise(np.zeros((50, 50, 40)), 1.5, rng, coils=4)
    # sigma sqrt(pi/2) (2L-1)!! / (2^(L-1) (L-1)!) = sigma sqrt(pi/2) 105/48 for L = 4.
    expected = 1.5 * np.sqrt(np.pi / 2) * 105 / 48
    assert_allclose(nz.magnitude_noise_mean(0.0, 1.5, coils=4), expected, rtol=1e-10)
    assert_allclose(noisy.mean(), expected, rtol=0.01)
    # Sum of squares of 2L Gaussians: E[M^2] = A^2 + 2 L sigma^2.
    assert_allclose(np.mean(noisy.astype(np.float64) ** 2), 8 * 1.5**2, rtol=0.01)


@pytest.mark.parametrize("snr", [0.5, 1.0, 3.0, 20.0])
def test_magnitude_noise_mean_matches_monte_carlo(snr):
    rng = np.random.default_rng(3)
    noisy = nz.add_magnitude_noise(np.full((100, 100, 20), snr * 2.0), 2.0, rng)
    assert_allclose(noisy.mean(), nz.magnitude_noise_mean(snr * 2.0, 2.0), rtol=0.01)


def test_noise_is_reproducible_and_zero_sigma_is_exact():
    image = np.random.default_rng(4).random((6, 7, 8)) * 10
    a = nz.add_magnitude_noise(image, 1.0, np.random.default_rng(9))
    b = nz.add_magnitude_noise(image, 1.0, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)
    assert_allclose(nz.add_magnitude_noise(image, 0.0, np.random.default_rng(9)), image, rtol=1e-6)
    assert_allclose(nz.magnitude_noise_mean(image, 0.0), image)


def test_add_magnitude_noise_validation():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="coils=0"):
        nz.add_magnitude_noise(np.zeros((2, 2, 2)), 1.0, rng, coils=0)
    with pytest.raises(ValueError, match="non-negative"):
        nz.add_magnitude_noise(np.zeros((2, 2, 2)), -1.0, rng)
    with pytest.raises(ValueError, match="does not broadcast"):
        nz.add_magnitude_noise(np.zeros((2, 2, 2)), np.ones((3, 3, 3)), rng)
    with pytest.raises(ValueError, match="Generator"):
        nz.add_magnitude_noise(np.zeros((2, 2, 2)), 1.0, 42)
