"""Time Snakemake's DAG build for a large synthetic cohort, next to Snakemake's own floor.

A dry run (``snakemake -n``) builds the whole DAG of a cohort without running a job: its time
is what a cluster user waits before the first job of a large cohort is submitted. The script
times the workflow's dry run for a cohort of ``--subjects`` synthetic subjects, once per
group of data types, and the dry run of a generated workflow of the same number of jobs that
does nothing of the project's own (the floor): trivial rules with the same directives as the
workflow's (``script:``, ``conda:``, ``log:``, resources, two outputs, a dict param), and the
same rules reduced to ``shell:`` without ``conda:``. Each run is a child process; its CPU time
(user + system) is reported beside the wall time, because the DAG build is single-threaded,
so the CPU time is what a machine to itself would take.

Usage::

    .venv/bin/python benchmarks/bench_dag.py                     # 500 subjects
    .venv/bin/python benchmarks/bench_dag.py --subjects 50 --json out.json
"""

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import yaml
from _child import max_rss_gb, run_child

REPO = Path(__file__).resolve().parents[1]
DATA_TYPE_GROUPS = {"t1w_rep": ["t1w_rep"],
                    "all four": ["t1w_rep", "memprage", "dwi_appa", "dti_subsets"]}
_FLOOR_STEPS = 7  # jobs per unit between its source job and its score job

_FLOOR_SNAKEFILE = '''\
UNITS = [f"{{k:05d}}" for k in range({units})]
STEPS = [f"s{{k}}" for k in range({steps})]

rule all:
    input: expand("r/{{unit}}/score.tsv", unit=UNITS)

rule source:
    output: a="r/{{unit}}/source.nii.gz", b="r/{{unit}}/source.json"
    params: options={{"x": 1, "y": [1, 2]}}
    log: "logs/source/{{unit}}.log"
    threads: 1
    resources: mem_mb=1000, runtime=5
{deployment}

rule step:
    input: "r/{{unit}}/source.nii.gz"
    output: a="r/{{unit}}/{{step}}.nii.gz", b="r/{{unit}}/{{step}}.json"
    wildcard_constraints: step="|".join(STEPS)
    params: options={{"x": 1, "y": [1, 2]}}, step="{{step}}"
    log: "logs/step/{{unit}}_{{step}}.log"
    threads: 1
    resources: mem_mb=1000, runtime=5
{deployment}

rule score:
    input: expand("r/{{{{unit}}}}/{{step}}.nii.gz", step=STEPS)
    output: "r/{{unit}}/score.tsv"
    params: options={{"x": 1}}
    log: "logs/score/{{unit}}.log"
    threads: 1
    resources: mem_mb=1000, runtime=5
{deployment}
'''
_DEPLOYMENTS = {
    "script + conda": '    conda: "envs/e.yaml"\n    script: "scripts/s.py"',
    "shell": '    shell: "true"',
}


def _snakemake():
    return str(Path(sys.executable).with_name("snakemake"))


def timed_dry_run(arguments, cwd):
    """Run ``snakemake -n --quiet rules`` with ``arguments`` in ``cwd``; its cost and job count.

    Returns
    -------
    dict
        ``jobs`` (the total of the job table), ``cpu_s`` (user + system of the child),
        ``wall_s`` and ``peak_gb`` (the child's maximum resident set).
    """
    returncode, output, errors, usage, wall = run_child(
        [_snakemake(), "-n", "--quiet", "rules", *arguments], cwd=cwd, capture_stderr=True)
    if returncode != 0:
        raise RuntimeError(f"dry run in {cwd} failed:\n{output}\n{errors}")
    totals = re.findall(r"^total\s+(\d+)\s*$", output, flags=re.MULTILINE)
    if not totals:
        raise RuntimeError(f"no job table in the dry run's output:\n{output}")
    return {"jobs": int(totals[-1]), "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall,
            "peak_gb": max_rss_gb(usage.ru_maxrss)}


def cohort_config(path, subjects, data_types, results_dir):
    """Write a workflow config of ``subjects`` synthetic evaluation subjects."""
    labels = [f"{k:03d}" for k in range(1, subjects + 1)]
    path.write_text(yaml.safe_dump({"results_dir": str(results_dir), "datasets": [{
        "name": "cohort", "source": "synthetic", "data_types": data_types,
        "subjects": {"evaluation": labels, "training": ["train01", "train02"]}}]}))
    return path


def floor_workflow(folder, jobs, deployment):
    """Write a do-nothing workflow of about ``jobs`` jobs into ``folder``; its Snakefile."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "envs").mkdir(exist_ok=True)
    (folder / "envs" / "e.yaml").write_text("channels: [conda-forge]\n"
                                            "dependencies: [python=3.11]\n")
    (folder / "scripts").mkdir(exist_ok=True)
    (folder / "scripts" / "s.py").write_text("pass\n")
    units = max(1, round((jobs - 1) / (_FLOOR_STEPS + 2)))
    snakefile = folder / "Snakefile"
    snakefile.write_text(_FLOOR_SNAKEFILE.format(units=units, steps=_FLOOR_STEPS,
                                                 deployment=_DEPLOYMENTS[deployment]))
    return snakefile


def run(subjects, groups=tuple(DATA_TYPE_GROUPS)):
    """Dry-run the workflow's cohort for each data-type group and its floor workflows."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_dag_") as scratch:
        scratch = Path(scratch)
        for group in groups:
            config = cohort_config(scratch / f"cohort_{len(rows)}.yaml", subjects,
                                   DATA_TYPE_GROUPS[group], scratch / "results")
            workflow = timed_dry_run(["--configfile", str(config)], cwd=REPO)
            rows.append({"workflow": f"noise2average, {subjects} subjects, {group}", **workflow})
            for deployment in _DEPLOYMENTS:
                folder = scratch / f"floor_{len(rows)}"
                floor_workflow(folder, workflow["jobs"], deployment)
                rows.append({"workflow": f"floor, trivial rules ({deployment})",
                             **timed_dry_run([], cwd=folder)})
    return rows


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=500)
    parser.add_argument("--groups", nargs="+", choices=sorted(DATA_TYPE_GROUPS),
                        default=list(DATA_TYPE_GROUPS), metavar="GROUP",
                        help=f"data-type groups among {sorted(DATA_TYPE_GROUPS)}")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    load = os.getloadavg()[0]
    rows = run(args.subjects, args.groups)
    print(f"snakemake dry runs, load average {load:.2f} at start")
    print("| workflow | jobs | CPU s | wall s | ms CPU per job | peak GB |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['workflow']} | {row['jobs']} | {row['cpu_s']:.1f} | {row['wall_s']:.1f} "
              f"| {1000 * row['cpu_s'] / row['jobs']:.2f} | {row['peak_gb']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"load_average": load, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
