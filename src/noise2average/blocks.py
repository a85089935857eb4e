"""Cubic blocks over a brain mask: grid placement, extraction and exact reassembly.

Blocks sit on a regular grid over the bounding box of the mask. Along each axis the first block
starts at the box start, the next ones every ``stride`` voxels, and the last one ends flush with
the box end, so the box is covered completely (blocks overlap wherever ``stride < block_size``
and near the box end). Blocks that contain no mask voxel are dropped.

Where the volume is shorter than the block along an axis, the block starts at 0 and runs past
the volume end: ``extract_blocks`` zero-pads the missing part (zero is the value that inputs take
outside the mask after masking) and ``assemble_blocks`` ignores it. Everywhere else every block
lies inside the volume: a block that would run past the volume end is shifted back.

Reassembly averages overlapping blocks voxel by voxel. It accumulates in float64, where the sum
of ``k`` copies of a float32 value is exact, so assembling the blocks that ``extract_blocks``
took from a float32 (or float16) volume returns that volume bit for bit in every covered voxel.
Float64 volumes come back to within rounding (about 1e-16 relative).
"""

import numpy as np

__all__ = ["block_origins", "extract_blocks", "assemble_blocks", "coverage_counts"]


def _as_triple(value, name):
    if np.ndim(value) == 0:
        value = (value,) * 3
    try:
        triple = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or 3 ints, got {value!r}") from None
    if len(triple) != 3 or any(v != w for v, w in zip(triple, value)) or min(triple) < 1:
        raise ValueError(f"{name} must be a positive int or 3 positive ints, got {value!r}")
    return triple


