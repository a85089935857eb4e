"""Denoise one subject's repetitions with any of the package's methods.

The functions here are what both the Snakemake workflow's scripts and the ``n2a`` command
line (through :mod:`noise2average.scans`) call, so a result means the same wherever it was
made:

- `filter_average`: the classical filters (BM4D, AONLM; MP-PCA and Patch2Self for diffusion
  series) applied to the mean of the repetitions, with the noise level estimated on that
  mean, never taken from a ground truth;
- `train_and_denoise`: the network methods (Noise2Average, Noise2Noise, the supervised upper
  bound), fine-tuned from pretrained weights on the subject itself;
- `resume_folder` / `discard_resume_files`: where a training job keeps its per-epoch resume
  files, so that a killed job run again continues rather than restarts;
- `file_checksums`, `sidecar_path`: the records every sidecar carries.
"""

import hashlib
import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "FILTER_METHODS",
    "NETWORK_METHODS",
    "filter_average",
    "train_and_denoise",
    "file_checksums",
    "sidecar_path",
    "resume_folder",
    "discard_resume_files",
]

_LOG = logging.getLogger(__name__)

#: Classical filters of the mean of the repetitions; the last two need a diffusion series.
FILTER_METHODS = ("average", "bm4d", "aonlm", "mppca", "patch2self")
#: Methods that train the MU-Net on the subject (``supervised`` needs a reference).
NETWORK_METHODS = ("n2a", "n2n", "supervised")

def filter_average(average, mask, method, *, bvals=None, b0_threshold=50.0, options=None,
                   num_threads=None):
    """Denoise the mean of the repetitions with a classical filter.

    Parameters
    ----------
    average : ndarray, shape (X, Y, Z) or (X, Y, Z, M)
        Mean of the repetitions: a volume, or a diffusion series of M volumes (magnitude,
        intensity units of the scanner).
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask: the noise level is estimated inside it and voxels outside keep their
        input values.
    method : {"average", "bm4d", "aonlm", "mppca", "patch2self"}
        ``average`` returns the input unchanged; ``mppca`` and ``patch2self`` need a series.
    bvals : ndarray of shape (M,), optional
        b-values (s/mm^2) of a series; needed by ``patch2self``.
    b0_threshold : float, optional
        Largest b-value counted as b=0 (``patch2self``).
    options : dict, optional
        Keyword options of the filter (``profile`` for BM4D, ``search_radius`` for AONLM,
        ``patch_radius`` for MP-PCA, ``model`` for Patch2Self).
    num_threads : int, optional
        Threads of the filter; series are filtered volume by volume in parallel. None: all
        available cores.

    Returns
    -------
    denoised : ndarray of float32, shape of ``average``
    details : dict
        ``sigma_estimated`` (volumes only: the noise std estimated on ``average``) and
        ``warnings`` (messages of intensity-shift warnings the filter raised; the result is
        kept and the change reported).
    """
    options = dict(options or {})
    average = np.asarray(average)
    if method not in FILTER_METHODS:
        raise ValueError(f"unknown filter {method!r}; expected one of {list(FILTER_METHODS)}")
    if method == "average":
        return average.astype(np.float32), {}
    details = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if average.ndim == 4:
            result = _filter_series(average, mask, method, bvals, b0_threshold, options,
                                    num_threads)
        else:
            result, details["sigma_estimated"] = _filter_volume(average, mask, method,
                                                                options, num_threads)
    details["warnings"] = [str(warning.message) for warning in caught]
    for message in details["warnings"]:
        _LOG.warning("%s", message)
    return np.asarray(result, dtype=np.float32), details


def _filter_volume(volume, mask, method, options, num_threads):
    from .noise_estimate import estimate_sigma

    if method not in ("bm4d", "aonlm"):
        raise ValueError(f"{method} needs a diffusion series, got a volume of shape "
                         f"{volume.shape}")
    sigma = estimate_sigma(volume, mask)
    _LOG.info("%s: noise std estimated on the average: %.4g", method, sigma)
    if method == "bm4d":
        from .bm4d_rician import bm4d_rician

        return bm4d_rician(volume, sigma, mask=mask, num_threads=num_threads, **options), sigma
    from .aonlm import aonlm

    return aonlm(volume, mask=mask, sigma=sigma, num_threads=num_threads, **options), sigma


