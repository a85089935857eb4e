"""benchmarks/bench_memory.py runs at a tiny size and reports consistent peaks."""

import json
import subprocess
import sys

from conftest import REPO


def test_memory_benchmark_reports_each_step_measured_alone(tmp_path):
    report_file = tmp_path / "memory.json"
    subprocess.run([sys.executable, REPO / "benchmarks" / "bench_memory.py", "--shape", "40",
                    "48", "40", "--steps", "aonlm", "--threads", "1", "--json", report_file],
                   check=True, capture_output=True, text=True)
    report = json.loads(report_file.read_text())
    assert report["shape"] == [40, 48, 40] and report["mask_voxels"] > 0
    (step,) = report["steps"]
    assert step["step"] == "aonlm" and step["output_finite"]
    # The peak of the child includes its baseline (interpreter, imports, inputs).
    assert 0 < step["baseline_gb"] <= step["peak_gb"] < 8 and step["under_8_gb"]
    assert 0 < step["seconds"] <= step["process_seconds"]
