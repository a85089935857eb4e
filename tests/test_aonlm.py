"""Tests for noise2average.aonlm (adaptive optimised non-local means)."""

import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from noise2average import aonlm as aonlm_module
from noise2average.aonlm import aonlm, koay_correction_factor


def _phantom(n=48, seed=0):
    """Piecewise-smooth 3D phantom (background 0, dark 40, grey 60/100/150, smooth texture)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1.0, 1.0, n)] * 3, indexing="ij")
    r = np.sqrt(x**2 / 0.8 + y**2 + z**2 / 0.9)
    truth = np.zeros((n, n, n))
    truth[r < 0.9] = 60.0
    truth[r < 0.75] = 100.0
    truth[r < 0.5] = 150.0
    truth[(np.abs(x) < 0.15) & (r < 0.6)] = 40.0  # a dark slab, SNR 4 at sigma 10
    texture = ndimage.gaussian_filter(rng.standard_normal((n, n, n)), 4.0)
    truth *= (1.0 + 0.1 * texture / texture.std()) * (r < 0.9)
    return truth


def _rician(truth, sigma, seed=1):
    rng = np.random.default_rng(seed)
    real = truth + sigma * rng.standard_normal(truth.shape)
    imag = sigma * rng.standard_normal(truth.shape)
    return np.sqrt(real**2 + imag**2)


@pytest.fixture(scope="module")
def phantom_case():
    truth = _phantom()
    sigma = 10.0
    return truth, _rician(truth, sigma), sigma


def _rmse(a, b, where):
    return float(np.sqrt(np.mean((np.asarray(a, float) - b)[where] ** 2)))


# --------------------------------------------------------------------------------------
# Denoising quality
# --------------------------------------------------------------------------------------


def test_reduces_rmse_on_rician_phantom(phantom_case):
    truth, noisy, sigma = phantom_case
    inside = truth > 0
    noisy_rmse = _rmse(noisy, truth, inside)
    for kwargs in ({"sigma": sigma}, {}):  # known sigma, and AONLM's own noise estimate
        den = aonlm(noisy, **kwargs)
        assert _rmse(den, truth, inside) < 0.6 * noisy_rmse, kwargs
    # Each pass alone denoises as well.
    for radius in (1, 2):
        den = aonlm(noisy, patch_radii=radius)
        assert _rmse(den, truth, inside) < 0.7 * noisy_rmse, radius


def test_rician_correction_reduces_dark_bias(phantom_case):
    truth, noisy, sigma = phantom_case
    dark = (truth > 25) & (truth < 55) & (ndimage.minimum_filter(truth, 5) > 25)
    assert dark.sum() > 500
    bias_rician = np.mean((aonlm(noisy, sigma=sigma) - truth)[dark])
    bias_gauss = np.mean((aonlm(noisy, sigma=sigma, rician=False) - truth)[dark])
    assert bias_gauss > 1.0  # the Rician floor lifts a dark region at SNR 4
    assert abs(bias_rician) < 0.5 * abs(bias_gauss)
    # In the pure-noise background it lowers the Rayleigh floor (sigma sqrt(pi/2) = 12.5)
    # only partly: the local SNR that enters Koay's factor is taken from the biased mean.
    background = ndimage.maximum_filter(truth, 5) == 0
    floor_rician = np.mean(aonlm(noisy, sigma=sigma)[background])
    floor_gauss = np.mean(aonlm(noisy, sigma=sigma, rician=False)[background])
    assert floor_gauss == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.05)
    assert floor_rician < 0.85 * floor_gauss


def test_matches_direct_transcription_of_the_algorithm():
    """The tiled, offset-major kernel computes the blockwise algorithm exactly."""
    rng = np.random.default_rng(5)
    shape = (11, 10, 9)
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    truth = 50.0 + 30.0 * (x > 5) + 2.0 * np.sin(y / 2.0) + z
    noisy = _rician(truth, 4.0, seed=7)
    mask = np.zeros(shape, dtype=bool)
    mask[1:9, 2:10, 1:7] = True
    for rician in (False, True):
        for f, v in ((1, 2), (2, 1)):
            est, dmap = _reference_pass(noisy, mask, f, v, rician)
            got = aonlm(noisy, mask=mask, patch_radii=f, search_radius=v, rician=rician)
            if rician:
                smooth = aonlm_module._positive_mean_filter(dmap, 5)
                mean = ndimage.uniform_filter(noisy, 3, mode="reflect")
                with np.errstate(divide="ignore", invalid="ignore"):
                    snr = np.where(smooth > 0, mean / np.sqrt(smooth), 0.0)
                bias = 2.0 * smooth / koay_correction_factor(snr)
                est = np.sqrt(np.maximum(est - bias, 0.0))
            expected = np.where(mask, est, noisy)
            assert_allclose(got, expected, rtol=2e-5, atol=1e-4, err_msg=f"{rician} {f} {v}")


def _reference_pass(data, mask, f, v, rician):
    """Blockwise AONLM pass written block by block, candidate by candidate (float64)."""
    shape = data.shape
    mean = ndimage.uniform_filter(data, 3, mode="reflect")
    var = np.maximum(ndimage.uniform_filter(data * data, 3, mode="reflect") - mean**2, 0.0)
    var *= 27.0 / 26.0
    scale = np.abs(data).max()
    valid = (data > 0) & (mean > 1e-6 * scale) & (var > (1e-6 * scale) ** 2)
    pad = v + f
    img = np.pad(data, pad, mode="symmetric")
    res = np.pad(data - mean, pad, mode="symmetric")
    acc = img**2 if rician else img
    support = ndimage.maximum_filter(mask, size=2 * f + 1, mode="constant", cval=False)

    def patch(a, c):
        return a[c[0] + pad - f : c[0] + pad + f + 1, c[1] + pad - f : c[1] + pad + f + 1,
                 c[2] + pad - f : c[2] + pad + f + 1]  # fmt: skip

    est, cnt = np.zeros(shape), np.zeros(shape)
    dsum, dcnt = np.zeros(shape), np.zeros(shape)
    for c in np.ndindex(*[(n + 1) // 2 for n in shape]):
        c = tuple(2 * i for i in c)
        if not support[c]:
            continue
        dps, blocks, dmin = [], [], np.inf
        if valid[c]:
            for d in np.ndindex(2 * v + 1, 2 * v + 1, 2 * v + 1):
                n = tuple(ci + di - v for ci, di in zip(c, d))
                if n == c or any(k < 0 or k >= s for k, s in zip(n, shape)) or not valid[n]:
                    continue
                if not (0.95 < mean[c] / mean[n] < 1 / 0.95 and 0.5 < var[c] / var[n] < 2):
                    continue
                dps.append(np.mean((patch(img, c) - patch(img, n)) ** 2))
                dmin = min(dmin, np.mean((patch(res, c) - patch(res, n)) ** 2))
                blocks.append(patch(acc, n))
        h2 = max(dmin, 1e-12 * scale**2)
        weights = [np.exp(-d / h2) if d <= 3 * h2 else 0.0 for d in dps]
        wmax = max(weights, default=0.0) or 1.0
        block = wmax * patch(acc, c) + sum(w * b for w, b in zip(weights, blocks))
        block = block / (wmax + sum(weights))
        for p in np.ndindex(*block.shape):
            x = tuple(ci + pi - f for ci, pi in zip(c, p))
            if all(0 <= k < s for k, s in zip(x, shape)):
                est[x] += block[p]
                cnt[x] += 1
                if dps:
                    dsum[x] += dmin
                    dcnt[x] += 1
    covered = cnt > 0
    est[covered] /= cnt[covered]
    est[~covered] = data[~covered]
    dmap = np.divide(dsum, dcnt, out=np.zeros(shape), where=dcnt > 0)
    return est, dmap


# --------------------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rician", [True, False])
def test_constant_image_stays_constant(rician):
    data = np.full((20, 18, 16), 123.4)
    out = aonlm(data, rician=rician)
    assert_allclose(out, 123.4, rtol=1e-5)
    out = aonlm(data, sigma=2.0, rician=rician, patch_radii=1)
    assert_allclose(out, 123.4, rtol=1e-5)


def test_sigma_zero_is_identity(phantom_case):
    _, noisy, _ = phantom_case
    assert_array_equal(aonlm(noisy, sigma=0.0), noisy.astype(np.float32))
    assert_array_equal(aonlm(noisy, sigma=np.zeros(noisy.shape)), noisy.astype(np.float32))


def test_sigma_map_zero_voxels_and_mask_pass_through(phantom_case):
    truth, noisy, sigma = phantom_case
    mask = truth > 80
    sigma_map = np.full(noisy.shape, sigma)
    sigma_map[:, :, :10] = 0.0
    out = aonlm(noisy, mask=mask, sigma=sigma_map)
    passed = ~mask | (sigma_map == 0)
    assert_array_equal(out[passed], noisy.astype(np.float32)[passed])
    assert np.mean(np.abs(out - noisy)[~passed]) > 1.0  # filtered inside


def test_mask_only_restricts_the_output():
    """Inside a mask, a Gaussian-mode pass equals the unmasked pass (same blocks, same
    candidates); the computation is cropped to the mask's bounding box."""
    truth = _phantom(40, seed=3)
    noisy = _rician(truth, 8.0, seed=4)
    mask = np.zeros(truth.shape, dtype=bool)
    mask[9:26, 15:30, 11:24] = True  # odd start: the block grid must not shift
    for f in (1, 2):
        full = aonlm(noisy, rician=False, patch_radii=f)
        masked = aonlm(noisy, mask=mask, rician=False, patch_radii=f)
        assert_allclose(masked[mask], full[mask], rtol=1e-5)


