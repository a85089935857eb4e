"""The Snakemake workflow: schema validation, the DAG of every config, lint, a real tiny run."""

import re

import pandas as pd
import pytest
import yaml

from conftest import REPO


def job_counts(dry_run_output):
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    table = dry_run_output.split("Job stats:")[1]
    return {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    }


def test_default_dry_run_builds_every_job(run_snakemake):
    counts = job_counts(run_snakemake("-n").stdout)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    subjects = len(config["subjects"]["evaluation"])
    training = len(config["subjects"]["training"])
    data_types = len(config["data_types"])
    methods = len(config["methods"])
    assert counts["simulate_subject"] == (subjects + training) * data_types
    assert counts["pretrain_network"] == data_types
    assert counts["denoise_n2a"] == subjects * data_types
    assert counts["denoise_network"] == 2 * subjects * data_types  # n2n and supervised
    assert counts["denoise_filter"] == 2 * subjects * data_types  # bm4d and aonlm
    assert counts["compute_metrics"] == (methods + 1) * subjects * data_types  # + noisy
    assert counts["plot_image_panel"] == data_types


@pytest.mark.parametrize("preset", ["paper.yaml", "test.yaml"])
def test_presets_dry_run(run_snakemake, preset):
    counts = job_counts(run_snakemake("-n", configfile=REPO / "config" / preset).stdout)
    assert counts["all"] == 1


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
        ("subjects={'evaluation':['01'],'training':['01']}", "both evaluation and training"),
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

    assert {"dataset", "subject", "data_type", "method", "iteration", "region", "metric", "value"} <= set(metrics.columns)
    assert set(metrics["method"]) == {"noisy", "average", "n2a", "n2n", "supervised", "bm4d", "aonlm"}
    assert set(metrics["data_type"]) == {"t1w_rep", "memprage"}
    assert metrics["value"].notna().all()
    n2a_iterations = set(metrics.loc[metrics["method"] == "n2a", "iteration"])
    assert n2a_iterations == {"1", "2", "final"}

    def mean_psnr(method):
        rows = metrics.query("method == @method and metric == 'psnr' and region == 'brain' and iteration == 'final' and data_type == 't1w_rep'")
        return rows["value"].mean()

    # Averaging two repetitions halves the noise variance: about +3 dB over one repetition.
    assert mean_psnr("average") > mean_psnr("noisy") + 1.5
    # BM4D on the average improves it. AONLM does not at this 4 mm test resolution (cortex
    # one or two voxels wide; it does at 2 mm, see README), so it only has to beat a single
    # repetition here; its denoising is tested on a phantom in test_aonlm.py.
    assert mean_psnr("bm4d") > mean_psnr("average")
    assert mean_psnr("aonlm") > mean_psnr("noisy")

    summary = (results / "summary.md").read_text()
    assert "t1w_rep" in summary and "memprage" in summary
    for data_type in ("t1w_rep", "memprage"):
        for kind in ("panel", "distributions", "iterations"):
            for ext in ("png", "pdf"):
                assert (results / "figures" / f"synthetic_dtype-{data_type}_{kind}.{ext}").stat().st_size > 1000

    # A rerun has nothing to do: outputs are complete and reused.
    rerun = run_snakemake("-n", configfile=REPO / "config/test.yaml")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr

    # The report bundles the figures with their captions.
    run_snakemake("--report", "report.html", configfile=REPO / "config/test.yaml")
    report = (run_snakemake.workdir / "report.html").read_text()
    assert "synthetic_dtype-t1w_rep_panel.png" in report
    assert "absolute error against the ground truth" in report
