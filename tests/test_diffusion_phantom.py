"""Tests for the noise-free diffusion phantom (noise2average.diffusion_phantom)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from noise2average.diffusion_phantom import (
    b0_image,
    dti_maps,
    fibre_directions,
    gradient_table,
    prolate_eigenvalues,
    synthesize_dwi,
    tensor_field,
)
from noise2average.dti_subsets import subset_energy


def random_unit(rng, n):
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def min_angle_deg(g):
    cos = np.abs(g @ g.T)
    np.fill_diagonal(cos, 0.0)
    return np.degrees(np.arccos(np.clip(cos.max(), -1, 1)))


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("n_dir, n_b0", [(6, 1), (30, 3), (64, 6)])
def test_gradient_table_counts_and_norms(n_dir, n_b0):
    bvals, bvecs = gradient_table(n_dir, n_b0=n_b0, bvalue=1500.0)
    assert bvals.shape == (n_dir + n_b0,)
    assert bvecs.shape == (n_dir + n_b0, 3)
    assert (bvals == 0).sum() == n_b0
    assert_array_equal(bvals[bvals > 0], 1500.0)
    assert bvals[0] == 0
    assert_allclose(np.linalg.norm(bvecs[bvals > 0], axis=1), 1.0, atol=1e-12)
    assert_array_equal(bvecs[bvals == 0], 0.0)
    # b=0 volumes are interleaved, not bunched at the start
    gaps = np.diff(np.flatnonzero(bvals == 0))
    if gaps.size:
        assert gaps.min() >= (n_dir + n_b0) // n_b0 - 1


def test_gradient_table_evenness():
    n = 64
    bvals, bvecs = gradient_table(n, n_b0=0, seed=3)
    g = bvecs[bvals > 0]
    # hexagonal packing of n antipodal pairs on the sphere: spacing sqrt(4 pi / (sqrt3 n))
    expected = np.degrees(np.sqrt(4 * np.pi / (np.sqrt(3) * n)))
    assert min_angle_deg(g) > 0.8 * expected
    rng = np.random.default_rng(0)
    random_energies = [subset_energy(random_unit(rng, n)) for _ in range(5)]
    assert subset_energy(g) < min(random_energies)
    # six directions relax to the icosahedron: all pairwise angles 63.43 degrees
    bvals6, bvecs6 = gradient_table(6, n_b0=0)
    assert_allclose(min_angle_deg(bvecs6), 63.435, atol=0.05)


def test_gradient_table_deterministic_and_validated():
    a = gradient_table(20, n_b0=2, seed=5)
    b = gradient_table(20, n_b0=2, seed=5)
    assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="n_directions"):
        gradient_table(0, n_b0=1)
    with pytest.raises(ValueError, match="n_b0"):
        gradient_table(6, n_b0=-1)
    with pytest.raises(ValueError, match="bvalue"):
        gradient_table(6, n_b0=1, bvalue=-5.0)


# ------------------------------------------------------------------------------- tensors


def test_prolate_eigenvalues_give_fa_md():
    for fa, md in [(0.0, 1e-3), (0.15, 0.8e-3), (0.7, 0.7e-3), (0.9, 0.5e-3)]:
        l1, l2 = prolate_eigenvalues(fa, md)
        maps = dti_maps(np.diag([l1, l2, l2]))
        assert_allclose(maps["fa"], fa, atol=1e-12)
        assert_allclose(maps["md"], md, rtol=1e-12)
    with pytest.raises(ValueError, match="fa"):
        prolate_eigenvalues(1.0, 1e-3)


def pure_tissue_grid():
    fractions = np.zeros((4, 1, 1, 3))
    fractions[0, 0, 0] = (1, 0, 0)  # CSF
    fractions[1, 0, 0] = (0, 1, 0)  # GM
    fractions[2, 0, 0] = (0, 0, 1)  # WM
    fractions[3, 0, 0] = (0.2, 0.3, 0.5)  # mixed
    direction = np.zeros((4, 1, 1, 3))
    direction[...] = (1.0, 2.0, -2.0)  # not normalised on purpose
    return fractions, direction


def test_tensor_field_pure_tissues():
    fractions, direction = pure_tissue_grid()
    tensors = tensor_field(fractions, direction, wm_fa=0.7, wm_md=0.7e-3, csf_md=3e-3)
    assert tensors.shape == (4, 1, 1, 3, 3)
    assert_allclose(tensors, np.swapaxes(tensors, -1, -2), atol=0)
    maps = dti_maps(tensors)
    # CSF: isotropic free water
    assert_allclose(maps["md"][0, 0, 0], 3e-3, rtol=1e-12)
    assert_allclose(maps["fa"][0, 0, 0], 0.0, atol=1e-12)
    # GM: nearly isotropic
    assert_allclose(maps["fa"][1, 0, 0], 0.15, atol=1e-12)
    assert_allclose(maps["md"][1, 0, 0], 0.8e-3, rtol=1e-12)
    # WM: configured FA / MD, V1 along the given direction
    assert_allclose(maps["fa"][2, 0, 0], 0.7, atol=1e-12)
    assert_allclose(maps["md"][2, 0, 0], 0.7e-3, rtol=1e-12)
    v = np.array([1.0, 2.0, -2.0]) / 3.0
    assert_allclose(abs(maps["v1"][2, 0, 0] @ v), 1.0, atol=1e-12)
    assert_allclose(np.linalg.norm(maps["v1"], axis=-1), 1.0, atol=1e-12)
    # Mixed voxel: MD is the fraction-weighted mean of the tissue MDs
    assert_allclose(maps["md"][3, 0, 0], 0.2 * 3e-3 + 0.3 * 0.8e-3 + 0.5 * 0.7e-3, rtol=1e-12)
    assert_allclose(maps["rd"] * 2 + maps["ad"], 3 * maps["md"], rtol=1e-12)


def test_tensor_field_validation():
    fractions, direction = pure_tissue_grid()
    with pytest.raises(ValueError, match="white_matter_direction"):
        tensor_field(fractions, np.zeros_like(direction))
    with pytest.raises(ValueError, match="shape"):
        tensor_field(fractions[..., :2], direction)
    with pytest.raises(ValueError, match="fa"):
        tensor_field(fractions, direction, wm_fa=1.2)


# ------------------------------------------------------------------ synthesis round trip


def test_synthesize_then_dipy_wls_fit_round_trip():
    from dipy.core.gradients import gradient_table as dipy_gtab
    from dipy.reconst.dti import TensorModel

    rng = np.random.default_rng(42)
    shape = (5, 4, 3)
    fractions = rng.dirichlet((1.0, 1.0, 1.0), size=shape)
    direction = rng.standard_normal(shape + (3,))
    tensors = tensor_field(fractions, direction)
    s0 = rng.uniform(500.0, 1500.0, size=shape)
    bvals, bvecs = gradient_table(30, n_b0=3, bvalue=1000.0)
    dwi = synthesize_dwi(tensors, s0, bvals, bvecs)
    assert dwi.shape == shape + (33,)
    assert_allclose(dwi[..., bvals == 0], np.repeat(s0[..., None], 3, axis=-1))
    assert np.all(dwi[..., bvals > 0] < s0[..., None])

    fit = TensorModel(dipy_gtab(bvals, bvecs=bvecs), fit_method="WLS").fit(dwi)
    truth = dti_maps(tensors)
    assert_allclose(fit.md, truth["md"], rtol=1e-3)
    assert_allclose(fit.fa, truth["fa"], rtol=1e-3, atol=1e-6)
    cos = np.abs((fit.evecs[..., :, 0] * truth["v1"]).sum(axis=-1))
    assert np.all(cos[truth["fa"] > 0.1] > 0.9999)


def test_synthesize_dwi_validation():
    tensors = np.eye(3)[None, None, None] * 1e-3
    with pytest.raises(ValueError, match="unit"):
        synthesize_dwi(tensors, 1.0, [1000.0], [[1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="shape"):
        synthesize_dwi(tensors, 1.0, [0.0, 1000.0], [[1.0, 0.0, 0.0]])


# ------------------------------------------------------------------------ fibre directions


def test_fibre_directions_follow_tube_axis():
    shape = (32, 32, 32)
    axis = np.array([1.0, 0.6, 0.3])
    axis /= np.linalg.norm(axis)
    centre = (np.asarray(shape) - 1) / 2
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1) - centre
    along = grid @ axis
    radius = np.linalg.norm(grid - along[..., None] * axis, axis=-1)
    image = 100.0 / (1.0 + np.exp(radius - 4.0))  # bright tube of radius 4 voxels
    mask = radius < 10
    directions = fibre_directions(image, mask, smoothness_voxels=2.0)
    assert directions.shape == shape + (3,)
    assert_allclose(np.linalg.norm(directions, axis=-1), 1.0, atol=1e-10)
    core = (radius < 3.0) & (np.abs(along) < 8)
    angle = np.degrees(np.arccos(np.clip(np.abs(directions[core] @ axis), 0, 1)))
    assert angle.max() < 10.0
    # sign-normalised: the largest-magnitude component is positive
    idx = np.argmax(np.abs(directions), axis=-1)[..., None]
    assert np.all(np.take_along_axis(directions, idx, axis=-1) > 0)
    with pytest.raises(ValueError, match="smoothness_voxels"):
        fibre_directions(image, mask, smoothness_voxels=0.0)


# ------------------------------------------------------------------------------------ b0


def test_b0_contrast_order_and_bias():
    fractions = np.zeros((5, 1, 1, 3))
    fractions[0, 0, 0, 0] = 1  # CSF
    fractions[1, 0, 0, 1] = 1  # GM
    fractions[2, 0, 0, 2] = 1  # WM
    t1w = np.array([30.0, 70.0, 100.0, 50.0, 0.0]).reshape(5, 1, 1)  # 3: head, 4: air
    b0 = b0_image(fractions, t1w)
    csf, gm, wm, head, air = b0[:, 0, 0]
    assert csf > gm > wm > 0
    assert_allclose(csf, np.exp(-90 / 2000), rtol=1e-12)
    assert_allclose(gm, 0.81 * np.exp(-90 / 99), rtol=1e-12)
    assert_allclose(wm, 0.70 * np.exp(-90 / 69), rtol=1e-12)
    assert head > 0 and air == 0
    bias = np.full((5, 1, 1), 2.0)
    assert_allclose(b0_image(fractions, t1w, bias=bias), 2.0 * b0)
    with pytest.raises(ValueError, match="bias"):
        b0_image(fractions, t1w, bias=-bias)
    with pytest.raises(ValueError, match="t2_ms"):
        b0_image(fractions, t1w, t2_ms=(1.0, 2.0))


def test_working_anatomy_phantom_smoke():
    """End to end on a small slab of the real anatomy: b0 CSF > GM > WM on average."""
    from noise2average.anatomy import working_anatomy

    anatomy = working_anatomy(voxel_size_mm=4.0)
    b0 = b0_image(anatomy.fractions, anatomy.image)
    means = [b0[anatomy.dseg == label].mean() for label in (1, 2, 3)]
    assert means[0] > means[1] > means[2]
    directions = fibre_directions(anatomy.image, anatomy.mask)
    tensors = tensor_field(anatomy.fractions, directions)
    maps = dti_maps(tensors)
    assert np.nanmax(maps["fa"]) < 0.71
    assert maps["fa"][anatomy.dseg == 3].mean() > maps["fa"][anatomy.dseg == 1].mean()
