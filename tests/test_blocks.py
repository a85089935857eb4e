"""Tests for noise2average.blocks (block grid, extraction, exact reassembly)."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from noise2average.blocks import assemble_blocks, block_origins, coverage_counts, extract_blocks


def _ellipsoid_mask(shape, centre, radii):
    grid = np.indices(shape, dtype=float)
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    return r2 <= 1.0


@pytest.mark.parametrize(
    "shape, block, stride",
    [((30, 34, 26), 8, 6), ((30, 34, 26), 10, 10), ((30, 34, 26), (12, 8, 6), (5, 8, 3)),
     ((17, 23, 9), 16, 5)],
)
def test_tiling_covers_every_mask_voxel(shape, block, stride):
    mask = _ellipsoid_mask(shape, np.array(shape) / 2 - 0.5, np.array(shape) / 2.6)
    origins = block_origins(mask, block_size=block, stride=stride)
    counts = coverage_counts(origins, block, shape)
    assert (counts[mask] >= 1).all()
    # every kept block holds at least one mask voxel
    b = np.broadcast_to(block, 3)
    for x, y, z in origins:
        assert mask[x:x + b[0], y:y + b[1], z:z + b[2]].any()
    # origins lie inside the volume; blocks do too along axes at least one block long
    assert (origins >= 0).all()
    assert (origins < np.array(shape)).all()
    long_axes = b <= np.array(shape)
    assert (origins[:, long_axes] + b[long_axes] <= np.array(shape)[long_axes]).all()
    assert (origins[:, ~long_axes] == 0).all()


def test_grid_positions_regular_with_last_flush():
    mask = np.zeros((40, 20, 20), bool)
    mask[3:37, 5:15, 10] = True   # x box [3, 37), length 34
    origins = block_origins(mask, block_size=10, stride=8)
    xs = np.unique(origins[:, 0])
    assert_array_equal(xs, [3, 11, 19, 27])   # 27 + 10 == 37: flush with the box end
    assert_array_equal(np.unique(origins[:, 1]), [5])   # y box length 10 == block
    # z box of length 1 near a face: single block shifted back inside the volume
    mask2 = np.zeros((12, 12, 12), bool)
    mask2[11, 11, 11] = True
    assert_array_equal(block_origins(mask2, block_size=4, stride=2), [[8, 8, 8]])


def test_blocks_without_mask_voxels_are_dropped():
    mask = np.zeros((30, 30, 10), bool)
    mask[:10, :10, :] = True
    mask[20:, 20:, :] = True     # L-shaped gap: the off-diagonal corners are empty
    origins = block_origins(mask, block_size=10, stride=10)
    # 3 x 3 x 1 grid over the box; only the two diagonal corner blocks hold mask voxels
    assert_array_equal(origins, [[0, 0, 0], [20, 20, 0]])


def test_volume_smaller_than_block_pads():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(6, 20, 20)).astype(np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[1:5, 2:18, 3:17] = True
    origins = block_origins(mask, block_size=8, stride=6)
    assert (origins[:, 0] == 0).all()          # axis shorter than the block: start at 0
    blocks = extract_blocks(volume, origins, 8)
    assert blocks.shape == (len(origins), 8, 8, 8)
    assert (blocks[:, 6:] == 0).all()          # zero padding past the volume end
    out = assemble_blocks(blocks, origins, volume.shape)
    assert_array_equal(out[mask], volume[mask])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_extract_assemble_is_exact(dtype):
    rng = np.random.default_rng(1)
    shape = (27, 31, 22)
    volume = (rng.normal(size=shape) * 1e3 + 1.0 / 3.0).astype(dtype)
    mask = _ellipsoid_mask(shape, (13, 15, 11), (11, 13, 9))
    origins = block_origins(mask, block_size=9, stride=4)   # up to 3^3 overlapping blocks
    counts = coverage_counts(origins, 9, shape)
    assert counts.max() >= 8
    out = assemble_blocks(extract_blocks(volume, origins, 9), origins, shape, fill_value=-7.0)
    assert out.dtype == dtype
    covered = counts > 0
    assert_array_equal(out[covered], volume[covered])       # bit for bit
    assert (out[~covered] == -7.0).all()


def test_extract_assemble_float64_to_rounding():
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(20, 20, 20))
    mask = np.ones(volume.shape, bool)
    origins = block_origins(mask, block_size=8, stride=3)
    out = assemble_blocks(extract_blocks(volume, origins, 8), origins, volume.shape)
    np.testing.assert_allclose(out, volume, rtol=1e-15, atol=0)


def test_multichannel_roundtrip():
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(16, 18, 14, 3)).astype(np.float32)
    mask = _ellipsoid_mask(volume.shape[:3], (8, 9, 7), (6, 7, 5))
    origins = block_origins(mask, block_size=6, stride=4)
    blocks = extract_blocks(volume, origins, 6)
    assert blocks.shape == (len(origins), 6, 6, 6, 3)
    out = assemble_blocks(blocks, origins, volume.shape)
    assert out.shape == volume.shape
    assert_array_equal(out[mask], volume[mask])


def test_assemble_averages_overlaps():
    origins = np.array([[0, 0, 0], [2, 0, 0]])
    blocks = np.stack([np.full((4, 2, 2), 1.0, np.float32), np.full((4, 2, 2), 4.0, np.float32)])
    out = assemble_blocks(blocks, origins, (6, 2, 2))
    assert_array_equal(out[:, 0, 0], [1, 1, 2.5, 2.5, 4, 4])


def test_invalid_arguments():
    mask = np.ones((10, 10, 10), bool)
    with pytest.raises(ValueError, match="stride"):
        block_origins(mask, block_size=4, stride=5)
    with pytest.raises(ValueError, match="block_size"):
        block_origins(mask, block_size=0, stride=1)
    with pytest.raises(ValueError, match="block_size"):
        block_origins(mask, block_size=(4, 4), stride=2)
    with pytest.raises(ValueError, match="empty"):
        block_origins(np.zeros((5, 5, 5), bool), block_size=4, stride=2)
    with pytest.raises(ValueError, match="3D"):
        block_origins(np.ones((5, 5), bool), block_size=4, stride=2)
    with pytest.raises(ValueError, match="origins"):
        extract_blocks(np.zeros((5, 5, 5)), np.array([[0, 0, 5]]), 2)
    with pytest.raises(ValueError, match="origins"):
        extract_blocks(np.zeros((5, 5, 5)), np.array([[0.0, 0, 0]]), 2)
