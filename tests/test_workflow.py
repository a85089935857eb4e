"""The Snakemake workflow: schema validation, the DAG of every config, lint, a real tiny run."""

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, job_counts
from noise2average.io import load_nifti, save_nifti


def test_default_dry_run_builds_every_job(run_snakemake):
    counts = job_counts(run_snakemake("-n").stdout)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    (dataset,) = config["datasets"]
    assert dataset["source"] == "synthetic"
    subjects = len(dataset["subjects"]["evaluation"])
    training = len(dataset["subjects"]["training"])
    data_types = dataset["data_types"]
    dwi = [t for t in data_types if t in ("dwi_appa", "dti_subsets")]
    t1w = [t for t in data_types if t not in dwi]
    assert dwi and t1w, "the default runs both T1w and diffusion data types"
    methods = config["methods"]
    dwi_only = [m for m in methods if m in ("mppca", "patch2self")]
    assert counts["simulate_subject"] == (subjects + training) * len(t1w)
    assert counts["simulate_dwi_subject"] == (subjects + training) * len(dwi)
    assert counts["pretrain_network"] == len(data_types)
    assert counts["denoise_n2a"] == subjects * len(data_types)
    assert counts["denoise_network"] == 2 * subjects * len(data_types)  # n2n and supervised
    # bm4d and aonlm everywhere; mppca on diffusion series; patch2self on dwi_appa only
    # (the 7-volume SDnDTI repetitions are too few for it).
    assert dwi_only == ["mppca", "patch2self"] and dwi == ["dwi_appa", "dti_subsets"]
    assert counts["denoise_filter"] == subjects * (2 * len(data_types) + 3)
    # One scoring job per unit and data type, over all its methods (diffusion: with the
    # tensor fits).
    assert counts["compute_metrics"] == subjects * len(t1w)
    assert counts["fit_and_score_dwi"] == subjects * len(dwi)
    assert counts["plot_image_panel"] == len(t1w)
    assert counts["plot_dti_panel"] == len(dwi)


def test_dry_run_of_500_subjects_takes_under_30_seconds(run_snakemake, tmp_path_factory):
    """The DAG of a 500-subject T1w benchmark is built in at most 30 s (docs/benchmarks.md).

    On a host slow enough that it takes longer, the dry run must stay within 1.6x of
    Snakemake's own floor for the same number of jobs, timed on the same host
    (benchmarks/bench_dag.py: trivial rules with the workflow's directives).
    """
    subjects = [f"{k:03d}" for k in range(1, 501)]
    override = run_snakemake.workdir / "cohort.yaml"
    override.write_text(yaml.safe_dump({"datasets": [{
        "name": "cohort", "source": "synthetic", "data_types": ["t1w_rep"],
        "subjects": {"evaluation": subjects, "training": ["train01", "train02"]},
    }]}))
    # CPU time of the (single-threaded) DAG build: its wall time on a machine to itself,
    # unaffected by whatever else shares the cores.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    counts = job_counts(run_snakemake("-n", "--quiet", "rules", extra_configfiles=[override]).stdout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert counts["denoise_n2a"] == counts["compute_metrics"] == 500
    assert counts["simulate_subject"] == 502
    if seconds > 30:
        import bench_dag

        folder = tmp_path_factory.mktemp("floor")
        bench_dag.floor_workflow(folder, counts["total"], "script + conda")
        floor = bench_dag.timed_dry_run([], cwd=folder)["cpu_s"]
        assert seconds <= 1.6 * floor, (
            f"dry run of 500 subjects took {seconds:.1f} s of CPU, Snakemake's floor for "
            f"{counts['total']} jobs {floor:.1f} s")


@pytest.mark.parametrize("preset", ["paper.yaml", "test.yaml", "openneuro.yaml", "hcp.yaml"])
def test_presets_dry_run(run_snakemake, preset):
    counts = job_counts(run_snakemake("-n", configfile=REPO / "config" / preset).stdout)
    assert counts["all"] == 1
    config = yaml.safe_load((REPO / "config" / preset).read_text())
    listed = sum(len(dataset.get("files", [])) for dataset in config["datasets"])
    # Every listed file is read, so downloaded (nothing is cached in a fresh working directory).
    assert counts.get("download_file", 0) == listed


