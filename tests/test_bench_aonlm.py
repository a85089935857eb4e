"""benchmarks/bench_aonlm.py times both filters with the settings it is given."""

import re
import subprocess
import sys

from conftest import REPO


def test_aonlm_benchmark_times_both_filters_with_the_given_search_and_patches():
    run = subprocess.run([sys.executable, REPO / "benchmarks" / "bench_aonlm.py", "--shape",
                          "24", "28", "24", "--threads", "1", "--repeats", "1", "--mask",
                          "--dipy-search", "2", "--patch-radii", "2"],
                         check=True, capture_output=True, text=True)
    rows = dict(re.findall(r"^(\S.*?)\s+(\d+\.\d+)\s+(?:\d+\.\d+)$", run.stdout, re.MULTILINE))
    assert set(rows) == {"aonlm (patch 2, search 3)", "dipy blockwise (search 2, patch 2)"}
    (ratio,) = re.findall(r"time ratio aonlm / dipy = (\d+\.\d+)", run.stdout)
    assert float(ratio) > 0
