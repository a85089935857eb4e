"""Training and inference for MU-Net denoising: pretraining, Noise2Average, Noise2Noise, supervised.

Every method works on z-scored repetitions (each repetition normalised with its own mean and
standard deviation inside the brain mask, channel by channel for a diffusion series) and trains the network to predict a *residual*:
``target - input`` in the input's normalisation. Training data are cubic blocks over the mask
(:mod:`noise2average.blocks`), doubled by a flip along ``settings.flip_axis`` (left-right for
data in NIfTI voxel order); the loss is the squared residual error weighted by the mask. At
inference each block is also predicted flipped, the two residuals are averaged, overlapping
blocks are averaged, and the residual is zero outside the mask, so every method returns the mean
of the repetitions there.

Noise2Average (Li, Tian et al. 2026), as in the public start code: iteration 1 fine-tunes the
pretrained network so that each repetition maps onto the mean of all repetitions, denoises every
repetition and averages the de-normalised results; iteration ``k`` does the same with the result
of iteration ``k - 1`` as the target, restarting from the pretrained weights each time.

The module imports only numpy, torch and the standard library.
"""

import contextlib
import copy
import dataclasses
import hashlib
import logging
import math
import os
import time

import numpy as np
import torch

from ._files import temporary_beside
from .blocks import assemble_blocks, block_origins, extract_blocks
from .network import MUNet

__all__ = [
    "TrainingSettings",
    "resolve_device",
    "zscore",
    "fit_residual",
    "predict_residual_volume",
    "pretrain",
    "noise2average",
    "noise2noise",
    "supervised",
    "save_checkpoint",
    "load_checkpoint",
    "build_network",
    "settings_from_config",
]

logger = logging.getLogger("noise2average")

_CHECKPOINT_FORMAT = "noise2average-checkpoint"
_CHECKPOINT_VERSION = 1
_RESUME_FORMAT = "noise2average-resume"
_RESUME_VERSION = 1
_IMAGE_FORMAT = "noise2average-iteration-image"
# Settings that change where and how fast a fit runs, not its result: a resume file may be
# continued under other values.
_RUN_INDEPENDENT_SETTINGS = ("device", "num_threads", "compile")
_PRECISIONS = ("auto", "float32", "bf16")


@dataclasses.dataclass
class TrainingSettings:
    """Options shared by training and inference.

    Attributes
    ----------
    block_size : int
        Edge of the cubic blocks, in voxels (80 in the start code).
    block_stride : int
        Distance between neighbouring block starts, in voxels (``<= block_size``).
    batch_size : int
        Blocks per optimisation step (and per inference batch).
    epochs : int
        Passes over the (flip-doubled) training blocks; 0 returns the initial weights.
    learning_rate : float
        Adam step size (betas 0.9 / 0.999; see Notes).
    validation_fraction : float
        Fraction of the blocks held out for validation, in [0, 1). A held-out block's flipped
        copy is held out with it. 0: no validation, the last epoch's weights are kept.
    flip : bool
        Double the training blocks by flipping, and average flipped predictions at inference.
    flip_axis : int
        Spatial axis (0, 1 or 2) of the flip; 0 is left-right for NIfTI voxel order.
    device : str
        "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".
    seed : int
        Seed of the validation split and the batch order.
    num_threads : int or None
        Torch CPU threads during training/inference; None leaves torch's setting alone.
    compile : bool
        Run the network's ``residual`` through :func:`torch.compile` (inductor) for training
        and inference. Compilation costs tens of seconds per call of :func:`fit_residual` /
        :func:`predict_residual_volume` the first time a shape is seen; it pays on a GPU. The
        module itself is not wrapped: state dicts keep their keys (no ``_orig_mod.``).
    precision : {"auto", "float32", "bf16"}
        What the network computes in. "auto": bf16 autocast on CUDA, float32 on the CPU.
        "bf16": bf16 autocast on either; on a CPU with AMX (Intel Xeon 4th generation and
        later) training then runs 2-6x faster, on a CPU without AMX 1.1-1.3x (AVX512-BF16) to
        about 50x (AVX2) slower, and :func:`fit_residual` warns of it (docs/benchmarks.md).
        "float32": no autocast anywhere.

    Notes
    -----
    Adam uses ``eps = 1e-8`` (torch's default; Keras 2 defaulted to 1e-7; fused on CUDA).
    Under bf16 autocast the network runs in the channels-last 3D memory layout (cuDNN's and
    oneDNN's bf16 convolutions work in NDHWC); the weights, the optimiser and the loss stay
    float32. On CUDA cuDNN's autotuner is on (``torch.backends.cudnn.benchmark``, restored
    afterwards).
    """

    block_size: int = 32
    block_stride: int = 24
    batch_size: int = 2
    epochs: int = 6
    learning_rate: float = 5e-5
    validation_fraction: float = 0.2
    flip: bool = True
    flip_axis: int = 0
    device: str = "auto"
    seed: int = 0
    num_threads: int | None = None
    compile: bool = False
    precision: str = "auto"

    def __post_init__(self):
        _check_settings(self)


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_settings(settings):
    for name in ("block_size", "block_stride", "batch_size"):
        value = getattr(settings, name)
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if settings.block_stride > settings.block_size:
        raise ValueError(f"block_stride {settings.block_stride!r} must not exceed block_size "
                         f"{settings.block_size!r}")
    if not _is_int(settings.epochs) or settings.epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {settings.epochs!r}")
    if not (isinstance(settings.learning_rate, (int, float)) and settings.learning_rate > 0
            and math.isfinite(settings.learning_rate)):
        raise ValueError(f"learning_rate must be a positive number, got "
                         f"{settings.learning_rate!r}")
    fraction = settings.validation_fraction
    if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction!r}")
    if settings.flip_axis not in (0, 1, 2) or isinstance(settings.flip_axis, bool):
        raise ValueError(f"flip_axis must be 0, 1 or 2, got {settings.flip_axis!r}")
    if not _is_int(settings.seed):
        raise ValueError(f"seed must be an integer, got {settings.seed!r}")
    if settings.num_threads is not None and (not _is_int(settings.num_threads)
                                             or settings.num_threads < 1):
        raise ValueError(f"num_threads must be a positive integer or None, got "
                         f"{settings.num_threads!r}")
    if not isinstance(settings.device, (str, torch.device)):
        raise ValueError(f"device must be a string, got {settings.device!r}")
    if not isinstance(settings.compile, (bool, np.bool_)):
        raise ValueError(f"compile must be true or false, got {settings.compile!r}")
    if settings.precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(_PRECISIONS)}, got "
                         f"{settings.precision!r}")


