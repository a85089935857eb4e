"""MU-Net training speed: throughput, achieved TFLOP/s, time per N2A iteration and per subject.

For the paper preset (T1w: 1 mm, MU-Net depth 18 x width 64, 80^3 blocks with stride 60;
DWI: 1.25 mm, 96 channels (6 b0 + 90 directions), depth 10 x width 192 with batch norm,
64^3 blocks with stride 48; both 2 repetitions, 2 N2A iterations x 20 epochs, flips,
batch 1, 20 % validation) or a small CPU preset, the script

* counts the operations of one training step (forward + backward) and one inference forward
  with ``torch.utils.flop_counter.FlopCounterMode`` (on the meta device: counted, not timed),
* times training steps (``noise2average.training``'s own step: gather + flip, autocast
  forward, masked loss, backward, Adam), validation batches and inference batches (block and
  flipped block) on the device, warm-up steps excluded, ``torch.cuda.synchronize()`` around
  every timed region,
* times a large matrix multiply for the device's measured peak in the dtype training
  computes in (``--precision``: by default bf16 on CUDA, float32 on the CPU),
* extrapolates the time per N2A iteration and per subject from the step times and the real
  block count of a synthetic brain mask (an ellipsoid filling a 145 x 174 x 145 box at 1 mm,
  as a 1 mm brain mask fills its bounding box), plus the measured host-side block
  extraction / reassembly; with ``--measure-iteration`` (default for ``--size small``) it also
  runs one real N2A iteration on a synthetic volume of that size and reports its wall time,
* reports the peak GPU memory (``torch.cuda.max_memory_allocated``) or, on the CPU, the
  process's peak resident set size.

Only numpy, torch and the package's ``network``, ``training`` and ``blocks`` modules are
needed (no nibabel, dipy or snakemake).

Usage::

    python benchmarks/bench_training.py --device cuda --size paper            # GPU, both types
    python benchmarks/bench_training.py --device cuda --size paper --compile
    python benchmarks/bench_training.py --device cpu --size small             # a few minutes
    python benchmarks/bench_training.py --device cpu --size small --precision bf16   # AMX
    python benchmarks/bench_training.py --device cpu --size paper --data-type t1w \\
        --warmup 1 --steps 2                                                  # CPU, extrapolated
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import resource
import sys
import time

import numpy as np
import torch
from _child import max_rss_bytes
from torch.utils.flop_counter import FlopCounterMode

try:
    from noise2average import training
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from noise2average import training
from noise2average.blocks import assemble_blocks, block_origins, extract_blocks
from noise2average.network import count_flops, count_parameters

# A 1 mm brain's bounding box (voxels); other voxel sizes scale it.
BRAIN_BOX_MM = (145, 174, 145)

PRESETS = {
    # config/paper.yaml: network / dwi_network, training, n2a; 2 repetitions (T1w runs,
    # DWI AP/PA).
    "paper": {
        "t1w": dict(voxel_mm=1.0, slab=None, channels=1, depth=18, width=64, batch_norm=False,
                    block_size=80, block_stride=60, batch_size=1, repetitions=2,
                    iterations=2, epochs=20),
        "dwi": dict(voxel_mm=1.25, slab=None, channels=96, depth=10, width=192,
                    batch_norm=True, block_size=64, block_stride=48, batch_size=1,
                    repetitions=2, iterations=2, epochs=20),
    },
    # config/config.yaml (the CPU default): a 2 mm slab of 28 slices for T1w, a 2.5 mm slab of
    # 10 slices with 3 b0 + 30 directions for DWI; fine-tuning runs 6 epochs.
    "small": {
        "t1w": dict(voxel_mm=2.0, slab=28, channels=1, depth=10, width=16, batch_norm=False,
                    block_size=32, block_stride=24, batch_size=2, repetitions=2,
                    iterations=2, epochs=6),
        "dwi": dict(voxel_mm=2.5, slab=10, channels=33, depth=10, width=16, batch_norm=True,
                    block_size=24, block_stride=20, batch_size=2, repetitions=2,
                    iterations=2, epochs=6),
    },
}


def brain_mask(voxel_mm, slab=None):
    """Ellipsoid brain mask filling a 1 mm brain's box (145 x 174 x 145 mm) at ``voxel_mm``.

    The semi-axes are 47 % of the box edges (the brain spans 94 % of each edge, as a skull-
    stripped mask spans its bounding box). ``slab``: keep that many central axial slices.
    """
    shape = tuple(int(round(n / voxel_mm)) for n in BRAIN_BOX_MM)
    axes = [(np.arange(n) - (n - 1) / 2) / (0.47 * n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    mask = x * x + y * y + z * z <= 1.0
    if slab is not None and slab < shape[2]:
        start = (shape[2] - slab) // 2
        mask = mask[:, :, start:start + slab]
    return np.ascontiguousarray(mask)


def synthetic_repetitions(mask, channels, repetitions, seed=0):
    """Noisy repetitions (X, Y, Z[, C], N) of a smooth image, float32."""
    rng = np.random.default_rng(seed)
    grid = np.indices(mask.shape, dtype=np.float32)
    clean = (1.0 + 0.5 * np.sin(grid[0] / 5.0) * np.cos(grid[1] / 7.0)
             + 0.3 * (grid[2] > mask.shape[2] / 2)).astype(np.float32) * mask
    shape = mask.shape + ((channels,) if channels > 1 else ())
    if channels > 1:
        clean = clean[..., None] * np.linspace(1.0, 0.3, channels, dtype=np.float32)
    reps = np.empty(shape + (repetitions,), dtype=np.float32)
    for n in range(repetitions):
        reps[..., n] = clean + 0.1 * rng.standard_normal(shape, dtype=np.float32)
    return reps


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, warmup, steps):
    """Mean seconds per call of ``fn`` over ``steps`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / steps


def compute_dtype(device, precision):
    """The dtype the network computes in: bf16 under bf16 autocast, else float32."""
    return torch.bfloat16 if training._uses_bf16(device, precision) else torch.float32


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def matmul_peak(device, dtypes, size=None, repeats=None, rounds=3):
    """Measured matrix-multiply peak of each of ``dtypes``: {"tflops": {dtype name: TFLOP/s}}.

    Training computes in bf16 under bf16 autocast, else in float32 (:func:`compute_dtype`).
    A CPU without bf16 instructions emulates bf16 matrix products, much slower than float32.
    Each peak is the fastest of ``rounds`` timings of ``repeats`` products: single rounds of
    bf16 products read 0.9-1.9 TFLOP/s on an AMX host whose best is 2.4.
    """
    size = size or (8192 if device.type == "cuda" else 2048)
    peak = {"size": size, "rounds": rounds, "repeats": {}, "tflops": {}}
    for dtype in dtypes:
        if device.type == "cuda":
            count = repeats or 50
        else:
            # About 0.3 s per round for either dtype on a 2-core host (AMX: bf16 ~10x float32).
            count = repeats or (40 if dtype == torch.bfloat16 else 5)
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        seconds = min(_timed(lambda: torch.mm(a, b), device, warmup=2 if k == 0 else 0,
                             steps=count) for k in range(rounds))
        peak["repeats"][_dtype_name(dtype)] = count
        peak["tflops"][_dtype_name(dtype)] = 2.0 * size ** 3 / seconds / 1e12
        del a, b
    return peak


def counted_flops(network, batch, channels, block):
    """FLOPs of one training step (forward + backward) and one inference forward, counted.

    Counted by FlopCounterMode on a meta-device copy of the network (no compute).
    """
    meta = copy.deepcopy(network).to("meta")
    x = torch.zeros(batch, channels, block, block, block, device="meta")
    meta.train()
    with FlopCounterMode(display=False) as counter:
        meta.residual(x).float().square().sum().backward()
    train = counter.get_total_flops()
    meta.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta.residual(x)
    return int(train), int(counter.get_total_flops())


def _reset_peak_memory(device):
    """Start a new peak (CUDA's allocator statistics, or the process's VmHWM on Linux).

    Otherwise every data type and precision of a run would report the largest CPU peak so
    far (``ru_maxrss`` never falls). Returns whether the peak was reset.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
    except OSError:
        return False
    return True


def _peak_memory(device, since_reset):
    """Peak memory: CUDA's allocated bytes, or the process's peak resident set."""
    if device.type == "cuda":
        return {"kind": "torch.cuda.max_memory_allocated",
                "bytes": int(torch.cuda.max_memory_allocated(device))}
    if since_reset:
        with open("/proc/self/status") as stream:
            kib = next(line for line in stream if line.startswith("VmHWM:")).split()[1]
        return {"kind": "process peak RSS of this phase (VmHWM since the phase began, "
                        "includes the synthetic volumes)", "bytes": int(kib) * 1024}
    return {"kind": "process peak RSS since the start (ru_maxrss, includes the synthetic "
                    "volumes and earlier data types)",
            "bytes": max_rss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)}


def bench_one(data_type, args, device, precision):
    cfg = dict(PRESETS[args.size][data_type])
    for key in ("depth", "width", "block_size", "batch_size", "epochs", "iterations"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    if args.block_size is not None and args.block_stride is None:
        cfg["block_stride"] = max(1, (3 * cfg["block_size"]) // 4)
    if args.block_stride is not None:
        cfg["block_stride"] = args.block_stride
    block, batch, channels = cfg["block_size"], cfg["batch_size"], cfg["channels"]
    settings = training.TrainingSettings(
        block_size=block, block_stride=cfg["block_stride"], batch_size=batch,
        epochs=cfg["epochs"], learning_rate=5e-5, validation_fraction=0.2, flip=True,
        device=str(device), seed=0, num_threads=None, compile=args.compile,
        precision=precision)
    network = training.build_network(
        {"in_channels": channels, "out_channels": channels, "depth": cfg["depth"],
         "width": cfg["width"], "batch_norm": cfg["batch_norm"]}, seed=0)
    print(f"\n== {data_type} ({args.size}): depth {cfg['depth']} x width {cfg['width']}"
          f"{' + batch norm' if cfg['batch_norm'] else ''}, {channels} channel(s), "
          f"{block}^3 blocks (stride {cfg['block_stride']}), batch {batch}", flush=True)

    # Real block count over a brain-sized mask; synthetic repetitions of that size.
    mask = brain_mask(cfg["voxel_mm"], cfg["slab"])
    blocks_per_rep = len(block_origins(mask, block_size=block, stride=cfg["block_stride"]))
    n_blocks = blocks_per_rep * cfg["repetitions"]
    train_idx, val_idx = training._split(n_blocks, settings.validation_fraction, settings.seed)
    copies = 2
    train_steps = math.ceil(len(train_idx) * copies / batch)
    val_batches = math.ceil(len(val_idx) * copies / batch) if len(val_idx) else 0
    infer_batches = math.ceil(blocks_per_rep / batch)
    print(f"volume {mask.shape} ({cfg['voxel_mm']} mm), mask {int(mask.sum())} voxels, "
          f"{blocks_per_rep} blocks per repetition x {cfg['repetitions']} repetitions: "
          f"{train_steps} training steps + {val_batches} validation batches per epoch", flush=True)
    reps = synthetic_repetitions(mask, channels, cfg["repetitions"])
    normalised = [training.zscore(reps[..., n], mask) for n in range(cfg["repetitions"])]
    inputs = [z for z, _, _ in normalised]
    target = reps.mean(axis=-1)
    targets = [training._in_norm(target, mean, std) for _, mean, std in normalised]

    # Host + transfer cost of one fit's data (block extraction, upload) and of one
    # repetition's inference blocking/reassembly: measured directly.
    since_reset = _reset_peak_memory(device)
    start = time.perf_counter()
    tensors = training._block_tensors(inputs, targets, [mask] * len(inputs), settings, device)
    _sync(device)
    prep_fit = time.perf_counter() - start
    origins = block_origins(mask, block_size=block, stride=cfg["block_stride"])
    start = time.perf_counter()
    spread = mask if inputs[0].ndim == 3 else mask[..., None]
    pieces = extract_blocks(inputs[0] * spread, origins, block)
    assemble_blocks(pieces, origins, mask.shape)
    prep_infer = time.perf_counter() - start
    del pieces

    # Training step exactly as fit_residual runs it.
    residual_fn, memory_format = training._prepare_network(network, device, settings)
    optimizer = training._make_optimizer(network, settings, device)
    pool = min(len(tensors[0]), max(batch, 2))
    flips = np.arange(pool) % 2 == 1                  # half the samples flipped
    picks = [(np.arange(batch) + k) % pool for k in range(pool)]
    # Index tensors on the device before timing, as fit_residual sends an epoch's order once.
    cycle = [(torch.as_tensor(pick % len(tensors[0])).to(device), flips[pick])
             for pick in picks]
    state = {"step": 0}

    def batch_rows():
        state["step"] += 1
        return cycle[state["step"] % pool]

    losses = []

    def train_step():
        base, flipped = batch_rows()
        x, r, w = training._gather(tensors, base, flipped, settings.flip_axis, memory_format)
        losses.append(training._train_step(residual_fn, optimizer, x, r, w, device,
                                           settings.precision))

    network.train()
    with training._device_flags(device):
        t_train = _timed(train_step, device, args.warmup, args.steps)
        loss_ok = bool(torch.isfinite(torch.stack(losses)).all())
        train_memory = _peak_memory(device, since_reset)

        def eval_batch():
            base, flipped = batch_rows()
            with torch.no_grad(), training._autocast(device, settings.precision):
                x, r, w = training._gather(tensors, base, flipped, settings.flip_axis,
                                           memory_format)
                training._masked_sse(residual_fn(x), r, w)

        def infer_batch():   # block and flipped block, as predict_residual_volume
            base, _ = batch_rows()
            with torch.inference_mode(), training._autocast(device, settings.precision):
                x = tensors[0].index_select(0, base).contiguous(memory_format=memory_format)
                out = residual_fn(x).float()
                mirrored = residual_fn(torch.flip(x, dims=(2,))).float()
                (0.5 * (out + torch.flip(mirrored, dims=(2,)))).permute(0, 2, 3, 4, 1)

        network.eval()
        since_reset = _reset_peak_memory(device)
        t_eval = _timed(eval_batch, device, min(args.warmup, 1), args.steps)
        t_infer = _timed(infer_batch, device, min(args.warmup, 1), args.steps)
        infer_memory = _peak_memory(device, since_reset)

    train_flops, forward_flops = counted_flops(network, batch, channels, block)
    analytic = count_flops(network, block) * batch
    voxels = batch * block ** 3
    fit_seconds = prep_fit + cfg["epochs"] * (train_steps * t_train + val_batches * t_eval)
    infer_seconds = cfg["repetitions"] * (infer_batches * t_infer + prep_infer)
    iteration = fit_seconds + infer_seconds
    result = {
        "data_type": data_type,
        "size": args.size,
        "config": {**cfg, "compile": args.compile, "precision": precision,
                   "memory_format": str(memory_format)},
        "volume_shape": list(mask.shape),
        "mask_voxels": int(mask.sum()),
        "blocks_per_repetition": blocks_per_rep,
        "train_blocks": int(len(train_idx)),
        "validation_blocks": int(len(val_idx)),
        "train_steps_per_epoch": train_steps,
        "validation_batches_per_epoch": val_batches,
        "parameters": count_parameters(network),
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "train_step_seconds": t_train,
        "validation_batch_seconds": t_eval,
        "inference_batch_seconds": t_infer,
        "train_voxels_per_second": voxels / t_train,
        "inference_voxels_per_second": voxels / t_infer,
        "train_step_flops_counted": train_flops,
        "inference_forward_flops_counted": forward_flops,
        "forward_conv_flops_analytic": analytic,
        "train_tflops_per_second": train_flops / t_train / 1e12,
        "inference_tflops_per_second": 2 * forward_flops / t_infer / 1e12,
        "host_prep_seconds_per_fit": prep_fit,
        "host_prep_seconds_per_inference": prep_infer,
        "iteration_seconds_extrapolated": iteration,
        "subject_seconds_extrapolated": cfg["iterations"] * iteration,
        "peak_memory_train": train_memory,
        "peak_memory_inference": infer_memory,
        "loss_finite": loss_ok,
    }
    del tensors, optimizer, losses

    measure = args.measure_iteration if args.measure_iteration is not None else (
        args.size == "small")
    if measure:
        # One real N2A iteration (fit + inference of every repetition) on the synthetic volume.
        _sync(device)
        start = time.perf_counter()
        training.noise2average(reps, mask, network=network, pretrained_state=None,
                               iterations=1, settings=settings)
        _sync(device)
        result["iteration_seconds_measured"] = time.perf_counter() - start
    _print_result(result)
    return result


def _human(nbytes):
    return f"{nbytes / 2 ** 30:.2f} GiB"


def _print_result(r):
    print(f"train step: {r['train_step_seconds'] * 1e3:.1f} ms "
          f"({r['train_voxels_per_second'] / 1e6:.3f} M voxels/s), "
          f"{r['train_step_flops_counted'] / 1e12:.3f} TFLOP counted -> "
          f"{r['train_tflops_per_second']:.3f} TFLOP/s")
    print(f"validation batch: {r['validation_batch_seconds'] * 1e3:.1f} ms; inference batch "
          f"(block + flip): {r['inference_batch_seconds'] * 1e3:.1f} ms "
          f"({r['inference_tflops_per_second']:.3f} TFLOP/s)")
    print(f"per N2A iteration (extrapolated): {r['iteration_seconds_extrapolated']:.1f} s; "
          f"per subject ({r['config']['iterations']} iterations): "
          f"{r['subject_seconds_extrapolated']:.1f} s "
          f"= {r['subject_seconds_extrapolated'] / 3600:.2f} h")
    if "iteration_seconds_measured" in r:
        print(f"per N2A iteration (measured, synthetic volume): "
              f"{r['iteration_seconds_measured']:.1f} s")
    print(f"peak memory: training {_human(r['peak_memory_train']['bytes'])}, inference "
          f"{_human(r['peak_memory_inference']['bytes'])} "
          f"({r['peak_memory_train']['kind']})", flush=True)


def precision_ratios(results):
    """Time ratios of each precision to the first one, per data type, from one run's results.

    The training step and the N2A iteration (measured where it was run, else extrapolated).
    """
    def iteration(result):
        return result.get("iteration_seconds_measured", result["iteration_seconds_extrapolated"])

    first = {}
    rows = []
    for result in results:
        data_type, precision = result["data_type"], result["config"]["precision"]
        reference = first.setdefault(data_type, result)
        if reference is result:
            continue
        rows.append({"data_type": data_type, "precision": precision,
                     "reference": reference["config"]["precision"],
                     "train_step": result["train_step_seconds"]
                     / reference["train_step_seconds"],
                     "iteration": iteration(result) / iteration(reference)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--size", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--data-type", default="both", choices=["t1w", "dwi", "both"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--precision", nargs="+", default=["auto"],
                        choices=["auto", "float32", "bf16"],
                        help="training.precision (auto: bf16 on CUDA, float32 on the CPU); "
                             "several: each in turn in this run, and their speed ratios")
    parser.add_argument("--memory-format", default="auto",
                        choices=["auto", "channels_last", "contiguous"],
                        help="override the layout (auto: channels-last 3D under bf16)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default 3 on CUDA, 1 on the CPU)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps (default 20 on CUDA, 5 on the CPU)")
    parser.add_argument("--measure-iteration", dest="measure_iteration", default=None,
                        action="store_true",
                        help="also run one real N2A iteration (default with --size small)")
    parser.add_argument("--no-measure-iteration", dest="measure_iteration",
                        action="store_false")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--matmul-size", type=int, default=None)
    for name in ("depth", "width", "block-size", "block-stride", "batch-size", "epochs",
                 "iterations"):
        parser.add_argument(f"--{name}", type=int, default=None, help="override the preset")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    device = training.resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.warmup is None:
        args.warmup = 3 if device.type == "cuda" else 1
    if args.steps is None:
        args.steps = 20 if device.type == "cuda" else 5
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    if args.memory_format != "auto":
        layout = {"channels_last": torch.channels_last_3d,
                  "contiguous": torch.contiguous_format}[args.memory_format]
        training._memory_format = lambda _device, _precision: layout
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    load_before = os.getloadavg()
    print(f"device {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, {os.cpu_count()} CPUs, "
          f"load average {load_before[0]:.2f}", flush=True)
    dtypes = {precision: compute_dtype(device, precision) for precision in args.precision}
    peak = matmul_peak(device, list(dict.fromkeys(dtypes.values())), args.matmul_size)
    print("measured matmul peak (" + ", ".join(f"{dtype}: {value:.3f} TFLOP/s" for dtype, value
                                              in peak["tflops"].items())
          + f", {peak['size']}^3, best of {peak['rounds']} rounds)", flush=True)
    types = ["t1w", "dwi"] if args.data_type == "both" else [args.data_type]
    results = []
    for precision in args.precision:
        dtype_name = _dtype_name(dtypes[precision])
        print(f"\n# precision {precision}: training runs in "
              f"{'bf16 autocast' if dtype_name == 'bfloat16' else 'float32'}", flush=True)
        for data_type in types:
            result = bench_one(data_type, args, device, precision)
            result["peak_reference_dtype"] = dtype_name
            result["fraction_of_matmul_peak"] = (result["train_tflops_per_second"]
                                                 / peak["tflops"][dtype_name])
            print(f"{data_type}: training at {100 * result['fraction_of_matmul_peak']:.1f} % "
                  f"of the measured {dtype_name} matmul peak", flush=True)
            results.append(result)
    ratios = precision_ratios(results)
    for row in ratios:
        print(f"{row['data_type']}: {row['precision']} / {row['reference']}: training step "
              f"{row['train_step']:.2f}x, N2A iteration {row['iteration']:.2f}x the time")
    report = {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before[0],
        "load_average_after": os.getloadavg()[0],
        "matmul_peak": peak,
        "results": results,
        "precision_ratios": ratios,
    }
    if args.json:
        with open(args.json, "w") as stream:
            json.dump(report, stream, indent=2, default=str)
    return report


if __name__ == "__main__":
    main()
