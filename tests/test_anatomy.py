"""Tests for noise2average.anatomy: Colin 27 grid, fractions, slab, deformation, bias field."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from noise2average import anatomy as an


@pytest.fixture(scope="module")
def work():
    return an.working_anatomy(voxel_size_mm=2.0)


def test_load_colin27_shapes_and_mask():
    image, mask, affine = an.load_colin27()
    assert image.shape == mask.shape == (181, 217, 181)
    assert image.dtype == np.float32 and mask.dtype == bool
    assert_allclose(np.abs(np.diag(affine)[:3]), 1.0)
    # A human brain is 1.1-1.6 litres; the mask is one connected piece.
    assert 1.1e6 < mask.sum() < 1.9e6
    assert image[~mask].min() == 0 and image[mask].min() > 0


def test_pure_tissue_intensities_are_the_colin_modes():
    image, mask, _ = an.load_colin27()
    csf, gm, wm = an.pure_tissue_intensities(image, mask)
    # Modes of the Colin 27 brain histogram (inspected): CSF ~31, GM ~87, WM ~114.
    assert abs(csf - 31) < 4 and abs(gm - 87) < 3 and abs(wm - 114) < 3


def test_tissue_fractions_linear_partial_volume():
    image = np.array([10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 120.0, 5.0]).reshape(2, 2, 2)
    mask = np.ones(image.shape, dtype=bool)
    mask[1, 1, 1] = False
    f = an.tissue_fractions(image, mask, intensities=(20.0, 50.0, 100.0))
    flat = f.reshape(-1, 3)
    assert_allclose(flat[0], [1, 0, 0])  # below CSF: pure CSF
    assert_allclose(flat[1], [1, 0, 0])
    assert_allclose(flat[2], [0.5, 0.5, 0])  # halfway CSF-GM
    assert_allclose(flat[3], [0, 1, 0])
    assert_allclose(flat[4], [0, 0.5, 0.5])  # halfway GM-WM
    assert_allclose(flat[6], [0, 0, 1])  # above WM: pure WM
    assert_allclose(flat[7], [0, 0, 0])  # outside the mask
    with pytest.raises(ValueError, match="intensities"):
        an.tissue_fractions(image, mask, intensities=(50.0, 20.0, 100.0))


def test_labels_from_fractions():
    f = np.zeros((2, 1, 1, 3), dtype=np.float32)
    f[0, 0, 0] = [0.1, 0.2, 0.6]
    f[1, 0, 0] = [0.3, 0.1, 0.0]  # brain fraction 0.4 < 0.5: background
    mask, dseg = an.labels_from_fractions(f)
    assert_array_equal(mask.ravel(), [True, False])
    assert_array_equal(dseg.ravel(), [3, 0])
    assert dseg.dtype == np.int8


def test_downsample_integer_factor_is_block_mean_with_correct_affine():
    rng = np.random.default_rng(0)
    volume = rng.random((8, 6, 4)).astype(np.float32)
    affine = np.array([[1.0, 0, 0, -10], [0, 1, 0, 5], [0, 0, 1, 2], [0, 0, 0, 1]])
    small, new_affine = an.downsample(volume, affine, voxel_size_mm=2.0)
    assert small.shape == (4, 3, 2)
    assert_allclose(small[1, 2, 0], volume[2:4, 4:6, 0:2].mean(), rtol=1e-6)
    # The output voxel centre is the mean of the centres of the input voxels it covers.
    centre_in = affine @ np.array([2.5, 4.5, 0.5, 1.0])
    assert_allclose(new_affine @ np.array([1, 2, 0, 1.0]), centre_in)
    assert_allclose(np.diag(new_affine)[:3], 2.0)


def test_downsample_non_integer_factor_preserves_constant_and_centre():
    volume = np.full((30, 30, 30, 2), 7.0, dtype=np.float32)
    small, new_affine = an.downsample(volume, np.eye(4), voxel_size_mm=2.5)
    assert small.shape == (12, 12, 12, 2)
    assert_allclose(small, 7.0, rtol=1e-5)
    assert_allclose(new_affine[:3, 3], 0.75)  # (f - 1) / 2
    with pytest.raises(ValueError, match="voxel_size_mm=0.5"):
        an.downsample(volume, np.eye(4), voxel_size_mm=0.5)


def test_working_anatomy_affine_maps_world_to_same_anatomy(work):
    """A working voxel is the mean of the 2x2x2 Colin voxels at its world position."""
    image, _, colin_affine = an.load_colin27()
    assert work.image.dtype == np.float32 and work.mask.dtype == bool
    assert work.fractions.shape == work.shape + (3,) and work.dseg.dtype == np.int8
    assert_allclose(work.voxel_size, 2.0)
    rng = np.random.default_rng(1)
    inside = np.argwhere(work.mask)
    picks = inside[rng.choice(len(inside), 200, replace=False)]
    to_colin = np.linalg.inv(colin_affine) @ work.affine
    for v in picks:
        c = to_colin @ np.r_[v, 1.0]
        lo = np.floor(c[:3]).astype(int)
        assert_allclose(c[:3], lo + 0.5)  # 2 mm centre between two 1 mm centres
        block = image[lo[0] : lo[0] + 2, lo[1] : lo[1] + 2, lo[2] : lo[2] + 2]
        assert_allclose(work.image[tuple(v)], block.mean(), rtol=1e-5)


def test_working_anatomy_keeps_head_and_air(work):
    # Margin around the brain: the border planes hold no brain, and air (exact zeros)
    # is kept for background noise estimation.
    assert not work.mask[[0, -1]].any() and not work.mask[:, [0, -1]].any()
    assert (work.image == 0).mean() > 0.1
    fractions = work.fractions.sum(axis=-1)
    assert fractions.max() <= 1 + 1e-5
    # Tissue volumes: CSF, GM, WM all present, WM between 25 and 50 % of the brain.
    volumes = np.bincount(work.dseg.ravel(), minlength=4)[1:] / work.mask.sum()
    assert np.all(volumes > 0.03) and 0.25 < volumes[2] < 0.5


def test_slab_affine_and_ventricle_centring(work):
    shape, affine, start = an.slab_grid(work, slab_slices=20)
    assert shape == (work.shape[0], work.shape[1], 20)
    # The slab grid's world coordinates land exactly on the working voxels it copies.
    sampled = an.sample_anatomy(work, an.grid_points(shape, affine), fractions=False)
    assert_allclose(sampled, work.image[:, :, start : start + 20], atol=1e-3)
    # Centred on the lateral ventricles: in MNI space their bodies lie a little above the
    # anterior commissure (z about 0 to +30 mm), and the slab holds most deep CSF.
    centre_z = (affine @ np.array([0, 0, 9.5, 1.0]))[2]
    assert -5 < centre_z < 35, centre_z
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(work.mask, sampling=work.voxel_size)
    deep_csf = (work.dseg == 1) & (depth > 15)
    assert deep_csf[:, :, start : start + 20].sum() > 0.6 * deep_csf.sum()
    whole_shape, whole_affine, whole_start = an.slab_grid(work, slab_slices=None)
    assert whole_shape == work.shape and whole_start == 0
    assert_allclose(whole_affine, work.affine)
    with pytest.raises(ValueError, match="slab_slices=0"):
        an.slab_grid(work, slab_slices=0)


def test_smooth_field_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    field = an.random_smooth_field(rng, n_components=3, correlation_length_mm=15.0)
    points = rng.uniform(-50, 50, size=(20, 3))
    h = 1e-2
    numeric = np.stack(
        [(field(points + h * e) - field(points - h * e)) / (2 * h) for e in np.eye(3)], axis=-1
    )
    assert_allclose(field.gradient(points), numeric, atol=2e-4)


def test_random_deformation_peak_and_positive_jacobian(work):
    points = an.grid_points(work.shape, work.affine)[::2, ::2, ::2]
    u = an.random_deformation(
        np.random.default_rng(3), points, max_displacement_mm=4.0, smoothness_mm=20.0
    )
    magnitude = np.linalg.norm(u(points), axis=-1)
    assert_allclose(magnitude.max(), 4.0, rtol=1e-4)
    jacobian = an.jacobian_determinant(u, points)
    assert jacobian.min() > 0.5
    # Volume is roughly preserved on average (no systematic shrinkage).
    assert abs(jacobian.mean() - 1) < 0.05


def test_random_deformation_is_scaled_down_to_keep_jacobian_positive():
    points = an.grid_points((20, 20, 20), np.diag([2.0, 2, 2, 1]))
    u = an.random_deformation(
        np.random.default_rng(4), points, max_displacement_mm=10.0, smoothness_mm=4.0
    )
    assert an.jacobian_determinant(u, points).min() >= 0.5 - 1e-9
    assert np.linalg.norm(u(points), axis=-1).max() < 10.0


def test_random_bias_field_range():
    points = an.grid_points((30, 30, 30), np.diag([3.0, 3, 3, 1]))
    bias = an.random_bias_field(np.random.default_rng(5), points, amplitude=0.15)
    values = bias(points)[..., 0]
    assert_allclose(np.abs(values - 1).max(), 0.15, rtol=1e-5)
    assert values.min() >= 0.85 - 1e-6 and values.max() <= 1.15 + 1e-6
    assert values.std() > 0.02  # not constant
    with pytest.raises(ValueError, match="amplitude=1.5"):
        an.random_bias_field(np.random.default_rng(5), points, amplitude=1.5)


def test_deformation_moves_image_and_fractions_together(work):
    """The deformed fractions describe the deformed image, not the undeformed one."""
    points = an.grid_points(work.shape, work.affine)
    u = an.random_deformation(
        np.random.default_rng(6), points, max_displacement_mm=4.0, smoothness_mm=20.0
    )
    image, fractions = an.sample_anatomy(work, points, deformation=u)
    mask, _ = an.labels_from_fractions(fractions)
    pure = np.array(an.pure_tissue_intensities(*an.load_colin27()[:2]))
    # Intensity predicted by the fractions (linear partial volume) against the image.
    predicted = fractions @ pure
    error_same = np.abs(predicted - image)[mask].mean()
    error_undeformed = np.abs(predicted - work.image)[mask].mean()
    assert error_same < 0.6 * error_undeformed
    assert np.abs(image - work.image)[mask].mean() > 3  # the anatomy did change
