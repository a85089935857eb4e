"""Peak memory and wall time of BM4D, AONLM and N2A inference on a 0.7 mm whole brain (CPU).

The Colin 27 brain shipped with the package (181 x 217 x 181 at 1 mm) is resampled to the
chosen voxel size (0.7 mm: 259 x 310 x 259) with linear interpolation, its brain mask with it,
and gets Rician noise twice (two repetitions; noise std ``--noise`` times the 99th percentile
of the brain). Each step then runs in its own child process, so that each peak is measured
alone: the child loads the repetitions and the mask (as the workflow's scripts load their
NIfTI inputs) and makes the library calls of the workflow:

* ``bm4d``: the average of the repetitions, its noise level from
  ``noise_estimate.estimate_sigma`` on the mask, then ``bm4d_rician.bm4d_rician(average, sigma,
  mask=mask, profile='np', num_threads=threads)``, as ``workflow/scripts/denoise_filter.py``;
* ``aonlm``: the same with ``aonlm.aonlm(average, mask=mask, sigma=sigma, search_radius=3,
  num_threads=threads)``;
* ``n2a``: N2A inference as ``training.noise2average`` does it after fine-tuning (its
  ``_denoise_average``): each repetition z-scored on the mask (``training.zscore``), its
  residual from ``training.predict_residual_volume`` with the paper network of
  ``config/paper.yaml`` (MU-Net depth 18 x width 64, no batch norm, 80^3 blocks, stride 60,
  batch 1, flips) on the CPU, and the de-normalised results averaged. The weights are randomly
  initialised: the inference cost does not depend on them.

The peak is the child's maximum resident set size (``ru_maxrss`` from ``os.wait4``), which
includes the interpreter, the imports and the inputs (reported separately as the baseline:
the child's peak before the call). Wall time is that of the call(s) alone.

N2A inference with the paper network costs about 2.4 TFLOP per block and direction; on 2 CPU
cores that is more than a minute per forward pass, about two hours for the whole volume.
``--n2a-blocks N`` runs inference only on the part of the mask within the first N blocks
(the blocks actually run are counted) and extrapolates the time to the full block count; its
peak memory is that of the partial run. The full run holds more blocks (``predict_residual_volume``
keeps every input block, every block's residual and, at the end, their concatenation: 3 x 80^3
float32, 6.1 MB per block, at most), so the script also reports ``peak_gb_full_bound``, the
partial peak plus 6.1 MB per block not run: an upper bound, since the forward pass's
activations, the partial run's peak, are freed before the concatenation.

Usage::

    python benchmarks/bench_memory.py                                  # all steps, 0.7 mm
    python benchmarks/bench_memory.py --steps bm4d aonlm --threads 2 --json /tmp/mem.json
    python benchmarks/bench_memory.py --steps n2a --n2a-blocks 2       # timing, extrapolated
    python benchmarks/bench_memory.py --steps bm4d --bm4d-max-voxels 4000000
    python benchmarks/bench_memory.py --shape 160 192 160 --steps aonlm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
from _child import max_rss_gb, run_child

STEPS = ("bm4d", "aonlm", "n2a")
# config/paper.yaml: the T1w network and its inference settings.
PAPER_NETWORK = {"in_channels": 1, "out_channels": 1, "depth": 18, "width": 64,
                 "batch_norm": False}
PAPER_BLOCKS = {"block_size": 80, "block_stride": 60, "batch_size": 1}


def make_volume(shape=None, voxel_mm=0.7, noise=0.06, repetitions=2, seed=0):
    """Colin 27 resampled to ``voxel_mm`` (or to ``shape``), with Rician noise.

    Returns
    -------
    noisy : ndarray of float32, shape (X, Y, Z, repetitions)
        Magnitude repetitions, Colin's intensity units (0-254 before noise).
    mask : ndarray of bool, shape (X, Y, Z)
        The resampled brain mask.
    sigma : float
        Noise std of each Gaussian channel, in the same units.
    """
    from scipy import ndimage

    from noise2average.anatomy import load_colin27

    colin, brain, _ = load_colin27()
    if shape is None:
        zoom = (1.0 / voxel_mm,) * 3
    else:
        zoom = tuple(n / m for n, m in zip(shape, colin.shape))
    image = ndimage.zoom(colin.astype(np.float32), zoom, order=1)
    mask = ndimage.zoom(brain.astype(np.float32), zoom, order=1) > 0.5
    sigma = noise * float(np.percentile(image[mask], 99))
    rng = np.random.default_rng(seed)
    noisy = np.empty(image.shape + (repetitions,), dtype=np.float32)
    for n in range(repetitions):
        real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
        noisy[..., n] = np.hypot(real, sigma * rng.standard_normal(image.shape, dtype=np.float32))
    return noisy, mask, sigma


def _child(step, data_dir, threads, bm4d_max_voxels, n2a_blocks):
    """Run one step on the saved inputs; print its timings (JSON) on the last stdout line."""
    import resource

    from noise2average.runtime import set_num_threads

    set_num_threads(threads)
    noisy = np.load(os.path.join(data_dir, "noisy.npy"))
    mask = np.load(os.path.join(data_dir, "mask.npy"))
    result = {}
    if step in ("bm4d", "aonlm"):
        from noise2average.noise_estimate import estimate_sigma

        average = noisy.mean(axis=-1)
        sigma = estimate_sigma(average, mask)
        result["sigma_estimated"] = float(sigma)
        if step == "bm4d":
            from noise2average.bm4d_rician import MAX_VOXELS, bm4d_rician

            max_voxels = MAX_VOXELS if bm4d_max_voxels is None else bm4d_max_voxels
            result["max_voxels"] = max_voxels

            def call():
                return bm4d_rician(average, sigma, mask=mask, profile="np",
                                   num_threads=threads, max_voxels=max_voxels)
        else:
            from noise2average.aonlm import aonlm

            def call():
                return aonlm(average, mask=mask, sigma=sigma, search_radius=3,
                             num_threads=threads)
    else:
        from noise2average.blocks import block_origins
        from noise2average.training import (
            TrainingSettings,
            build_network,
            predict_residual_volume,
            zscore,
        )

        network = build_network(PAPER_NETWORK, seed=0)
        settings = TrainingSettings(**PAPER_BLOCKS, flip=True, device="cpu", num_threads=threads)
        origins = block_origins(mask, block_size=settings.block_size,
                                stride=settings.block_stride)
        result["blocks_full"] = len(origins)
        where = mask
        if n2a_blocks is not None:
            # The mask's part within the first blocks: block_origins retiles it, so the
            # count of blocks actually run is measured, not assumed.
            within = np.zeros(mask.shape, dtype=bool)
            size = settings.block_size
            for x, y, z in origins[:n2a_blocks]:
                within[x:x + size, y:y + size, z:z + size] = True
            where = mask & within
        result["blocks_run"] = len(block_origins(where, block_size=settings.block_size,
                                                 stride=settings.block_stride))

        def call():
            # training._denoise_average: mean of the de-normalised denoised repetitions.
            total = np.zeros(mask.shape, dtype=np.float64)
            for n in range(noisy.shape[-1]):
                volume, mean, std = zscore(noisy[..., n], mask)
                residual = predict_residual_volume(network, volume, where, settings=settings)
                total += (volume.astype(np.float64) + residual) * std + mean
            out = (total / noisy.shape[-1]).astype(np.float32)
            out[~mask] = noisy[~mask].mean(axis=-1)
            return out

    result["baseline_gb"] = max_rss_gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    start = time.perf_counter()
    out = call()
    result["seconds"] = time.perf_counter() - start
    result["output_finite"] = bool(np.isfinite(out).all())
    if step == "n2a":
        result["seconds_full_estimate"] = (result["seconds"] * result["blocks_full"]
                                           / result["blocks_run"])
    print(json.dumps(result))


def _run_step(step, data_dir, args):
    command = [sys.executable, os.path.abspath(__file__), "--child", step, "--data", data_dir,
               "--threads", str(args.threads)]
    if args.bm4d_max_voxels is not None:
        command += ["--bm4d-max-voxels", str(args.bm4d_max_voxels)]
    if args.n2a_blocks is not None:
        command += ["--n2a-blocks", str(args.n2a_blocks)]
    returncode, stdout, _, usage, wall_s = run_child(command)
    if returncode != 0:
        raise RuntimeError(f"step {step} failed with exit code {returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["step"] = step
    result["peak_gb"] = max_rss_gb(usage.ru_maxrss)
    result["process_seconds"] = wall_s
    result["under_8_gb"] = result["peak_gb"] < 8.0
    if step == "n2a":
        # Blocks held per block not run: input, residual, concatenated residual (float32).
        held = 3 * 4 * PAPER_BLOCKS["block_size"] ** 3 / 1e9
        result["peak_gb_full_bound"] = (result["peak_gb"]
                                        + held * (result["blocks_full"] - result["blocks_run"]))
        result["under_8_gb"] = result["peak_gb_full_bound"] < 8.0
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxel-mm", type=float, default=0.7,
                        help="voxel size of the resampled Colin brain (default 0.7)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"),
                        help="resample to this shape instead of --voxel-mm")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--noise", type=float, default=0.06,
                        help="noise std relative to the 99th percentile of the brain")
    parser.add_argument("--bm4d-max-voxels", type=int,
                        help="max_voxels of bm4d_rician (default: its default)")
    parser.add_argument("--n2a-blocks", type=int,
                        help="run N2A inference on the first N blocks only, time extrapolated")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.data, args.threads, args.bm4d_max_voxels, args.n2a_blocks)
        return

    noisy, mask, sigma = make_volume(args.shape, args.voxel_mm, args.noise)
    box = [int(np.ptp(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))))
           + 1 for axis in range(3)]
    report = {
        "shape": list(mask.shape),
        "voxel_mm": None if args.shape else args.voxel_mm,
        "repetitions": noisy.shape[-1],
        "mask_voxels": int(mask.sum()),
        "mask_box": box,
        "sigma": sigma,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_start": os.getloadavg(),
        "steps": [],
    }
    print(f"volume {mask.shape}, brain box {box}, {report['mask_voxels']} brain voxels, "
          f"{noisy.shape[-1]} repetitions, sigma {sigma:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as data_dir:
        np.save(os.path.join(data_dir, "noisy.npy"), noisy)
        np.save(os.path.join(data_dir, "mask.npy"), mask)
        del noisy, mask
        for step in args.steps:
            result = _run_step(step, data_dir, args)
            result["load_average_end"] = os.getloadavg()
            report["steps"].append(result)
            extra = ""
            if step == "n2a":
                extra = (f", {result['blocks_run']} of {result['blocks_full']} blocks per "
                         f"repetition, full run about {result['seconds_full_estimate']:.0f} s "
                         f"and at most {result['peak_gb_full_bound']:.2f} GB")
            print(f"{step}: {result['seconds']:.1f} s, peak {result['peak_gb']:.2f} GB "
                  f"(baseline {result['baseline_gb']:.2f} GB), under 8 GB: "
                  f"{result['under_8_gb']}{extra}; load {result['load_average_end'][0]:.1f}",
                  flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
