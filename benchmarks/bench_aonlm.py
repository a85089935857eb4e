"""Time AONLM against dipy's blockwise non-local means on one synthetic Rician volume.

Both filters get the same noisy volume, the same known noise level and the same number of
threads; the script prints both wall times, their ratio (the project's target: AONLM <= 2x
dipy's blockwise nlmeans) and both RMSEs against the noise-free truth inside the head.

The volume is a Colin-like synthetic head (folded grey-matter ribbon, white matter,
ventricles, CSF, skull, scalp, a smooth bias field) on a 1 mm grid of 145x174x145 by default,
with Rician noise of standard deviation ``--noise`` times the white-matter intensity.

Usage::

    python benchmarks/bench_aonlm.py                      # 145 174 145, 2 threads
    python benchmarks/bench_aonlm.py --shape 96 112 96 --threads 1 --repeats 5
    python benchmarks/bench_aonlm.py --mask --dipy-search 3 --patch-radii 2   # same work
    git show REV:src/noise2average/aonlm.py > /tmp/aonlm_before.py   # REV: an earlier commit
    python benchmarks/bench_aonlm.py --baseline /tmp/aonlm_before.py   # before / after
    python benchmarks/bench_aonlm.py --mask --threads 1 --stages   # where AONLM's time goes

By default both run their own defaults: AONLM searches 7^3 candidates with patch radii 1 and
2 and mixes the two passes; dipy's blockwise method searches 3^3 candidates (its
``patch_radius=1``) with patches of radius 2 (its ``block_radius=2``). ``--dipy-search 3``
gives dipy AONLM's search window, and ``--patch-radii 2`` runs AONLM as one pass of radius 2,
so that both do the same search over the same patches.

``--baseline`` times a second AONLM implementation (a copy of ``aonlm.py``) in the same
alternation, so that an optimisation is measured under the same machine load. The numba
kernels are compiled (or loaded from numba's cache) before the timing starts.

``--stages`` then runs AONLM ``--repeats`` more times with a timer around each of its main
stage functions and prints the stages of the fastest run: the tile kernel (the blockwise
passes proper), the 11^3 smoothing of the bias maps, the wavelet mixing, the local
statistics, and the rest of the call.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import os
import sys
import time

import numpy as np
from scipy import ndimage

# Stage functions of noise2average.aonlm, each called from Python code of that module.
STAGES = {
    "tile kernel": "_blockwise_kernel",
    "11^3 smoothing of the bias maps": "_positive_mean_filter",
    "wavelet mixing": "_wavelet_mix",
    "local statistics": "_local_statistics",
}


def synthetic_head(shape, *, seed=0):
    """Noise-free Colin-like head, float64 of ``shape`` (WM = 100), and its head mask."""
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    r = np.sqrt((x / 0.80) ** 2 + (y / 0.92) ** 2 + ((z + 0.05) / 0.85) ** 2)
    theta = np.arctan2(y, x)
    phi = np.arctan2(z, np.hypot(x, y))
    # Gyri: the grey/white and grey/CSF boundaries fold with a few angular frequencies.
    folds = 0.045 * np.sin(9 * theta) * np.cos(7 * phi) + 0.03 * np.sin(13 * phi + 2 * theta)
    truth = np.zeros(shape)
    truth[r < 1.00] = 80.0  # scalp
    truth[r < 0.94] = 15.0  # skull
    truth[r < 0.89] = 30.0  # CSF
    truth[r < 0.85 + folds] = 70.0  # grey matter
    truth[r < 0.70 + 1.5 * folds] = 100.0  # white matter
    vent = ((x / 0.10) ** 2 + ((y - 0.05) / 0.30) ** 2 + (z / 0.12) ** 2) < 1.0
    vent |= (((np.abs(x) - 0.12) / 0.06) ** 2 + (y / 0.35) ** 2 + (z / 0.10) ** 2) < 1.0
    truth[vent & (r < 0.7)] = 30.0  # ventricles
    deep = (((np.abs(x) - 0.22) / 0.10) ** 2 + (y / 0.15) ** 2 + (z / 0.10) ** 2) < 1.0
    truth[deep] = 80.0  # deep grey nuclei
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    texture /= texture.std()
    bias = 1.0 + 0.1 * x - 0.08 * y + 0.05 * z * z
    head = r < 1.0
    truth = truth * bias * (1.0 + 0.03 * texture) * head
    return truth, head


def add_rician(truth, sigma, *, seed=1):
    rng = np.random.default_rng(seed)
    real = truth + sigma * rng.standard_normal(truth.shape)
    imag = sigma * rng.standard_normal(truth.shape)
    return np.sqrt(real * real + imag * imag)


def timed_alternating(fns, repeats):
    """Best-of-``repeats`` wall times (s) of the functions, run in turn; their last outputs."""
    best = [np.inf] * len(fns)
    outs = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best, outs


@contextlib.contextmanager
def stage_timers(module, stages):
    """Time the functions of ``module`` named by ``stages`` ({label: name}) while active.

    Yields {label: seconds} accumulated over every call of each function; the module's
    functions are restored on exit.
    """
    spent = dict.fromkeys(stages, 0.0)
    originals = {label: getattr(module, name) for label, name in stages.items()}

    def timed(label, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - start

        return wrapper

    for label, name in stages.items():
        setattr(module, name, timed(label, originals[label]))
    try:
        yield spent
    finally:
        for label, name in stages.items():
            setattr(module, name, originals[label])


def stage_profile(module, call, repeats):
    """Total time of ``call()`` and its stages ({label: s}, with 'rest'), fastest of ``repeats``."""
    best_total, best_stages = np.inf, None
    for _ in range(repeats):
        with stage_timers(module, STAGES) as spent:
            start = time.perf_counter()
            call()
            total = time.perf_counter() - start
        if total < best_total:
            best_total, best_stages = total, dict(spent)
    best_stages["rest"] = best_total - sum(best_stages.values())
    return best_total, best_stages


def load_aonlm(path):
    """The ``aonlm`` function of the module file ``path`` (e.g. an earlier ``aonlm.py``)."""
    spec = importlib.util.spec_from_file_location("aonlm_baseline", path)
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: numba's on-disk cache re-imports a kernel's module by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.aonlm


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(145, 174, 145), metavar="N")
    parser.add_argument("--noise", type=float, default=0.05, help="sigma / WM intensity")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="best of N (alternating) runs")
    parser.add_argument("--mask", action="store_true", help="pass the head mask to both")
    parser.add_argument("--patch-radii", type=int, nargs="+", default=(1, 2), metavar="F",
                        help="AONLM's patch radii (one: a single pass without mixing)")
    parser.add_argument("--dipy-search", type=int, default=1, metavar="V",
                        help="dipy's search radius (its patch_radius)")
    parser.add_argument("--dipy-patch", type=int, default=2, metavar="F",
                        help="dipy's patch radius (its block_radius)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline", metavar="FILE", help="also time the aonlm of this module file"
    )
    parser.add_argument("--stages", action="store_true",
                        help="then time AONLM's stages (fastest of --repeats runs)")
    args = parser.parse_args(argv)

    from dipy.denoise.nlmeans import nlmeans

    from noise2average import aonlm as aonlm_module
    from noise2average.aonlm import aonlm

    shape = tuple(args.shape)
    truth, head = synthetic_head(shape, seed=args.seed)
    sigma = args.noise * 100.0
    noisy = add_rician(truth, sigma, seed=args.seed + 1)
    mask = head if args.mask else None

    radii = tuple(args.patch_radii)

    def run_aonlm(implementation):
        return implementation(noisy, mask=mask, sigma=sigma, patch_radii=radii,
                              num_threads=args.threads)

    fns = [
        lambda: run_aonlm(aonlm),
        lambda: nlmeans(noisy, sigma, mask=mask, patch_radius=args.dipy_search,
                        block_radius=args.dipy_patch, rician=True, num_threads=args.threads,
                        method="blockwise"),
    ]
    implementations = [aonlm]
    if args.baseline:
        baseline = load_aonlm(args.baseline)
        implementations.append(baseline)
        fns.append(lambda: run_aonlm(baseline))
    # Compile (or load from the numba cache) outside the timing.
    for fn in implementations:
        fn(noisy[:24, :24, :24], sigma=sigma, patch_radii=radii, num_threads=args.threads)

    times, outs = timed_alternating(fns, args.repeats)
    (t_aonlm, t_dipy), (den_aonlm, den_dipy) = times[:2], outs[:2]

    def rmse(a):
        return float(np.sqrt(np.mean((np.asarray(a, dtype=np.float64) - truth)[head] ** 2)))

    print(
        f"volume {shape}, sigma {sigma:g} (WM 100), threads {args.threads}, "
        f"mask {'head' if args.mask else 'none'}, best of {args.repeats}, "
        f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}"
    )
    search = inspect.signature(aonlm).parameters["search_radius"].default
    aonlm_label = f"aonlm (patch {'+'.join(map(str, radii))}, search {search})"
    dipy_label = f"dipy blockwise (search {args.dipy_search}, patch {args.dipy_patch})"
    print(f"{'method':<34}{'time_s':>9}{'rmse_head':>11}")
    print(f"{'noisy':<34}{'':>9}{rmse(noisy):>11.3f}")
    print(f"{aonlm_label:<34}{t_aonlm:>9.2f}{rmse(den_aonlm):>11.3f}")
    print(f"{dipy_label:<34}{t_dipy:>9.2f}{rmse(den_dipy):>11.3f}")
    if args.baseline:
        print(f"{'aonlm baseline (--baseline)':<34}{times[2]:>9.2f}{rmse(outs[2]):>11.3f}")
        same = np.array_equal(outs[0], outs[2])
        print(f"baseline / dipy = {times[2] / t_dipy:.2f}; output identical to baseline: {same}")
    print(f"time ratio aonlm / dipy = {t_aonlm / t_dipy:.2f} (target <= 2)")
    if args.stages:
        total, stages = stage_profile(aonlm_module, lambda: run_aonlm(aonlm), args.repeats)
        print(f"aonlm stages, fastest of {args.repeats}: {total:.2f} s")
        for label, seconds in stages.items():
            print(f"  stage {label:<32}{seconds:>8.3f} s{seconds / total:>7.1%}")


if __name__ == "__main__":
    main()