def _filter_series(series, mask, method, bvals, b0_threshold, options, num_threads):
    from . import dwi_denoise

    if method == "patch2self":
        if bvals is None:
            raise ValueError("patch2self needs the b-values of the series")
        return dwi_denoise.patch2self_dwi(series, bvals, mask=mask, b0_threshold=b0_threshold,
                                          **options)
    if method == "mppca":
        return dwi_denoise.mppca_dwi(series, mask=mask, **options)
    per_volume = {"bm4d": dwi_denoise.bm4d_dwi, "aonlm": dwi_denoise.aonlm_dwi}[method]
    return per_volume(series, mask=mask, num_workers=num_threads, **options)


def train_and_denoise(method, repetitions, mask, *, network, pretrained_state, settings,
                      iterations=2, reference=None, checkpoint_dir=None, log=None):
    """Fine-tune the network on one subject with a network method and denoise it.

    Parameters
    ----------
    method : {"n2a", "n2n", "supervised"}
    repetitions : ndarray, shape (X, Y, Z, N) or (X, Y, Z, M, N)
        N co-registered repetitions (N >= 2 for ``n2a`` and ``n2n``), intensity units.
    mask : ndarray of bool, shape (X, Y, Z)
    network : torch.nn.Module
        MU-Net whose channels match the repetitions (1, or M for a series); overwritten.
    pretrained_state : dict or None
        Weights every fine-tuning starts from; None keeps the network's current weights.
    settings : noise2average.training.TrainingSettings
    iterations : int, optional
        N2A iterations (``n2a`` only).
    reference : ndarray, optional
        High-SNR reference of the subject, shape of one repetition (``supervised`` only).
    checkpoint_dir : str or Path, optional
        Folder of per-epoch resume files; a rerun after a kill continues from them. The
        caller removes it once the outputs are written.
    log : callable, optional
        Receives progress lines (str).

    Returns
    -------
    images : list of ndarray of float32
        One image per N2A iteration (the last is the result), or one image.
    history : list of dict
        Per-epoch training records (see :func:`noise2average.training.fit_residual`).
    """
    from . import training

    common = dict(network=network, pretrained_state=pretrained_state, settings=settings,
                  log=log)
    checkpoint = None if checkpoint_dir is None else Path(checkpoint_dir) / f"{method}.pt"
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if method == "n2a":
        return training.noise2average(repetitions, mask, iterations=iterations,
                                      checkpoint_dir=checkpoint_dir, **common)
    if method == "n2n":
        image, history = training.noise2noise(repetitions, mask, checkpoint=checkpoint,
                                              **common)
    elif method == "supervised":
        if reference is None:
            raise ValueError("the supervised method needs the subject's reference")
        image, history = training.supervised(repetitions, mask, reference,
                                             checkpoint=checkpoint, **common)
    else:
        raise ValueError(f"unknown network method {method!r}; expected one of "
                         f"{list(NETWORK_METHODS)}")
    return [image], history


def file_checksums(paths):
    """SHA-256 of files, for a sidecar's record of its inputs.

    Parameters
    ----------
    paths : iterable of str or Path

    Returns
    -------
    list of dict
        ``{"path": str, "sha256": hex digest}`` per file, in order.
    """
    from .download import file_digests

    return [{"path": str(path), "sha256": file_digests(path)["sha256"]}
            for path in paths]


def sidecar_path(image_path):
    """The JSON sidecar of a NIfTI path (``x.nii.gz`` -> ``x.json``), as BIDS names them."""
    path = Path(image_path)
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_name(name + ".json")


def _resume_root(output):
    return Path(output).parent / f".{Path(output).name}.resume"


def discard_resume_files(output):
    """Remove the resume files of ``output``'s job, once its results are written."""
    shutil.rmtree(_resume_root(output), ignore_errors=True)


def resume_folder(output, job, resume=True):
    """The folder of a training job's resume files, beside its ``output``.

    Parameters
    ----------
    output : str or Path
        The job's main output; the folder is ``.<output name>.resume/<digest>/`` beside it.
    job : dict
        JSON-serialisable description of everything that changes the result (method,
        settings, network, the inputs' checksums). Its digest names the folder, so a rerun
        with other options or inputs starts afresh instead of continuing a fit that is not
        its own; the folders of other jobs on the same output are removed.
    resume : bool, optional
        False removes this job's own resume files too.

    Returns
    -------
    Path
        The folder, created if needed.
    """
    root = _resume_root(output)
    digest = hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()
    folder = root / digest[:16]
    if root.is_dir():
        for stale in root.iterdir():
            if stale != folder or not resume:
                shutil.rmtree(stale, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
