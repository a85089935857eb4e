"""Denoise and pretrain from files: the ``n2a`` command line's functions, usable from Python.

Files in, files out, for users' own scans: every input is checked
(:mod:`noise2average.validate`) before any computation, a brain mask is computed when none
is given, results are written atomically with a JSON sidecar (method, parameters, seed,
software versions, the inputs' SHA-256 checksums), and an interrupted training run started
again with the same arguments resumes from its last epoch. The computations are those of
:mod:`noise2average.denoise`, which the workflow's scripts call too.
"""

import dataclasses
import time
from pathlib import Path

from .denoise import (
    NETWORK_METHODS,
    discard_resume_files,
    file_checksums,
    filter_average,
    resume_folder,
    sidecar_path,
    train_and_denoise,
)

__all__ = ["DEFAULT_NETWORK", "TRAINING_DEFAULTS", "denoise_scans", "pretrain_scans",
           "subset_scans"]

#: MU-Net of a network trained without a pretrained model (the workflow's CPU default;
#: diffusion networks add batch norm, as the workflow's). ``network=`` changes it.
DEFAULT_NETWORK = {"depth": 10, "width": 16}
#: Training options of the file-level functions, by stage: fine-tuning follows the paper
#: (20 epochs at 5e-5 from pretrained weights); pretraining, and fine-tuning without a
#: pretrained model, start from random weights at 1e-3 (the workflow's pretraining rate).
TRAINING_DEFAULTS = {
    "finetune": {"epochs": 20, "learning_rate": 5e-5},
    "pretrain": {"epochs": 12, "learning_rate": 1e-3},
}
_TRAINING_OPTIONS = ("epochs", "learning_rate", "block_size", "block_stride", "batch_size",
                     "validation_fraction", "flip", "compile", "precision")
_NETWORK_OPTIONS = ("depth", "width", "batch_norm")



