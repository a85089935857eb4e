"""Cost of ingesting real T1w repetitions: rigid registration and masking at 1 mm.

The Colin 27 brain shipped with the package (181 x 217 x 181, 1 mm) gets Rician noise twice;
the second copy is moved by a known rigid motion (translation and rotation about the centre).
``alignment.rigid_register`` recovers it; the script prints the wall time, the residual motion
(largest displacement of a brain voxel, mm), the alignment correlation before and after, the
time of ``masking.t1w_brain_mask`` and the peak resident memory of the process.

Usage::

    python benchmarks/bench_ingest.py                         # 2 mm and 2 degrees
    python benchmarks/bench_ingest.py --shift-mm 4 --rotation-deg 5
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from _child import max_rss_gb
from noise2average.alignment import alignment_qc, rigid_register
from noise2average.anatomy import load_colin27
from noise2average.masking import t1w_brain_mask


def _rician(image, sigma, rng):
    return np.abs(image + sigma * (rng.standard_normal(image.shape)
                                   + 1j * rng.standard_normal(image.shape))).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shift-mm", type=float, default=2.0)
    parser.add_argument("--rotation-deg", type=float, default=2.0)
    parser.add_argument("--noise", type=float, default=0.06,
                        help="noise std relative to the 99th intensity percentile")
    args = parser.parse_args()

    colin, brain, affine = load_colin27()
    image = colin.astype(np.float64)
    rng = np.random.default_rng(0)
    sigma = args.noise * np.percentile(image, 99)

    # The head of the second repetition is turned by R about the volume centre and shifted by
    # t (mm): the content at world point x of the first is at R (x - x_c) + x_c + t.
    voxel = np.abs(np.diag(affine)[:3])
    centre = (np.array(image.shape) - 1) / 2
    centre_mm = affine[:3, :3] @ centre + affine[:3, 3]
    rotation = Rotation.from_rotvec(np.deg2rad(args.rotation_deg) * np.array([0.6, 0.8, 0.0]))
    matrix = affine[:3, :3] / voxel @ rotation.as_matrix() @ (affine[:3, :3] / voxel).T
    shift = np.array([args.shift_mm, -args.shift_mm / 2, args.shift_mm / 3])
    # Resampling in voxels: moved(p) = image(q) with p = A^-1 (R (A q - x_c) + x_c + t).
    to_world, to_voxel = affine, np.linalg.inv(affine)
    forward = np.eye(4)
    forward[:3, :3], forward[:3, 3] = matrix, centre_mm - matrix @ centre_mm + shift
    pull = np.linalg.inv(to_voxel @ forward @ to_world)
    moved = ndimage.affine_transform(image, pull[:3, :3], offset=pull[:3, 3], order=1)

    first, second = _rician(image, sigma, rng), _rician(moved, sigma, rng)
    start = time.perf_counter()
    mask = t1w_brain_mask(first)
    mask_s = time.perf_counter() - start
    start = time.perf_counter()
    aligned, found = rigid_register(second, affine, first, affine)
    register_s = time.perf_counter() - start

    # Residual motion: where the found transform sends brain points against the true one.
    points = np.argwhere(brain)[::97]
    world = points @ affine[:3, :3].T + affine[:3, 3]
    true_positions = world @ forward[:3, :3].T + forward[:3, 3]
    found_positions = world @ found[:3, :3].T + found[:3, 3]
    residual = np.linalg.norm(found_positions - true_positions, axis=1)
    before, after = alignment_qc([first, second], mask)[1], alignment_qc([first, aligned], mask)[1]
    peak_gb = max_rss_gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(f"volume {image.shape} at {voxel[0]:.0f} mm; motion {args.shift_mm} mm, "
          f"{args.rotation_deg} deg")
    print(f"t1w_brain_mask: {mask_s:.1f} s ({mask.mean():.1%} of the field of view)")
    print(f"rigid_register: {register_s:.1f} s; residual motion of brain voxels: "
          f"median {np.median(residual):.2f} mm, max {residual.max():.2f} mm")
    print(f"correlation with the first repetition: {before:.4f} before, {after:.4f} after")
    print(f"peak resident memory: {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
