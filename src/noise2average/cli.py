"""``n2a``: denoise your own repeated scans without the benchmark workflow.

Subcommands (``n2a <command> --help`` for each):

- ``denoise``: two or more repetitions (T1w volumes, or diffusion series with their
  gradient tables) -> one denoised image and its JSON sidecar;
- ``pretrain``: a model from training subjects with a high-SNR reference, for
  ``denoise --pretrained``;
- ``subsets``: the SDnDTI direction-subset design of one gradient table, and optionally the
  repetitions it gives for a diffusion series.

Exit status: 0 on success, 2 for bad input (one message naming the file and the problem,
before any computation), 1 when the computation fails (e.g. the GPU runs out of memory).
"""

import argparse
import logging
import sys

__all__ = ["main"]

_EPILOG_DENOISE = """\
examples:
  n2a denoise run1.nii.gz run2.nii.gz -o denoised.nii.gz --pretrained t1w_model.pt
  n2a denoise run1.nii.gz run2.nii.gz -o bm4d.nii.gz --method bm4d --mask brain.nii.gz
  n2a denoise ap.nii.gz pa.nii.gz --bvals dwi.bval --bvecs dwi.bvec -o dwi_n2a.nii.gz \\
      --pretrained dwi_model.pt

The repetitions must be co-registered, on one voxel grid (register them first, e.g. with
FSL FLIRT or ANTs). Network methods (n2a, n2n) fine-tune a pretrained MU-Net on the
repetitions (20 epochs at 5e-5 by default, the paper's setting); without --pretrained they
train one from random weights (at 1e-3), which needs more epochs and gives less. Filters
(bm4d, aonlm, and mppca, patch2self for diffusion) denoise the mean of the repetitions.
An interrupted run started again with the same arguments resumes from its last epoch.
"""


