import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage

from noise2average.metrics import (
    METRIC_BETTER,
    METRIC_NAMES,
    boundary_sharpness,
    default_data_range,
    image_metrics,
    mae,
    nrmse,
    psnr,
    series_metrics,
    ssim,
)
from noise2average.dti_metrics import DTI_METRIC_NAMES


def _phantom(shape=(16, 16, 12), seed=0):
    """Smooth positive volume with structure, and a full mask."""
    rng = np.random.default_rng(seed)
    ref = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    ref = 1.0 + (ref - ref.min()) / np.ptp(ref)
    return ref, np.ones(shape, dtype=bool)


def _step(shape=(20, 12, 12), edge=10):
    """Planar GM (value 0.4) / WM (value 1.0) step along axis 0 with its dseg."""
    ref = np.full(shape, 0.4)
    ref[edge:] = 1.0
    dseg = np.full(shape, 2, dtype=np.int8)
    dseg[edge:] = 3
    return ref, dseg


# --- data range, PSNR, MAE, NRMSE -------------------------------------------------------


def test_default_data_range_uses_mask_only():
    ref = np.array([1.0, 3.0, 100.0, 0.0]).reshape(2, 2, 1)
    mask = np.array([True, True, False, False]).reshape(2, 2, 1)
    assert default_data_range(ref, mask) == 2.0


def test_psnr_of_constant_offset():
    ref = np.zeros((4, 4, 4))
    ref[0, 0, 0] = 10.0  # data range 10
    mask = np.ones_like(ref, dtype=bool)
    # offset 0.1 everywhere: MSE = 0.01, PSNR = 10 log10(100 / 0.01) = 40 dB
    assert_allclose(psnr(ref + 0.1, ref, mask), 40.0, rtol=1e-12)
    # explicit data range 1: 10 log10(1 / 0.01) = 20 dB
    assert_allclose(psnr(ref + 0.1, ref, mask, data_range=1.0), 20.0, rtol=1e-12)


def test_psnr_identical_is_inf():
    ref, mask = _phantom()
    assert psnr(ref, ref, mask) == np.inf


def test_mae_nrmse_tiny_arrays():
    ref = np.array([1.0, 2.0, 3.0, 5.0]).reshape(2, 2, 1)
    img = np.array([2.0, 2.0, 1.0, 5.0]).reshape(2, 2, 1)
    mask = np.ones((2, 2, 1), dtype=bool)
    # |err| = 1, 0, 2, 0 -> mean 0.75; data range 5 - 1 = 4
    assert_allclose(mae(img, ref, mask), 0.75 / 4, rtol=1e-12)
    assert_allclose(mae(img, ref, mask, data_range=1.5), 0.5, rtol=1e-12)
    # ||err|| = sqrt(5), ||ref|| = sqrt(1 + 4 + 9 + 25) = sqrt(39)
    assert_allclose(nrmse(img, ref, mask), np.sqrt(5 / 39), rtol=1e-12)


def test_mask_excludes_voxels():
    ref = np.array([1.0, 2.0, 3.0, 5.0]).reshape(2, 2, 1)
    img = np.array([2.0, 2.0, 1.0, 500.0]).reshape(2, 2, 1)
    mask = np.array([True, True, True, False]).reshape(2, 2, 1)
    # inside: |err| = 1, 0, 2 -> 1; data range 3 - 1 = 2
    assert_allclose(mae(img, ref, mask), 0.5, rtol=1e-12)
    assert_allclose(nrmse(img, ref, mask), np.sqrt(5 / 14), rtol=1e-12)
    assert_allclose(psnr(img, ref, mask), 10 * np.log10(4 / (5 / 3)), rtol=1e-12)
    # 0/1 integer masks are accepted as bool
    assert_allclose(mae(img, ref, mask.astype(np.uint8)), 0.5, rtol=1e-12)


def test_nan_outside_mask_is_ignored():
    ref, mask = _phantom()
    mask[0] = False
    img = ref + 0.01
    img[0] = np.nan
    assert np.isfinite(psnr(img, ref, mask))
    assert np.isfinite(ssim(img, ref, mask))


# --- SSIM -------------------------------------------------------------------------------


def test_ssim_identical_is_one():
    ref, mask = _phantom()
    mask[:3] = False
    assert_allclose(ssim(ref, ref, mask), 1.0, rtol=1e-12)