def test_lint_is_clean(run_snakemake):
    result = run_snakemake("--lint")
    output = result.stdout + result.stderr
    assert "Congratulations" in output and "Lints for" not in output, output


@pytest.mark.parametrize(
    "override, message",
    [
        ("methods=[average,magic]", "magic"),
        ("n2a={'iterations':0}", "iterations"),
        ("unknown_key=1", "unknown_key"),
        ("datasets=[{'name':'s','source':'synthetic','data_types':['t1w_rep'],"
         "'subjects':{'evaluation':['01'],'training':['01']}}]", "both evaluation and training"),
        ("datasets=[{'name':'s','source':'synthetic','data_types':['t1w_rep'],"
         "'subjects':{'evaluation':['01']}}]", "s: subjects.training"),
        ("datasets=[{'name':'s','source':'magic','data_types':['t1w_rep']}]", "magic"),
        ("datasets=[{'name':'s','source':'bids','data_types':['t1w_rep'],"
         "'bids_dir':'/nonexistent'}]", "s: bids_dir"),
        ("datasets=[{'name':'s','source':'openneuro','data_types':['t1w_rep'],"
         "'dataset_id':'ds1'}]", "ds1"),
    ],
)
def test_invalid_config_is_rejected_with_the_key(run_snakemake, override, message):
    result = run_snakemake("-n", "--config", override, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_schema_fills_defaults(run_snakemake, tmp_path):
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text("results_dir: elsewhere\n")
    run_snakemake("-n", configfile=minimal)


@pytest.mark.workflow
def test_tiny_end_to_end_run(run_snakemake):
    run_snakemake("--cores", "2", configfile=REPO / "config/test.yaml")
    results = run_snakemake.workdir / "results_test"
    metrics = pd.read_csv(results / "metrics.csv", dtype={"subject": str, "iteration": str})

    assert {"dataset", "subject", "data_type", "reference", "method", "iteration", "region",
            "metric", "value"} <= set(metrics.columns)
    assert set(metrics["reference"]) == {"ground truth"}
    t1w_methods = {"noisy", "average", "n2a", "n2n", "supervised", "bm4d", "aonlm"}
    methods_of = metrics.groupby("data_type")["method"].agg(set).to_dict()
    assert methods_of == {"t1w_rep": t1w_methods, "memprage": t1w_methods,
                          "dwi_appa": t1w_methods | {"mppca", "patch2self"},
                          "dti_subsets": t1w_methods | {"mppca"}}
    # The residual of the first repetition against itself is zero: no whiteness.
    assert metrics.query("metric != 'residual_whiteness' or method != 'noisy'")["value"].notna().all()
    n2a_iterations = set(metrics.loc[metrics["method"] == "n2a", "iteration"])
    assert n2a_iterations == {"1", "2", "final"}

    def mean_metric(method, data_type, metric="psnr", region="brain"):
        rows = metrics.query("method == @method and metric == @metric and region == @region "
                             "and iteration == 'final' and data_type == @data_type")
        assert len(rows) == 2, (method, data_type, metric, region)
        return rows["value"].mean()

    # Averaging two repetitions halves the noise variance: about +3 dB over one repetition,
    # for volumes and diffusion series alike.
    for data_type in ("t1w_rep", "dwi_appa", "dti_subsets"):
        assert mean_metric("average", data_type) > mean_metric("noisy", data_type) + 1.5
    # BM4D on the average improves it. AONLM does not at this 4 mm test resolution (cortex
    # one or two voxels wide; it does at 2 mm, see README), so it only has to beat a single
    # repetition here; its denoising is tested on a phantom in test_aonlm.py.
    assert mean_metric("bm4d", "t1w_rep") > mean_metric("average", "t1w_rep")
    assert mean_metric("aonlm", "t1w_rep") > mean_metric("noisy", "t1w_rep")
    # Less noise gives better tensors: white-matter FA error falls from one repetition to
    # the average, and MP-PCA (many volumes) improves on the average's FA.
    for data_type in ("dwi_appa", "dti_subsets"):
        noisy_fa = mean_metric("noisy", data_type, "fa_mae", "wm")
        assert mean_metric("average", data_type, "fa_mae", "wm") < noisy_fa
        assert 0 < mean_metric("noisy", data_type, "v1_angle", "wm") < 90
    assert mean_metric("mppca", "dwi_appa", "fa_mae", "wm") < mean_metric(
        "average", "dwi_appa", "fa_mae", "wm")

    # Diffusion outputs: the gradient table beside the series, tensor maps per result.
    subject = results / "synthetic" / "dwi_appa" / "sub-01"
    bvals = (subject / "inputs" / "sub-01_dwi.bval").read_text().split()
    assert len(bvals) == 15 and bvals.count("0") == 3
    subject = results / "synthetic" / "dti_subsets" / "sub-01"
    for name in ("fa", "md", "ad", "rd", "v1", "colorfa"):
        assert (subject / "dti" / f"sub-01_method-n2a_iter-2_{name}.nii.gz").exists()

    summary = (results / "summary.md").read_text()
    assert "### dwi_appa (region wm)" in summary and "v1_angle" in summary
    kinds = {"t1w_rep": "panel", "memprage": "panel", "dwi_appa": "dti", "dti_subsets": "dti"}
    for data_type, image_kind in kinds.items():
        for kind in (image_kind, "distributions", "iterations"):
            for ext in ("png", "pdf"):
                assert (results / "figures" / f"synthetic_dtype-{data_type}_{kind}.{ext}").stat().st_size > 1000

    # Training jobs leave no resume files behind once their outputs are written.
    assert not list(results.rglob("*.resume"))
    _workflow_models_work_with_n2a(results, run_snakemake.workdir / "n2a")

    # A rerun has nothing to do: outputs are complete and reused.
    rerun = run_snakemake("-n", configfile=REPO / "config/test.yaml")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr

    # The report bundles every figure with its caption, the summary table, the configuration
    # and the versions.
    run_snakemake("--report", "report.html", configfile=REPO / "config/test.yaml")
    report = (run_snakemake.workdir / "report.html").read_text()
    figures = sorted((results / "figures").glob("*.png"))
    assert len(figures) == 3 * 2 + 3 * 2  # panel/dti, distributions, iterations per type
    for figure in figures:
        assert figure.name in report
    for name in ("summary.csv", "config.yaml", "versions.json"):
        assert name in report
    assert "absolute error against the reference" in report
    assert "the seeds are in the configuration" in report


def _workflow_models_work_with_n2a(results, folder):
    """``n2a denoise --pretrained`` takes the workflow's T1w and diffusion models."""
    n2a = Path(sys.executable).with_name("n2a")
    for data_type in ("t1w_rep", "dwi_appa"):
        unit = results / "synthetic" / data_type
        stack, affine, header = load_nifti(unit / "sub-01" / "inputs" / "sub-01_noisy.nii.gz")
        repetitions = []
        for k in range(stack.shape[-1]):
            repetitions.append(folder / f"{data_type}_rep-{k + 1}.nii.gz")
            save_nifti(repetitions[-1], stack[..., k], affine, header=header)
        gradients = []
        if data_type == "dwi_appa":
            table = unit / "sub-01" / "inputs" / "sub-01_dwi"
            gradients = ["--bvals", f"{table}.bval", "--bvecs", f"{table}.bvec"]
        output = folder / f"{data_type}_n2a.nii.gz"
        result = subprocess.run(
            [n2a, "denoise", *repetitions, *gradients, "--pretrained",
             unit / "models" / "desc-pretrained_model.pt", "-o", output, "--epochs", "1",
             "--iterations", "1", "--device", "cpu", "--quiet"],
            capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        denoised = load_nifti(output)[0]
        assert denoised.shape == stack.shape[:-1] and np.isfinite(denoised).all()
