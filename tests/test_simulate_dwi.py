"""Tests for noise2average.simulate_dwi: dwi_appa and dti_subsets subjects on a coarse grid."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from noise2average.dti_subsets import design_condition_number
from noise2average.simulate import simulate_subject
from noise2average.simulate_dwi import DwiSubject, simulate_dwi_subject

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"

# Few directions keep the test fast; dti_subsets needs about 60 for two subsets with
# condition number < 1.6.
APPA = {"n_directions": 12, "n_b0": 2}
SUBSETS = {"n_directions": 60, "n_b0": 2, "n_rotations": 2000}


@pytest.fixture(scope="module")
def params():
    yaml = pytest.importorskip("yaml")
    p = yaml.safe_load(CONFIG.read_text())["simulation"]
    p["voxel_size_mm"] = 4.0
    p["slab_slices"] = 10
    return p


@pytest.fixture(scope="module")
def noise_free(params):
    p = copy.deepcopy(params)
    p["noise"]["sigma_relative_to_wm"] = 0.0
    return p


@pytest.fixture(scope="module")
def appa(params):
    return simulate_dwi_subject("dwi_appa", seed=5, params=params, diffusion=APPA)


@pytest.fixture(scope="module")
def sdn(params):
    return simulate_dwi_subject("dti_subsets", seed=5, params=params, diffusion=SUBSETS)


def _rel_mae(a, b, mask):
    return float(np.abs(a[mask] - b[mask]).mean() / np.abs(b[mask]).mean())


def test_shapes_counts_types_and_json_info(appa, sdn, params):
    for subject, m, n in ((appa, 14, 2), (sdn, 7, 2)):
        assert isinstance(subject, DwiSubject)
        shape = subject.mask.shape
        assert shape[2] == params["slab_slices"]
        assert subject.truth.shape == shape + (m,) and subject.truth.dtype == np.float32
        assert subject.repetitions.shape == shape + (m, n)
        assert subject.repetitions.dtype == np.float32
        assert subject.bvals.shape == (m,) and subject.bvecs.shape == (m, 3)
        assert_allclose(np.linalg.norm(subject.bvecs[subject.bvals > 0], axis=1), 1, atol=1e-6)
        assert subject.dseg.dtype == np.int8 and set(np.unique(subject.dseg)) == {0, 1, 2, 3}
        assert_array_equal(subject.dseg > 0, subject.mask)
        assert_allclose(np.abs(np.diag(subject.affine)[:3]), params["voxel_size_mm"])
        assert set(subject.reference_maps) >= {"fa", "md", "ad", "rd", "v1"}
        assert subject.reference_maps["v1"].shape == shape + (3,)
        assert np.all(subject.repetitions >= 0) and np.all(np.isfinite(subject.repetitions))
        json.dumps(subject.info)
        assert subject.info["n_repetitions"] == n
    assert (sdn.bvals == 0).sum() == 1 and (appa.bvals == 0).sum() == 2


def test_reference_maps_are_the_truth_tensors(appa):
    # dipy's WLS fit of the noise-free full-table DWIs recovers the ground-truth maps.
    from noise2average.dti_metrics import fit_tensor

    pytest.importorskip("dipy")
    fit = fit_tensor(appa.truth, appa.bvals, appa.bvecs, mask=appa.mask)
    ref = appa.reference_maps
    assert_allclose(fit["fa"][appa.mask], ref["fa"][appa.mask], atol=2e-3)
    assert_allclose(fit["md"][appa.mask], ref["md"][appa.mask], rtol=2e-3)
    wm = appa.dseg == 3
    assert ref["fa"][wm].mean() > 0.4 > ref["fa"][appa.dseg == 1].mean()


def test_appa_noise_free_exact_field_matches_truth(noise_free):
    subject = simulate_dwi_subject(
        "dwi_appa", seed=5, params=noise_free, diffusion={**APPA, "field_error_relative": 0.0}
    )
    assert subject.info["distortion"]["peak_displacement_voxels"] > 1
    for k in range(2):
        # Only spline interpolation error of distort + undistort remains.
        assert _rel_mae(subject.repetitions[..., k], subject.truth, subject.mask) < 0.02
    flat = simulate_dwi_subject(
        "dwi_appa", seed=5, params=noise_free, diffusion={**APPA, "field_max_hz": 0.0}
    )
    for k in range(2):
        assert_allclose(flat.repetitions[..., k], flat.truth, rtol=1e-5, atol=1e-6)


def test_appa_mismatch_grows_with_field_error(noise_free):
    mismatch = []
    for error in (0.0, 0.1, 0.3):
        options = {**APPA, "field_error_relative": error}
        s = simulate_dwi_subject("dwi_appa", seed=5, params=noise_free, diffusion=options)
        mismatch.append(_rel_mae(s.repetitions[..., 0], s.repetitions[..., 1], s.mask))
    assert mismatch[0] < mismatch[1] < mismatch[2]
    assert mismatch[2] > 2 * mismatch[0]


def test_appa_b0_noise_matches_sigma(params):
    # No field: the repetitions are the noisy acquisitions, noise sigma * g.
    s = simulate_dwi_subject(
        "dwi_appa", seed=5, params=params, diffusion={**APPA, "field_max_hz": 0.0}
    )
    sigma = s.info["sigma"]
    assert_allclose(sigma, params["noise"]["sigma_relative_to_wm"] * s.truth[..., 0][s.dseg == 3]
                    .mean(), rtol=1e-5)
    b0 = s.bvals == 0
    truth = s.truth[..., b0]
    bright = truth > 10 * float(s.sigma_map.max())  # Rician ~ Gaussian there
    resid = (s.repetitions[..., b0, :] - truth[..., None]) / s.sigma_map[..., None, None]
    values = resid[np.broadcast_to(bright[..., None], resid.shape)]
    assert values.size > 2000
    # in units of the local noise std sigma * g(x): unit std, no bias at high SNR
    assert_allclose(values.std(), 1.0, rtol=0.05)
    assert abs(values.mean()) < 0.1
    assert_allclose(s.sigma_map.min(), sigma, rtol=0.05)  # g = 1 at the FOV edge


def test_appa_noisy_repetitions_differ_from_truth_mostly_by_noise(appa):
    sigma = appa.info["sigma"]
    m = appa.mask
    for k in range(2):
        diff = appa.repetitions[..., k][m] - appa.truth[m]
        # mean offset (Rician bias + residual misalignment) small against the noise level
        assert abs(diff.mean()) < 0.5 * sigma
        assert 0.5 * sigma < diff.std() < 2.5 * sigma * appa.info["noise"]["g_range_brain"][1]


def test_dti_subsets_disjoint_well_conditioned(sdn):
    volumes = sdn.info["subsets"]["volumes"]
    assert len(volumes) == 2 and all(len(v) == 6 for v in volumes)
    assert not set(volumes[0]) & set(volumes[1])
    bvals = np.asarray(sdn.info["full_bvals"])
    bvecs = np.asarray(sdn.info["full_bvecs"])
    for v in volumes:
        assert np.all(bvals[v] > 0)
        assert design_condition_number(bvecs[v]) < 1.6
    assert_allclose(sdn.bvecs[1:], bvecs[volumes[0]])


def test_dti_subsets_noise_free_repetitions_equal_truth(noise_free):
    s = simulate_dwi_subject("dti_subsets", seed=5, params=noise_free, diffusion=SUBSETS)
    scale = float(s.truth[s.mask].mean())
    for k in range(2):
        assert_allclose(s.repetitions[..., k], s.truth, rtol=1e-4, atol=1e-5 * scale)


def test_dti_subsets_noise_independent_and_b0_noise_level(sdn):
    bright = sdn.truth[..., 0] > 10 * float(sdn.sigma_map.max())
    # b0 channel: the mean of n_b0 noisy b0 volumes, std sigma g / sqrt(n_b0)
    assert_allclose(sdn.sigma_map.max() / sdn.sigma_map.min(), sdn.info["noise"]["g_max"],
                    rtol=0.2)
    resid = (sdn.repetitions[..., 0, 0] - sdn.truth[..., 0]) / sdn.sigma_map
    assert bright.sum() > 100
    assert_allclose(resid[bright].std(), 1 / np.sqrt(SUBSETS["n_b0"]), rtol=0.1)
    assert_array_equal(sdn.repetitions[..., 0, 0], sdn.repetitions[..., 0, 1])
    # DWI channels: the two subsets' errors are (nearly) uncorrelated
    m = sdn.mask
    e0 = (sdn.repetitions[..., 1:, 0] - sdn.truth[..., 1:])[m].ravel()
    e1 = (sdn.repetitions[..., 1:, 1] - sdn.truth[..., 1:])[m].ravel()
    # shared b0 noise gives a small positive correlation
    assert abs(np.corrcoef(e0, e1)[0, 1]) < 0.5


def test_seed_reproducible_and_anatomy_shared(params, appa, sdn):
    again = simulate_dwi_subject("dwi_appa", seed=5, params=params, diffusion=APPA)
    assert_array_equal(again.repetitions, appa.repetitions)
    assert again.info == appa.info
    other = simulate_dwi_subject("dwi_appa", seed=6, params=params, diffusion=APPA)
    assert not np.array_equal(other.mask, appa.mask)
    assert_array_equal(sdn.mask, appa.mask)
    assert_array_equal(sdn.dseg, appa.dseg)
    assert_allclose(sdn.reference_maps["fa"], appa.reference_maps["fa"])
    t1w = simulate_subject("memprage", seed=5, params=params)
    assert_array_equal(t1w.mask, appa.mask)
    assert_array_equal(t1w.dseg, appa.dseg)
    assert_array_equal(t1w.affine, appa.affine)


def test_invalid_inputs_raise(params):
    with pytest.raises(ValueError, match="data_type"):
        simulate_dwi_subject("t1w_rep", seed=0, params=params)
    with pytest.raises(ValueError, match="unknown keys"):
        simulate_dwi_subject("dwi_appa", seed=0, params=params, diffusion={"bval": 1000})
    with pytest.raises(ValueError, match="diffusion.readout_time_s"):
        simulate_dwi_subject("dwi_appa", seed=0, params=params,
                             diffusion={**APPA, "readout_time_s": 0})
    with pytest.raises(ValueError, match="n_subsets"):
        simulate_dwi_subject("dti_subsets", seed=0, params=params,
                             diffusion={"n_directions": 12, "n_subsets": 3})
    with pytest.raises(ValueError, match="seed"):
        simulate_dwi_subject("dwi_appa", seed=-1, params=params, diffusion=APPA)


def test_options_from_config_merge_grid_shared_and_protocol(params):
    from noise2average.simulate_dwi import options_from_config

    diffusion = {
        "voxel_size_mm": 5.0,
        "slab_slices": 8,
        "b0_threshold": 50.0,
        "wm_fa": 0.6,
        "dwi_appa": {"n_directions": 30, "n_b0": 3},
        "dti_subsets": {"n_directions": 60, "n_subsets": 2},
    }
    grid, options = options_from_config(params, diffusion, "dwi_appa")
    assert grid["voxel_size_mm"] == 5.0 and grid["slab_slices"] == 8
    assert grid["noise"] == params["noise"]
    assert options == {"wm_fa": 0.6, "n_directions": 30, "n_b0": 3}
    _, options = options_from_config(params, diffusion, "dti_subsets")
    assert options == {"wm_fa": 0.6, "n_directions": 60, "n_subsets": 2}
    with pytest.raises(ValueError, match="data_type"):
        options_from_config(params, diffusion, "t1w_rep")