def resolve_device(name="auto"):
    """The torch device to run on.

    Parameters
    ----------
    name : str or torch.device
        "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        For an unknown device name, or CUDA requested where it is not available.
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"unsupported device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        build = (f"CUDA {torch.version.cuda}" if torch.version.cuda
                 else "no CUDA support (CPU-only build)")
        raise ValueError(f"device {name!r} requested but CUDA is not available (torch "
                         f"{torch.__version__}, {build}); use device='auto' or 'cpu'")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA "
                         "device(s) are visible")
    return device


def _uses_bf16(device, precision):
    """Whether the network computes in bf16: "bf16" anywhere, "auto" on CUDA."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def _autocast(device, precision):
    """bf16 autocast where the network computes in bf16 (:func:`_uses_bf16`), else nothing."""
    if _uses_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _cpu_has_amx():
    """Whether the CPU has AMX bf16 tile units (``amx_bf16`` among the flags of
    ``/proc/cpuinfo``); None where that file cannot be read."""
    try:
        with open("/proc/cpuinfo") as stream:
            flags = next((line for line in stream if line.startswith("flags")), "")
    except OSError:
        return None
    return "amx_bf16" in flags.split()


def _slow_precision_warning(device, precision):
    """A warning for bf16 on a CPU known to lack AMX, where it is slower than float32."""
    if device.type != "cpu" or not _uses_bf16(device, precision) or _cpu_has_amx() is not False:
        return None
    return ("precision bf16 on a CPU without AMX (no amx_bf16 flag in /proc/cpuinfo): bf16 "
            "runs there 1.1-1.3x (AVX512-BF16) to about 50x (AVX2, emulated) slower than "
            "float32 (docs/benchmarks.md); set precision to float32 or auto")


def _memory_format(device, precision):
    """Memory layout of the network and its inputs: channels-last 3D under bf16.

    cuDNN's bf16 tensor-core convolutions and oneDNN's AMX ones work in NDHWC; in NCDHW every
    convolution would be wrapped in layout transposes. float32 on the CPU keeps the
    contiguous layout (oneDNN picks its own blocked layout, and the CPU results stay those of
    the reference implementation).
    """
    if _uses_bf16(device, precision):
        return torch.channels_last_3d
    return torch.contiguous_format


