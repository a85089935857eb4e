"""Tests for noise2average.training (normalisation, training loop, inference, methods)."""

import dataclasses
import logging
import os

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from noise2average import training
from noise2average.network import MUNet
from noise2average.training import (
    TrainingSettings,
    build_network,
    fit_residual,
    load_checkpoint,
    noise2average,
    noise2noise,
    predict_residual_volume,
    pretrain,
    resolve_device,
    save_checkpoint,
    supervised,
    zscore,
)

SMALL = TrainingSettings(block_size=8, block_stride=6, batch_size=2, epochs=0, device="cpu",
                         num_threads=1)


class Pointwise(torch.nn.Module):
    """Residual = a * x: equivariant under flips, with a known prediction."""

    def __init__(self, a=0.5):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(float(a)))

    def residual(self, x):
        return self.a * x


def _phantom(shape=(14, 16, 12), n=2, seed=0, sigma=0.1):
    """Smooth positive image, ellipsoid mask, n noisy scaled repetitions."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=float)
    centre = (np.array(shape) - 1) / 2
    r2 = sum(((g - c) / (s / 2.4)) ** 2 for g, c, s in zip(grid, centre, shape))
    mask = r2 <= 1.0
    clean = (1.0 + 0.5 * np.sin(grid[0] / 2.0) * np.cos(grid[1] / 3.0) + 0.3 * (grid[2] > 6))
    clean = (clean * (r2 <= 1.3)).astype(np.float32)
    reps = np.stack([clean * (1 + 0.02 * k) + 0.05 * k + sigma * rng.normal(size=shape)
                     for k in range(n)], axis=-1).astype(np.float32)
    return clean, mask, reps


# --- settings, device, normalisation ---------------------------------------------------------

def test_settings_defaults_and_validation():
    s = TrainingSettings()
    assert (s.block_size, s.block_stride, s.batch_size, s.epochs) == (32, 24, 2, 6)
    assert (s.learning_rate, s.validation_fraction, s.flip, s.flip_axis) == (5e-5, 0.2, True, 0)
    assert (s.device, s.seed, s.num_threads, s.precision) == ("auto", 0, None, "auto")
    for field, value in [("block_size", 0), ("block_stride", 40), ("epochs", -1),
                         ("learning_rate", 0.0), ("validation_fraction", 1.0),
                         ("flip_axis", 3), ("num_threads", 0), ("batch_size", 1.5),
                         ("precision", "float16")]:
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(s, **{field: value})


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_zscore_inside_mask():
    _, mask, reps = _phantom()
    normalised, mean, std = zscore(reps[..., 0] * 3.0 + 100.0, mask)
    assert normalised.dtype == np.float32
    assert abs(normalised[mask].mean()) < 1e-5
    assert abs(normalised[mask].std() - 1.0) < 1e-5
    assert_allclose(mean, (reps[..., 0] * 3.0 + 100.0)[mask].mean(dtype=np.float64), rtol=1e-6)
    with pytest.raises(ValueError, match="standard deviation"):
        zscore(np.ones((4, 4, 4)), np.ones((4, 4, 4), bool))
    with pytest.raises(ValueError, match="mask shape"):
        zscore(np.ones((4, 4, 4)), np.ones((4, 4, 5), bool))


def test_zscore_normalises_each_channel_of_a_series():
    _, mask, reps = _phantom()
    # A bright b0-like channel beside two dim DWI-like channels, as in a diffusion series.
    series = np.stack([reps[..., 0] * 10.0 + 500.0, reps[..., 0] + 20.0,
                       reps[..., 1] * 0.5 + 5.0], axis=-1)
    normalised, mean, std = zscore(series, mask)
    assert mean.shape == std.shape == (3,)
    assert_allclose(normalised[mask].mean(axis=0), 0.0, atol=1e-5)
    assert_allclose(normalised[mask].std(axis=0), 1.0, atol=1e-5)
    assert_allclose(mean, series[mask].mean(axis=0, dtype=np.float64), rtol=1e-6)
    # De-normalising recovers every channel.
    assert_allclose(normalised * std + mean, series, rtol=1e-5, atol=1e-4)
    constant = series.copy()
    constant[..., 1] = 7.0
    with pytest.raises(ValueError, match="standard deviation"):
        zscore(constant, mask)


# --- inference -------------------------------------------------------------------------------

def test_flip_tta_of_equivariant_network_is_exact():
    _, mask, reps = _phantom()
    volume = zscore(reps[..., 0], mask)[0]
    net = Pointwise(0.5)
    with_flip = predict_residual_volume(net, volume, mask, settings=SMALL)
    without = predict_residual_volume(net, volume, mask,
                                      settings=dataclasses.replace(SMALL, flip=False))
    assert with_flip.shape == volume.shape and with_flip.dtype == np.float32
    assert_allclose(with_flip, 0.5 * volume * mask, rtol=1e-6, atol=1e-7)
    assert_allclose(with_flip, without, rtol=1e-6, atol=1e-7)
    assert (with_flip[~mask] == 0).all()


def test_flip_tta_averages_mirrored_prediction():
    torch.manual_seed(0)
    net = MUNet(depth=6, width=4)
    volume = np.random.default_rng(1).normal(size=(8, 8, 8)).astype(np.float32)
    mask = np.ones(volume.shape, bool)
    settings = dataclasses.replace(SMALL, flip_axis=1)  # one 8^3 block: no overlap averaging
    out = predict_residual_volume(net, volume, mask, settings=settings)
    with torch.no_grad():
        x = torch.from_numpy(volume)[None, None]
        plain = net.residual(x)
        mirrored = torch.flip(net.residual(torch.flip(x, dims=(3,))), dims=(3,))
        expected = (0.5 * (plain + mirrored))[0, 0].numpy()
    assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out, plain[0, 0].numpy(), atol=1e-4)  # the flip mattered


def test_predict_multichannel():
    _, mask, reps = _phantom()
    volume = np.stack([reps[..., 0], reps[..., 1], reps[..., 0]], axis=-1)
    out = predict_residual_volume(Pointwise(2.0), volume, mask, settings=SMALL)
    assert out.shape == volume.shape
    assert_allclose(out, 2.0 * volume * mask[..., None], rtol=1e-6)


# --- training loop ---------------------------------------------------------------------------

def test_fit_residual_reduces_error_on_denoising_problem(caplog):
    clean, mask, reps = _phantom(shape=(20, 20, 16), n=2, sigma=0.2)
    inputs, targets, masks = [], [], []
    for k in range(2):
        z, mean, std = zscore(reps[..., k], mask)
        inputs.append(z)
        targets.append(((clean - mean) / std).astype(np.float32))
        masks.append(mask)
    torch.manual_seed(0)
    net = MUNet(depth=6, width=8)
    settings = TrainingSettings(block_size=10, block_stride=8, batch_size=4, epochs=8,
                                learning_rate=2e-3, device="cpu", num_threads=1)

    def error():
        residual = predict_residual_volume(net, inputs[0], mask, settings=settings)
        return float(np.mean((inputs[0] + residual - targets[0])[mask] ** 2))

    before = error()
    lines = []
    with caplog.at_level(logging.INFO, logger="noise2average"):
        state, history = fit_residual(net, inputs, targets, masks, settings=settings,
                                      log=lines.append)
    after = error()
    assert after < 0.5 * before, (before, after)
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert set(history[0]) == {"epoch", "train_loss", "val_loss", "identity_val_loss", "seconds"}
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(h["val_loss"] is not None for h in history)
    # This denoising task is learnable: the best validation loss beats returning the input.
    assert min(h["val_loss"] for h in history) < history[0]["identity_val_loss"]
    # the network holds the returned (best-validation) weights
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key])
    assert sum("epoch 8/8" in line for line in lines) == 1
    assert any("epoch 8/8" in record.getMessage() for record in caplog.records)


def test_fit_residual_is_deterministic_on_cpu():
    clean, mask, reps = _phantom(n=2)
    inputs = [zscore(reps[..., k], mask)[0] for k in range(2)]
    targets = [inputs[1], inputs[0]]
    settings = TrainingSettings(block_size=8, block_stride=6, batch_size=2, epochs=2,
                                learning_rate=1e-3, device="cpu", num_threads=1, seed=7)
    results = []
    for _ in range(2):
        net = build_network({"depth": 6, "width": 4}, seed=3)
        results.append(fit_residual(net, inputs, targets, [mask, mask], settings=settings))
    (state_a, hist_a), (state_b, hist_b) = results
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(hist_a) == strip(hist_b)
    # a different seed changes the split/batch order and hence the weights
    net = build_network({"depth": 6, "width": 4}, seed=3)
    state_c, _ = fit_residual(net, inputs, targets, [mask, mask],
                              settings=dataclasses.replace(settings, seed=8))
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)


def test_fit_residual_zero_epochs_and_no_validation():
    _, mask, reps = _phantom()
    z = zscore(reps[..., 0], mask)[0]
    net = Pointwise(0.3)
    state, history = fit_residual(net, [z], [z], [mask], settings=SMALL)
    assert history == [] and float(state["a"]) == pytest.approx(0.3)
    settings = dataclasses.replace(SMALL, epochs=2, validation_fraction=0.0,
                                   learning_rate=0.1)
    state, history = fit_residual(net, [z], [z], [mask], settings=settings)
    assert [h["val_loss"] for h in history] == [None, None]
    assert abs(float(state["a"])) < 0.3   # residual target is zero: a shrinks
    with pytest.raises(ValueError, match="equal length"):
        fit_residual(net, [z], [], [mask], settings=SMALL)


# --- methods ---------------------------------------------------------------------------------

class _Oracle:
    """Stand-ins for fit_residual / predict_residual_volume with a known answer.

    The "trained" network predicts ``target - input + shift`` (normalised units) for each
    input it was fitted on, so each denoised repetition de-normalises to
    ``target + shift * std``.
    """

    def __init__(self, shift):
        self.shift = shift
        self.calls = []

    def fit(self, network, inputs, targets, masks, *, settings, log=None, checkpoint=None):
        self.calls.append((list(inputs), list(targets)))
        return {}, [{"epoch": 1, "train_loss": 0.0, "val_loss": 0.0, "seconds": 0.0}]

    def predict(self, network, volume, mask, *, settings):
        inputs, targets = self.calls[-1]
        for x, t in zip(inputs, targets):
            if x is volume or np.array_equal(x, volume):
                return ((t - volume + self.shift) * mask).astype(np.float32)
        raise AssertionError("predict called on a volume that was not fitted")


def test_noise2average_target_update(monkeypatch):
    _, mask, reps = _phantom(n=3)
    oracle = _Oracle(shift=0.1)
    monkeypatch.setattr(training, "fit_residual", oracle.fit)
    monkeypatch.setattr(training, "predict_residual_volume", oracle.predict)
    images, history = noise2average(reps, mask, network=Pointwise(), pretrained_state=None,
                                    iterations=3, settings=SMALL)
    average = reps.mean(axis=-1, dtype=np.float64).astype(np.float32)
    stats = [zscore(reps[..., k], mask)[1:] for k in range(3)]
    mean_std = np.mean([s for _, s in stats])
    assert len(images) == 3 and [h["iteration"] for h in history] == [1, 2, 3]
    previous = average
    for k, image in enumerate(images, start=1):
        # iteration k's targets are the previous result in each repetition's normalisation
        _, targets = oracle.calls[k - 1]
        for target, (mean, std) in zip(targets, stats):
            assert_allclose(target, (previous - mean) / std, rtol=1e-5, atol=1e-5)
        # result: de-normalised mean of the denoised repetitions = target + shift * mean std
        assert_allclose(image[mask], previous[mask] + 0.1 * mean_std, rtol=1e-5, atol=1e-5)
        assert_allclose(image[mask], average[mask] + k * 0.1 * mean_std, rtol=1e-5, atol=1e-5)
        # outside the mask: the mean of the repetitions, exactly
        assert_array_equal(image[~mask], average[~mask])
        previous = image


def test_noise2average_denormalised_mean_with_fixed_network():
    _, mask, reps = _phantom(n=2)
    images, _ = noise2average(reps, mask, network=Pointwise(0.25), pretrained_state=None,
                              iterations=2, settings=SMALL)
    expected = np.zeros(mask.shape)
    for k in range(2):
        z, mean, std = zscore(reps[..., k], mask)
        expected += (1.25 * z.astype(np.float64)) * std + mean
    expected /= 2
    average = reps.mean(axis=-1)
    for image in images:    # epochs == 0: every iteration restarts from the same weights
        assert image.dtype == np.float32 and image.shape == mask.shape
        assert_allclose(image[mask], expected[mask], rtol=1e-5, atol=1e-5)
        assert_array_equal(image[~mask], average[~mask])
    with pytest.raises(ValueError, match="iterations"):
        noise2average(reps, mask, network=Pointwise(), pretrained_state=None, iterations=0,
                      settings=SMALL)
    with pytest.raises(ValueError, match="at least 2"):
        noise2average(reps[..., :1], mask, network=Pointwise(), pretrained_state=None,
                      iterations=1, settings=SMALL)


def test_noise2noise_pairs_and_supervised_targets(monkeypatch):
    clean, mask, reps = _phantom(n=3)
    oracle = _Oracle(shift=0.0)
    monkeypatch.setattr(training, "fit_residual", oracle.fit)
    monkeypatch.setattr(training, "predict_residual_volume", oracle.predict)
    stats = [zscore(reps[..., k], mask) for k in range(3)]
    image, _ = noise2noise(reps, mask, network=Pointwise(), pretrained_state=None,
                           settings=SMALL)
    inputs, targets = oracle.calls[-1]
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    assert len(inputs) == len(targets) == 6
    for (i, j), x, t in zip(pairs, inputs, targets):
        z, mean, std = stats[i]
        assert_array_equal(x, z)
        assert_allclose(t, (reps[..., j] - mean) / std, rtol=1e-5, atol=1e-5)
    image, _ = supervised(reps, mask, clean, network=Pointwise(), pretrained_state=None,
                          settings=SMALL)
    inputs, targets = oracle.calls[-1]
    for (z, mean, std), t in zip(stats, targets):
        assert_allclose(t, (clean - mean) / std, rtol=1e-5, atol=1e-5)
    assert_allclose(image[mask], clean[mask], rtol=1e-5, atol=1e-5)   # oracle: exact target


def test_pretrain_targets_are_reference_in_each_repetition_normalisation(monkeypatch):
    oracle = _Oracle(shift=0.0)
    monkeypatch.setattr(training, "fit_residual", oracle.fit)
    subjects = [_phantom(n=2, seed=s) for s in range(2)]
    pretrain([s[2] for s in subjects], [s[0] for s in subjects], [s[1] for s in subjects],
             network=Pointwise(), settings=SMALL)
    inputs, targets = oracle.calls[-1]
    assert len(inputs) == 4
    for index, (x, t) in enumerate(zip(inputs, targets)):
        clean, mask, reps = subjects[index // 2]
        z, mean, std = zscore(reps[..., index % 2], mask)
        assert_array_equal(x, z)
        assert_allclose(t, (clean - mean) / std, rtol=1e-5, atol=1e-5)


def test_methods_pass_outside_mask_through_with_real_training():
    clean, mask, reps = _phantom(shape=(12, 12, 10), n=2)
    settings = dataclasses.replace(SMALL, epochs=1, learning_rate=1e-3)
    pretrained_net = build_network({"depth": 6, "width": 4}, seed=0)
    state, history = pretrain([reps], [clean], [mask], network=pretrained_net,
                              settings=settings)
    assert len(history) == 1
    net = build_network({"depth": 6, "width": 4}, seed=1)
    average = reps.mean(axis=-1)
    images, _ = noise2average(reps, mask, network=net, pretrained_state=state, iterations=2,
                              settings=settings)
    n2n, _ = noise2noise(reps, mask, network=net, pretrained_state=state, settings=settings)
    sup, _ = supervised(reps, mask, clean, network=net, pretrained_state=state,
                        settings=settings)
    for image in [*images, n2n, sup]:
        assert image.dtype == np.float32 and image.shape == mask.shape
        assert np.isfinite(image).all()
        assert_array_equal(image[~mask], average[~mask])
    assert not np.array_equal(images[0], images[1])


# --- checkpoints -----------------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path):
    net = build_network({"depth": 6, "width": 4, "batch_norm": True}, seed=5)
    history = [{"epoch": 1, "train_loss": 0.5, "val_loss": None, "seconds": 1.0}]
    path = tmp_path / "model.pt"
    save_checkpoint(path, net.state_dict(), net.config, history=history,
                    extra={"settings": dataclasses.asdict(SMALL)})
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]   # no temporary file left behind
    checkpoint = load_checkpoint(path)
    assert checkpoint["network_config"] == net.config
    assert checkpoint["history"] == history
    assert checkpoint["extra"]["settings"]["block_size"] == 8
    rebuilt = build_network(checkpoint["network_config"])
    rebuilt.load_state_dict(checkpoint["state_dict"])
    net.eval()
    rebuilt.eval()
    x = torch.randn(1, 1, 6, 6, 6)
    with torch.no_grad():
        assert torch.equal(net(x), rebuilt(x))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    net = build_network({"depth": 6, "width": 4}, seed=0)

    def broken_save(obj, stream):
        stream.write(b"partial")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(training.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "model.pt", net.state_dict(), net.config)
    assert os.listdir(tmp_path) == []


def test_build_network_validation_and_seed():
    a = build_network({"depth": 6, "width": 4}, seed=11)
    b = build_network({"depth": 6, "width": 4}, seed=11)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    with pytest.raises(ValueError, match="unknown network config keys"):
        build_network({"depth": 6, "layers": 3})
    with pytest.raises(ValueError, match="not a noise2average checkpoint"):
        path = "not_a_checkpoint.pt"
        torch.save({"weights": torch.zeros(1)}, path)
        try:
            load_checkpoint(path)
        finally:
            os.remove(path)


def test_training_stack_imports_only_numpy_and_torch():
    import subprocess
    import sys

    code = ("import sys, noise2average.training, noise2average.blocks, noise2average.network; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'scipy', 'nibabel', 'dipy', 'pandas', 'matplotlib', 'numba', 'bm4d'}); "
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == ""


# --- device-side batching ------------------------------------------------------------------

def test_gather_flips_exactly_the_flagged_rows():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, 4, 3, 2, generator=generator)
    w = torch.rand(5, 1, 4, 3, 2, generator=generator)
    rows = torch.tensor([3, 0, 3, 1])
    for flipped in ([True, False, True, False], [True] * 4, [False] * 4):
        for axis in range(3):
            got_x, got_w = training._gather((x, w), rows, np.array(flipped), axis)
            for k, (row, flip) in enumerate(zip(rows.tolist(), flipped)):
                want = torch.flip(x[row], dims=(1 + axis,)) if flip else x[row]
                assert torch.equal(got_x[k], want)
                assert torch.equal(got_w[k], torch.flip(w[row], dims=(1 + axis,)) if flip
                                   else w[row])
    # The source tensors are never modified in place.
    assert torch.equal(x, torch.randn(5, 2, 4, 3, 2, generator=torch.Generator().manual_seed(0)))


def test_gather_returns_the_requested_memory_format():
    x = torch.randn(3, 2, 4, 4, 4)
    (batch,) = training._gather((x,), torch.tensor([2, 0]), np.array([True, False]), 1,
                                torch.channels_last_3d)
    assert batch.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(batch[0], torch.flip(x[2], dims=(2,)))


@pytest.mark.parametrize("device, precision, bf16", [
    ("cpu", "auto", False), ("cuda", "auto", True), ("cpu", "bf16", True),
    ("cuda", "bf16", True), ("cpu", "float32", False), ("cuda", "float32", False)])
def test_bf16_and_channels_last_go_together_by_precision(device, precision, bf16):
    device = torch.device(device)
    assert training._uses_bf16(device, precision) is bf16
    assert training._memory_format(device, precision) == (
        torch.channels_last_3d if bf16 else torch.contiguous_format)


@pytest.mark.parametrize("precision, has_amx, warned", [
    ("bf16", False, True), ("bf16", True, False), ("bf16", None, False),
    ("float32", False, False), ("auto", False, False)])
def test_bf16_on_a_cpu_without_amx_is_warned_of(monkeypatch, caplog, precision, has_amx,
                                                warned):
    monkeypatch.setattr(training, "_cpu_has_amx", lambda: has_amx)
    _, mask, reps = _phantom()
    inputs = [zscore(reps[..., k], mask)[0] for k in range(2)]
    settings = dataclasses.replace(SMALL, precision=precision)
    lines = []
    with caplog.at_level(logging.WARNING, logger="noise2average"):
        fit_residual(build_network({"depth": 6, "width": 4}, seed=0), inputs,
                     [inputs[1], inputs[0]], [mask, mask], settings=settings, log=lines.append)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) is warned
    assert any("without AMX" in line for line in lines) is warned


def test_cpu_amx_flag_is_read_from_cpuinfo():
    flags = open("/proc/cpuinfo").read().split()
    assert training._cpu_has_amx() is ("amx_bf16" in flags)


def _conv_output_dtypes(network):
    """Dtypes of every convolution output of ``network`` from now on (forward hooks)."""
    seen = set()
    for module in network.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


def test_bf16_on_the_cpu_trains_in_bf16_deterministically_and_near_float32():
    clean, mask, reps = _phantom(shape=(20, 20, 16), n=2, sigma=0.2)
    inputs, targets = [], []
    for k in range(2):
        z, mean, std = zscore(reps[..., k], mask)
        inputs.append(z)
        targets.append(((clean - mean) / std).astype(np.float32))
    float32 = TrainingSettings(block_size=10, block_stride=8, batch_size=4, epochs=8,
                               learning_rate=2e-3, device="cpu", num_threads=1,
                               precision="float32")
    bf16 = dataclasses.replace(float32, precision="bf16")
    runs = {}
    for name, settings in (("float32", float32), ("bf16", bf16), ("bf16 again", bf16)):
        net = build_network({"depth": 6, "width": 8}, seed=0)
        dtypes = _conv_output_dtypes(net)
        state, history = fit_residual(net, inputs, [targets[0], targets[1]], [mask, mask],
                                      settings=settings)
        residual = predict_residual_volume(net, inputs[0], mask, settings=settings)
        runs[name] = (state, history, residual, dtypes)
    assert runs["float32"][3] == {torch.float32}
    assert runs["bf16"][3] == {torch.bfloat16}
    # The weights stay float32 and contiguous; a rerun gives the same weights and result.
    state, history, residual, _ = runs["bf16"]
    assert all(value.dtype in (torch.float32, torch.int64) for value in state.values())
    assert all(value.is_contiguous() for value in state.values())
    assert all(torch.equal(state[k], runs["bf16 again"][0][k]) for k in state)
    assert_array_equal(residual, runs["bf16 again"][2])
    assert residual.dtype == np.float32
    # bf16 learns the task as float32 does, with a result that differs in its rounding.
    best = min(h["val_loss"] for h in history)
    assert best < 0.7 * history[0]["identity_val_loss"]
    assert best == pytest.approx(min(h["val_loss"] for h in runs["float32"][1]), rel=0.05)
    reference = runs["float32"][2]
    assert not np.array_equal(residual, reference)
    scale = np.abs(reference[mask]).mean()
    assert np.abs(residual - reference)[mask].mean() < 0.1 * scale


def test_compile_and_precision_settings_are_read_from_config():
    with pytest.raises(ValueError, match="compile"):
        TrainingSettings(compile="yes")
    section = {"device": "cpu", "batch_size": 2, "flip": True, "validation_fraction": 0.2,
               "pretrain": {"epochs": 1, "learning_rate": 1e-3},
               "finetune": {"epochs": 1, "learning_rate": 1e-4}}
    network = {"block_size": 8, "block_stride": 6}
    assert not training.settings_from_config(section, network, stage="finetune", seed=0).compile
    compiled = training.settings_from_config({**section, "compile": True}, network,
                                             stage="finetune", seed=0)
    assert compiled.compile
    assert training.settings_from_config(section, network, stage="finetune",
                                         seed=0).precision == "auto"
    bf16 = training.settings_from_config({**section, "precision": "bf16"}, network,
                                         stage="pretrain", seed=0)
    assert bf16.precision == "bf16"


def test_cpu_state_is_contiguous_after_channels_last_training():
    network = build_network({"in_channels": 1, "out_channels": 1, "depth": 6, "width": 4},
                            seed=0)
    network.to(memory_format=torch.channels_last_3d)
    state = training._cpu_state(network)
    conv = [value for value in state.values() if value.ndim == 5]
    assert conv and all(value.is_contiguous() for value in conv)