def test_ssim_decreases_with_noise():
    ref, mask = _phantom()
    rng = np.random.default_rng(1)
    noise = rng.normal(size=ref.shape)
    values = [ssim(ref + s * noise, ref, mask) for s in (0.01, 0.05, 0.2)]
    assert 1.0 > values[0] > values[1] > values[2]


def test_ssim_single_voxel_mask_by_hand():
    # A one-voxel mask: local means are the voxel values, variances and covariance 0, so
    # SSIM = (2 a b + C1) / (a^2 + b^2 + C1) exactly.
    ref = np.zeros((5, 5, 5))
    img = np.full((5, 5, 5), 7.0)  # values outside the mask must not matter
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[2, 2, 2] = True
    a, b, L = 0.8, 1.0, 2.0
    img[2, 2, 2], ref[2, 2, 2] = a, b
    c1 = (0.01 * L) ** 2
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)
    assert_allclose(ssim(img, ref, mask, data_range=L), expected, rtol=1e-12)


def test_ssim_uniform_window_by_hand():
    # A very wide Gaussian window on a 3x3x3 volume is uniform to 2e-4, so the local SSIM at
    # every voxel is the global SSIM with population moments.
    rng = np.random.default_rng(2)
    ref = rng.uniform(size=(3, 3, 3))
    img = ref + 0.3 * rng.normal(size=(3, 3, 3))
    mask = np.ones((3, 3, 3), dtype=bool)
    L = 1.0
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    mx, mr = img.mean(), ref.mean()
    vx, vr = img.var(), ref.var()
    cov = np.mean((img - mx) * (ref - mr))
    expected = ((2 * mx * mr + c1) * (2 * cov + c2)) / (
        (mx**2 + mr**2 + c1) * (vx + vr + c2)
    )
    assert_allclose(ssim(img, ref, mask, data_range=L, sigma=100.0), expected, rtol=1e-3)