@contextlib.contextmanager
def _device_flags(device):
    """cuDNN autotuning on CUDA (fixed block shapes: the fastest algorithm pays); restored."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _prepare_network(network, device, settings):
    """Move ``network`` to ``device`` in its memory format; the residual function to call.

    Returns ``(residual, memory_format)``: ``residual`` is ``network.residual`` or, with
    ``settings.compile``, that bound method compiled (the module is not wrapped, so its
    ``state_dict`` keys are unchanged and checkpoints load into an uncompiled network).
    """
    memory_format = _memory_format(device, settings.precision)
    network.to(device=device, memory_format=memory_format)
    residual = getattr(network, "residual", None)
    if residual is None:
        raise TypeError(f"network {type(network).__name__} has no residual(x) method")
    if settings.compile:
        residual = torch.compile(residual, dynamic=False)
    return residual, memory_format


@contextlib.contextmanager
def _torch_threads(num_threads):
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_mask(mask, shape):
    mask = np.asarray(mask)
    if mask.shape != tuple(shape[:3]):
        raise ValueError(f"mask shape {mask.shape} does not match the volume's spatial shape "
                         f"{tuple(shape[:3])}")
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("mask is empty")
    return mask


def zscore(volume, mask):
    """Normalise a repetition to zero mean and unit standard deviation inside the mask.

    Parameters
    ----------
    volume : ndarray of shape (X, Y, Z) or (X, Y, Z, C)
        One repetition (intensity, arbitrary units). Multichannel data (a diffusion series:
        b0s and DWIs) are normalised channel by channel.
    mask : ndarray of shape (X, Y, Z), bool

    Returns
    -------
    normalised : ndarray, float32, shape of ``volume``
        ``(volume - mean) / std`` everywhere (also outside the mask).
    mean : float, or ndarray of shape (C,) for multichannel data
    std : float, or ndarray of shape (C,)
        Population standard deviation (ddof 0) inside the mask.

    Notes
    -----
    One mean and std over all channels would let the bright b0 set the scale: the noise of
    the diffusion-weighted channels then shrinks to a few per cent of the normalised range,
    and the DWI MU-Net learns nothing (its validation loss stays at that of returning the
    input; docs/benchmarks.md, "Diffusion MU-Net at CPU scale").
    """
    volume = np.asarray(volume)
    if volume.ndim not in (3, 4):
        raise ValueError(f"volume must be (X, Y, Z) or (X, Y, Z, C), got shape {volume.shape}")
    mask = _check_mask(mask, volume.shape)
    values = volume[mask].astype(np.float64)
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    if not (np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ValueError(f"standard deviation inside the mask is {std!r}; cannot normalise")
    normalised = ((volume.astype(np.float64) - mean) / std).astype(np.float32)
    if volume.ndim == 3:
        return normalised, float(mean), float(std)
    return normalised, mean, std


def _channels_first(blocks):
    """(M, bx, by, bz[, C]) numpy -> (M, C, bx, by, bz) contiguous float32."""
    blocks = np.asarray(blocks, dtype=np.float32)
    if blocks.ndim == 4:
        blocks = blocks[:, None]
    else:
        blocks = np.moveaxis(blocks, -1, 1)
    return np.ascontiguousarray(blocks)


def _block_tensors(inputs, targets, masks, settings, device):
    """Stack the blocks of all training pairs on ``device``: input, residual target, weight."""
    xs, rs, ws = [], [], []
    for index, (volume, target, mask) in enumerate(zip(inputs, targets, masks)):
        volume = np.asarray(volume, dtype=np.float32)
        target = np.asarray(target, dtype=np.float32)
        if volume.ndim not in (3, 4) or target.shape != volume.shape:
            raise ValueError(f"pair {index}: input shape {volume.shape} and target shape "
                             f"{target.shape} must be equal (X, Y, Z[, C])")
        mask = _check_mask(mask, volume.shape)
        weight = mask.astype(np.float32)
        spread = weight if volume.ndim == 3 else weight[..., None]
        origins = block_origins(mask, block_size=settings.block_size,
                                stride=settings.block_stride)
        block = settings.block_size
        xs.append(torch.from_numpy(_channels_first(
            extract_blocks(volume * spread, origins, block))).to(device))
        rs.append(torch.from_numpy(_channels_first(
            extract_blocks((target - volume) * spread, origins, block))).to(device))
        ws.append(torch.from_numpy(_channels_first(
            extract_blocks(weight, origins, block))).to(device))
    return torch.cat(xs), torch.cat(rs), torch.cat(ws)


def _split(n_blocks, fraction, seed):
    """Seeded split of block indices into (train, validation)."""
    n_val = 0
    if fraction > 0 and n_blocks >= 2:
        n_val = min(max(int(round(fraction * n_blocks)), 1), n_blocks - 1)
    order = np.random.default_rng(seed).permutation(n_blocks)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _gather(tensors, base, flipped, axis, memory_format=torch.contiguous_format):
    """Rows ``base`` of each tensor, flipped along spatial ``axis`` where ``flipped``.

    ``base`` is an index tensor on the tensors' device; ``flipped`` a host (numpy) bool array
    of the same length, so deciding what to flip needs no device synchronisation. Rows come
    back in ``memory_format``.
    """
    flipped = np.asarray(flipped, dtype=bool)
    n_flipped = int(flipped.sum())
    out = []
    for tensor in tensors:
        batch = tensor.index_select(0, base)
        if n_flipped == len(flipped):
            batch = torch.flip(batch, dims=(2 + axis,))
        elif n_flipped:
            for row in np.flatnonzero(flipped):   # at most batch_size views, no device sync
                batch[row] = torch.flip(batch[row], dims=(1 + axis,))
        out.append(batch.contiguous(memory_format=memory_format))
    return out


def _masked_sse(prediction, residual, weight):
    """Sum of mask-weighted squared residual errors (float32 scalar tensor)."""
    return (weight * (prediction.float() - residual).square()).sum()


def _evaluate(residual_fn, network, tensors, indices, settings, device,
              memory_format=torch.contiguous_format):
    """Validation loss: masked squared error per block voxel over blocks and their flips.

    The block indices go to the device once; the sum stays there (float64) and is read once.
    """
    x_all, r_all, w_all = tensors
    copies = 2 if settings.flip else 1
    n_samples = len(indices) * copies
    samples = np.arange(n_samples)
    rows = torch.as_tensor(np.asarray(indices)[samples % len(indices)]).to(device)
    total, voxels = torch.zeros((), dtype=torch.float64, device=device), 0
    network.eval()
    with torch.no_grad(), _autocast(device, settings.precision):
        for start in range(0, n_samples, settings.batch_size):
            stop = min(start + settings.batch_size, n_samples)
            x, r, w = _gather((x_all, r_all, w_all), rows[start:stop],
                              samples[start:stop] >= len(indices), settings.flip_axis,
                              memory_format)
            total += _masked_sse(residual_fn(x), r, w).double()
            voxels += r.numel()
    return float(total) / voxels


def _identity_loss(tensors, indices):
    """Validation loss of predicting a zero residual: what training must get below."""
    if not len(indices):
        return None
    _, r_all, w_all = tensors
    index = torch.as_tensor(indices, device=r_all.device)
    residual, weight = r_all[index], w_all[index]
    return float(_masked_sse(torch.zeros_like(residual), residual, weight)) / residual.numel()


def _cpu_state(network):
    return {key: value.detach().to(device="cpu", memory_format=torch.contiguous_format,
                                   copy=True)
            for key, value in network.state_dict().items()}


def _train_step(residual_fn, optimizer, x, r, w, device, precision):
    """One optimisation step on a batch; the batch's masked SSE as a device scalar (no sync)."""
    optimizer.zero_grad(set_to_none=True)
    with _autocast(device, precision):
        prediction = residual_fn(x)
    sse = _masked_sse(prediction, r, w)
    (sse / r.numel()).backward()
    optimizer.step()
    return sse.detach()


def _make_optimizer(network, settings, device):
    """Adam (betas 0.9, 0.999); the fused CUDA kernel on CUDA, torch's default elsewhere."""
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.Adam(network.parameters(), lr=settings.learning_rate,
                            betas=(0.9, 0.999), **fused)


def _emit(log, message, level=logging.INFO, **fields):
    """Log ``message`` (with ``fields`` as attributes of the log record) and pass it to ``log``."""
    logger.log(level, message, extra=fields)
    if log is not None:
        log(message)


@contextlib.contextmanager
def _out_of_memory_remedy(device, settings, task):
    """Re-raise running out of device memory as an error that names the sizes and the remedy."""
    try:
        yield
    # torch.OutOfMemoryError since torch 2.5 (the same class); this name exists in 2.4 too.
    except torch.cuda.OutOfMemoryError as error:
        if device.type == "cuda":
            # Hand the failed step's cached blocks back to the driver, for whatever runs next.
            torch.cuda.empty_cache()
        raise RuntimeError(
            f"out of memory on {device} during {task} with block_size {settings.block_size} "
            f"and batch_size {settings.batch_size}; use smaller blocks or a smaller batch "
            "(--block-size / --batch-size of `n2a denoise`, network.block_size / "
            "training.batch_size in the workflow config)"
        ) from error