def _axis_starts(lo, hi, n_volume, block, stride):
    """Block starts along one axis covering ``[lo, hi)`` of an axis of length ``n_volume``."""
    length = hi - lo
    if length <= block:
        starts = [lo]
    else:
        n_blocks = -(-(length - block) // stride) + 1  # ceil division
        starts = [lo + k * stride for k in range(n_blocks - 1)] + [hi - block]
    # Keep blocks inside the volume where it is at least one block long (shift back); where
    # it is shorter, start at 0 and let extraction pad past the end.
    starts = [max(min(s, n_volume - block), 0) for s in starts]
    return np.unique(np.asarray(starts, dtype=np.int64))


def block_origins(mask, *, block_size, stride):
    """Corners of the blocks that tile the bounding box of ``mask``.

    Parameters
    ----------
    mask : ndarray of shape (X, Y, Z)
        Brain mask (bool, or anything where nonzero means inside).
    block_size : int or tuple of 3 ints
        Edge length of the blocks, in voxels.
    stride : int or tuple of 3 ints
        Distance between neighbouring block starts, in voxels; ``1 <= stride <= block_size``
        (equal: no overlap except at the box end).

    Returns
    -------
    ndarray of shape (M, 3), int64
        Voxel index of the first corner of each block, in C order of the grid (axis 0 slowest).
        Only blocks that contain at least one mask voxel are kept. Every origin lies inside the
        volume; a block runs past the volume end only along an axis shorter than the block.

    Raises
    ------
    ValueError
        If the mask is not 3D or is empty, or ``block_size``/``stride`` are invalid.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D (X, Y, Z), got shape {mask.shape}")
    block = _as_triple(block_size, "block_size")
    step = _as_triple(stride, "stride")
    if any(s > b for s, b in zip(step, block)):
        raise ValueError(f"stride {stride!r} must not exceed block_size {block_size!r} "
                         "(blocks would leave gaps)")
    inside = mask != 0
    if not inside.any():
        raise ValueError("mask is empty: no voxel to place blocks on")
    axis_starts = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(inside.any(axis=other))
        axis_starts.append(
            _axis_starts(int(hits[0]), int(hits[-1]) + 1, mask.shape[axis], block[axis],
                         step[axis])
        )
    grid = np.stack(np.meshgrid(*axis_starts, indexing="ij"), axis=-1).reshape(-1, 3)
    # Mask voxels per block from a summed-volume table (no per-voxel Python work).
    table = np.zeros(tuple(n + 1 for n in mask.shape), dtype=np.int64)
    table[1:, 1:, 1:] = inside.cumsum(0).cumsum(1).cumsum(2)
    lo = grid
    hi = np.minimum(grid + np.asarray(block), np.asarray(mask.shape))
    count = np.zeros(len(grid), dtype=np.int64)
    for corner in np.ndindex(2, 2, 2):
        sign = (-1) ** (3 - sum(corner))
        index = tuple(np.where(corner[a], hi[:, a], lo[:, a]) for a in range(3))
        count += sign * table[index]
    return grid[count > 0]


def _check_origins(origins):
    origins = np.asarray(origins)
    if origins.ndim != 2 or origins.shape[1] != 3 or not np.issubdtype(origins.dtype, np.integer):
        raise ValueError(f"origins must be an integer array of shape (M, 3), got "
                         f"{origins.dtype} {origins.shape}")
    if (origins < 0).any():
        raise ValueError(f"origins must be non-negative, got minimum {origins.min()}")
    return origins


def extract_blocks(volume, origins, block_size):
    """Copy the blocks at ``origins`` out of ``volume``.

    Parameters
    ----------
    volume : ndarray of shape (X, Y, Z) or (X, Y, Z, C)
    origins : ndarray of shape (M, 3), int
        First corners, as returned by :func:`block_origins`.
    block_size : int or tuple of 3 ints
        Edge length of the blocks, in voxels.

    Returns
    -------
    ndarray of shape (M, bx, by, bz) or (M, bx, by, bz, C)
        Same dtype as ``volume``. Parts of a block beyond the volume end are zero.
    """
    volume = np.asarray(volume)
    if volume.ndim not in (3, 4):
        raise ValueError(f"volume must be (X, Y, Z) or (X, Y, Z, C), got shape {volume.shape}")
    origins = _check_origins(origins)
    block = _as_triple(block_size, "block_size")
    if len(origins) and (origins >= np.asarray(volume.shape[:3])).any():
        raise ValueError(f"origins must lie inside the volume of shape {volume.shape[:3]}")
    blocks = np.zeros((len(origins), *block, *volume.shape[3:]), dtype=volume.dtype)
    for m, (x, y, z) in enumerate(origins):
        piece = volume[x:x + block[0], y:y + block[1], z:z + block[2]]
        blocks[m, :piece.shape[0], :piece.shape[1], :piece.shape[2]] = piece
    return blocks


def coverage_counts(origins, block_size, shape):
    """Number of blocks covering each voxel.

    Parameters
    ----------
    origins : ndarray of shape (M, 3), int
    block_size : int or tuple of 3 ints
    shape : tuple of 3 ints
        Spatial shape (X, Y, Z) of the volume.

    Returns
    -------
    ndarray of shape (X, Y, Z), int64
    """
    origins = _check_origins(origins)
    block = _as_triple(block_size, "block_size")
    counts = np.zeros(tuple(shape[:3]), dtype=np.int64)
    for x, y, z in origins:
        counts[x:x + block[0], y:y + block[1], z:z + block[2]] += 1
    return counts


def assemble_blocks(blocks, origins, shape, *, fill_value=0.0):
    """Average overlapping blocks back into a volume.

    Parameters
    ----------
    blocks : ndarray of shape (M, bx, by, bz) or (M, bx, by, bz, C)
    origins : ndarray of shape (M, 3), int
        First corners of the blocks.
    shape : tuple of 3 ints (or 4, the last equal to C)
        Shape of the volume; the channel axis is taken from ``blocks``.
    fill_value : float, optional
        Value of voxels that no block covers.

    Returns
    -------
    ndarray of shape (X, Y, Z) or (X, Y, Z, C)
        Floating dtype of ``blocks`` (float32 blocks give float32). Each covered voxel is the
        mean of the blocks covering it, accumulated in float64; identical float32 values
        therefore reassemble exactly. Block parts beyond the volume end are ignored.
    """
    blocks = np.asarray(blocks)
    origins = _check_origins(origins)
    if blocks.ndim not in (4, 5) or len(blocks) != len(origins):
        raise ValueError(f"blocks must be (M, bx, by, bz[, C]) with M = {len(origins)}, got "
                         f"shape {blocks.shape}")
    spatial = tuple(int(n) for n in shape[:3])
    if len(spatial) != 3:
        raise ValueError(f"shape must give 3 spatial dimensions, got {shape!r}")
    channels = blocks.shape[4:]
    if len(shape) > 3 and tuple(shape[3:]) != channels:
        raise ValueError(f"shape {shape!r} does not match the block channels {channels}")
    block = blocks.shape[1:4]
    total = np.zeros(spatial + channels, dtype=np.float64)
    counts = np.zeros(spatial, dtype=np.int64)
    for m, (x, y, z) in enumerate(origins):
        target = (slice(x, x + block[0]), slice(y, y + block[1]), slice(z, z + block[2]))
        extent = total[target].shape[:3]
        total[target] += blocks[m, :extent[0], :extent[1], :extent[2]]
        counts[target] += 1
    dtype = blocks.dtype if np.issubdtype(blocks.dtype, np.floating) else np.float64
    covered = counts > 0
    out = np.full(spatial + channels, fill_value, dtype=dtype)
    weights = counts[covered].reshape((-1,) + (1,) * len(channels))
    out[covered] = (total[covered] / weights).astype(dtype)
    return out
