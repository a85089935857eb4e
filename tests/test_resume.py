"""Tests for resumable, deterministic training and the out-of-memory message (training.py)."""

import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal

from noise2average import training
from noise2average.training import (
    TrainingSettings,
    build_network,
    fit_residual,
    noise2average,
    predict_residual_volume,
    zscore,
)

NETWORK = {"depth": 6, "width": 4}
SETTINGS = TrainingSettings(block_size=12, block_stride=8, batch_size=2, epochs=2,
                            learning_rate=1e-3, device="cpu", seed=5, num_threads=1)


def _phantom(shape=(20, 20, 20), n=2, seed=0):
    """Smooth image in an ellipsoid mask, ``n`` noisy repetitions (X, Y, Z, n)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2
    mask = sum(((g - c) / (s / 2.3)) ** 2 for g, c, s in zip(grid, centre, shape)) <= 1.0
    clean = 1.0 + 0.5 * np.sin(grid[0] / 2.0) * np.cos(grid[1] / 3.0)
    reps = np.stack([clean + 0.2 * rng.normal(size=shape) for _ in range(n)], axis=-1)
    return reps.astype(np.float32), mask


def _pairs():
    reps, mask = _phantom()
    inputs = [zscore(reps[..., k], mask)[0] for k in range(2)]
    return inputs, inputs[::-1], [mask, mask]


def _without_seconds(history):
    return [{key: value for key, value in record.items() if key != "seconds"}
            for record in history]


class Interrupt(Exception):
    """Raised from the log callback: the process dying after the resume file is written."""


def _interrupt_at(line_start, after=""):
    """Log callback raising :class:`Interrupt` at the first ``line_start`` line from ``after``."""
    started = False

    def log(line):
        nonlocal started
        started = started or line.startswith(after)
        if started and line.startswith(line_start):
            raise Interrupt(line)
    return log


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_interrupted_fit_resumes_identically(tmp_path):
    inputs, targets, masks = _pairs()
    path = tmp_path / "fit.pt"
    state, history = fit_residual(build_network(NETWORK, seed=1), inputs, targets, masks,
                                  settings=SETTINGS)
    with pytest.raises(Interrupt):
        fit_residual(build_network(NETWORK, seed=1), inputs, targets, masks, settings=SETTINGS,
                     log=_interrupt_at("epoch 1/2"), checkpoint=path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    lines = []
    network = build_network(NETWORK, seed=1)
    resumed_state, resumed_history = fit_residual(network, inputs, targets, masks,
                                                  settings=SETTINGS, log=lines.append,
                                                  checkpoint=path)
    assert any("resuming from epoch 1/2" in line for line in lines)
    assert sum(line.startswith("epoch ") for line in lines) == 1   # only epoch 2 trained
    _assert_same_state(resumed_state, state)                         # bit-identical
    _assert_same_state(network.state_dict(), state)
    assert _without_seconds(resumed_history) == _without_seconds(history)
    assert not network.training
    assert path.exists()                                             # kept for the caller


def test_finished_resume_file_returns_without_training(tmp_path):
    inputs, targets, masks = _pairs()
    path = tmp_path / "fit.pt"
    state, history = fit_residual(build_network(NETWORK, seed=1), inputs, targets, masks,
                                  settings=SETTINGS, checkpoint=path)
    network = build_network(NETWORK, seed=1)
    lines = []
    again_state, again_history = fit_residual(network, inputs, targets, masks,
                                              settings=SETTINGS, log=lines.append,
                                              checkpoint=path)
    assert not any(line.startswith("epoch ") for line in lines)
    assert any("finished at epoch 2/2" in line for line in lines)
    _assert_same_state(again_state, state)
    _assert_same_state(network.state_dict(), state)
    assert again_history == history
    assert not network.training


def test_resume_file_of_another_run_is_refused(tmp_path):
    inputs, targets, masks = _pairs()
    path = tmp_path / "fit.pt"
    fit_residual(build_network(NETWORK, seed=1), inputs, targets, masks,
                 settings=dataclasses.replace(SETTINGS, epochs=1), checkpoint=path)
    before = path.read_bytes()
    for settings, network, pair_targets, what in [
            (SETTINGS, build_network(NETWORK, seed=1), targets, "epochs"),
            (dataclasses.replace(SETTINGS, epochs=1), build_network(NETWORK, seed=2), targets,
             "initial_weights"),
            (dataclasses.replace(SETTINGS, epochs=1), build_network(NETWORK, seed=1), inputs,
             "data"),
            (dataclasses.replace(SETTINGS, epochs=1, precision="bf16"),
             build_network(NETWORK, seed=1), targets, "precision")]:
        pattern = f"{re.escape(str(path))}.*another run.*{what}.*delete"
        with pytest.raises(ValueError, match=pattern):
            fit_residual(network, inputs, pair_targets, masks, settings=settings,
                         checkpoint=path)
    assert path.read_bytes() == before
    # Where and how fast it runs is no part of the run: another thread count resumes.
    fit_residual(build_network(NETWORK, seed=1), inputs, targets, masks,
                 settings=dataclasses.replace(SETTINGS, epochs=1, num_threads=2),
                 checkpoint=path)


def _noise2average(reps, mask, settings=SETTINGS, **kwargs):
    pretrained = build_network(NETWORK, seed=1).state_dict()
    return noise2average(reps, mask, network=build_network(NETWORK, seed=9),
                         pretrained_state=pretrained, iterations=2, settings=settings, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted():
    """Images and history of :func:`_noise2average` on :func:`_phantom`, run in one go."""
    return _noise2average(*_phantom())


def test_noise2average_interrupted_in_iteration_2_resumes_identically(tmp_path, uninterrupted):
    reps, mask = _phantom()
    images, history = uninterrupted
    with pytest.raises(Interrupt):
        _noise2average(reps, mask, checkpoint_dir=tmp_path / "n2a",
                       log=_interrupt_at("epoch 1/2", after="noise2average: iteration 2"))
    assert sorted(os.listdir(tmp_path / "n2a")) == ["iteration-1-image.pt", "iteration-1.pt",
                                                     "iteration-2.pt"]
    lines = []
    resumed, resumed_history = _noise2average(reps, mask, checkpoint_dir=tmp_path / "n2a",
                                              log=lines.append)
    assert any("finished at epoch 2/2" in line for line in lines)     # iteration 1 skipped
    assert any("resuming from epoch 1/2" in line for line in lines)   # iteration 2 continued
    assert sum(line.startswith("epoch ") for line in lines) == 1
    for image, expected in zip(resumed, images, strict=True):
        assert_array_equal(image, expected)                           # bit-identical
    assert _without_seconds(resumed_history) == _without_seconds(history)


def test_noise2average_is_deterministic_on_cpu(uninterrupted):
    reps, mask = _phantom()
    (a, history_a), (b, history_b) = uninterrupted, _noise2average(reps, mask)
    for image_a, image_b in zip(a, b, strict=True):
        assert_array_equal(image_a, image_b)
    assert _without_seconds(history_a) == _without_seconds(history_b)
    other, _ = _noise2average(reps, mask, dataclasses.replace(SETTINGS, seed=6))
    assert not np.array_equal(other[-1], a[-1])


# The child process: noise2average with resume files, slowed down by its log callback (after
# each epoch's resume file is written) so that the parent can kill it between two epochs.
_WORKER = """
import json, sys, time
import numpy as np
from noise2average.training import TrainingSettings, build_network, noise2average
data, checkpoint_dir, out, config = sys.argv[1:5]
config = json.loads(config)
data = np.load(data)
images, _ = noise2average(
    data["reps"], data["mask"], network=build_network(config["network"], seed=9),
    pretrained_state=build_network(config["network"], seed=1).state_dict(), iterations=2,
    settings=TrainingSettings(**config["settings"]), checkpoint_dir=checkpoint_dir,
    log=lambda line: time.sleep(0.5) if line.startswith("epoch ") else None)