def _fingerprint(initial_state, inputs, targets, masks, tensors, settings):
    """What a resume file must match to be continued: everything that changes the result.

    The settings except those in ``_RUN_INDEPENDENT_SETTINGS``, the shapes of the input and
    residual block tensors, and SHA-256 digests of the pairs (float32 input and target, bool
    mask, each with its shape) and of the initial weights. A flat dict of plain values, equal
    to itself after a ``weights_only`` round trip.
    """
    data = hashlib.sha256()
    for volume, target, mask in zip(inputs, targets, masks):
        for array in (np.asarray(volume, dtype=np.float32),
                      np.asarray(target, dtype=np.float32), np.asarray(mask).astype(bool)):
            data.update(repr(array.shape).encode())
            data.update(np.ascontiguousarray(array))
    weights = hashlib.sha256()
    for key, value in initial_state.items():
        weights.update(f"{key} {value.dtype} {tuple(value.shape)}".encode())
        weights.update(value.reshape(-1).view(torch.uint8).numpy())
    fingerprint = {name: value.item() if isinstance(value, np.generic) else value
                   for name, value in dataclasses.asdict(settings).items()
                   if name not in _RUN_INDEPENDENT_SETTINGS}
    fingerprint.update(input_blocks=list(tensors[0].shape),
                       residual_blocks=list(tensors[1].shape), data=data.hexdigest(),
                       initial_weights=weights.hexdigest())
    return fingerprint


def _read_resume(path, fingerprint):
    """The resume file at ``path`` if there is one (None if not), checked against the run."""
    if not os.path.exists(path):
        return None
    state = _read_payload(path, _RESUME_FORMAT, _RESUME_VERSION, "noise2average resume file")
    recorded = state["fingerprint"]
    differing = sorted(key for key in recorded.keys() | fingerprint.keys()
                       if recorded.get(key) != fingerprint.get(key))
    if differing:
        raise ValueError(f"resume file {os.fspath(path)!r} belongs to another run (different "
                         f"{', '.join(differing)}); delete it to start this fit afresh")
    return state