def test_crop_to_the_mask_box_is_exact():
    """The bounding-box crop leaves the masked result of a pass (bias included) unchanged."""
    truth = _phantom(40, seed=3)
    noisy = _rician(truth, 8.0, seed=4)
    mask = np.zeros(truth.shape, dtype=bool)
    mask[13:26, 15:30, 19:28] = True
    stats = aonlm_module._local_statistics(noisy, float(noisy.max()))
    for f in (1, 2):
        ((uncropped, _),) = aonlm_module._aonlm_passes(noisy, mask, stats, (f,), 3, True)
        cropped = aonlm(noisy, mask=mask, patch_radii=f)
        assert_allclose(cropped[mask], uncropped[mask], rtol=1e-5)


@pytest.mark.parametrize("rician", [True, False])
def test_joint_passes_equal_separate_passes(rician):
    """The radii share one sweep (offsets, preselection, squared differences) but each
    result is bit for bit the pass run alone, for odd and even radius gaps and any order."""
    rng = np.random.default_rng(6)
    noisy = _rician(_phantom(22, seed=5)[:, :20, :17], 8.0, seed=6)
    mask = rng.random(noisy.shape) > 0.3
    stats = aonlm_module._local_statistics(noisy, float(noisy.max()))
    for radii in ((1, 2), (2, 1), (1, 3)):
        joint = aonlm_module._aonlm_passes(noisy, mask, stats, radii, 2, rician)
        for f, (est, var) in zip(radii, joint):
            ((est1, var1),) = aonlm_module._aonlm_passes(noisy, mask, stats, (f,), 2, rician)
            assert_array_equal(est, est1, err_msg=f"{radii} {f}")
            assert_array_equal(var, var1, err_msg=f"{radii} {f}")


