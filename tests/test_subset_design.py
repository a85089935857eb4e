"""Tests for noise2average.sdndti.subset_design: the SDnDTI design from a gradient table."""

import json

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from noise2average.diffusion_phantom import gradient_table
from noise2average.dti_subsets import design_condition_number
from noise2average.sdndti import subset_design, subset_repetitions

# As in test_sdndti_real: 60 directions give two subsets below condition number 1.6.
N_DIRECTIONS = 60
OPTIONS = {"n_subsets": 2, "n_rotations": 2000}


@pytest.fixture(scope="module")
def table():
    """A b=1000 shell with 3 b0 volumes; (bvals (63,), bvecs (63, 3))."""
    return gradient_table(N_DIRECTIONS, n_b0=3, bvalue=1000.0, seed=0)


def test_subsets_are_disjoint_well_conditioned_and_in_the_shell(table):
    bvals, bvecs = table
    volumes, out_bvals, out_bvecs, info = subset_design(bvals, bvecs, **OPTIONS)
    shell = set(np.flatnonzero(bvals > 50).tolist())
    assert len(volumes) == 2
    for subset in volumes:
        assert subset.shape == (6,) and np.issubdtype(subset.dtype, np.integer)
        assert set(subset.tolist()) <= shell
        assert design_condition_number(bvecs[subset]) < 1.6
    assert not set(volumes[0].tolist()) & set(volumes[1].tolist())
    # The common set is the mean b0 then subset 1's volumes.
    assert_array_equal(out_bvals, np.concatenate([[0.0], bvals[volumes[0]]]))
    assert_array_equal(out_bvecs, np.concatenate([np.zeros((1, 3)), bvecs[volumes[0]]]))
    assert info["volumes"] == [v.tolist() for v in volumes]
    assert info["shell_volumes"] == sorted(shell)
    json.dumps(info)


def test_design_equals_what_subset_repetitions_reports(table):
    bvals, bvecs = table
    volumes, out_bvals, out_bvecs, info = subset_design(bvals, bvecs, **OPTIONS)
    # The design needs no image: any series of the table's length gives the same one.
    series = np.ones((2, 2, 1, bvals.size), dtype=np.float32)
    _, rep_bvals, rep_bvecs, rep_info = subset_repetitions(series, bvals, bvecs, **OPTIONS)
    assert rep_info == info
    assert [rep["volumes"] for rep in rep_info["repetitions"]] == [v.tolist() for v in volumes]
    assert_array_equal(rep_bvals, out_bvals)
    assert_array_equal(rep_bvecs, out_bvecs)


def test_too_few_directions_raises(table):
    bvals, bvecs = table
    with pytest.raises(ValueError, match="holds 60 directions, 66 are needed"):
        subset_design(bvals, bvecs, **{**OPTIONS, "n_subsets": 11})
    few_bvals, few_bvecs = gradient_table(5, n_b0=1, bvalue=1000.0, seed=0)
    with pytest.raises(ValueError, match="at least 6 diffusion-weighted volumes, got 5"):
        subset_design(few_bvals, few_bvecs, **OPTIONS)


def test_table_without_b0_raises(table):
    bvals, bvecs = table
    dw = bvals > 50
    with pytest.raises(ValueError, match="no b=0 volume"):
        subset_design(bvals[dw], bvecs[dw], **OPTIONS)