def _save_progress(path, fingerprint, epoch, network, optimizer, generator, best_state,
                   best_loss, history):
    """Write everything :func:`fit_residual` needs to continue after ``epoch``, atomically."""
    _atomic_save({"format": _RESUME_FORMAT, "version": _RESUME_VERSION,
                  "fingerprint": fingerprint, "epoch": epoch, "network": _cpu_state(network),
                  "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                  "best_state": best_state, "best_loss": best_loss, "history": history}, path)


def fit_residual(network, inputs, targets, masks, *, settings, log=None, checkpoint=None):
    """Train ``network`` to predict ``target - input`` on blocks over the masks.

    Parameters
    ----------
    network : torch.nn.Module
        A network with a ``residual(x)`` method mapping (B, C, X, Y, Z) to (B, C', X, Y, Z),
        such as :class:`~noise2average.network.MUNet`. Trained in place; moved to the device.
    inputs : list of ndarray, each (X, Y, Z) or (X, Y, Z, C)
        Normalised input volumes. They are multiplied by their mask before blocking (the
        network sees zeros outside the brain, as in the start code).
    targets : list of ndarray
        Normalised targets, each in the normalisation of its input and of the same shape.
    masks : list of ndarray, each (X, Y, Z), bool
        Brain mask of each pair: blocks are placed over it and it weights the loss.
    settings : TrainingSettings
    log : callable, optional
        Called with one progress line (str) per epoch, in addition to the
        ``noise2average`` logger. It is called after the epoch's resume file is written.
        For a structured feed, read the logger's records instead: an epoch's record (level
        INFO) has the epoch's ``history`` entry as its ``epoch_record`` attribute, and the
        record of a resume has the number of epochs already done as ``resumed_epochs``.
    checkpoint : str or os.PathLike, optional
        Resume file, written atomically before the first epoch and after every epoch (its
        directory must exist). If it exists on entry, the fit continues after the epoch it
        records; if that is the last epoch, the recorded result is returned without training.
        The file is kept afterwards: delete it once the result is stored. None: no resume file.

    Returns
    -------
    best_state_dict : dict of str to torch.Tensor
        CPU copy of the weights of the epoch with the lowest validation loss (of the last
        epoch if there is no validation set; the initial weights if ``epochs == 0``). The
        network is left holding these weights, in eval mode.
    history : list of dict
        One dict per epoch: ``epoch`` (1-based), ``train_loss``, ``val_loss`` (None without
        validation), ``identity_val_loss`` (the validation loss of a zero residual, i.e. of
        returning the input unchanged: a ``val_loss`` not below it means the network learned
        nothing; None without validation) and ``seconds``. Losses are mean squared residual errors per block voxel
        with voxels outside the mask weighted zero (the start code's weighted MSE), in
        normalised units squared.

    Raises
    ------
    ValueError
        For inconsistent pairs, or a ``checkpoint`` that belongs to another run (the file
        has to be deleted).
    RuntimeError
        If the device runs out of memory; the message names ``block_size``, ``batch_size`` and
        how to lower them.

    Notes
    -----
    Blocks of all pairs are pooled, split into training and validation blocks with
    ``settings.seed`` (a block and its flipped copy stay on the same side) and kept on the
    device. Optimiser: Adam (betas 0.9, 0.999) at ``settings.learning_rate``. On CPU two runs
    with the same seed, initial weights and thread count give identical weights (in float32
    and in bf16); on CUDA results can differ in the last bits.

    The resume file holds the epoch, the weights, the optimiser state, the state of the
    generator of the batch order, the best weights and loss so far, the history and a
    fingerprint of the run: the settings except ``device``, ``num_threads`` and ``compile``,
    the number and shape of the blocks, and digests of the pairs and of the network's weights
    on entry (so an interrupted fit must be restarted from the same initial weights, e.g. a
    network built with the same seed or loaded from the same pretrained state). On the CPU a
    fit interrupted after any epoch and resumed with the same thread count gives weights and
    history identical to those of an uninterrupted fit (``seconds`` apart); on CUDA the two
    agree as closely as two uninterrupted fits do.
    """
    if not (len(inputs) == len(targets) == len(masks)) or len(inputs) == 0:
        raise ValueError(f"inputs, targets and masks must be non-empty lists of equal length, "
                         f"got {len(inputs)}, {len(targets)}, {len(masks)}")
    _check_settings(settings)
    device = resolve_device(settings.device)
    with (_torch_threads(settings.num_threads), _device_flags(device),
          _out_of_memory_remedy(device, settings, "training")):
        residual_fn, memory_format = _prepare_network(network, device, settings)
        tensors = _block_tensors(inputs, targets, masks, settings, device)
        n_blocks = len(tensors[0])
        train_idx, val_idx = _split(n_blocks, settings.validation_fraction, settings.seed)
        copies = 2 if settings.flip else 1
        n_samples = len(train_idx) * copies
        _emit(log, f"fit_residual: {n_blocks} blocks of {settings.block_size}^3 "
                   f"({len(train_idx)} training, {len(val_idx)} validation, x{copies} with "
                   f"flips) on {device}"
                   f"{' in bf16' if _uses_bf16(device, settings.precision) else ''}, "
                   f"{settings.epochs} epochs{', compiled' if settings.compile else ''}")
        warning = _slow_precision_warning(device, settings.precision)
        if warning is not None:
            _emit(log, warning, level=logging.WARNING)
        identity_loss = _identity_loss(tensors, val_idx)
        if identity_loss is not None:
            _emit(log, f"validation loss of the identity (zero residual): {identity_loss:.6g}")
        generator = torch.Generator().manual_seed(int(settings.seed))
        optimizer = _make_optimizer(network, settings, device)
        best_state, best_loss = _cpu_state(network), math.inf
        history, done = [], 0
        if checkpoint is not None:
            fingerprint = _fingerprint(best_state, inputs, targets, masks, tensors, settings)
            resume = _read_resume(checkpoint, fingerprint)
            if resume is None:
                # Before the first epoch, so that the file names its run from the start and
                # exists after every call (epochs == 0 included) for the caller to delete.
                _save_progress(checkpoint, fingerprint, 0, network, optimizer, generator,
                               best_state, best_loss, history)
            else:
                network.load_state_dict(resume["network"])
                optimizer.load_state_dict(resume["optimizer"])
                generator.set_state(resume["generator"])
                best_state, best_loss = resume["best_state"], resume["best_loss"]
                history, done = resume["history"], resume["epoch"]
                action = "finished at" if done == settings.epochs else "resuming from"
                _emit(log, f"fit_residual: {action} epoch {done}/{settings.epochs} recorded in "
                           f"{os.fspath(checkpoint)}", resumed_epochs=done)
        for epoch in range(done + 1, settings.epochs + 1):
            start_time = time.perf_counter()
            network.train()
            # The epoch's order is drawn on the host and sent to the device once; a step
            # slices it. The loss sum stays on the device and is read once per epoch.
            order = torch.randperm(n_samples, generator=generator).numpy()
            rows = torch.as_tensor(train_idx[order % len(train_idx)]).to(device)
            flipped = order >= len(train_idx)
            total, voxels = torch.zeros((), dtype=torch.float64, device=device), 0
            for start in range(0, n_samples, settings.batch_size):
                stop = start + settings.batch_size
                x, r, w = _gather(tensors, rows[start:stop], flipped[start:stop],
                                  settings.flip_axis, memory_format)
                total += _train_step(residual_fn, optimizer, x, r, w, device,
                                     settings.precision).double()
                voxels += r.numel()
            train_loss = float(total) / voxels
            val_loss = (_evaluate(residual_fn, network, tensors, val_idx, settings, device,
                                  memory_format) if len(val_idx) else None)
            score = val_loss if val_loss is not None else -epoch  # no validation: keep last
            if score < best_loss:
                best_loss, best_state = score, _cpu_state(network)
            seconds = time.perf_counter() - start_time
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                            "identity_val_loss": identity_loss, "seconds": seconds})
            if checkpoint is not None:
                _save_progress(checkpoint, fingerprint, epoch, network, optimizer, generator,
                               best_state, best_loss, history)
            val_text = f"{val_loss:.6g}" if val_loss is not None else "n/a"
            _emit(log, f"epoch {epoch}/{settings.epochs}: train_loss {train_loss:.6g}, "
                       f"val_loss {val_text}, {seconds:.1f} s", epoch_record=history[-1])
        network.load_state_dict(best_state)
        network.eval()
    return best_state, history