def _parser():
    parser = argparse.ArgumentParser(
        prog="n2a", description="Noise2Average: self-supervised denoising of repeated MRI "
                                "scans (Li, Tian et al., Imaging Neuroscience 2026).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    denoise = commands.add_parser(
        "denoise", help="denoise two or more repetitions of one scan",
        description="Denoise co-registered repetitions of one scan; writes the denoised "
                    "image and a JSON sidecar (method, parameters, seed, versions, input "
                    "checksums) beside it.",
        epilog=_EPILOG_DENOISE, formatter_class=argparse.RawDescriptionHelpFormatter)
    denoise.add_argument("repetitions", nargs="+", metavar="REPETITION",
                         help="NIfTI file of each repetition (3D T1w, or 4D diffusion series)")
    denoise.add_argument("-o", "--output", required=True,
                         help="denoised image to write (.nii.gz); OUTPUT.json is its sidecar")
    # Checked by noise2average.validate.check_method rather than argparse's choices, so that
    # the message is the one the workflow and the Python API give.
    denoise.add_argument("--method", default="n2a",
                         help="n2a (default), n2n, bm4d, aonlm, average (the mean of the "
                              "repetitions), and for diffusion mppca or patch2self")
    denoise.add_argument("--mask", help="brain mask on the repetitions' grid (default: computed)")
    denoise.add_argument("--bvals", nargs="+", metavar="BVAL",
                         help="FSL .bval: one for all repetitions or one per repetition; "
                              "makes the repetitions diffusion series")
    denoise.add_argument("--bvecs", nargs="+", metavar="BVEC", help="FSL .bvec, as --bvals")
    denoise.add_argument("--pretrained", metavar="MODEL.pt",
                         help="model from `n2a pretrain` or the workflow's pretraining")
    denoise.add_argument("--iterations", type=int, default=2, help="N2A iterations (default: 2)")
    _training_arguments(denoise, epochs="20 (12 without --pretrained)",
                        learning_rate="5e-5 (1e-3 without --pretrained)")
    _run_arguments(denoise)

    pretrain = commands.add_parser(
        "pretrain", help="pretrain a model on subjects with a high-SNR reference",
        description="Supervised pretraining of the MU-Net (each noisy repetition -> its "
                    "subject's reference) for `n2a denoise --pretrained`.",
        epilog="example:\n  n2a pretrain --subject ref1.nii.gz s1_run1.nii.gz s1_run2.nii.gz "
               "\\\n      --subject ref2.nii.gz s2_run1.nii.gz -o t1w_model.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pretrain.add_argument("--subject", action="append", nargs="+", required=True,
                          metavar="FILE", dest="subjects",
                          help="one training subject: its reference, then its repetitions "
                               "(repeat for every subject)")
    pretrain.add_argument("--mask", action="append", dest="masks",
                          help="brain mask of each subject, in --subject order (default: "
                               "computed from the references)")
    pretrain.add_argument("--bvals", help="FSL .bval shared by every diffusion series")
    pretrain.add_argument("--bvecs", help="FSL .bvec shared by every diffusion series")
    pretrain.add_argument("-o", "--output", required=True, help="model file to write (.pt)")
    pretrain.add_argument("--depth", type=int, help="MU-Net layers (default: 10)")
    pretrain.add_argument("--width", type=int, help="MU-Net channels (default: 16)")
    _training_arguments(pretrain, epochs="12", learning_rate="1e-3")
    _run_arguments(pretrain)

    subsets = commands.add_parser(
        "subsets", help="SDnDTI direction subsets of a gradient table",
        description="Choose disjoint, well-conditioned 6-direction subsets of one shell "
                    "(SDnDTI, Tian et al. 2022). With --dwi, also write the repetitions "
                    "they give (each subset's tensor fit synthesized on the common set), "
                    "ready for `n2a denoise`.")
    subsets.add_argument("--bvals", required=True, help="FSL .bval of the series")
    subsets.add_argument("--bvecs", required=True, help="FSL .bvec of the series")
    subsets.add_argument("--n-subsets", type=int, default=2, help="subsets (default: 2)")
    subsets.add_argument("--max-condition", type=float, default=1.6,
                         help="largest design condition number (default: 1.6)")
    subsets.add_argument("--bvalue", type=float, help="shell (default: the lowest non-zero)")
    subsets.add_argument("--b0-threshold", type=float, default=50.0,
                         help="largest b-value counted as b=0, s/mm^2 (default: 50)")
    subsets.add_argument("--seed", type=int, default=0, help="seed of the search (default: 0)")
    subsets.add_argument("-o", "--output", required=True,
                         help="design to write (.json)")
    subsets.add_argument("--dwi", help="diffusion series (4D NIfTI) to split into repetitions")
    subsets.add_argument("--prefix",
                         help="with --dwi: write PREFIX_rep-<k>.nii.gz and PREFIX.bval/.bvec")
    subsets.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def _training_arguments(parser, *, epochs, learning_rate):
    group = parser.add_argument_group("training (network methods)")
    group.add_argument("--epochs", type=int, help=f"epochs per fit (default: {epochs})")
    group.add_argument("--learning-rate", type=float,
                       help=f"Adam step size (default: {learning_rate})")
    group.add_argument("--block-size", type=int,
                       help="edge of the training blocks in voxels (default: the pretrained "
                            "model's, else 32); lower it if the GPU runs out of memory")
    group.add_argument("--block-stride", type=int,
                       help="distance between block starts (default: the model's, else 24)")
    group.add_argument("--batch-size", type=int, help="blocks per step (default: 2)")
    group.add_argument("--compile", action="store_true",
                       help="run the network through torch.compile (pays on a GPU)")
    group.add_argument("--precision", choices=["auto", "float32", "bf16"],
                       help="what the network computes in (default: auto, bf16 on CUDA and "
                            "float32 on the CPU); on the CPU bf16 is 2-6x faster with AMX, "
                            "slower without")


def _run_arguments(parser):
    group = parser.add_argument_group("run")
    group.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda "
                                                        "or cuda:N (default: auto)")
    group.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    group.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    group.add_argument("--b0-threshold", type=float, default=50.0,
                       help="largest b-value counted as b=0, s/mm^2 (default: 50)")
    group.add_argument("--restart", action="store_true",
                       help="discard the resume files of an interrupted run")
    group.add_argument("--quiet", action="store_true", help="no progress output")


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("noise2average")
    except PackageNotFoundError:
        return "unknown"


def _training_options(args):
    names = ("epochs", "learning_rate", "block_size", "block_stride", "batch_size",
             "precision")
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.compile:
        options["compile"] = True
    return options


