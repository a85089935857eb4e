"""benchmarks/bench_dag.py times the workflow's dry run beside floor workflows of its size."""

import json
import subprocess
import sys

from conftest import REPO


def test_dag_benchmark_sizes_the_floor_workflows_like_the_cohort(tmp_path):
    report_file = tmp_path / "dag.json"
    subprocess.run([sys.executable, REPO / "benchmarks" / "bench_dag.py", "--subjects", "3",
                    "--groups", "t1w_rep", "--json", report_file],
                   check=True, capture_output=True, text=True, cwd=tmp_path)
    workflow, *floors = json.loads(report_file.read_text())["rows"]
    # 3 subjects of t1w_rep: per subject a simulation, the average, bm4d, aonlm, n2a, n2n,
    # supervised and the scoring, besides the shared jobs.
    assert workflow["workflow"] == "noise2average, 3 subjects, t1w_rep"
    assert workflow["jobs"] >= 3 * 8
    assert [row["workflow"] for row in floors] == ["floor, trivial rules (script + conda)",
                                                  "floor, trivial rules (shell)"]
    for row in floors:
        assert abs(row["jobs"] - workflow["jobs"]) <= 9  # whole units of 9 jobs
    for row in (workflow, *floors):
        assert 0 < row["cpu_s"] and 0 < row["wall_s"] and 0 < row["peak_gb"] < 8
