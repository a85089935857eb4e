"""benchmarks/bench_aonlm.py times both filters with the settings it is given."""

import re
import subprocess
import sys

import bench_aonlm
import numpy as np
import pytest

from conftest import REPO
from noise2average import aonlm as aonlm_module

ORIGINALS = {name: getattr(aonlm_module, name) for name in bench_aonlm.STAGES.values()}


def test_aonlm_benchmark_times_both_filters_with_the_given_search_and_patches():
    run = subprocess.run([sys.executable, REPO / "benchmarks" / "bench_aonlm.py", "--shape",
                          "24", "28", "24", "--threads", "1", "--repeats", "1", "--mask",
                          "--dipy-search", "2", "--patch-radii", "2", "--stages"],
                         check=True, capture_output=True, text=True)
    rows = dict(re.findall(r"^(\S.*?)\s+(\d+\.\d+)\s+(?:\d+\.\d+)$", run.stdout, re.MULTILINE))
    assert set(rows) == {"aonlm (patch 2, search 3)", "dipy blockwise (search 2, patch 2)"}
    (ratio,) = re.findall(r"time ratio aonlm / dipy = (\d+\.\d+)", run.stdout)
    assert float(ratio) > 0

    (total,) = re.findall(r"aonlm stages, fastest of 1: (\d+\.\d+) s", run.stdout)
    stages = {label: float(seconds) for label, seconds in
              re.findall(r"^  stage (.+?)\s+(-?\d+\.\d+) s", run.stdout, re.MULTILINE)}
    assert set(stages) == {"tile kernel", "11^3 smoothing of the bias maps", "wavelet mixing",
                           "local statistics", "rest"}
    assert stages["tile kernel"] > 0 and stages["rest"] >= 0
    assert abs(sum(stages.values()) - float(total)) < 0.01


@pytest.mark.parametrize("radii", [(1, 2), (2,)])
def test_stage_timers_time_every_stage_aonlm_runs_and_restore_the_module(radii):
    rng = np.random.default_rng(0)
    volume = 100 + 5 * rng.standard_normal((20, 22, 18))
    with bench_aonlm.stage_timers(aonlm_module, bench_aonlm.STAGES) as spent:
        aonlm_module.aonlm(volume, sigma=5.0, patch_radii=radii, num_threads=1)
    assert set(spent) == set(bench_aonlm.STAGES)
    mixed = len(radii) == 2
    assert {label: seconds > 0 for label, seconds in spent.items()} == {
        "tile kernel": True, "11^3 smoothing of the bias maps": True,
        "wavelet mixing": mixed, "local statistics": True}
    for name in bench_aonlm.STAGES.values():
        assert getattr(aonlm_module, name) is ORIGINALS[name]
