"""benchmarks/bench_training.py runs on the CPU at a small size and reports consistent figures."""

import json
import re
import subprocess

import bench_training as bench
import numpy as np
import pytest
import torch

from conftest import REPO


def test_small_cpu_benchmark_reports_throughput_flops_and_memory(tmp_path):
    output = tmp_path / "bench.json"
    report = bench.main(["--device", "cpu", "--size", "small", "--data-type", "both",
                         "--depth", "6", "--width", "4", "--block-size", "16", "--epochs", "1",
                         "--iterations", "1", "--warmup", "1", "--steps", "2",
                         "--threads", "1", "--matmul-size", "256", "--json", str(output)])
    assert json.loads(output.read_text())["device"] == "cpu"
    assert set(report["matmul_peak"]["tflops"]) == {"float32"}  # the CPU trains in float32
    for result in report["results"]:
        assert result["loss_finite"]
        # The counted training step (forward + backward) costs about 3 forward passes: the
        # backward computes the gradients of the inputs and of the weights.
        ratio = result["train_step_flops_counted"] / result["inference_forward_flops_counted"]
        assert 2.5 < ratio < 3.5, ratio
        assert result["train_tflops_per_second"] > 0
        assert 0 < result["fraction_of_matmul_peak"] < 1
        blocks = result["train_blocks"] + result["validation_blocks"]
        assert blocks == 2 * result["blocks_per_repetition"]  # 2 repetitions
        # One real N2A iteration was run and timed; the extrapolation has the same order.
        measured = result["iteration_seconds_measured"]
        assert 0.2 < result["iteration_seconds_extrapolated"] / measured < 5
        # The process holds torch and the volumes: far above 1e8 bytes, so a peak left in
        # KiB (ru_maxrss on Linux) would fail.
        assert result["peak_memory_train"]["bytes"] > 1e8
    assert [r["data_type"] for r in report["results"]] == ["t1w", "dwi"]


def test_precisions_side_by_side_each_against_its_own_matmul_peak():
    report = bench.main(["--device", "cpu", "--size", "small", "--data-type", "t1w",
                         "--precision", "float32", "bf16", "--depth", "6", "--width", "4",
                         "--block-size", "16", "--warmup", "1", "--steps", "1",
                         "--no-measure-iteration", "--threads", "1", "--matmul-size", "256"])
    assert set(report["matmul_peak"]["tflops"]) == {"float32", "bfloat16"}
    float32, bf16 = report["results"]
    assert (float32["config"]["precision"], bf16["config"]["precision"]) == ("float32", "bf16")
    assert (float32["peak_reference_dtype"], bf16["peak_reference_dtype"]) == (
        "float32", "bfloat16")
    assert float32["config"]["memory_format"] == "torch.contiguous_format"
    assert bf16["config"]["memory_format"] == "torch.channels_last_3d"
    assert bf16["loss_finite"]
    peak = report["matmul_peak"]["tflops"]["bfloat16"]
    assert bf16["fraction_of_matmul_peak"] == pytest.approx(
        bf16["train_tflops_per_second"] / peak)
    (ratio,) = report["precision_ratios"]
    assert (ratio["precision"], ratio["reference"]) == ("bf16", "float32")
    assert ratio["train_step"] == pytest.approx(
        bf16["train_step_seconds"] / float32["train_step_seconds"])


def test_cpu_peak_memory_starts_again_at_each_reset():
    cpu = torch.device("cpu")
    assert bench._reset_peak_memory(cpu)   # Linux: /proc/self/clear_refs
    base = bench._peak_memory(cpu, since_reset=True)["bytes"]
    block = np.ones(50_000_000)            # 400 MB, written
    del block
    assert bench._peak_memory(cpu, since_reset=True)["bytes"] > base + 3.5e8
    assert bench._reset_peak_memory(cpu)
    assert bench._peak_memory(cpu, since_reset=True)["bytes"] < base + 1e8


def test_gpu_check_script_passes_only_options_the_benchmark_knows(capsys):
    script = REPO / "benchmarks" / "gpu_check.sh"
    subprocess.run(["bash", "-n", script], check=True)
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    known = set(re.findall(r"(--[a-z][a-z-]*)", capsys.readouterr().out))
    text = script.read_text()
    invocations = re.findall(r"bench_training\.py(.*?)(?:>|$)", text, re.S)
    invocations += re.findall(r"^step \S+ \d+(.*)$", text, re.M)
    used = {option for call in invocations for option in re.findall(r"(--[a-z][a-z-]*)", call)}
    assert {"--device", "--size", "--json", "--compile", "--measure-iteration"} <= used
    assert used <= known, used - known