def predict_residual_volume(network, volume, mask, *, settings):
    """Residual predicted by ``network`` for a whole normalised volume.

    Parameters
    ----------
    network : torch.nn.Module
        A network with a ``residual(x)`` method (see :func:`fit_residual`); run in eval mode.
    volume : ndarray of shape (X, Y, Z) or (X, Y, Z, C)
        Normalised input; multiplied by ``mask`` before blocking, as in training.
    mask : ndarray of shape (X, Y, Z), bool
    settings : TrainingSettings
        ``block_size``, ``block_stride``, ``batch_size``, ``flip``, ``flip_axis``, ``device``,
        ``num_threads`` are used.

    Returns
    -------
    ndarray, float32
        Shape (X, Y, Z) for a 3D input and a one-channel residual, else (X, Y, Z, C'). Each
        block's residual is the average of the prediction for the block and the un-flipped
        prediction for the flipped block (``settings.flip``); overlapping blocks are averaged;
        the residual is zero outside the mask.

    Raises
    ------
    RuntimeError
        If the device runs out of memory; the message names ``block_size``, ``batch_size`` and
        how to lower them.
    """
    _check_settings(settings)
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim not in (3, 4):
        raise ValueError(f"volume must be (X, Y, Z) or (X, Y, Z, C), got shape {volume.shape}")
    mask = _check_mask(mask, volume.shape)
    device = resolve_device(settings.device)
    spread = mask if volume.ndim == 3 else mask[..., None]
    origins = block_origins(mask, block_size=settings.block_size, stride=settings.block_stride)
    blocks = _channels_first(extract_blocks(volume * spread, origins, settings.block_size))
    dims = (2 + settings.flip_axis,)
    outputs = []
    with (_torch_threads(settings.num_threads), _device_flags(device),
          _out_of_memory_remedy(device, settings, "inference")):
        residual_fn, memory_format = _prepare_network(network, device, settings)
        network.eval()
        # All blocks go to the device at once and the residuals come back at once: no
        # host synchronisation between batches.
        blocks = torch.from_numpy(blocks).to(device)
        with torch.inference_mode(), _autocast(device, settings.precision):
            for start in range(0, len(blocks), settings.batch_size):
                x = blocks[start:start + settings.batch_size].contiguous(
                    memory_format=memory_format)
                residual = residual_fn(x).float()
                if settings.flip:
                    mirrored = residual_fn(torch.flip(x, dims=dims)).float()
                    residual = 0.5 * (residual + torch.flip(mirrored, dims=dims))
                outputs.append(residual.permute(0, 2, 3, 4, 1))
            predictions = torch.cat(outputs).cpu().numpy()
        del blocks, outputs
    out = assemble_blocks(predictions, origins, mask.shape)
    out[~mask] = 0.0
    if volume.ndim == 3 and out.shape[-1] == 1:
        out = out[..., 0]
    return out


def _repetition_list(repetitions, name="repetitions"):
    """(X, Y, Z, N) or (X, Y, Z, C, N) -> list of N float32 arrays."""
    repetitions = np.asarray(repetitions)
    if repetitions.ndim not in (4, 5):
        raise ValueError(f"{name} must be (X, Y, Z, N) or (X, Y, Z, C, N), got shape "
                         f"{repetitions.shape}")
    return [np.ascontiguousarray(repetitions[..., n], dtype=np.float32)
            for n in range(repetitions.shape[-1])]


def _initial_state(network, pretrained_state):
    if pretrained_state is None:
        return _cpu_state(network)
    return {key: value.detach().to("cpu", copy=True) for key, value in pretrained_state.items()}


def _denoise_average(network, normalised, mask, average, settings):
    """Mean over repetitions of the de-normalised denoised repetitions; ``average`` outside."""
    total = np.zeros(average.shape, dtype=np.float64)
    for volume, mean, std in normalised:
        residual = predict_residual_volume(network, volume, mask, settings=settings)
        total += (volume.astype(np.float64) + residual) * std + mean
    out = (total / len(normalised)).astype(np.float32)
    out[~mask] = average[~mask]
    return out


def _prepare_subject(repetitions, mask, minimum):
    reps = _repetition_list(repetitions)
    if len(reps) < minimum:
        raise ValueError(f"need at least {minimum} repetitions, got {len(reps)}")
    mask = _check_mask(mask, reps[0].shape)
    average = np.mean(np.stack(reps, axis=-1), axis=-1, dtype=np.float64).astype(np.float32)
    normalised = [zscore(rep, mask) for rep in reps]
    return reps, mask, average, normalised


def _in_norm(volume, mean, std):
    return ((np.asarray(volume, dtype=np.float64) - mean) / std).astype(np.float32)


def pretrain(noisy, references, masks, *, network, settings, log=None, checkpoint=None):
    """Supervised pretraining on training subjects: each noisy repetition -> its reference.

    Parameters
    ----------
    noisy : list of ndarray, each (X, Y, Z, N) or (X, Y, Z, C, N)
        Noisy repetitions of each training subject (repetitions on the last axis).
    references : list of ndarray, each (X, Y, Z) or (X, Y, Z, C)
        High-SNR reference of each subject, in the intensity units of ``noisy``.
    masks : list of ndarray, each (X, Y, Z), bool
    network : torch.nn.Module
        Network with a ``residual`` method (e.g. a freshly initialised MU-Net); trained in place.
    settings : TrainingSettings
    log : callable, optional
        Receives progress lines (str).
    checkpoint : str or os.PathLike, optional
        Resume file of the fit (see :func:`fit_residual`); kept afterwards.

    Returns
    -------
    state_dict : dict
        Best-validation weights (CPU tensors).
    history : list of dict
        Per-epoch losses and timings (see :func:`fit_residual`).

    Notes
    -----
    Each repetition is z-scored with its own statistics inside the subject's mask, and the
    reference is expressed in that repetition's normalisation.
    """
    if not (len(noisy) == len(references) == len(masks)) or len(noisy) == 0:
        raise ValueError(f"noisy, references and masks must be non-empty lists of equal length, "
                         f"got {len(noisy)}, {len(references)}, {len(masks)}")
    inputs, targets, pair_masks = [], [], []
    for subject, (repetitions, reference, mask) in enumerate(zip(noisy, references, masks)):
        reps = _repetition_list(repetitions, name=f"noisy[{subject}]")
        reference = np.asarray(reference)
        if reference.shape != reps[0].shape:
            raise ValueError(f"references[{subject}] has shape {reference.shape}, expected "
                             f"{reps[0].shape}")
        mask = _check_mask(mask, reference.shape)
        for rep in reps:
            normalised, mean, std = zscore(rep, mask)
            inputs.append(normalised)
            targets.append(_in_norm(reference, mean, std))
            pair_masks.append(mask)
    _emit(log, f"pretrain: {len(noisy)} subjects, {len(inputs)} repetitions")
    return fit_residual(network, inputs, targets, pair_masks, settings=settings, log=log,
                        checkpoint=checkpoint)


