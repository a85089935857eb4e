"""Does the diffusion MU-Net learn to denoise? Pretraining loss against the identity's loss.

Pretrains the MU-Net on the training subjects of a finished run (the simulated series in
``<results>/<dataset>/sub-<id>/simulated/``) with a chosen subset of the volumes as channels,
and prints the validation loss per epoch next to the validation loss of returning the input
unchanged (zero residual). A network that learned something ends below that line.

This is how docs/benchmarks.md ("Diffusion MU-Net at CPU scale") was measured: one
diffusion-weighted volume as a single channel learns; six or more channels (b0 and DWIs, as
the paper's DWI network) stay at the identity's loss at the default's size and budget.

Usage::

    python benchmarks/dwi_network_learning.py                            # dti_subsets, all 7
    python benchmarks/dwi_network_learning.py --channels 3               # one DWI
    python benchmarks/dwi_network_learning.py --channels 1 2 3 4 5 6 --learning-rate 3e-4
    python benchmarks/dwi_network_learning.py --data-type dwi_appa --width 32 --epochs 30
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from noise2average.io import load_nifti
from noise2average.training import TrainingSettings, build_network, pretrain


def training_series(results, dataset, data_type, subjects, channels):
    """Noisy repetitions (X, Y, Z, C, N), truths (X, Y, Z, C) and masks of the subjects."""
    noisy, truths, masks = [], [], []
    for subject in subjects:
        base = Path(results) / dataset / f"sub-{subject}" / "simulated"
        stem = f"sub-{subject}_dtype-{data_type}"
        series = load_nifti(base / f"{stem}_noisy.nii.gz", ndim=5)[0]
        truth = load_nifti(base / f"{stem}_truth.nii.gz", ndim=4)[0]
        picked = list(range(series.shape[3])) if channels is None else channels
        noisy.append(series[..., picked, :])
        truths.append(truth[..., picked])
        masks.append(load_nifti(base / f"{stem}_mask.nii.gz", ndim=3)[0] > 0)
    return noisy, truths, masks


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data-type", default="dti_subsets", choices=["dti_subsets", "dwi_appa"])
    parser.add_argument("--subjects", nargs="+", default=["train01", "train02"])
    parser.add_argument("--channels", nargs="+", type=int, default=None,
                        help="volume indices used as channels (default: all)")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--no-batch-norm", action="store_true")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--block-size", type=int, default=24)
    parser.add_argument("--block-stride", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    noisy, truths, masks = training_series(
        args.results, args.dataset, args.data_type, args.subjects, args.channels
    )
    channels = noisy[0].shape[3]
    network = build_network(
        {"in_channels": channels, "out_channels": channels, "depth": args.depth,
         "width": args.width, "batch_norm": not args.no_batch_norm},
        seed=args.seed,
    )
    settings = TrainingSettings(
        block_size=args.block_size, block_stride=args.block_stride, batch_size=2,
        epochs=args.epochs, learning_rate=args.learning_rate, device="auto",
        seed=args.seed, num_threads=args.threads,
    )
    start = time.perf_counter()
    _, history = pretrain(noisy, truths, masks, network=network, settings=settings)
    identity = history[0]["identity_val_loss"]
    best = min(record["val_loss"] for record in history)
    print(f"{args.data_type}, {channels} channels {args.channels or 'all'}, width {args.width}, "
          f"batch norm {not args.no_batch_norm}, lr {args.learning_rate:g}, "
          f"{args.epochs} epochs, {time.perf_counter() - start:.0f} s")
    print("val_loss per epoch:", " ".join(f"{r['val_loss']:.5f}" for r in history))
    print(f"identity (zero residual) val_loss {identity:.5f}; best {best:.5f}; "
          f"best / identity = {best / identity:.3f} "
          f"({'learned' if best < 0.95 * identity else 'did not learn'})")


if __name__ == "__main__":
    main()
