"""Run-time set-up shared by the workflow scripts: logging, threads, software versions."""

import importlib.metadata
import importlib.util
import logging
import os
import platform
import sys

__all__ = ["configure_logging", "derive_seed", "set_num_threads", "software_versions"]

_PACKAGES = (
    "noise2average", "numpy", "scipy", "torch", "nibabel", "numba", "bm4d", "dipy",
    "pandas", "matplotlib", "snakemake", "pybids", "boto3",
)


def configure_logging(log_path=None, *, level=logging.INFO):
    """Send the package's log records and uncaught warnings to ``log_path`` (or stderr).

    Returns the ``noise2average`` logger.
    """
    handler = logging.FileHandler(log_path, mode="w") if log_path else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    logger = logging.getLogger("noise2average")

    def log_uncaught(kind, value, traceback):
        logger.error("failed", exc_info=(kind, value, traceback))
        sys.__excepthook__(kind, value, traceback)

    sys.excepthook = log_uncaught
    return logger


def set_num_threads(num_threads):
    """Limit OpenMP/BLAS, numba and torch to ``num_threads`` threads (the rule's ``threads``)."""
    num_threads = max(int(num_threads), 1)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[variable] = str(num_threads)
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(num_threads)
    if importlib.util.find_spec("numba") is not None:
        import numba

        numba.set_num_threads(min(num_threads, numba.config.NUMBA_NUM_THREADS))
    return num_threads


def training_gpus(device, *, driver_node="/dev/nvidiactl"):
    """GPUs a training job on ``device`` ("auto", "cpu" or "cuda") requests: 1 or 0.

    With "auto" a job trains on CUDA when the machine has an NVIDIA driver, seen from the
    driver's control device node rather than by importing torch: that takes seconds, and the
    Snakemake process of a ``--use-conda`` run may lack torch.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        The configured training device.
    driver_node : str, optional
        Path whose existence means an NVIDIA driver is loaded.

    Returns
    -------
    int
        1 when the job will use a GPU, else 0.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        return int(os.path.exists(driver_node))
    return int(device == "cuda")


def software_versions():
    """Versions of Python, the platform and every package the benchmark depends on."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    try:
        import torch

        versions["cuda"] = torch.version.cuda
        versions["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return versions


def derive_seed(master_seed, *keys):
    """A reproducible 32-bit seed for one job from the master seed and its identifying keys.

    Independent of Python's hash randomisation, so the same subject gets the same data in
    every run and on every machine.
    """
    import zlib

    text = "/".join(str(key) for key in (master_seed, *keys))
    return zlib.crc32(text.encode("utf-8"))