def test_ssim_matches_brute_force_masked_gaussian():
    # Independent computation: explicit Gaussian weights over the window, restricted to the
    # mask and renormalised at each voxel.
    rng = np.random.default_rng(3)
    shape = (6, 7, 5)
    ref = rng.uniform(size=shape)
    img = ref + 0.2 * rng.normal(size=shape)
    mask = np.zeros(shape, dtype=bool)
    mask[1:5, 1:6, 1:4] = True
    mask[1, 1, 1] = False
    sigma, L = 0.8, 1.3
    radius = int(3.5 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    k1 = np.exp(-(offsets**2) / (2 * sigma**2))
    k1 /= k1.sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    values = []
    for i, j, k in zip(*np.nonzero(mask)):
        w_sum = sx = sr = sxx = srr = sxr = 0.0
        for a, wa in zip(offsets, k1):
            for b, wb in zip(offsets, k1):
                for c, wc in zip(offsets, k1):
                    p, q, s = i + a, j + b, k + c
                    inside = 0 <= p < shape[0] and 0 <= q < shape[1] and 0 <= s < shape[2]
                    if not inside or not mask[p, q, s]:
                        continue
                    w = wa * wb * wc
                    x, r = img[p, q, s], ref[p, q, s]
                    w_sum += w
                    sx += w * x
                    sr += w * r
                    sxx += w * x * x
                    srr += w * r * r
                    sxr += w * x * r
        mx, mr = sx / w_sum, sr / w_sum
        vx, vr = sxx / w_sum - mx**2, srr / w_sum - mr**2
        cov = sxr / w_sum - mx * mr
        values.append(
            ((2 * mx * mr + c1) * (2 * cov + c2)) / ((mx**2 + mr**2 + c1) * (vx + vr + c2))
        )
    assert_allclose(ssim(img, ref, mask, data_range=L, sigma=sigma), np.mean(values),
                    rtol=1e-10)


def test_ssim_ignores_values_outside_mask():
    ref, mask = _phantom()
    mask[:4] = False
    img = ref + 0.05
    changed = img.copy()
    changed[:4] = 1000.0
    assert_allclose(ssim(changed, ref, mask), ssim(img, ref, mask), rtol=1e-12)


# --- boundary sharpness -----------------------------------------------------------------


def test_sharpness_of_reference_is_one():
    ref, dseg = _step()
    assert_allclose(boundary_sharpness(ref, ref, dseg), 1.0, rtol=1e-12)


def test_sharpness_decreases_with_blur():
    ref, dseg = _step()
    values = [
        boundary_sharpness(ndimage.gaussian_filter(ref, s, mode="nearest"), ref, dseg)
        for s in (0.5, 1.0, 2.0)
    ]
    assert 1.0 > values[0] > values[1] > values[2] > 0


def test_sharpness_of_noise_alone_is_near_one():
    ref, dseg = _step(shape=(20, 24, 24))
    rng = np.random.default_rng(4)
    noisy = ref + 0.1 * rng.normal(size=ref.shape)  # sigma = 1/6 of the edge contrast
    assert_allclose(boundary_sharpness(noisy, ref, dseg), 1.0, atol=0.03)


def test_sharpness_scales_with_contrast_and_ignores_offset():
    ref, dseg = _step()
    assert_allclose(boundary_sharpness(0.5 * ref + 3.0, ref, dseg), 0.5, rtol=1e-10)


def test_sharpness_boundary_needs_gm_wm_contact():
    ref, dseg = _step()
    dseg[dseg == 3] = 1  # CSF instead of WM
    with pytest.raises(ValueError, match="boundary"):
        boundary_sharpness(ref, ref, dseg)


# --- image_metrics and validation -------------------------------------------------------


def test_image_metrics_keys_and_consistency():
    ref, dseg = _step()
    mask = np.ones(ref.shape, dtype=bool)
    rng = np.random.default_rng(5)
    img = ref + 0.05 * rng.normal(size=ref.shape)
    out = image_metrics(img, ref, mask, dseg)
    assert tuple(out) == METRIC_NAMES == tuple(METRIC_BETTER)[: len(METRIC_NAMES)]
    assert out["psnr"] == psnr(img, ref, mask)
    assert out["ssim"] == ssim(img, ref, mask)
    assert out["mae"] == mae(img, ref, mask)
    assert out["nrmse"] == nrmse(img, ref, mask)
    assert out["sharpness"] == boundary_sharpness(img, ref, dseg)
    assert all(isinstance(v, float) for v in out.values())
    # Real data have no tissue labels: the sharpness is left out, the rest unchanged.
    without_labels = image_metrics(img, ref, mask, None)
    assert "sharpness" not in without_labels
    assert without_labels == {k: v for k, v in out.items() if k != "sharpness"}


@pytest.mark.parametrize("func", [psnr, ssim, mae, nrmse])
def test_shape_mismatch_raises(func):
    ref, mask = _phantom((4, 4, 4))
    with pytest.raises(ValueError, match=r"image shape \(4, 4, 3\)"):
        func(ref[..., :3], ref, mask)
    with pytest.raises(ValueError, match=r"mask shape \(4, 4, 3\)"):
        func(ref, ref, mask[..., :3])


@pytest.mark.parametrize("func", [psnr, ssim, mae, nrmse])
def test_empty_mask_raises(func):
    ref, mask = _phantom((4, 4, 4))
    with pytest.raises(ValueError, match="mask is empty"):
        func(ref, ref, np.zeros_like(mask))


def test_bad_inputs_raise():
    ref, mask = _phantom((4, 4, 4))
    with pytest.raises(ValueError, match="3D"):
        psnr(ref[0], ref[0], mask[0])
    with pytest.raises(ValueError, match="values"):
        mae(ref, ref, np.full(ref.shape, 2))
    with pytest.raises(ValueError, match="data_range must be finite and > 0, got -1.0"):
        psnr(ref, ref, mask, data_range=-1)
    with pytest.raises(ValueError, match="constant"):
        ssim(ref, np.ones_like(ref), mask)
    with pytest.raises(ValueError, match="sigma"):
        ssim(ref, ref, mask, sigma=0)
    with pytest.raises(ValueError, match="zero everywhere"):
        nrmse(ref, np.zeros_like(ref), mask)
    bad = ref.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="image has non-finite"):
        psnr(bad, ref, mask)
    step, dseg = _step()
    with pytest.raises(ValueError, match=r"dseg shape"):
        boundary_sharpness(step, step, dseg[:-1])
    with pytest.raises(ValueError, match="integer labels"):
        boundary_sharpness(step, step, dseg + 0.5)