@pytest.mark.parametrize("shape", [(11, 10, 9), (1, 4, 3), (2, 7, 5)])
def test_local_statistics_and_padded_copies(shape):
    """The fused numba helpers equal their numpy / scipy definitions, tiny shapes (padding
    wider than the volume) included."""
    rng = np.random.default_rng(7)
    data = rng.random(shape) * 100.0
    data[0, 0, 0] = 0.0  # a non-positive voxel is not filterable
    stats = aonlm_module._local_statistics(data, float(data.max()))
    mean = ndimage.uniform_filter(data, 3, mode="reflect")
    var = np.maximum(ndimage.uniform_filter(data * data, 3, mode="reflect") - mean**2, 0.0)
    var *= 27.0 / 26.0
    assert_allclose(stats["mean"], mean, rtol=1e-13)
    for p in np.ndindex(2, 2, 2):
        sl = tuple(slice(i, None, 2) for i in p)
        n = mean[sl].shape
        got = tuple(slice(0, k) for k in n)
        assert_allclose(stats["pmean"][p][got], mean[sl].astype(np.float32), rtol=1e-6)
        assert_allclose(stats["pvar"][p][got], var[sl].astype(np.float32), rtol=1e-5)
        assert_array_equal(stats["pvalid"][p][got], (data > 0)[sl])
    for pad, rician in ((3, True), (5, False)):
        pimg = np.pad(data.astype(np.float32), pad, mode="symmetric")
        pres = np.pad((data - stats["mean"]).astype(np.float32), pad, mode="symmetric")
        got = aonlm_module._padded_copies(data, stats["mean"], pad, rician)
        for out, want in zip(got, (pimg, pres, pimg * pimg if rician else pimg)):
            assert_array_equal(out[:, :, 0, : (want.shape[2] + 1) // 2], want[:, :, 0::2])
            assert_array_equal(out[:, :, 1, : want.shape[2] // 2], want[:, :, 1::2])
            half = (want.shape[2] + 1) // 2  # then zeros, for the kernel's padded rows
            assert out.shape[3] == half + aonlm_module._LANES
            assert not out[:, :, 0, half:].any() and not out[:, :, 1, want.shape[2] // 2 :].any()
        mask = rng.random(shape) > 0.8
        for f in (1, 2, 3):
            support = ndimage.maximum_filter(mask, 2 * f + 1, mode="constant", cval=False)
            assert_array_equal(aonlm_module._block_support(mask, f), support[::2, ::2, ::2])


def test_output_shape_dtype_and_thread_independence():
    rng = np.random.default_rng(2)
    data = (rng.random((17, 20, 13)) * 100).astype(np.float64)
    out1 = aonlm(data, sigma=3.0, num_threads=1)
    assert out1.shape == data.shape
    assert out1.dtype == np.float32
    assert np.all(np.isfinite(out1))
    threads = min(2, numba.config.NUMBA_NUM_THREADS)
    assert_array_equal(aonlm(data, sigma=3.0, num_threads=threads), out1)
    assert aonlm(data.astype(np.int16), sigma=3.0).dtype == np.float32
    assert aonlm(np.ones((1, 4, 3))).shape == (1, 4, 3)  # tiny volumes work


_BOUNDSCHECK_SCRIPT = """
import sys
import numba
import numpy as np
from noise2average.aonlm import aonlm
assert numba.config.BOUNDSCHECK, "bounds checks are off"
data, mask = np.load(sys.argv[1]), np.load(sys.argv[2])
np.save(sys.argv[3], aonlm(data, mask=mask, num_threads=2))
"""


def test_kernels_stay_in_bounds(tmp_path):
    """With numba's bounds checks compiled in, the kernels index no array out of range:
    their inner loops run over padded rows and read past a row's end, which is only safe
    inside the padding the arrays carry. (A compilation of its own: about 50 s.)"""
    rng = np.random.default_rng(4)
    shape = (21, 18, 23)  # odd and even extents
    data = rng.random(shape) * 100.0 + 1.0
    x, y, z = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    mask = (x - 0.2) ** 2 + y**2 + (z / 0.8) ** 2 < 0.7  # tiles of different z extents
    np.save(tmp_path / "data.npy", data)
    np.save(tmp_path / "mask.npy", mask)
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    run = subprocess.run(
        [sys.executable, "-c", _BOUNDSCHECK_SCRIPT, str(tmp_path / "data.npy"),
         str(tmp_path / "mask.npy"), str(tmp_path / "out.npy")],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    # Compiled afresh into its own cache, not loaded from the package's unchecked one.
    assert any((tmp_path / "cache").rglob("*.nbc"))
    expected = aonlm(data, mask=mask, num_threads=2)
    assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_wavelet_mixing_matches_dipy():
    asm = pytest.importorskip("dipy.denoise.adaptive_soft_matching")
    rng = np.random.default_rng(3)
    shape = (20, 22, 24)  # dipy pads each axis by >= 8 zeros: the same boundary handling
    noisy, small, large = (rng.random(shape) * 100 for _ in range(3))
    expected = asm.adaptive_soft_matching(noisy, small, large, 5.0)
    assert_allclose(aonlm_module._wavelet_mix(noisy, small, large, 5.0), expected, atol=1e-9)


def test_koay_correction_factor():
    assert_allclose(koay_correction_factor(0.0), 2.0 - np.pi / 2.0, rtol=1e-12)
    xi = koay_correction_factor(np.array([1.0, 2.0, 5.0, 50.0, 1e4]))
    assert np.all(np.diff(xi) > 0) and xi[-1] == pytest.approx(1.0)
    # Koay and Basser: a Rician variance at SNR theta is xi(theta) sigma^2 (Monte Carlo).
    rng = np.random.default_rng(4)
    m = np.hypot(2.0 + rng.standard_normal(400_000), rng.standard_normal(400_000))
    assert m.var() == pytest.approx(koay_correction_factor(2.0), rel=0.01)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"data": np.ones((5, 5))}, "3D"),
        ({"data": np.ones((5, 5, 5, 2))}, "3D"),
        ({"data": np.full((5, 5, 5), np.nan)}, "non-finite"),
        ({"data": -np.ones((5, 5, 5))}, "non-negative"),
        ({"data": np.ones((5, 5, 5), dtype=complex)}, "real-valued"),
        ({"mask": np.ones((5, 5, 4), bool)}, "mask shape"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": np.ones((5, 5, 4))}, "sigma map shape"),
        ({"sigma": "high"}, "sigma"),
        ({"search_radius": 0}, "search_radius"),
        ({"search_radius": 1.5}, "search_radius"),
        ({"patch_radii": 0}, "patch_radii"),
        ({"patch_radii": (1, 2, 3)}, "patch_radii"),
        ({"patch_radii": ()}, "patch_radii"),
        ({"num_threads": 0}, "num_threads"),
    ],
)
def test_invalid_inputs_raise(kwargs, match):
    kwargs = {"data": np.ones((5, 5, 5)), **kwargs}
    data = kwargs.pop("data")
    with pytest.raises(ValueError, match=match):
        aonlm(data, **kwargs)


def test_negative_values_allowed_without_rician():
    data = np.linspace(-5.0, 5.0, 6 * 7 * 8).reshape(6, 7, 8)
    out = aonlm(data, rician=False)
    assert out.shape == data.shape and np.all(np.isfinite(out))
