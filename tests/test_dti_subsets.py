"""Tests for the SDnDTI direction-subset selection (noise2average.dti_subsets)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from noise2average.dti_subsets import (
    DSM6,
    design_condition_number,
    select_subsets,
    subset_energy,
    tensor_design_matrix,
)

# Fewer rotations than the default keep the file fast; the result is still well spread.
N_ROTATIONS = 5000


def hemisphere_fibonacci(n):
    """``n`` evenly spread unit directions on the upper hemisphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1.0 - i / n
    phi = np.pi * (1.0 + np.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


@pytest.fixture(scope="module")
def bvecs90():
    return hemisphere_fibonacci(90)


def test_dsm6_unit_and_condition_number():
    assert DSM6.shape == (6, 3)
    assert_allclose(np.linalg.norm(DSM6, axis=1), 1.0, atol=1e-12)
    condition = design_condition_number(DSM6)
    # Skare et al. 2000 report 1.3228 for DSM6.
    assert_allclose(condition, 1.3228, atol=2e-3)
    assert condition < 1.6


def test_tensor_design_matrix_gives_apparent_diffusivity():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 3))
    tensor = a @ a.T
    g = rng.standard_normal((10, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    params = tensor[[0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]
    design = tensor_design_matrix(g)
    assert design.shape == (10, 6)
    assert_allclose(design @ params, np.einsum("mi,ij,mj->m", g, tensor, g), rtol=1e-12)


def test_condition_number_singular_and_too_few():
    axes = np.repeat(np.eye(3), 2, axis=0)  # only 3 distinct directions: singular
    assert design_condition_number(axes) == np.inf
    with pytest.raises(ValueError, match="5 directions"):
        design_condition_number(DSM6[:5])


def test_subset_energy_known_value_and_antipodal_symmetry():
    # +-x, +-y: two antipodal pairs (1/2 each) and four pairs at distance sqrt(2).
    assert_allclose(subset_energy(np.eye(3)[:2]), 1.0 + 2.0 * np.sqrt(2.0), rtol=1e-12)
    flipped = DSM6 * np.array([1, -1, 1, -1, -1, 1])[:, None]
    assert_allclose(subset_energy(flipped), subset_energy(DSM6), rtol=1e-12)
    assert subset_energy(np.vstack([DSM6, -DSM6[:1]])) == np.inf


def _check_subsets(subsets, bvecs, count, max_condition=1.6):
    assert len(subsets) == count
    union = np.concatenate(subsets)
    assert all(s.shape == (6,) for s in subsets)
    assert len(np.unique(union)) == len(union)  # disjoint
    assert union.min() >= 0 and union.max() < len(bvecs)
    for subset in subsets:
        assert design_condition_number(bvecs[subset]) < max_condition
    return union


@pytest.mark.parametrize("n_subsets", [2, 4])
def test_select_subsets_even_and_well_conditioned(bvecs90, n_subsets):
    subsets = select_subsets(bvecs90, n_subsets=n_subsets, n_rotations=N_ROTATIONS, seed=0)
    union = _check_subsets(subsets, bvecs90, n_subsets)
    energy = subset_energy(bvecs90[union])
    rng = np.random.default_rng(1)
    random_energy = [
        subset_energy(bvecs90[rng.permutation(90)[: union.size]]) for _ in range(200)
    ]
    assert energy < np.percentile(random_energy, 5)


def test_select_subsets_as_many_as_found(bvecs90):
    subsets = select_subsets(bvecs90, n_rotations=N_ROTATIONS, seed=0)
    assert len(subsets) >= 4
    _check_subsets(subsets, bvecs90, len(subsets))


def test_select_subsets_deterministic_and_sign_invariant(bvecs90):
    first = select_subsets(bvecs90, n_subsets=2, n_rotations=2000, seed=7)
    again = select_subsets(bvecs90, n_subsets=2, n_rotations=2000, seed=7)
    from_generator = select_subsets(
        bvecs90, n_subsets=2, n_rotations=2000, seed=np.random.default_rng(7)
    )
    signs = np.where(np.arange(90) % 3 == 0, -1.0, 1.0)[:, None]
    flipped = select_subsets(bvecs90 * signs, n_subsets=2, n_rotations=2000, seed=7)
    for other in (again, from_generator, flipped):
        for a, b in zip(first, other):
            assert_array_equal(a, b)


def test_select_subsets_dsm6_itself():
    subsets = select_subsets(DSM6, n_rotations=2000, seed=0)
    assert len(subsets) == 1
    assert_array_equal(subsets[0], np.arange(6))


@pytest.mark.parametrize(
    "bvecs, kwargs, match",
    [
        (np.eye(3)[:2], {}, "at least 6"),
        (np.ones((10, 2)), {}, r"shape \(N, 3\)"),
        (2.0 * hemisphere_fibonacci(12), {}, "unit vectors"),
        (np.vstack([np.zeros(3), hemisphere_fibonacci(12)]), {}, "b=0"),
        (np.full((12, 3), np.nan), {}, "non-finite"),
        (hemisphere_fibonacci(12), {"n_subsets": 3}, "at most 2"),
        (hemisphere_fibonacci(12), {"n_subsets": 0}, "n_subsets=0"),
        (hemisphere_fibonacci(12), {"n_subsets": 1.5}, "n_subsets"),
        (hemisphere_fibonacci(12), {"max_condition": 1.0}, "max_condition"),
        (hemisphere_fibonacci(12), {"n_rotations": 0}, "n_rotations"),
    ],
)
def test_select_subsets_invalid_input(bvecs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_subsets(bvecs, **kwargs)


def test_select_subsets_too_few_found(bvecs90):
    with pytest.raises(ValueError, match="found only"):
        select_subsets(bvecs90, n_subsets=15, n_rotations=N_ROTATIONS, seed=0)
    # Six directions bunched near one axis cannot be conditioned.
    bunched = np.array([[0.1 * np.cos(a), 0.1 * np.sin(a), 1.0] for a in np.arange(6)])
    bunched /= np.linalg.norm(bunched, axis=1, keepdims=True)
    with pytest.raises(ValueError, match="found only 0"):
        select_subsets(bunched, n_rotations=500)