def denoise_scans(repetitions, output, *, method="n2a", mask=None, bvals=None, bvecs=None,
                  pretrained=None, iterations=2, training=None, network=None, options=None,
                  device="auto", seed=0, num_threads=None, b0_threshold=50.0, resume=True,
                  log=None):
    """Denoise a subject's repeated scans, from files to files.

    Every input is checked (:func:`noise2average.validate.load_repetitions`) before any
    computation; the result and its sidecar are written atomically.

    Parameters
    ----------
    repetitions : sequence of str or Path
        NIfTI files of the co-registered repetitions: T1w volumes, or diffusion series with
        ``bvals``/``bvecs``.
    output : str or Path
        Denoised image (``.nii`` or ``.nii.gz``). Its sidecar is written beside it
        (:func:`sidecar_path`), and for diffusion the gradient table (``.bval``, ``.bvec``).
    method : {"n2a", "n2n", "bm4d", "aonlm", "mppca", "patch2self", "average"}, optional
        Network methods train on the repetitions; filters denoise their mean.
    mask : str or Path, optional
        Brain mask on the repetitions' grid. None computes one from the mean of the
        repetitions (:mod:`noise2average.masking`).
    bvals, bvecs : str, Path or sequence of them, optional
        FSL gradient table: one pair for all repetitions or one per repetition.
    pretrained : str or Path, optional
        Checkpoint of :func:`pretrain_scans` or of the workflow's ``pretrain_network``; its
        architecture and block settings are used. None trains from seeded random weights.
    iterations : int, optional
        N2A iterations.
    training : dict, optional
        Overrides among ``epochs``, ``learning_rate``, ``block_size``, ``block_stride``,
        ``batch_size``, ``validation_fraction``, ``flip``, ``compile``, ``precision``.
    network : dict, optional
        ``depth``, ``width``, ``batch_norm`` of a network trained without ``pretrained``.
    options : dict, optional
        Filter options (see :func:`filter_average`).
    device : {"auto", "cpu", "cuda", "cuda:N"}, optional
    seed : int, optional
        Seed of the network's initial weights, the validation split and the batch order.
    num_threads : int, optional
        CPU threads; None: all available cores.
    b0_threshold : float, optional
        Largest b-value (s/mm^2) counted as b=0.
    resume : bool, optional
        Continue an interrupted training of the same job from its per-epoch resume files
        (kept in ``.<output name>.resume/`` beside the output until the output is written).
        False discards them.
    log : callable, optional
        Receives progress lines (str), one per training epoch among them.

    Returns
    -------
    dict
        The sidecar: method, parameters, seed, inputs with SHA-256 checksums, the mask's
        origin, training history, software versions and wall time.

    Raises
    ------
    noise2average.validate.InputError
        For bad inputs or options, naming the file or option, before any computation.
    """
    from .io import read_json, save_gradients, save_nifti, write_json
    from .runtime import software_versions
    from .validate import InputError, check_method, load_repetitions

    started = time.perf_counter()
    paths = [Path(path) for path in repetitions]
    dwi = bvals is not None or bvecs is not None
    check_method(method, len(paths), dwi=dwi)
    _check_count("iterations", iterations)
    if num_threads is not None:
        _check_count("threads", num_threads)
    output = _check_output(output)
    bval_paths = _per_repetition(bvals, len(paths), "bvals")
    bvec_paths = _per_repetition(bvecs, len(paths), "bvecs")
    if dwi and (bval_paths is None or bvec_paths is None):
        raise InputError("bvals and bvecs: a diffusion series needs both")
    if method in NETWORK_METHODS:
        checkpoint = _read_pretrained(pretrained)
        settings_options = _network_options(training, network, checkpoint, pretrained)
    elif training or network or pretrained:
        raise InputError(f"{method}: training options and pretrained models apply to the "
                         f"network methods {list(NETWORK_METHODS[:2])} only")
    loaded = load_repetitions(paths, dwi=dwi, mask=mask, bvals=bval_paths, bvecs=bvec_paths,
                              b0_threshold=b0_threshold)
    inputs = [*paths, *([mask] if mask else []), *(bval_paths or []), *(bvec_paths or [])]
    record = {"method": method, "output": str(output), "inputs": file_checksums(inputs),
              "seed": seed}
    brain, record["mask"] = _brain_mask(loaded, mask, b0_threshold)
    if method in NETWORK_METHODS:
        result, details = _denoise_with_network(method, loaded, brain, checkpoint, pretrained,
                                                settings_options, iterations, device, seed,
                                                num_threads, output, resume, log)
        record["pretrained"] = file_checksums([pretrained])[0] if pretrained else None
    else:
        result, details = filter_average(loaded.data.mean(axis=-1), brain, method,
                                         bvals=loaded.bvals, b0_threshold=b0_threshold,
                                         options=options, num_threads=num_threads)
        details = {"input": "mean of the repetitions", "options": dict(options or {}),
                   **details}
    save_nifti(output, result, loaded.affine, header=loaded.header)
    if dwi:
        stem = sidecar_path(output).with_suffix("")
        save_gradients(f"{stem}.bval", f"{stem}.bvec", loaded.bvals, loaded.bvecs)
    record.update(details, software=software_versions(),
                  seconds=round(time.perf_counter() - started, 3))
    write_json(sidecar_path(output), record)
    discard_resume_files(output)
    return read_json(sidecar_path(output))


