"""Tests for noise2average.alignment: grid checks, rigid registration, QC correlation."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from noise2average import alignment
from noise2average.motion import rigid_matrix, volume_center_mm

SHAPE = (40, 40, 40)
VOXEL_MM = 2.0
AFFINE = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
AFFINE[:3, 3] = [-39.0, -41.0, -37.0]
# Blobs (centre offset from the volume centre in mm, width in mm, intensity): asymmetric,
# so no rotation or shift maps the phantom onto itself.
BLOBS = [((0, 0, 0), 14.0, 1.0), ((8, -4, 6), 4.0, 1.5), ((-10, 6, -2), 5.0, 0.8),
         ((2, 12, -10), 3.0, 1.2)]


def _world_grid(shape=SHAPE, affine=AFFINE):
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return affine[:3, :3] @ index + affine[:3, 3:]


def _phantom(motion=np.eye(4)):
    """The phantom moved by ``motion`` (world mm), sampled exactly: O'(x) = O(motion^-1 x)."""
    center = volume_center_mm(SHAPE, AFFINE)
    world = np.linalg.inv(motion) @ np.vstack([_world_grid(), np.ones(np.prod(SHAPE))])
    image = np.zeros(world.shape[1])
    for offset, width, intensity in BLOBS:
        r2 = ((world[:3] - (center + offset)[:, None]) ** 2).sum(axis=0)
        image += intensity * np.exp(-r2 / (2 * width**2))
    return image.reshape(SHAPE)


@pytest.fixture(scope="module")
def registered():
    center = volume_center_mm(SHAPE, AFFINE)
    motion = rigid_matrix([0.0, 0.0, 3.0], [2 * VOXEL_MM, 0.0, -VOXEL_MM], center_mm=center)
    static, moving = _phantom(), _phantom(motion)
    resampled, matrix = alignment.rigid_register(moving, AFFINE, static, AFFINE)
    return static, moving, resampled, matrix, motion


def _max_error_mm(matrix, motion, static):
    """Largest distance (mm) between where ``matrix`` and ``motion`` send phantom points."""
    world = _world_grid()[:, static.ravel() > 0.05]
    points = np.vstack([world, np.ones(world.shape[1])])
    return np.linalg.norm((matrix @ points - motion @ points)[:3], axis=0).max()


def test_rigid_register_recovers_shift_and_rotation_within_half_a_voxel(registered):
    static, _, _, matrix, motion = registered
    # Registration maps reference points to where they went: the simulated motion.
    assert _max_error_mm(matrix, motion, static) < 0.5 * VOXEL_MM
    assert_allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3), atol=1e-6)


def test_rigid_register_with_mask_recovers_the_motion(registered):
    static, moving, _, _, motion = registered
    _, matrix = alignment.rigid_register(moving, AFFINE, static, AFFINE, mask=static > 0.05)
    assert _max_error_mm(matrix, motion, static) < 0.5 * VOXEL_MM


def test_registration_raises_qc_correlation(registered):
    static, moving, resampled, _, _ = registered
    mask = static > 0.05
    _, before = alignment.alignment_qc([static, moving], mask)
    first, after = alignment.alignment_qc([static, resampled], mask)
    assert first == pytest.approx(1.0)
    assert before < 0.95 < 0.999 < after


def test_apply_rigid_resamples_every_volume_of_a_series(registered):
    static, moving, resampled, matrix, _ = registered
    series = np.stack([moving, 2 * moving], axis=-1)
    out = alignment.apply_rigid(series, AFFINE, static.shape, AFFINE, matrix)
    assert out.shape == SHAPE + (2,)
    assert_allclose(out[..., 0], resampled, atol=1e-10)
    assert_allclose(out[..., 1], 2 * resampled, atol=1e-10)


def test_alignment_qc_rejects_constant_repetition():
    volume = np.random.default_rng(0).normal(size=(6, 6, 6))
    with pytest.raises(ValueError, match="repetition 2.*constant"):
        alignment.alignment_qc([volume, np.ones_like(volume)], np.ones(volume.shape, bool))
