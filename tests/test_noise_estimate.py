import numpy as np
import pytest
from scipy import ndimage

from noise2average.noise_estimate import estimate_sigma, estimate_sigma_map

SHAPE = (40, 44, 36)


def _grid(shape=SHAPE):
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def _smooth_phantom():
    """Smooth, strongly varying signal (range about 0..300), no edges."""
    x, y, z = _grid()
    return (
        120.0
        + 80.0 * np.exp(-2.0 * (x**2 + y**2 + z**2))
        + 40.0 * np.sin(2.5 * x) * np.cos(2.0 * y)
        + 30.0 * np.sin(3.0 * x + 2.0 * y + 2.5 * z)
        + 30.0 * z
    )


def _rician(truth, sigma, rng):
    real = truth + sigma * rng.standard_normal(truth.shape)
    return np.hypot(real, sigma * rng.standard_normal(truth.shape))


@pytest.mark.parametrize("sigma", [0.5, 2.0, 5.0, 10.0])
def test_gaussian_noise_on_smooth_phantom(sigma):
    rng = np.random.default_rng(1)
    data = _smooth_phantom() + sigma * rng.standard_normal(SHAPE)
    np.testing.assert_allclose(estimate_sigma(data), sigma, rtol=0.05)


@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_rician_high_snr_with_mask(sigma):
    # Head in air: magnitude noise is Gaussian-like inside (SNR >= 20), Rayleigh outside.
    rng = np.random.default_rng(2)
    x, y, z = _grid()
    head = x**2 / 0.8 + y**2 / 0.9 + z**2 / 0.7 < 1.0
    truth = np.where(head, 20.0 * sigma + 0.2 * _smooth_phantom() * sigma, 0.0)
    data = _rician(truth, sigma, rng)
    np.testing.assert_allclose(estimate_sigma(data, head), sigma, rtol=0.05)
    # Without the mask the Rayleigh background (std 0.655 sigma) biases the estimate low.
    assert estimate_sigma(data) < 0.95 * sigma


def test_mask_edge_does_not_leak():
    # A mask one voxel larger than a bright object: without erosion the step edge would be
    # part of the sample.
    rng = np.random.default_rng(3)
    x, y, z = _grid()
    obj = x**2 + y**2 + z**2 < 0.5
    sigma = 1.0
    data = np.where(obj, 500.0, 10.0) + sigma * rng.standard_normal(SHAPE)
    mask = ndimage.binary_dilation(obj, iterations=1)
    np.testing.assert_allclose(estimate_sigma(data, mask), sigma, rtol=0.08)


def test_zero_filled_voxels_are_skipped():
    rng = np.random.default_rng(4)
    sigma = 3.0
    data = _smooth_phantom() + sigma * rng.standard_normal(SHAPE)
    data[:, :, :12] = 0.0  # zero-filled slab (e.g. skull stripping or padding)
    np.testing.assert_allclose(estimate_sigma(data), sigma, rtol=0.05)


def test_thin_mask_warns_and_uses_uneroded_mask():
    rng = np.random.default_rng(5)
    data = 50.0 + 2.0 * rng.standard_normal(SHAPE)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[:, :, 10:12] = True  # two voxels thick: erosion leaves nothing
    with pytest.warns(UserWarning, match="too thin"):
        sigma = estimate_sigma(data, mask)
    np.testing.assert_allclose(sigma, 2.0, rtol=0.1)  # only ~1700 coefficients


def test_estimate_sigma_map_follows_a_noise_gradient():
    rng = np.random.default_rng(6)
    x, _, _ = _grid()
    sigma_true = 2.0 + 2.0 * (x + 1.0)  # 2 .. 6 along axis 0
    data = _smooth_phantom() + sigma_true * rng.standard_normal(SHAPE)
    sigma_map = estimate_sigma_map(data, radius=4)
    assert sigma_map.shape == SHAPE and sigma_map.dtype == np.float32
    ratio = sigma_map / sigma_true
    inner = (slice(4, -4),) * 3  # the map is extrapolated at the faces
    assert abs(np.median(ratio) - 1.0) < 0.05
    assert np.percentile(np.abs(ratio[inner] - 1.0), 90) < 0.15


def test_estimate_sigma_map_with_mask_fills_outside():
    rng = np.random.default_rng(7)
    data = 80.0 + 3.0 * rng.standard_normal(SHAPE)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[5:25, 5:30, 5:25] = True
    sigma_map = estimate_sigma_map(data, mask, radius=3)
    assert np.isfinite(sigma_map).all()
    np.testing.assert_allclose(np.median(sigma_map[mask]), 3.0, rtol=0.05)


def test_constant_data_gives_zero():
    assert estimate_sigma(np.full(SHAPE, 7.0)) == 0.0


def test_errors():
    data = np.ones(SHAPE)
    with pytest.raises(ValueError, match="3D"):
        estimate_sigma(np.ones((10, 10)))
    with pytest.raises(ValueError, match="3D"):
        estimate_sigma(np.ones((10, 10, 10, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        estimate_sigma(np.ones((10, 1, 10)))
    with pytest.raises(ValueError, match="mask is empty"):
        estimate_sigma(data, np.zeros(SHAPE, dtype=bool))
    with pytest.raises(ValueError, match=r"mask shape \(4, 4, 4\)"):
        estimate_sigma(data, np.ones((4, 4, 4), dtype=bool))
    bad = data.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        estimate_sigma(bad)
    with pytest.raises(ValueError, match="no 2x2x2 neighbourhood"):
        estimate_sigma(np.zeros(SHAPE))
    with pytest.raises(ValueError, match="radius must be an integer >= 1, got 0"):
        estimate_sigma_map(data, radius=0)