def noise2average(repetitions, mask, *, network, pretrained_state, iterations, settings,
                  log=None, checkpoint_dir=None):
    """Noise2Average: iterative residual learning towards the average of the repetitions.

    Parameters
    ----------
    repetitions : ndarray of shape (X, Y, Z, N) or (X, Y, Z, C, N)
        N >= 2 noisy, co-registered repetitions of one subject (intensity units).
    mask : ndarray of shape (X, Y, Z), bool
    network : torch.nn.Module
        Network with a ``residual`` method; its weights are overwritten.
    pretrained_state : dict or None
        Weights every iteration restarts from; None uses the network's current weights.
    iterations : int
        Number of N2A iterations (>= 1; the start code runs 2).
    settings : TrainingSettings
        Fine-tuning and inference options.
    log : callable, optional
        Receives progress lines (str).
    checkpoint_dir : str or os.PathLike, optional
        Directory (created if needed) of the resume files ``iteration-<k>.pt`` of the fits
        (see :func:`fit_residual`) and of the finished iterations' images; kept afterwards.
        None: no resume files.

    Returns
    -------
    images : list of ndarray, float32, each of shape (X, Y, Z) or (X, Y, Z, C)
        Result of each iteration (``images[-1]`` is the final one). Outside the mask every
        image equals the mean of the repetitions (computed in float64, rounded to float32).
    history : list of dict
        Per-epoch records of all iterations, each with an ``iteration`` key (1-based).

    Notes
    -----
    Iteration ``k`` has target ``T_k`` (``T_1`` = mean of the repetitions, ``T_k`` = result
    of iteration ``k - 1``). Each repetition ``i`` (mean ``m_i``, std ``s_i`` in the mask)
    gives one training pair ``z_i = (x_i - m_i) / s_i -> (T_k - m_i) / s_i``. The result is
    ``mean_i[(z_i + r_i) s_i + m_i]`` with ``r_i`` the predicted residual.

    With ``checkpoint_dir``, each finished iteration's image is stored beside its resume file
    (``iteration-<k>-image.pt``). A rerun after an interruption checks the finished
    iterations' resume files, reads their images back and continues the interrupted
    iteration after its last finished epoch. On the CPU with the same thread count the
    result equals that of an uninterrupted run exactly.
    """
    if not _is_int(iterations) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    reps, mask, average, normalised = _prepare_subject(repetitions, mask, 2)
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
    initial = _initial_state(network, pretrained_state)
    inputs = [volume for volume, _, _ in normalised]
    masks = [mask] * len(reps)
    target, images, history = average, [], []
    for iteration in range(1, iterations + 1):
        _emit(log, f"noise2average: iteration {iteration}/{iterations}, {len(reps)} repetitions")
        network.load_state_dict(initial)
        targets = [_in_norm(target, mean, std) for _, mean, std in normalised]
        checkpoint = (None if checkpoint_dir is None
                      else os.path.join(checkpoint_dir, f"iteration-{iteration}.pt"))
        _, records = fit_residual(network, inputs, targets, masks, settings=settings, log=log,
                                  checkpoint=checkpoint)
        history.extend({"iteration": iteration, **record} for record in records)
        target = _iteration_image(checkpoint_dir, iteration, network, normalised, mask, average,
                                  settings)
        images.append(target)
    return images, history


def _iteration_image(checkpoint_dir, iteration, network, normalised, mask, average, settings):
    """An N2A iteration's image, stored beside its resume file and read back on a rerun.

    Stored rather than recomputed because the next iteration's resume file fingerprints its
    targets: on CUDA a recomputed image can differ in the last bits and refuse the file.
    """
    if checkpoint_dir is None:
        return _denoise_average(network, normalised, mask, average, settings)
    path = os.path.join(checkpoint_dir, f"iteration-{iteration}-image.pt")
    if os.path.exists(path):
        return _read_payload(path, _IMAGE_FORMAT, _RESUME_VERSION,
                             "noise2average iteration image")["image"].numpy()
    image = _denoise_average(network, normalised, mask, average, settings)
    _atomic_save({"format": _IMAGE_FORMAT, "version": _RESUME_VERSION,
                  "image": torch.from_numpy(image)}, path)
    return image


def noise2noise(repetitions, mask, *, network, pretrained_state, settings, log=None,
                checkpoint=None):
    """Noise2Noise between repetitions: every ordered pair i != j, repetition i -> j.

    Parameters
    ----------
    repetitions : ndarray of shape (X, Y, Z, N) or (X, Y, Z, C, N)
        N >= 2 noisy repetitions of one subject.
    mask : ndarray of shape (X, Y, Z), bool
    network : torch.nn.Module
        Network with a ``residual`` method; its weights are overwritten.
    pretrained_state : dict or None
        Initial weights; None uses the network's current weights.
    settings : TrainingSettings
    log : callable, optional
    checkpoint : str or os.PathLike, optional
        Resume file of the fit (see :func:`fit_residual`); kept afterwards.

    Returns
    -------
    image : ndarray, float32, shape of one repetition
        Mean of the de-normalised denoised repetitions; the mean of the repetitions outside
        the mask.
    history : list of dict
        Per-epoch records (see :func:`fit_residual`).

    Notes
    -----
    The target of pair (i, j) is repetition j in repetition i's normalisation.
    """
    reps, mask, average, normalised = _prepare_subject(repetitions, mask, 2)
    network.load_state_dict(_initial_state(network, pretrained_state))
    inputs, targets = [], []
    for i, (volume, mean, std) in enumerate(normalised):
        for j, other in enumerate(reps):
            if i != j:
                inputs.append(volume)
                targets.append(_in_norm(other, mean, std))
    _emit(log, f"noise2noise: {len(reps)} repetitions, {len(inputs)} ordered pairs")
    _, history = fit_residual(network, inputs, targets, [mask] * len(inputs),
                              settings=settings, log=log, checkpoint=checkpoint)
    return _denoise_average(network, normalised, mask, average, settings), history