np.save(out, np.stack(images))
"""


def _recorded_epoch(path):
    """The epoch in a resume file; -1 while it does not exist yet."""
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except FileNotFoundError:
        return -1


def test_killed_noise2average_resumes_identically(tmp_path, uninterrupted):
    reps, mask = _phantom()
    np.savez(tmp_path / "data.npz", reps=reps, mask=mask)
    config = json.dumps({"network": NETWORK, "settings": dataclasses.asdict(SETTINGS)})
    out, checkpoint_dir = tmp_path / "images.npy", tmp_path / "n2a"
    command = [sys.executable, "-c", _WORKER, str(tmp_path / "data.npz"), str(checkpoint_dir),
               str(out), config]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        child = subprocess.Popen(command, env=env, stderr=stderr)
        deadline = time.monotonic() + 120
        try:
            while _recorded_epoch(checkpoint_dir / "iteration-2.pt") < 1:
                assert child.poll() is None, (tmp_path / "stderr.txt").read_text()
                assert time.monotonic() < deadline, "no epoch of iteration 2 on disk in 120 s"
                time.sleep(0.02)
        finally:
            child.kill()   # SIGKILL
            child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL and not out.exists()
    # The rerun (here, sparing a second interpreter start) has only the files on disk.
    lines = []
    images, _ = _noise2average(reps, mask, checkpoint_dir=checkpoint_dir, log=lines.append)
    assert any("resuming from epoch 1/2" in line for line in lines)
    for image, expected in zip(images, uninterrupted[0], strict=True):
        assert_array_equal(image, expected)   # bit-identical to an uninterrupted run


def _out_of_memory(*args):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class _OutOfMemory(torch.nn.Module):
    """A network whose every forward pass runs out of device memory."""

    def residual(self, x):
        _out_of_memory()


def test_out_of_memory_names_sizes_and_remedy(monkeypatch):
    inputs, targets, masks = _pairs()
    monkeypatch.setattr(training, "_train_step", _out_of_memory)
    expected = ("out of memory on cpu during {} with block_size 12 and batch_size 2; .*"
                "--block-size / --batch-size of `n2a denoise`, network.block_size / "
                "training.batch_size in the workflow config")
    with pytest.raises(RuntimeError, match=expected.format("training")) as error:
        fit_residual(build_network(NETWORK, seed=1), inputs, targets, masks, settings=SETTINGS)
    assert isinstance(error.value.__cause__, torch.OutOfMemoryError)
    with pytest.raises(RuntimeError, match=expected.format("inference")) as error:
        predict_residual_volume(_OutOfMemory(), inputs[0], masks[0], settings=SETTINGS)
    assert isinstance(error.value.__cause__, torch.OutOfMemoryError)


def test_epoch_records_feed_the_command_line_progress(tmp_path, caplog):
    from noise2average.cli import _EpochProgress

    class Bar:
        def __init__(self):
            self.n, self.postfix = 0, None

        def update(self, n):
            self.n += n

        def set_postfix(self, **values):
            self.postfix = values

        def close(self):
            pass

    inputs, targets, masks = _pairs()
    path = tmp_path / "fit.pt"
    caplog.set_level(logging.INFO, logger="noise2average")  # as `n2a` without --quiet
    progress = _EpochProgress(total=4, quiet=False)
    progress.bar.close()
    progress.bar = Bar()
    try:
        _, history = fit_residual(build_network(NETWORK, seed=1), inputs, targets, masks,
                                  settings=SETTINGS, checkpoint=path)
        assert progress.bar.n == SETTINGS.epochs
        assert progress.bar.postfix == {"val_loss": f"{history[-1]['val_loss']:.4g}"}
        # A rerun finds the fit finished in its resume file: the bar counts those epochs.
        fit_residual(build_network(NETWORK, seed=1), inputs, targets, masks,
                     settings=SETTINGS, checkpoint=path)
        assert progress.bar.n == 2 * SETTINGS.epochs
    finally:
        progress.close()
    fit_residual(build_network(NETWORK, seed=1), inputs, targets, masks, settings=SETTINGS)
    assert progress.bar.n == 2 * SETTINGS.epochs  # detached once closed
