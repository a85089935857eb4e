"""Tests for noise2average.dti_metrics."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.spatial.transform import Rotation

from noise2average.dti_metrics import (
    DTI_METRIC_NAMES,
    angular_error_deg,
    angular_error_map,
    dti_metrics,
    fit_tensor,
    map_mae,
    white_matter_mask,
)

SHAPE = (4, 3, 2)
S0 = 1000.0
BVAL = 1000.0  # s/mm^2


def _directions(n):
    """``n`` evenly spread unit vectors on the upper hemisphere (Fibonacci spiral)."""
    i = np.arange(n) + 0.5
    z = 1.0 - i / n  # (0, 1]: half sphere, antipodal symmetry covers the rest
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def _phantom(seed=0):
    """Noise-free DWIs of known tensors: dwi, bvals, bvecs and the true maps."""
    rng = np.random.default_rng(seed)
    n_vox = int(np.prod(SHAPE))
    evals_choices = np.array(
        [[1.7e-3, 0.3e-3, 0.2e-3], [1.2e-3, 0.6e-3, 0.4e-3], [0.8e-3, 0.7e-3, 0.6e-3]]
    )
    evals = evals_choices[rng.integers(0, 3, n_vox)]
    rot = Rotation.random(n_vox, random_state=seed).as_matrix()  # (V, 3, 3), columns = evecs
    tensors = np.einsum("vij,vj,vkj->vik", rot, evals, rot)
    g = _directions(30)
    bvecs = np.vstack([np.zeros((2, 3)), g])
    bvals = np.concatenate([[0.0, 0.0], np.full(len(g), BVAL)])
    adc = np.einsum("ni,vij,nj->vn", bvecs, tensors, bvecs)
    dwi = (S0 * np.exp(-bvals * adc)).reshape(*SHAPE, -1)
    l1, l2, l3 = evals.T
    md = evals.mean(axis=1)
    fa = np.sqrt(0.5 * ((l1 - l2) ** 2 + (l2 - l3) ** 2 + (l3 - l1) ** 2) / (evals**2).sum(axis=1))
    truth = {
        "fa": fa.reshape(SHAPE),
        "md": md.reshape(SHAPE),
        "ad": l1.reshape(SHAPE),
        "rd": ((l2 + l3) / 2).reshape(SHAPE),
        "v1": rot[:, :, 0].reshape(*SHAPE, 3),
    }
    return dwi, bvals, bvecs, truth


def _rotate_z(v, degrees):
    return v @ Rotation.from_euler("z", degrees, degrees=True).as_matrix().T


# --- angular error ----------------------------------------------------------------------


def test_angular_error_of_opposite_vectors_is_zero():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(*SHAPE, 3))
    mask = np.ones(SHAPE, bool)
    assert angular_error_deg(v, -v, mask) == pytest.approx(0.0, abs=1e-6)
    assert angular_error_deg(v, 3.0 * v, mask) == pytest.approx(0.0, abs=1e-6)


def test_angular_error_of_orthogonal_vectors_is_90():
    v = np.zeros((*SHAPE, 3))
    r = np.zeros((*SHAPE, 3))
    v[..., 0] = 1.0
    r[..., 1] = -2.0
    assert angular_error_deg(v, r, np.ones(SHAPE, bool)) == pytest.approx(90.0, abs=1e-9)


def test_angular_error_of_known_rotation():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(*SHAPE, 3))
    v[..., 2] = 0.0  # in the xy plane, so a rotation about z turns each vector by exactly 30
    r = _rotate_z(v, 30.0)
    mask = np.ones(SHAPE, bool)
    assert angular_error_deg(v, r, mask) == pytest.approx(30.0, abs=1e-9)
    # 150 degrees between vectors is 30 degrees between axes
    assert angular_error_deg(v, _rotate_z(v, 150.0), mask) == pytest.approx(30.0, abs=1e-9)
    assert_allclose(angular_error_map(v, r), 30.0, atol=1e-9)


def test_angular_error_small_angle_is_accurate():
    v = np.zeros((1, 1, 1, 3))
    v[..., 0] = 1.0
    r = _rotate_z(v, 1e-6)
    assert angular_error_deg(v, r, np.ones((1, 1, 1), bool)) == pytest.approx(1e-6, rel=1e-6)


def test_angular_error_uses_mask_only():
    v = np.zeros((*SHAPE, 3))
    v[..., 0] = 1.0
    r = v.copy()
    r[0, 0, 0] = [0.0, 1.0, 0.0]  # 90 degrees, outside the mask
    r[1, 0, 0] = [0.0, 0.0, 0.0]  # undefined, outside the mask
    mask = np.ones(SHAPE, bool)
    mask[:2, 0, 0] = False
    assert angular_error_deg(v, r, mask) == pytest.approx(0.0, abs=1e-9)
    emap = angular_error_map(v, r, mask)
    assert np.isnan(emap[0, 0, 0]) and np.isnan(emap[1, 0, 0])
    mask[1, 0, 0] = True
    with pytest.raises(ValueError, match="zero or non-finite"):
        angular_error_deg(v, r, mask)


# --- map MAE ----------------------------------------------------------------------------


def test_map_mae_hand_computed():
    estimate = np.zeros((2, 2, 1))
    reference = np.zeros((2, 2, 1))
    estimate[:, :, 0] = [[1.0, 2.0], [3.0, 100.0]]
    reference[:, :, 0] = [[1.5, 1.0], [6.0, 0.0]]
    mask = np.ones((2, 2, 1), bool)
    mask[1, 1, 0] = False  # the 100 is outside
    # |1-1.5| + |2-1| + |3-6| = 0.5 + 1 + 3 = 4.5 over 3 voxels
    assert map_mae(estimate, reference, mask) == pytest.approx(1.5, abs=1e-12)


# --- tensor fit -------------------------------------------------------------------------


def test_fit_tensor_recovers_known_tensors():
    dwi, bvals, bvecs, truth = _phantom()
    maps = fit_tensor(dwi, bvals, bvecs)
    for name in ("fa", "md", "ad", "rd"):
        assert maps[name].shape == SHAPE and maps[name].dtype == np.float32
        assert_allclose(maps[name], truth[name], rtol=1e-3, err_msg=name)
    assert maps["v1"].shape == (*SHAPE, 3) and maps["v1"].dtype == np.float32
    angle = angular_error_map(maps["v1"], truth["v1"])
    assert np.max(angle) < 0.5
    assert_allclose(maps["color_fa"], np.abs(maps["v1"]) * maps["fa"][..., None], rtol=1e-6)
    assert_allclose(np.linalg.norm(maps["color_fa"], axis=-1), truth["fa"], rtol=1e-3)


def test_fit_tensor_honours_mask():
    dwi, bvals, bvecs, truth = _phantom(seed=3)
    mask = np.zeros(SHAPE, bool)
    mask[1:3, :, 1] = True
    maps = fit_tensor(dwi, bvals, bvecs, mask=mask)
    for name in ("fa", "md", "ad", "rd", "v1", "color_fa"):
        assert np.all(maps[name][~mask] == 0), name
    for name in ("fa", "md", "ad", "rd"):
        assert_allclose(maps[name][mask], truth[name][mask], rtol=1e-3, err_msg=name)
    assert angular_error_deg(maps["v1"], truth["v1"], mask) < 0.5


def test_fit_tensor_b0_threshold():
    dwi, bvals, bvecs, truth = _phantom()
    bvals = bvals.copy()
    bvals[:2] = 5.0  # nominal b=0 volumes, below the threshold
    maps = fit_tensor(dwi, bvals, bvecs, b0_threshold=10.0)
    assert_allclose(maps["md"], truth["md"], rtol=1e-3)
    with pytest.raises(ValueError, match="no b=0 volume"):
        fit_tensor(dwi, bvals, bvecs, b0_threshold=1.0)


# --- region table -----------------------------------------------------------------------


def test_dti_metrics_rows_for_two_regions():
    _, _, _, truth = _phantom()
    reference = {k: v.astype(np.float32) for k, v in truth.items()}
    maps = dict(reference)
    maps["fa"] = reference["fa"] + 0.01
    maps["md"] = reference["md"] - 1e-5
    ref_v1 = np.zeros((*SHAPE, 3))
    ref_v1[..., 0] = 1.0
    reference["v1"] = ref_v1
    maps["v1"] = _rotate_z(ref_v1, 10.0)
    brain = np.ones(SHAPE, bool)
    wm = white_matter_mask(reference["fa"], brain, fa_threshold=0.2)
    assert wm.any() and not wm.all()
    assert_allclose(wm, reference["fa"] > 0.2)
    rows = dti_metrics(maps, reference, {"brain": brain, "wm": wm})
    assert [(r["region"], r["metric"]) for r in rows] == [
        (region, metric) for region in ("brain", "wm") for metric in DTI_METRIC_NAMES
    ]
    values = {(r["region"], r["metric"]): r["value"] for r in rows}
    for region in ("brain", "wm"):
        assert values[region, "fa_mae"] == pytest.approx(0.01, rel=1e-4)
        assert values[region, "md_mae"] == pytest.approx(1e-5, rel=1e-3)
        assert values[region, "ad_mae"] == 0.0
        assert values[region, "rd_mae"] == 0.0
        assert values[region, "v1_angle"] == pytest.approx(10.0, abs=1e-4)
    assert all(isinstance(r["value"], float) for r in rows)


# --- validation -------------------------------------------------------------------------


def test_shape_mismatch_raises():
    a = np.zeros(SHAPE)
    mask = np.ones(SHAPE, bool)
    with pytest.raises(ValueError, match=r"estimate shape \(4, 3, 1\)"):
        map_mae(np.zeros((4, 3, 1)), a, mask)
    with pytest.raises(ValueError, match="v1 shape"):
        angular_error_deg(np.ones((4, 3, 1, 3)), np.ones((*SHAPE, 3)), mask)
    with pytest.raises(ValueError, match="mask shape"):
        map_mae(a, a, np.ones((4, 3, 1), bool))


def test_empty_mask_raises():
    a = np.zeros(SHAPE)
    empty = np.zeros(SHAPE, bool)
    with pytest.raises(ValueError, match="empty"):
        map_mae(a, a, empty)
    with pytest.raises(ValueError, match="empty"):
        angular_error_deg(np.ones((*SHAPE, 3)), np.ones((*SHAPE, 3)), empty)
    _, _, _, truth = _phantom()
    with pytest.raises(ValueError, match="region 'wm'.*empty"):
        dti_metrics(truth, truth, {"brain": ~empty, "wm": empty})
    dwi, bvals, bvecs, _ = _phantom()
    with pytest.raises(ValueError, match="empty"):
        fit_tensor(dwi, bvals, bvecs, mask=empty)


def test_gradient_count_mismatch_names_counts():
    dwi, bvals, bvecs, _ = _phantom()
    with pytest.raises(ValueError, match="bvals has 32 entries but bvecs has 31"):
        fit_tensor(dwi, bvals, bvecs[:-1])
    with pytest.raises(ValueError, match="32 entries but dwi has 31 volumes"):
        fit_tensor(dwi[..., :-1], bvals, bvecs)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        fit_tensor(dwi, bvals, bvecs.T)


def test_dti_metrics_missing_map_raises():
    _, _, _, truth = _phantom()
    partial = {k: v for k, v in truth.items() if k != "rd"}
    with pytest.raises(ValueError, match="maps is missing \\['rd'\\]"):
        dti_metrics(partial, truth, {"brain": np.ones(SHAPE, bool)})
    with pytest.raises(ValueError, match="regions is empty"):
        dti_metrics(truth, truth, {})