class _EpochProgress(logging.Handler):
    """A progress bar over training epochs, fed by the training log's structured records.

    :func:`noise2average.training.fit_residual` logs each finished epoch with its history
    entry as ``epoch_record`` and a resume with the epochs already done as
    ``resumed_epochs``; while open, this handler listens to the ``noise2average`` logger
    (at the level :func:`main` sets: INFO, unless ``quiet``, which shows no bar).
    """

    def __init__(self, total, quiet):
        from tqdm import tqdm

        super().__init__(level=logging.INFO)
        self.bar = tqdm(total=total, unit="epoch", desc="training", disable=quiet or None,
                        dynamic_ncols=True)
        self._logger = logging.getLogger("noise2average")
        self._logger.addHandler(self)

    def emit(self, record):
        if hasattr(record, "resumed_epochs"):
            self.bar.update(record.resumed_epochs)
        elif hasattr(record, "epoch_record"):
            self.bar.update(1)
            val_loss = record.epoch_record["val_loss"]
            if val_loss is not None:
                self.bar.set_postfix(val_loss=f"{val_loss:.4g}")

    def close(self):
        self._logger.removeHandler(self)
        self.bar.close()
        super().close()


def _denoise(args):
    from .denoise import NETWORK_METHODS
    from .scans import TRAINING_DEFAULTS, denoise_scans

    progress = None
    if args.method in NETWORK_METHODS:
        stage = "finetune" if args.pretrained else "pretrain"
        epochs = args.epochs if args.epochs is not None else TRAINING_DEFAULTS[stage]["epochs"]
        fits = args.iterations if args.method == "n2a" else 1
        progress = _EpochProgress(max(epochs, 0) * max(fits, 0), args.quiet)
    try:
        sidecar = denoise_scans(
            args.repetitions, args.output, method=args.method, mask=args.mask,
            bvals=args.bvals, bvecs=args.bvecs, pretrained=args.pretrained,
            iterations=args.iterations, training=_training_options(args),
            device=args.device, seed=args.seed, num_threads=args.threads,
            b0_threshold=args.b0_threshold, resume=not args.restart)
    finally:
        if progress is not None:
            progress.close()
    return f"{args.output} written ({sidecar['method']}, {sidecar['seconds']:.1f} s)"


def _pretrain(args):
    from .scans import TRAINING_DEFAULTS, pretrain_scans
    from .validate import InputError

    for subject in args.subjects:
        if len(subject) < 2:
            raise InputError(f"--subject {subject[0]}: give the reference, then at least one "
                             "repetition")
    network = {name: getattr(args, name) for name in ("depth", "width")
               if getattr(args, name) is not None}
    epochs = args.epochs if args.epochs is not None else TRAINING_DEFAULTS["pretrain"]["epochs"]
    progress = _EpochProgress(epochs, args.quiet)
    try:
        pretrain_scans(
            [(subject[0], subject[1:]) for subject in args.subjects], args.output,
            masks=args.masks, bvals=args.bvals, bvecs=args.bvecs,
            training=_training_options(args), network=network, device=args.device,
            seed=args.seed, num_threads=args.threads, b0_threshold=args.b0_threshold,
            resume=not args.restart)
    finally:
        progress.close()
    return f"{args.output} written"


def _subsets(args):
    from .scans import subset_scans

    written = subset_scans(
        args.bvals, args.bvecs, args.output, n_subsets=args.n_subsets,
        max_condition=args.max_condition, bvalue=args.bvalue,
        b0_threshold=args.b0_threshold, seed=args.seed, dwi=args.dwi, prefix=args.prefix)
    return f"{', '.join(map(str, written))} written"


def _one_line(error):
    """An error's message on one line (nibabel's messages can hold line breaks)."""
    return " ".join(str(error).split())


_COMMANDS = {"denoise": _denoise, "pretrain": _pretrain, "subsets": _subsets}


def main(argv=None):
    """Run ``n2a`` with ``argv`` (default: the process's arguments); return the exit status."""
    from .validate import InputError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr,
                        force=True)
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        # Log lines go through tqdm, so that they do not break a progress bar.
        with logging_redirect_tqdm():
            message = _COMMANDS[args.command](args)
    except InputError as error:
        print(f"n2a {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"n2a {args.command}: failed: {_one_line(error)}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(message, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