def supervised(repetitions, mask, reference, *, network, pretrained_state, settings, log=None,
               checkpoint=None):
    """Supervised fine-tuning on the subject itself (upper bound): each repetition -> reference.

    Parameters
    ----------
    repetitions : ndarray of shape (X, Y, Z, N) or (X, Y, Z, C, N)
        N >= 1 noisy repetitions of one subject.
    mask : ndarray of shape (X, Y, Z), bool
    reference : ndarray of shape (X, Y, Z) or (X, Y, Z, C)
        High-SNR reference in the intensity units of the repetitions.
    network : torch.nn.Module
        Network with a ``residual`` method; its weights are overwritten.
    pretrained_state : dict or None
        Initial weights; None uses the network's current weights.
    settings : TrainingSettings
    log : callable, optional
    checkpoint : str or os.PathLike, optional
        Resume file of the fit (see :func:`fit_residual`); kept afterwards.

    Returns
    -------
    image : ndarray, float32
        Mean of the de-normalised denoised repetitions; the mean of the repetitions outside
        the mask.
    history : list of dict
    """
    reps, mask, average, normalised = _prepare_subject(repetitions, mask, 1)
    reference = np.asarray(reference)
    if reference.shape != reps[0].shape:
        raise ValueError(f"reference has shape {reference.shape}, expected {reps[0].shape}")
    network.load_state_dict(_initial_state(network, pretrained_state))
    inputs = [volume for volume, _, _ in normalised]
    targets = [_in_norm(reference, mean, std) for _, mean, std in normalised]
    _emit(log, f"supervised: {len(reps)} repetitions")
    _, history = fit_residual(network, inputs, targets, [mask] * len(inputs),
                              settings=settings, log=log, checkpoint=checkpoint)
    return _denoise_average(network, normalised, mask, average, settings), history


def settings_from_config(training, network, *, stage, seed, num_threads=None):
    """:class:`TrainingSettings` from the workflow config's ``training`` and ``network`` sections.

    Parameters
    ----------
    training : dict
        The ``training`` section; ``training[stage]`` holds ``epochs`` and ``learning_rate``.
        The optional ``compile`` (default false) and ``precision`` (default "auto") keys set
        ``TrainingSettings.compile`` and ``TrainingSettings.precision``.
    network : dict
        The ``network`` section (``block_size``, ``block_stride``).
    stage : {"pretrain", "finetune"}
    seed : int
    num_threads : int, optional
    """
    if stage not in ("pretrain", "finetune"):
        raise ValueError(f"stage must be 'pretrain' or 'finetune', got {stage!r}")
    return TrainingSettings(
        block_size=network["block_size"],
        block_stride=network["block_stride"],
        batch_size=training["batch_size"],
        epochs=training[stage]["epochs"],
        learning_rate=training[stage]["learning_rate"],
        validation_fraction=training["validation_fraction"],
        flip=training["flip"],
        device=training["device"],
        seed=seed,
        num_threads=num_threads,
        compile=training.get("compile", False),
        precision=training.get("precision", "auto"),
    )


_NETWORK_KEYS = ("in_channels", "out_channels", "depth", "width", "batch_norm")


def build_network(config, *, seed=None):
    """MU-Net from its ``config`` dict (``MUNet.config``, or a checkpoint's ``network_config``).

    Parameters
    ----------
    config : dict
        Keys among ``in_channels``, ``out_channels``, ``depth``, ``width``, ``batch_norm``.
    seed : int, optional
        Seed of the He initialisation, drawn without touching torch's global generator state.
        None: torch's global generator.

    Returns
    -------
    MUNet
    """
    unknown = sorted(set(config) - set(_NETWORK_KEYS))
    if unknown:
        raise ValueError(f"unknown network config keys {unknown}; expected some of "
                         f"{list(_NETWORK_KEYS)}")
    kwargs = dict(config)
    args = (kwargs.pop("in_channels", 1), kwargs.pop("out_channels", 1))
    if seed is None:
        return MUNet(*args, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return MUNet(*args, **kwargs)


def save_checkpoint(path, state_dict, network_config, *, history=None, extra=None):
    """Write weights and everything needed to rebuild the network, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (conventionally ``.pt``). The file is written to a temporary name in the
        same directory and renamed, so an interrupted job never leaves a complete-looking
        checkpoint.
    state_dict : dict of str to torch.Tensor
    network_config : dict
        ``MUNet.config``; :func:`build_network` rebuilds the network from it.
    history : list of dict, optional
        Training history (plain numbers and strings).
    extra : dict, optional
        Further plain-data metadata (settings, seeds, versions).
    """
    payload = {
        "format": _CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "network_config": dict(network_config),
        "state_dict": {key: value.detach().to("cpu", copy=True)
                       for key, value in state_dict.items()},
        "history": copy.deepcopy(list(history)) if history is not None else [],
        "extra": copy.deepcopy(dict(extra)) if extra is not None else {},
    }
    _atomic_save(payload, path)


def _atomic_save(payload, path):
    """``torch.save(payload)`` to ``path`` through a temporary file in the same directory.

    The temporary file is synced and renamed over ``path`` (atomic on POSIX), so ``path``
    holds either its previous content or the whole new payload, whenever the writer dies.
    """
    handle, temporary = temporary_beside(path, ".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _read_payload(path, expected_format, version, description):
    """A dict written by :func:`_atomic_save`, loaded with ``weights_only``; format checked."""
    payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        raise ValueError(f"{os.fspath(path)!r} is not a {description}")
    if payload.get("version") != version:
        raise ValueError(f"{os.fspath(path)!r} has {description} version "
                         f"{payload.get('version')!r}, expected {version}")
    return payload


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict
        ``state_dict`` (CPU tensors), ``network_config``, ``history``, ``extra``, ``format``
        and ``version``. ``build_network(c["network_config"]).load_state_dict(c["state_dict"])``
        restores the network.
    """
    return _read_payload(path, _CHECKPOINT_FORMAT, _CHECKPOINT_VERSION,
                         "noise2average checkpoint")
