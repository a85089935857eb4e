"""Tests for noise2average.sdndti: SDnDTI repetitions of a given (real-like) DWI series."""

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from noise2average.diffusion_phantom import (
    b0_image,
    fibre_directions,
    gradient_table,
    synthesize_dwi,
    tensor_field,
)
from noise2average.dti_subsets import design_condition_number
from noise2average.noise import add_magnitude_noise
from noise2average.sdndti import reference_series, subset_repetitions

# As in test_simulate_dwi: 60 directions give two subsets below condition number 1.6.
N_DIRECTIONS = 60
OPTIONS = {"n_subsets": 2, "n_rotations": 2000}


@pytest.fixture(scope="module")
def phantom():
    """Tensors (X, Y, Z, 3, 3) and b0 (X, Y, Z) of a WM core in GM in CSF, air around."""
    shape = (20, 20, 8)
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij"), -1)
    r = np.linalg.norm(grid * (1.0, 1.0, 2.0), axis=-1)
    fractions = np.zeros(shape + (3,))
    fractions[..., 2] = r < 5
    fractions[..., 1] = (r >= 5) & (r < 7)
    fractions[..., 0] = (r >= 7) & (r < 9)
    mask = r < 9
    directions = fibre_directions(fractions[..., 2] + grid[..., 0] / 20, mask)
    tensors = tensor_field(fractions, directions)
    b0 = 1000.0 * b0_image(fractions, np.zeros(shape))
    return tensors, b0, mask


@pytest.fixture(scope="module")
def table():
    """A b=1000 shell with scanner-like b-value jitter, b=5 'b0' volumes; (bvals, bvecs)."""
    bvals, bvecs = gradient_table(N_DIRECTIONS, n_b0=3, bvalue=1000.0, seed=0)
    jitter = np.random.default_rng(1).uniform(-10, 10, bvals.size)
    return np.where(bvals > 0, bvals + jitter, 5.0), bvecs


@pytest.fixture(scope="module")
def clean(phantom, table):
    tensors, b0, _ = phantom
    bvals, bvecs = table
    # The b=5 volumes are labelled b0; synthesize them as such (bvecs are zero there).
    return synthesize_dwi(tensors, b0, np.where(bvals > 50, bvals, 0.0), bvecs).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def noisy(clean, phantom):
    sigma = 0.05 * float(phantom[1][phantom[2]].mean())
    return add_magnitude_noise(clean, sigma, np.random.default_rng(2))


def _repetitions_and_reference(series, bvals, bvecs, **options):
    reps, out_bvals, out_bvecs, info = subset_repetitions(
        series, bvals, bvecs, **{**OPTIONS, **options}
    )
    reference = reference_series(
        series, bvals, bvecs, out_bvals, out_bvecs, bvalue=options.get("bvalue")
    )
    return reps, reference, out_bvals, out_bvecs, info


def test_noise_free_repetitions_equal_reference(clean, table, phantom):
    bvals, bvecs = table
    reps, reference, out_bvals, out_bvecs, info = _repetitions_and_reference(clean, *table)
    assert reps.shape == clean.shape[:3] + (7, 2) and reps.dtype == np.float32
    assert reference.shape == clean.shape[:3] + (7,) and reference.dtype == np.float32
    scale = float(reference[phantom[2]].mean())
    for k in range(2):
        assert_allclose(reps[..., k], reference, rtol=1e-4, atol=1e-5 * scale)
    # The common set is subset 1's volumes, with their own (jittered) b-values.
    first = info["volumes"][0]
    assert_array_equal(out_bvals, np.concatenate([[0.0], bvals[first]]))
    assert_array_equal(out_bvecs[1:], bvecs[first])
    assert not set(info["volumes"][0]) & set(info["volumes"][1])
    for rep in info["repetitions"]:
        assert design_condition_number(bvecs[rep["volumes"]]) < 1.6
    assert info["b0_volumes"] == np.flatnonzero(bvals == 5.0).tolist()
    assert info["ignored_volumes"] == []
    json.dumps(info)


