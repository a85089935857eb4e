import numpy as np
import pytest

bm4d = pytest.importorskip("bm4d", reason="bm4d (non-commercial licence) is not installed")

from noise2average.bm4d_rician import _MARGIN, _bounding_box, bm4d_rician  # noqa: E402

N = 32
SIGMA = 10.0


@pytest.fixture(scope="module")
def phantom():
    """Rician 32^3 phantom: a bright ellipsoid (SNR 6..10) with a dark slab (SNR 0.5) in air."""
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.linspace(-1.0, 1.0, N)] * 3, indexing="ij")
    head = x**2 + y**2 + z**2 < 0.85**2
    truth = np.where(head, SIGMA * (8.0 + 2.0 * x), 0.0)
    dark = head & (y > 0.3)
    truth[dark] = 0.5 * SIGMA
    real = truth + SIGMA * rng.standard_normal(truth.shape)
    noisy = np.hypot(real, SIGMA * rng.standard_normal(truth.shape))
    core = head & (x**2 + y**2 + z**2 < 0.7**2)
    return {"truth": truth, "noisy": noisy, "dark": dark & core & (y > 0.45), "head": head, "y": y}


@pytest.fixture(scope="module")
def denoised(phantom):
    return bm4d_rician(phantom["noisy"], SIGMA, num_threads=1)


def _rmse(estimate, truth, where=None):
    error = (estimate - truth) if where is None else (estimate - truth)[where]
    return float(np.sqrt(np.mean(error**2)))


def test_reduces_rmse(phantom, denoised):
    assert denoised.dtype == np.float32 and denoised.shape == (N, N, N)
    assert _rmse(denoised, phantom["truth"]) < 0.4 * _rmse(phantom["noisy"], phantom["truth"])
    truth, head = phantom["truth"], phantom["head"]
    assert _rmse(denoised, truth, head) < 0.3 * _rmse(phantom["noisy"], truth, head)


def test_less_bias_in_dark_region_than_bm4d_on_magnitudes(phantom, denoised):
    dark = phantom["dark"]
    target = phantom["truth"][dark].mean()  # 0.5 sigma
    # Gaussian assumption: BM4D on the magnitudes converges to E{z} ~ 1.3 sigma.
    direct = bm4d.bm4d(phantom["noisy"], SIGMA)
    bias_vst = abs(denoised[dark].mean() - target)
    bias_direct = abs(direct[dark].mean() - target)
    assert bias_direct > 0.6 * SIGMA
    assert bias_vst < 0.25 * bias_direct
    assert bias_vst < 0.15 * SIGMA


def test_mask_pass_through(phantom, denoised):
    noisy = phantom["noisy"]
    mask = np.zeros(noisy.shape, dtype=bool)
    mask[4:14, 6:20, 8:18] = True
    out = bm4d_rician(noisy, SIGMA, mask=mask, num_threads=1)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[~mask], noisy[~mask].astype(np.float32))
    assert not np.allclose(out[mask], noisy[mask])
    # BM4D ran on the box plus margin only; inside, the result is close to the full run.
    assert _rmse(out, phantom["truth"], mask) < 0.4 * _rmse(noisy, phantom["truth"], mask)
    assert _rmse(out, denoised, mask) < 0.2 * SIGMA


def test_bounding_box_adds_margin_and_clips():
    mask = np.zeros((60, 40, 30), dtype=bool)
    mask[20:25, 1:3, 29] = True
    box = _bounding_box(mask, mask.shape)
    expected = (slice(20 - _MARGIN, 25 + _MARGIN), slice(0, 3 + _MARGIN), slice(29 - _MARGIN, 30))
    assert box == expected
    assert _bounding_box(None, mask.shape) == (slice(0, 60), slice(0, 40), slice(0, 30))
    tiny = np.zeros((6, 6, 6), dtype=bool)
    tiny[5, 5, 5] = True
    assert all(s.stop - s.start >= 5 for s in _bounding_box(tiny, tiny.shape))
    wide = np.zeros((30, 30, 30), dtype=bool)
    wide[0, 0, 0] = True
    expected = (slice(0, 20), slice(0, 20), slice(0, 13))
    assert _bounding_box(wide, wide.shape, (20, 20, 5)) == expected


def test_sigma_map_matches_scalar_sigma(phantom):
    noisy = phantom["noisy"]
    mask = np.zeros(noisy.shape, dtype=bool)
    mask[8:12, 8:12, 8:12] = True
    scalar = bm4d_rician(noisy, SIGMA, mask=mask, num_threads=1)
    mapped = bm4d_rician(noisy, np.full(noisy.shape, SIGMA), mask=mask, num_threads=1)
    np.testing.assert_allclose(mapped, scalar, rtol=1e-5, atol=1e-4)


def test_sigma_zero_is_identity(phantom):
    noisy = phantom["noisy"]
    out = bm4d_rician(noisy, 0.0)
    assert out.dtype == np.float32 and out is not noisy
    np.testing.assert_array_equal(out, noisy.astype(np.float32))


def test_errors():
    data = np.ones((8, 8, 8))
    with pytest.raises(ValueError, match="3D"):
        bm4d_rician(np.ones((8, 8)), 1.0)
    with pytest.raises(ValueError, match="3D"):
        bm4d_rician(np.ones((8, 8, 8, 2)), 1.0)
    with pytest.raises(ValueError, match="at least 5"):
        bm4d_rician(np.ones((8, 8, 4)), 1.0)
    bad = data.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="1 non-finite"):
        bm4d_rician(bad, 1.0)
    with pytest.raises(ValueError, match="sigma must be a finite float >= 0, got -1.0"):
        bm4d_rician(data, -1.0)
    with pytest.raises(ValueError, match="sigma must be a finite float >= 0, got nan"):
        bm4d_rician(data, np.nan)
    with pytest.raises(ValueError, match="sigma map shape"):
        bm4d_rician(data, np.ones((4, 4, 4)))
    with pytest.raises(ValueError, match="sigma map must be finite and > 0"):
        bm4d_rician(data, np.zeros((8, 8, 8)))
    with pytest.raises(ValueError, match="mask shape"):
        bm4d_rician(data, 1.0, mask=np.ones((4, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="mask is empty"):
        bm4d_rician(data, 1.0, mask=np.zeros((8, 8, 8), dtype=bool))
    with pytest.raises(ValueError, match="profile 'lc' is not implemented"):
        bm4d_rician(data, 1.0, profile="lc")
    with pytest.raises(ValueError, match="profile 'refilter' fails"):
        bm4d_rician(data, 1.0, profile="refilter")
    with pytest.raises(ValueError, match="profile must be one of .* got 'fast'"):
        bm4d_rician(data, 1.0, profile="fast")
    with pytest.raises(ValueError, match="profile '8x8' needs X and Y of at least 8"):
        bm4d_rician(np.ones((6, 9, 9)), 1.0, profile="8x8")
    with pytest.raises(ValueError, match="num_threads must be None or an integer >= 1, got 0"):
        bm4d_rician(data, 1.0, num_threads=0)