def test_metric_better_covers_dti_metrics():
    assert tuple(METRIC_BETTER) == METRIC_NAMES + DTI_METRIC_NAMES
    assert all(METRIC_BETTER[name] == "lower" for name in DTI_METRIC_NAMES)


# --- series_metrics ---------------------------------------------------------------------


def _series(shape=(8, 8, 6), volumes=(10.0, 2.0, 1.0), seed=6):
    """Smooth positive series, volume k spanning [0, volumes[k]] (b0 bright, DWIs dim)."""
    ref, mask = _phantom(shape, seed=seed)
    unit = ref - ref.min()
    unit /= unit.max()
    return np.stack([v * unit for v in volumes], axis=-1), mask


def test_series_identical():
    ref, mask = _series()
    out = series_metrics(ref, ref, mask)
    assert tuple(out) == ("psnr", "ssim", "mae", "nrmse")
    assert out["psnr"] == np.inf
    assert_allclose(out["ssim"], 1.0, rtol=1e-12)
    assert out["mae"] == 0.0 and out["nrmse"] == 0.0
    assert all(isinstance(v, float) for v in out.values())


def test_series_constant_offset_uses_one_data_range():
    ref, mask = _series()  # data range 10 over the series (the dim volumes alone: 2 and 1)
    c = 0.5
    out = series_metrics(ref + c, ref, mask)
    assert_allclose(out["psnr"], 10 * np.log10(10.0**2 / c**2), rtol=1e-12)
    assert_allclose(out["mae"], c / 10.0, rtol=1e-12)
    assert_allclose(out["nrmse"], c * np.sqrt(ref.size) / np.linalg.norm(ref), rtol=1e-12)
    assert_allclose(series_metrics(ref + c, ref, mask, data_range=1.0)["psnr"],
                    10 * np.log10(1 / c**2), rtol=1e-12)


def test_series_pools_voxels_and_ignores_outside_mask():
    ref, mask = _series(volumes=(4.0, 2.0))
    mask[:2] = False
    ref[:2] = 1000.0  # outside the mask: neither the data range nor an error
    ref[2, 0, 0, 0], ref[2, 0, 1, 1] = 0.0, 4.0  # data range 4 inside the mask
    img = ref.copy()
    img[..., 0] += 0.1
    img[..., 1] -= 0.3
    img[:2] = -5.0
    L = 4.0
    out = series_metrics(img, ref, mask)
    # MSE over both volumes' voxels: (0.1^2 + 0.3^2) / 2 = 0.05 (not a mean of PSNRs)
    assert_allclose(out["psnr"], 10 * np.log10(L**2 / 0.05), rtol=1e-12)
    assert_allclose(out["mae"], 0.2 / L, rtol=1e-12)
    # SSIM: mean over volumes of the 3D SSIM, all with the series' data range
    per_volume = [ssim(img[..., k], ref[..., k], mask, data_range=L) for k in range(2)]
    assert_allclose(out["ssim"], np.mean(per_volume), rtol=1e-12)
    assert out["ssim"] != np.mean([ssim(img[..., k], ref[..., k], mask) for k in range(2)])


def test_series_shape_errors():
    ref, mask = _series()
    with pytest.raises(ValueError, match=r"reference must be 4D \(X, Y, Z, M\)"):
        series_metrics(ref[..., 0], ref[..., 0], mask)
    with pytest.raises(ValueError, match=r"image shape \(8, 8, 6, 2\) does not match"):
        series_metrics(ref[..., :2], ref, mask)
    with pytest.raises(ValueError, match=r"mask shape \(8, 8, 5\) does not match the first"):
        series_metrics(ref, ref, mask[..., :5])
    with pytest.raises(ValueError, match=r"mask shape \(8, 8, 6, 3\)"):
        series_metrics(ref, ref, np.ones(ref.shape, dtype=bool))
    with pytest.raises(ValueError, match="no volumes"):
        series_metrics(ref[..., :0], ref[..., :0], mask)
    with pytest.raises(ValueError, match="mask is empty"):
        series_metrics(ref, ref, np.zeros_like(mask))
    bad = ref.copy()
    bad[0, 0, 0, 1] = np.nan
    with pytest.raises(ValueError, match="image has non-finite"):
        series_metrics(bad, ref, mask)
