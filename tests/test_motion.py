"""Tests for noise2average.motion: rigid transforms, resampling, registration model."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from noise2average import motion as mo

# Anisotropic voxels and an off-centre origin, so voxel/world mix-ups show.
AFFINE = np.array(
    [[2.0, 0, 0, -40.0], [0, 1.5, 0, -30.0], [0, 0, 2.5, -25.0], [0, 0, 0, 1]]
)
SHAPE = (40, 48, 24)


def _blob(center_mm, width_mm=6.0):
    index = np.indices(SHAPE, dtype=np.float64)
    world = np.tensordot(AFFINE[:3, :3], index, axes=1) + AFFINE[:3, 3, None, None, None]
    r2 = sum((world[i] - center_mm[i]) ** 2 for i in range(3))
    return np.exp(-r2 / (2 * width_mm**2)), world


def _centre_of_mass_mm(image, world):
    weights = image / image.sum()
    return np.array([(weights * world[i]).sum() for i in range(3)])


def test_rotation_matrix_is_proper_and_right_handed():
    rotation = mo.rotation_matrix([0, 0, 90])
    assert_allclose(rotation @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    r = mo.rotation_matrix([3.0, -2.0, 1.5])
    assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert_allclose(np.linalg.det(r), 1.0)
    # The rotation vector's norm is the angle.
    assert_allclose(np.rad2deg(np.arccos((np.trace(r) - 1) / 2)), np.linalg.norm([3, -2, 1.5]))


def test_rigid_parameters_invert_rigid_matrix():
    center = mo.volume_center_mm(SHAPE, AFFINE)
    matrix = mo.rigid_matrix([1.2, -0.4, 0.7], [0.5, -1.0, 1.3], center_mm=center)
    rotation, translation = mo.rigid_parameters(matrix, center_mm=center)
    assert_allclose(rotation, [1.2, -0.4, 0.7], atol=1e-10)
    assert_allclose(translation, [0.5, -1.0, 1.3], atol=1e-10)
    # The centre of rotation only moves by the translation.
    assert_allclose(mo.apply_to_points(matrix, center), center + [0.5, -1.0, 1.3])


def test_translation_moves_centre_of_mass_by_the_translation_in_mm():
    center = mo.volume_center_mm(SHAPE, AFFINE)
    blob, world = _blob(center + [3.0, -2.0, 1.0])
    shift = np.array([1.3, -0.7, 2.1])
    moved = mo.transform_image(blob, AFFINE, mo.rigid_matrix([0, 0, 0], shift), order=3)
    displacement = _centre_of_mass_mm(moved, world) - _centre_of_mass_mm(blob, world)
    assert_allclose(displacement, shift, atol=0.02)


def test_rotation_about_volume_centre_moves_centre_of_mass_on_a_circle():
    center = mo.volume_center_mm(SHAPE, AFFINE)
    blob, world = _blob(center + [12.0, 0.0, 0.0])
    transform = mo.rigid_matrix([0, 0, 10.0], [0, 0, 0], center_mm=center)
    moved = mo.transform_image(blob, AFFINE, transform, order=3)
    expected = mo.apply_to_points(transform, _centre_of_mass_mm(blob, world))
    assert_allclose(_centre_of_mass_mm(moved, world), expected, atol=0.03)


def test_forward_then_inverse_recovers_image_within_interpolation_error():
    center = mo.volume_center_mm(SHAPE, AFFINE)
    blob, _ = _blob(center, width_mm=8.0)
    transform = mo.rigid_matrix([1.5, -1.0, 0.8], [1.2, 0.6, -0.9], center_mm=center)
    there = mo.transform_image(blob, AFFINE, transform, order=3)
    back = mo.transform_image(there, AFFINE, np.linalg.inv(transform), order=3)
    error = np.sqrt(np.mean((back - blob) ** 2)) / blob.max()
    assert error < 2e-3
    # Sanity: without the inverse the images differ much more.
    assert np.sqrt(np.mean((there - blob) ** 2)) / blob.max() > 10 * error


def test_registration_leaves_the_residual_misalignment():
    center = mo.volume_center_mm(SHAPE, AFFINE)
    blob, world = _blob(center + [4.0, 3.0, -2.0], width_mm=7.0)
    motion = mo.rigid_matrix([1.0, 0.5, -1.2], [1.5, -0.8, 0.4], center_mm=center)
    residual = mo.rigid_matrix([0.0, 0.0, 0.0], [0.6, 0.0, -0.5], center_mm=center)
    acquired = mo.transform_image(blob, AFFINE, motion, order=3)
    estimate = mo.registration_transform(motion, residual)
    registered = mo.transform_image(acquired, AFFINE, np.linalg.inv(estimate), order=3)
    displacement = _centre_of_mass_mm(registered, world) - _centre_of_mass_mm(blob, world)
    assert_allclose(displacement, [0.6, 0.0, -0.5], atol=0.03)


def test_output_grid_differs_from_input_grid():
    # Resampling onto a sub-grid with no motion copies the overlapping voxels.
    image = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    sub_affine = AFFINE.copy()
    sub_affine[:3, 3] += AFFINE[:3, :3] @ [2, 3, 4]
    out = mo.transform_image(
        image, AFFINE, np.eye(4), order=3, output_shape=(10, 10, 10), output_affine=sub_affine
    )
    assert_allclose(out, image[2:12, 3:13, 4:14], atol=1e-5)


def test_random_rigid_within_limits_and_reproducible():
    rng = np.random.default_rng(1)
    draws = [mo.random_rigid(rng, max_translation_mm=1.5, max_rotation_deg=0.5) for _ in range(500)]
    rotations = np.array([d[0] for d in draws])
    translations = np.array([d[1] for d in draws])
    assert np.linalg.norm(translations, axis=1).max() <= 1.5
    assert np.linalg.norm(rotations, axis=1).max() <= 0.5
    # Uniform in the ball: the mean radius is 3/4 of the limit; no preferred direction.
    assert_allclose(np.linalg.norm(translations, axis=1).mean(), 1.5 * 0.75, rtol=0.05)
    assert np.all(np.abs(translations.mean(axis=0)) < 0.15)
    again = mo.random_rigid(np.random.default_rng(7), max_translation_mm=1, max_rotation_deg=1)
    same = mo.random_rigid(np.random.default_rng(7), max_translation_mm=1, max_rotation_deg=1)
    assert_allclose(again, same)
    with pytest.raises(ValueError, match="max_translation_mm=-1"):
        mo.random_rigid(rng, max_translation_mm=-1, max_rotation_deg=1)


def test_max_displacement_bounds_every_corner():
    center = mo.volume_center_mm(SHAPE, AFFINE)
    bound = mo.max_displacement_mm(SHAPE, AFFINE, translation_mm=1.0, rotation_deg=2.0)
    rng = np.random.default_rng(2)
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in SHAPE], indexing="ij")).reshape(3, -1)
    world = (AFFINE[:3, :3] @ corners + AFFINE[:3, 3, None]).T
    for _ in range(50):
        rotation, translation = mo.random_rigid(rng, max_translation_mm=1.0, max_rotation_deg=2.0)
        moved = mo.apply_to_points(mo.rigid_matrix(rotation, translation, center_mm=center), world)
        assert np.linalg.norm(moved - world, axis=1).max() <= bound + 1e-9