def test_noisy_repetitions_differ_and_their_mean_is_closer(noisy, table, phantom):
    reps, reference, *_ = _repetitions_and_reference(noisy, *table)
    mask = phantom[2]
    dwi = reps[..., 1:, :][mask]  # (V, 6, 2)
    assert np.abs(dwi[..., 0] - dwi[..., 1]).mean() > 0.01 * np.abs(dwi).mean()
    # The b0 channel is the shared mean b0.
    assert_array_equal(reps[..., 0, 0], reps[..., 0, 1])

    def error(x):
        return float(np.sqrt(np.mean((x - reference[mask][:, 1:]) ** 2)))

    assert error(dwi.mean(axis=-1)) < 0.85 * error(dwi[..., 0])


def test_multishell_uses_only_the_requested_shell(clean, table, phantom):
    bvals, bvecs = table
    tensors, b0, _ = phantom
    outer_bvals, outer_bvecs = gradient_table(30, n_b0=0, bvalue=2000.0, seed=3)
    outer = synthesize_dwi(tensors, b0, outer_bvals, outer_bvecs).astype(np.float32)
    series = np.concatenate([clean, outer], axis=-1)
    all_bvals = np.concatenate([bvals, outer_bvals])
    all_bvecs = np.concatenate([bvecs, outer_bvecs])
    single = subset_repetitions(clean, bvals, bvecs, **OPTIONS)
    for bvalue in (None, 1000.0):  # None: the lowest shell
        reps, out_bvals, out_bvecs, info = subset_repetitions(
            series, all_bvals, all_bvecs, bvalue=bvalue, **OPTIONS
        )
        assert_array_equal(reps, single[0])
        assert_array_equal(out_bvals, single[1])
        assert info["ignored_volumes"] == list(range(clean.shape[-1], series.shape[-1]))
        assert info["ignored_bvals"] == [2000.0]
        assert info["bvalue"] == float(np.median(bvals[bvals > 50]))
    reference = reference_series(series, all_bvals, all_bvecs, out_bvals, out_bvecs)
    assert_array_equal(reference, reference_series(clean, bvals, bvecs, out_bvals, out_bvecs))


def test_errors_name_the_problem(clean, table):
    bvals, bvecs = table
    with pytest.raises(ValueError, match="no b=0 volume"):
        subset_repetitions(clean, bvals + 100, bvecs, **OPTIONS)
    with pytest.raises(ValueError, match="holds 60 directions, 66 are needed"):
        subset_repetitions(clean, bvals, bvecs, **{**OPTIONS, "n_subsets": 11})
    with pytest.raises(ValueError, match="holds 0 directions"):
        subset_repetitions(clean, bvals, bvecs, bvalue=3000.0, **OPTIONS)
    with pytest.raises(ValueError, match="b=1000 s/mm\\^2 shell: found only .* among 60"):
        subset_repetitions(clean, bvals, bvecs, max_condition=1.05, **OPTIONS)
    with pytest.raises(ValueError, match="n_subsets must be an int >= 2"):
        subset_repetitions(clean, bvals, bvecs, n_subsets=1)
    with pytest.raises(ValueError, match="60 volumes"):
        reference_series(clean[..., :60], bvals, bvecs, bvals[:7], bvecs[:7])


def test_noise_only_voxels_never_exceed_the_b0(table):
    # Air: Rician noise around 0 in every volume. A free log-linear fit gives strongly
    # negative eigenvalues there; the synthesized repetitions must stay below the mean b0.
    bvals, bvecs = table
    rng = np.random.default_rng(3)
    shape = (6, 6, 4, bvals.size)
    air = np.abs(rng.normal(0.0, 20.0, shape) + 1j * rng.normal(0.0, 20.0, shape))
    repetitions, out_bvals, out_bvecs, _ = subset_repetitions(air, bvals, bvecs, **OPTIONS)
    b0_mean = air[..., bvals <= 50].mean(axis=-1)
    assert np.all(repetitions[..., 1:, :] <= b0_mean[..., None, None] * (1 + 1e-5))
    reference = reference_series(air, bvals, bvecs, out_bvals, out_bvecs)
    assert np.all(reference[..., 1:] <= b0_mean[..., None] * (1 + 1e-5))
