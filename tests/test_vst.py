import numpy as np
import pytest
from scipy import integrate, stats

from noise2average.vst import rician_vst, rician_vst_inverse


def _moment(nu, power, sigma=1.0):
    """E{f(z)^power | nu}: composite Simpson over the Rice density (scipy.stats) on a grid 20
    times finer than the module's own tables, so the check is independent of them."""
    z = np.linspace(max(nu - 10.0 * sigma, 0.0), nu + 10.0 * sigma, 20001)
    density = stats.rice.pdf(z, nu / sigma, scale=sigma)
    return integrate.simpson(rician_vst(z, sigma) ** power * density, x=z)


def _rician(nu, sigma, size, rng):
    return np.hypot(nu + sigma * rng.standard_normal(size), sigma * rng.standard_normal(size))


def _naive_inverse(d, sigma=1.0):
    """Algebraic inverse sigma * f^-1(d), by interpolation of the forward transform."""
    u = np.linspace(0.0, 100.0, 200001)
    return sigma * np.interp(d, rician_vst(u, 1.0), u)


@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0])
def test_stabilised_variance_is_close_to_one(nu):
    mean = _moment(nu, 1)
    variance = _moment(nu, 2) - mean**2
    tolerance = 0.06 if nu < 3 else 0.025 if nu < 10 else 0.002
    assert abs(variance - 1.0) < tolerance, variance


def test_stabilised_variance_monte_carlo():
    rng = np.random.default_rng(0)
    sigma = 3.0
    for nu in (0.5, 1.0, 2.0, 5.0, 20.0):
        z = _rician(nu * sigma, sigma, 200_000, rng)
        variance = rician_vst(z, sigma).var()
        assert abs(variance - 1.0) < 0.07, (nu, variance)


@pytest.mark.parametrize("nu", [0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 49.0, 60.0, 90.0])
def test_exact_unbiased_inverse_round_trip(nu):
    expectation = _moment(nu, 1)
    assert abs(rician_vst_inverse(expectation, 1.0) - nu) < 2e-3


def test_naive_inverse_is_biased_at_low_snr_and_exact_inverse_is_not():
    for nu in (0.5, 1.0, 2.0):
        expectation = _moment(nu, 1)
        assert _naive_inverse(expectation) - nu > 0.15
        assert abs(rician_vst_inverse(expectation, 1.0) - nu) < 2e-3


def test_monte_carlo_mean_inverts_to_nu():
    rng = np.random.default_rng(1)
    sigma = 2.0
    for nu in (1.0, 3.0):
        z = _rician(nu * sigma, sigma, 400_000, rng)
        estimate = rician_vst_inverse(rician_vst(z, sigma).mean(), sigma)
        assert abs(estimate - nu * sigma) < 0.01 * sigma, (nu, estimate)
        assert abs(z.mean() - nu * sigma) > 0.1 * sigma  # the plain mean is biased


def test_forward_is_strictly_increasing_and_continuous():
    u = np.linspace(-3.0, 120.0, 123_001)  # crosses 0 and the table end at 64
    f = rician_vst(u, 1.0)
    steps = np.diff(f)
    assert (steps > 0).all()
    assert steps.max() < 4.0 * (u[1] - u[0])  # slope bounded: no jumps


def test_inverse_is_nondecreasing_and_nonnegative():
    d = np.linspace(-5.0, 120.0, 50_001)
    nu = rician_vst_inverse(d, 1.0)
    assert (np.diff(nu) >= 0).all()
    assert (nu >= 0).all()
    assert nu[0] == 0.0
    assert (np.diff(nu[nu > 0]) > 0).all()


def test_high_snr_asymptote():
    u = np.array([10.0, 30.0, 63.0, 65.0, 200.0])
    np.testing.assert_allclose(rician_vst(u, 1.0), u, atol=0.03)
    np.testing.assert_allclose(rician_vst(u * 5.0, 5.0), u, atol=0.03)
    np.testing.assert_allclose(rician_vst_inverse(u, 1.0), u, atol=0.03)


def test_scale_covariance():
    rng = np.random.default_rng(2)
    z = np.abs(rng.normal(3.0, 2.0, size=(4, 5, 6)))
    for scale in (0.01, 7.5, 1e4):
        np.testing.assert_allclose(
            rician_vst(z * scale, 1.3 * scale), rician_vst(z, 1.3), rtol=1e-12, atol=1e-12
        )
        d = rician_vst(z, 1.0)
        np.testing.assert_allclose(
            rician_vst_inverse(d, scale), scale * rician_vst_inverse(d, 1.0), rtol=1e-12
        )


def test_sigma_map_broadcasts():
    z = np.linspace(0.0, 20.0, 24).reshape(2, 3, 4)
    sigma = np.array([1.0, 2.0, 3.0, 4.0])
    out = rician_vst(z, sigma)
    assert out.shape == z.shape
    np.testing.assert_allclose(out[..., 2], rician_vst(z[..., 2], 3.0))
    np.testing.assert_allclose(
        rician_vst_inverse(out, sigma)[..., 1], rician_vst_inverse(out[..., 1], 2.0)
    )


def test_scalar_input():
    assert np.ndim(rician_vst(2.0, 1.0)) == 0
    assert rician_vst_inverse(-10.0, 1.0) == 0.0


def test_errors():
    with pytest.raises(ValueError, match="sigma must be finite and > 0, got 0.0"):
        rician_vst(np.ones(3), 0.0)
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        rician_vst_inverse(np.ones(3), -1.0)
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        rician_vst(np.ones(3), np.array([1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="z contains 1 non-finite"):
        rician_vst(np.array([1.0, np.inf]), 1.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        rician_vst(np.ones((2, 3)), np.ones(2))