def pretrain_scans(subjects, output, *, masks=None, bvals=None, bvecs=None, training=None,
                   network=None, device="auto", seed=0, num_threads=None, b0_threshold=50.0,
                   resume=True, log=None):
    """Supervised pretraining of the MU-Net on training subjects, from files to a model file.

    Parameters
    ----------
    subjects : sequence of (reference, repetitions)
        Per training subject: the path of its high-SNR reference and the paths of its noisy
        repetitions, all on one grid (T1w volumes, or diffusion series with ``bvals``).
    output : str or Path
        Model checkpoint (``.pt``) that :func:`denoise_scans` takes as ``pretrained``; a
        sidecar (``.json``) is written beside it.
    masks : sequence of str or Path, optional
        One brain mask per subject; None computes them from the references.
    bvals, bvecs : str or Path, optional
        One FSL gradient table shared by every diffusion series (one protocol).
    training, network : dict, optional
        As in :func:`denoise_scans`; pretraining defaults to 12 epochs at 1e-3.
    device, seed, num_threads, b0_threshold, resume, log
        As in :func:`denoise_scans`.

    Returns
    -------
    dict
        The sidecar (settings, network, inputs with checksums, history, versions).
    """
    from .io import read_json, write_json
    from .runtime import software_versions
    from .training import build_network, pretrain, save_checkpoint
    from .validate import InputError, load_repetitions

    started = time.perf_counter()
    output = Path(output)
    if output.suffix != ".pt":
        raise InputError(f"{output}: the model file must end in .pt")
    subjects = [(Path(reference), [Path(path) for path in repetitions])
                for reference, repetitions in subjects]
    if not subjects or any(not repetitions for _, repetitions in subjects):
        raise InputError("subjects: give at least one subject with a reference and at least "
                         "one repetition")
    masks = [None] * len(subjects) if masks is None else list(masks)
    if len(masks) != len(subjects):
        raise InputError(f"masks: {len(masks)} masks for {len(subjects)} subjects")
    dwi = bvals is not None or bvecs is not None
    training, network = _network_options(training, network, None, None)
    # The reference goes first, so that every repetition is checked against its grid.
    loaded = [load_repetitions([reference, *repetitions], dwi=dwi, mask=mask,
                               bvals=_per_repetition(bvals, 1 + len(repetitions), "bvals"),
                               bvecs=_per_repetition(bvecs, 1 + len(repetitions), "bvecs"),
                               b0_threshold=b0_threshold)
              for (reference, repetitions), mask in zip(subjects, masks)]
    brains, origins = zip(*(_brain_mask(subject, mask, b0_threshold)
                            for subject, mask in zip(loaded, masks)))
    channels = 1 if loaded[0].data.ndim == 4 else loaded[0].data.shape[3]
    config = {"in_channels": channels, "out_channels": channels, **DEFAULT_NETWORK,
              "batch_norm": dwi, **network}
    settings = _training_settings("pretrain", training, {}, device, seed, num_threads)
    try:
        model = build_network(config, seed=seed)
    except ValueError as error:
        raise InputError(f"network options: {error}") from error
    inputs = file_checksums([path for subject in loaded for path in subject.paths])
    job = {"method": "pretrain", "settings": dataclasses.asdict(settings), "network": config,
           "inputs": inputs}
    resume_dir = resume_folder(output, job, resume)
    state, history = pretrain([subject.data[..., 1:] for subject in loaded],
                              [subject.data[..., 0] for subject in loaded], list(brains),
                              network=model, settings=settings, log=log,
                              checkpoint=resume_dir / "pretrain.pt")
    record = {"method": "pretrain", "output": str(output), "data_type": "dwi" if dwi else "t1w",
              "inputs": inputs, "masks": list(origins), "seed": seed,
              "settings": dataclasses.asdict(settings), "network": model.config}
    save_checkpoint(output, state, model.config, history=history,
                    extra={key: record[key] for key in ("data_type", "settings", "inputs")})
    record.update(history=history, software=software_versions(),
                  seconds=round(time.perf_counter() - started, 3))
    write_json(output.with_suffix(".json"), record)
    discard_resume_files(output)
    return read_json(output.with_suffix(".json"))


def _check_count(name, value):
    from .validate import InputError

    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}: must be a positive integer, got {value!r}")


