"""Tests for noise2average.simulate: t1w_rep and memprage subjects from the shipped config."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from noise2average import motion as mo
from noise2average.simulate import SimulatedSubject, simulate_subject

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


@pytest.fixture(scope="module")
def params():
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(CONFIG.read_text())["simulation"]


@pytest.fixture(scope="module")
def t1w(params):
    return simulate_subject("t1w_rep", seed=11, params=params)


@pytest.fixture(scope="module")
def memprage(params):
    return simulate_subject("memprage", seed=11, params=params)


def _noise_free(params, **motion):
    p = copy.deepcopy(params)
    p["noise"]["sigma_relative_to_wm"] = 0.0
    p["anatomy"]["bias_field_amplitude"] = 0.0
    p["intensity_scale_jitter"] = 0.0
    p["motion"].update(motion)
    return p


def test_outputs_shapes_types_and_json_info(t1w, memprage, params):
    for subject, n in ((t1w, params["repetitions"]), (memprage, 4)):
        assert isinstance(subject, SimulatedSubject)
        shape = subject.truth.shape
        assert shape[2] == params["slab_slices"]
        assert subject.truth.dtype == np.float32 and subject.repetitions.dtype == np.float32
        assert subject.repetitions.shape == shape + (n,)
        assert subject.mask.dtype == bool and subject.mask.shape == shape
        assert subject.dseg.dtype == np.int8 and set(np.unique(subject.dseg)) == {0, 1, 2, 3}
        assert_array_equal(subject.dseg > 0, subject.mask)
        assert subject.affine.shape == (4, 4)
        assert_allclose(np.abs(np.diag(subject.affine)[:3]), params["voxel_size_mm"])
        json.dumps(subject.info)  # serialisable for a sidecar
        assert subject.info["n_repetitions"] == n
        assert np.all(subject.repetitions >= 0)


def test_same_seed_same_subject_and_anatomy_shared_across_data_types(t1w, memprage, params):
    again = simulate_subject("t1w_rep", seed=11, params=params)
    assert_array_equal(again.repetitions, t1w.repetitions)
    assert_array_equal(again.truth, t1w.truth)
    assert again.info == t1w.info
    # Same subject id: same anatomy (mask, labels, deformation, bias) for both data types.
    assert_array_equal(memprage.dseg, t1w.dseg)
    assert memprage.info["anatomy"] == t1w.info["anatomy"]


def test_different_seeds_give_different_anatomy(t1w, params):
    other = simulate_subject("memprage", seed=12, params=params)
    changed = np.mean(other.dseg != t1w.dseg)
    assert changed > 0.03
    peak = other.info["anatomy"]["deformation_peak_mm"]
    assert peak != t1w.info["anatomy"]["deformation_peak_mm"]


def test_anatomy_deformation_and_bias_within_configured_limits(t1w, params):
    anatomy = t1w.info["anatomy"]
    assert 0 < anatomy["deformation_peak_mm"] <= params["anatomy"]["deformation_max_mm"] + 1e-6
    assert anatomy["jacobian_min"] > 0
    low, high = anatomy["bias_field_range"]
    amplitude = params["anatomy"]["bias_field_amplitude"]
    assert 1 - amplitude - 1e-6 <= low < high <= 1 + amplitude + 1e-6


def test_reference_noise_matches_configured_noise_map(t1w, params):
    """Repetition 1: std of (noisy - truth) in white matter is sigma x g; Rayleigh air."""
    info = t1w.info
    scales = np.array(info["intensity_scales"])
    reference = t1w.truth / scales.mean()  # noise-free image at unit gain
    wm = t1w.dseg == 3
    relative = params["noise"]["sigma_relative_to_wm"]
    assert_allclose(info["sigma"], relative * reference[wm].mean(), rtol=1e-5)
    assert_allclose(t1w.sigma_map.max() / info["sigma"], params["noise"]["g_max"], rtol=0.01)
    rep1 = t1w.repetitions[..., 0] / scales[0]
    z = (rep1 - reference) / t1w.sigma_map
    assert_allclose(z[wm].std(), 1.0, atol=0.03)  # Rician std -> sigma at SNR > 10
    # g-factor: the central high-g region is noisier than the periphery by the g ratio.
    g = t1w.sigma_map / info["sigma"]
    brain_high = wm & (g > 1.3)
    brain_low = wm & (g < 1.15)
    ratio = (rep1 - reference)[brain_high].std() / (rep1 - reference)[brain_low].std()
    assert_allclose(ratio, g[brain_high].mean() / g[brain_low].mean(), rtol=0.08)
    # Air: Rayleigh mean sigma g sqrt(pi/2).
    air = reference < 1e-3 * info["sigma"]
    assert air.mean() > 0.05
    assert_allclose(np.mean(rep1[air] / t1w.sigma_map[air]), np.sqrt(np.pi / 2), rtol=0.02)


def test_resampled_repetition_has_interpolated_noise(t1w):
    scales = np.array(t1w.info["intensity_scales"])
    reference = t1w.truth / scales.mean()
    air = reference < 1e-3 * t1w.info["sigma"]
    pair = air[:-1] & air[1:]

    def lag1(volume):
        x = volume[:-1][pair] - volume[:-1][pair].mean()
        y = volume[1:][pair] - volume[1:][pair].mean()
        return np.mean(x * y) / np.sqrt(np.mean(x * x) * np.mean(y * y))

    rep1 = t1w.repetitions[..., 0] / scales[0]
    rep2 = t1w.repetitions[..., 1] / scales[1]
    assert abs(lag1(rep1)) < 0.03  # white noise in the reference
    assert lag1(rep2) > 0.05  # interpolation correlates neighbours
    # Interpolation (weights summing to 1) keeps the Rayleigh mean but shrinks the spread.
    z2 = rep2[air] / t1w.sigma_map[air]
    assert_allclose(z2.mean(), np.sqrt(np.pi / 2), rtol=0.03)
    assert z2.std() < 0.95 * np.sqrt(2 - np.pi / 2)


def test_motion_residuals_and_scales_within_limits(params):
    p = copy.deepcopy(params)
    p["repetitions"] = 4
    subject = simulate_subject("t1w_rep", seed=5, params=p)
    limits = p["motion"]
    reps = subject.info["repetitions"]
    assert reps[0]["resampled"] is False and reps[0]["motion"]["translation_norm_mm"] == 0
    for rep in reps[1:]:
        assert rep["motion"]["translation_norm_mm"] <= limits["max_translation_mm"]
        assert rep["motion"]["rotation_angle_deg"] <= limits["max_rotation_deg"]
        residual = rep["registration_residual"]
        assert residual["translation_norm_mm"] <= limits["residual_translation_mm"]
        assert residual["rotation_angle_deg"] <= limits["residual_rotation_deg"]
    jitter = p["intensity_scale_jitter"]
    scales = np.array(subject.info["intensity_scales"])
    assert np.all(np.abs(scales - 1) <= jitter) and np.ptp(scales) > 0


def test_motion_model_leaves_exactly_the_residual_misalignment(params):
    """Noise-free: repetition 1 is the truth; repetition 2 is the truth moved by E_2."""
    subject = simulate_subject("t1w_rep", seed=3, params=_noise_free(params))
    truth = subject.truth
    assert_array_equal(subject.repetitions[..., 0], truth)  # reference untouched
    rep = subject.info["repetitions"][1]
    center = subject.info["motion"]["rotation_center_mm"]
    residual = mo.rigid_matrix(
        rep["registration_residual"]["rotation_deg"],
        rep["registration_residual"]["translation_mm"],
        center_mm=center,
    )
    expected = mo.transform_image(truth, subject.affine, residual, mode="nearest")
    inner = (slice(None), slice(None), slice(3, -3))  # slab ends lack the neighbours
    moved = subject.repetitions[..., 1]
    error = np.sqrt(np.mean((moved[inner] - expected[inner]) ** 2))
    misaligned = np.sqrt(np.mean((moved[inner] - truth[inner]) ** 2))
    wm = truth[subject.dseg == 3].mean()
    assert error < 0.02 * wm  # double cubic interpolation at 2 mm
    assert error < 0.3 * misaligned
    # With a perfect registration the head motion is undone up to interpolation error.
    perfect = simulate_subject(
        "t1w_rep",
        seed=3,
        params=_noise_free(params, residual_translation_mm=0.0, residual_rotation_deg=0.0),
    )
    assert perfect.info["repetitions"][1]["motion"]["translation_norm_mm"] > 0.1
    undone = np.sqrt(np.mean((perfect.repetitions[..., 1][inner] - truth[inner]) ** 2))
    assert undone < 0.02 * wm and undone < 0.3 * misaligned


def test_memprage_echo_decay_matches_t2star_per_tissue(params):
    p = _noise_free(params)
    subject = simulate_subject("memprage", seed=11, params=p)
    echoes = subject.repetitions.astype(np.float64)
    te = np.array(p["memprage"]["echo_times_ms"])
    # The truth is the mean of the noise-free echoes.
    assert_allclose(subject.truth, echoes.mean(axis=-1), rtol=1e-5)
    # No bias, no noise: E(TE) = S0 exp(-TE / T2*); fit T2* from the first and last echo
    # in the purest voxel class of each tissue (hard label, far from the other tissues).
    from scipy import ndimage

    t2star = p["memprage"]["t2star_ms"]
    for label, tissue in ((1, "csf"), (2, "gm"), (3, "wm")):
        core = ndimage.binary_erosion(subject.dseg == label, iterations=1)
        signal = echoes[core]
        signal = signal[signal[:, 0] > 5]
        fitted = (te[-1] - te[0]) / np.log(signal[:, 0] / signal[:, -1])
        # Partial volume pulls GM and CSF towards their neighbours; WM cores are pure.
        rtol = {"csf": 0.3, "gm": 0.1, "wm": 0.02}[tissue]
        assert_allclose(np.median(fitted), t2star[tissue], rtol=rtol)
        # Mono-exponential: every echo on the same decay.
        decay = signal / signal[:, :1]
        model = np.exp(-(te - te[0]) / np.median(fitted))
        assert_allclose(np.median(decay, axis=0), model, rtol=0.01)
    # Rates add with the fractions: inside the brain R2* lies between the slowest (CSF)
    # and fastest (WM) tissue rate (a few voxels of dura in the falx, outside the Colin
    # brain mask, take the faster non-brain rate).
    inner = ndimage.binary_erosion(subject.mask, iterations=2)
    rate = np.log(echoes[inner][:, 0] / echoes[inner][:, -1]) / (te[-1] - te[0])
    assert rate.min() >= 1 / t2star["csf"] - 1e-4
    assert np.percentile(rate, 99.9) <= 1 / t2star["wm"] + 1e-4


def test_memprage_noise_independent_per_echo_with_same_sigma(memprage, params):
    info = memprage.info
    assert info["intensity_scales"] == [1.0] * 4
    wm = memprage.dseg == 3
    relative = params["noise"]["sigma_relative_to_wm"]
    assert_allclose(info["sigma"], relative * memprage.truth[wm].mean(), rtol=1e-5)
    # Noise-free echoes of the same subject (same seed, no noise) give the residuals.
    clean = simulate_subject(
        "memprage",
        seed=11,
        params={**params, "noise": {**params["noise"], "sigma_relative_to_wm": 0.0}},
    )
    assert_array_equal(clean.dseg, memprage.dseg)
    residual = (memprage.repetitions - clean.repetitions) / memprage.sigma_map[..., None]
    stds = residual[wm].std(axis=0)
    assert_allclose(stds, 1.0, atol=0.03)  # same sigma map for every echo
    corr = np.corrcoef(residual[wm].T)
    assert np.abs(corr[np.triu_indices(4, 1)]).max() < 0.03  # independent


def test_validation_names_the_offending_value(params):
    with pytest.raises(ValueError, match="data_type='dwi'"):
        simulate_subject("dwi", seed=1, params=params)
    with pytest.raises(ValueError, match="seed=-1"):
        simulate_subject("t1w_rep", seed=-1, params=params)
    bad = copy.deepcopy(params)
    del bad["motion"]["max_rotation_deg"]
    with pytest.raises(ValueError, match="motion.max_rotation_deg"):
        simulate_subject("t1w_rep", seed=1, params=bad)
    bad = copy.deepcopy(params)
    bad["noise"]["g_max"] = 0.5
    with pytest.raises(ValueError, match="g_max=0.5"):
        simulate_subject("t1w_rep", seed=1, params=bad)