def _check_output(output):
    from .validate import InputError

    output = Path(output)
    if not output.name.endswith((".nii", ".nii.gz")):
        raise InputError(f"{output}: the output must be a NIfTI file (.nii or .nii.gz)")
    if output.is_dir():
        raise InputError(f"{output}: is a directory, give the output file's name")
    return output


def _per_repetition(files, count, name):
    """One path, or one per repetition, as a list of ``count`` paths (None stays None)."""
    from .validate import InputError

    if files is None:
        return None
    files = [files] if isinstance(files, (str, Path)) else list(files)
    if len(files) == 1:
        return files * count
    if len(files) != count:
        raise InputError(f"{name}: {len(files)} files for {count} repetitions; give one "
                         "for all or one per repetition")
    return files


def _read_pretrained(pretrained):
    from .validate import InputError

    if pretrained is None:
        return None
    from .training import load_checkpoint

    if not Path(pretrained).is_file():
        raise InputError(f"{pretrained}: pretrained model not found")
    try:
        return load_checkpoint(pretrained)
    except Exception as error:
        raise InputError(f"{pretrained}: not a noise2average model ({error})") from error


def _network_options(training, network, checkpoint, pretrained):
    """Checked training and architecture options: (training dict, network dict)."""
    from .validate import InputError

    training, network = dict(training or {}), dict(network or {})
    for given, known, what in ((training, _TRAINING_OPTIONS, "training"),
                               (network, _NETWORK_OPTIONS, "network")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise InputError(f"{', '.join(unknown)}: unknown {what} option; known: "
                             f"{', '.join(known)}")
    if checkpoint is not None and network:
        raise InputError(f"{', '.join(sorted(network))}: the architecture comes from the "
                         f"pretrained model {pretrained}")
    return training, network


def _brain_mask(loaded, mask_path, b0_threshold):
    """The brain mask and a record of where it came from."""
    from . import masking

    if loaded.mask is not None:
        return loaded.mask, f"given: {mask_path}"
    average = loaded.data.mean(axis=-1)
    if average.ndim == 4:
        return (masking.dwi_brain_mask(average, loaded.bvals, b0_threshold=b0_threshold),
                "computed: median_otsu on the mean b=0 volume of the mean of the repetitions")
    return (masking.t1w_brain_mask(average),
            "computed: Otsu threshold of the mean of the repetitions, largest component, "
            "holes filled")


def _training_settings(stage, options, defaults, device, seed, num_threads):
    from .training import TrainingSettings
    from .validate import InputError

    values = {**TRAINING_DEFAULTS[stage], **defaults, **options}
    try:
        return TrainingSettings(**values, device=device, seed=seed, num_threads=num_threads)
    except ValueError as error:
        raise InputError(f"training options: {error}") from error


def _denoise_with_network(method, loaded, brain, checkpoint, pretrained, options, iterations,
                          device, seed, num_threads, output, resume, log):
    from .training import build_network
    from .validate import InputError

    training, network = options
    channels = 1 if loaded.data.ndim == 4 else loaded.data.shape[3]
    if checkpoint is None:
        config = {"in_channels": channels, "out_channels": channels, **DEFAULT_NETWORK,
                  "batch_norm": loaded.data.ndim == 5, **network}
        state, block_defaults, stage = None, {}, "pretrain"
    else:
        config = checkpoint["network_config"]
        if config.get("in_channels") != channels:
            raise InputError(f"{pretrained}: the model takes {config.get('in_channels')} "
                             f"channel(s), the repetitions have {channels} volume(s)")
        state, stage = checkpoint["state_dict"], "finetune"
        recorded = checkpoint.get("extra", {}).get("settings", {})
        block_defaults = {key: recorded[key] for key in ("block_size", "block_stride")
                          if key in recorded}
    settings = _training_settings(stage, training, block_defaults, device, seed, num_threads)
    try:
        model = build_network(config, seed=seed)
    except ValueError as error:
        raise InputError(f"network options: {error}") from error
    job = {"method": method, "settings": dataclasses.asdict(settings), "network": config,
           "iterations": iterations if method == "n2a" else None,
           "inputs": file_checksums([*loaded.paths, *([pretrained] if pretrained else [])])}
    resume_dir = resume_folder(output, job, resume)
    images, history = train_and_denoise(method, loaded.data, brain, network=model,
                                        pretrained_state=state, settings=settings,
                                        iterations=iterations, checkpoint_dir=resume_dir,
                                        log=log)
    return images[-1], {"parameters": {"settings": settings, "network": config,
                                       "iterations": job["iterations"]},
                        "history": history}


def subset_scans(bvals, bvecs, output, *, n_subsets=2, max_condition=1.6, bvalue=None,
                 b0_threshold=50.0, seed=0, n_rotations=20000, dwi=None, prefix=None):
    """The SDnDTI subset design of a gradient table, and optionally its repetitions.

    Parameters
    ----------
    bvals, bvecs : str or Path
        FSL gradient table of the series.
    output : str or Path
        The design (``.json``): the volumes of every subset (0-based indices into the
        table), their design condition numbers, the common gradient set and the options
        (:func:`noise2average.sdndti.subset_design`).
    n_subsets, max_condition, bvalue, b0_threshold, seed, n_rotations
        Options of :func:`noise2average.sdndti.subset_design`.
    dwi : str or Path, optional
        The 4D series of the table: its SDnDTI repetitions (each subset's tensor fit
        synthesized on the common set) are written too, ready for :func:`denoise_scans`.
    prefix : str or Path, optional
        With ``dwi``: repetitions go to ``<prefix>_rep-<k>.nii.gz`` and the common gradient
        set to ``<prefix>.bval`` / ``<prefix>.bvec``. Default: beside ``output``, named
        after it.

    Returns
    -------
    list of Path
        The files written, the design last.
    """
    from . import sdndti
    from .io import save_gradients, save_nifti, write_json
    from .runtime import software_versions
    from .validate import InputError, load_gradient_table, load_repetitions

    output = Path(output)
    if output.suffix != ".json":
        raise InputError(f"{output}: the design is written as JSON; name it .json")
    if prefix is not None and dwi is None:
        raise InputError("prefix: names the repetitions written with --dwi; give the series")
    options = dict(n_subsets=n_subsets, max_condition=max_condition, n_rotations=n_rotations,
                   seed=seed, b0_threshold=b0_threshold, bvalue=bvalue)
    written = []
    try:
        if dwi is None:
            table = load_gradient_table(bvals, bvecs, b0_threshold=b0_threshold)
            *_, info = sdndti.subset_design(*table, **options)
        else:
            series = load_repetitions([dwi], dwi=True, bvals=[bvals], bvecs=[bvecs],
                                      b0_threshold=b0_threshold)
            repetitions, out_bvals, out_bvecs, info = sdndti.subset_repetitions(
                series.data[..., 0], series.bvals, series.bvecs, **options)
    except InputError:
        raise
    except ValueError as error:
        raise InputError(f"{bvals}: {error}") from error
    if dwi is not None:
        stem = Path(prefix) if prefix is not None else output.with_suffix("")
        for k in range(repetitions.shape[-1]):
            written.append(stem.with_name(f"{stem.name}_rep-{k + 1}.nii.gz"))
            save_nifti(written[-1], repetitions[..., k], series.affine, header=series.header)
        gradients = [stem.with_name(f"{stem.name}{ext}") for ext in (".bval", ".bvec")]
        save_gradients(*gradients, out_bvals, out_bvecs)
        written += gradients
    inputs = [bvals, bvecs, *([dwi] if dwi is not None else [])]
    write_json(output, {"design": info, "inputs": file_checksums(inputs),
                        "outputs": [str(path) for path in written],
                        "software": software_versions()})
    return [*written, output]
