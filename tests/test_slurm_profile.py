"""The SLURM profile: a dry run of the paper preset through snakemake-executor-plugin-slurm.

Every job's resources are read from the dry run and turned into the sbatch options the plugin
would submit, with the plugin's own functions.
"""

import re
import subprocess
from types import SimpleNamespace

import pytest
import yaml
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, ResourceSettings, StorageSettings
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

from conftest import REPO, snakemake_command

PROFILE = REPO / "profiles/slurm/profile.yaml"
TRAINING_RULES = {"pretrain_network", "denoise_n2a", "denoise_network"}
HOST_RULES = {"download_file", "aggregate_metrics", "record_provenance", "describe_derivatives",
              "plot_image_panel", "plot_dti_panel", "plot_metric_distributions",
              "plot_iterations"}
JOB_HEADER = re.compile(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):$")


def dry_run_jobs(output):
    """Jobs of a dry run: dicts with rule, resources, threads and group."""
    jobs, job, group = [], None, None
    for line in output.splitlines():
        if "Group job" in line:
            group = line.split("Group job")[1].split()[0]
            continue
        if header := JOB_HEADER.match(line):
            indented = line.startswith(" ")
            job = {"rule": header.group(1), "resources": {}, "threads": 1,
                   "group": group if indented else None}
            group = group if indented else None
            jobs.append(job)
        elif job is not None and (field := re.match(r"^\s+(resources|threads): (.*)$", line)):
            if field.group(1) == "threads":
                job["threads"] = int(field.group(2))
            else:
                for item in field.group(2).split(", "):
                    key, value = item.split("=", 1)
                    job["resources"][key] = int(value) if value.isdigit() else value
    return jobs


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    """Dry run of config/paper.yaml with the SLURM workflow profile."""
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    # CI has no conda: the environments are checked by test_environments.py instead.
    assert profile.pop("software-deployment-method") == "conda"
    profile.pop("conda-frontend")
    workdir = tmp_path_factory.mktemp("slurm")
    (workdir / "profile").mkdir()
    (workdir / "profile/config.yaml").write_text(yaml.safe_dump(profile))
    # A dry run caps threads at --cores; a cluster does not: ask for more than any rule uses.
    result = subprocess.run(
        snakemake_command("-n", "--cores", "64", "--workflow-profile", str(workdir / "profile"),
                          workdir=workdir, configfiles=[REPO / "config/paper.yaml"]),
        capture_output=True, text=True, cwd=workdir,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = dry_run_jobs(result.stdout)
    assert len(jobs) > 100
    return jobs, yaml.safe_load((REPO / "config/paper.yaml").read_text())["resources"]


class JobResources(dict):
    """A job's resources as the plugin reads them: ``.get(name)`` and ``.name``."""

    __getattr__ = dict.__getitem__


def sbatch_options(job):
    """The sbatch command line the plugin would build for a dry-run job."""
    stand_in = SimpleNamespace(
        resources=JobResources(job["resources"]), threads=job["threads"],
        is_group=lambda: job["group"] is not None,
    )
    params = {"run_uuid": "test", "slurm_logfile": "log", "comment_str": job["rule"],
              "account": "", "partition": "", "workdir": None}
    return get_submit_command(stand_in, params) + set_gres_string(stand_in)


def test_every_job_requests_memory_and_wall_time(paper_jobs):
    jobs, _ = paper_jobs
    for job in jobs:
        if job["rule"] == "all":
            continue
        options = sbatch_options(job)
        assert re.search(r" --mem \d+", options), (job["rule"], options)
        assert re.search(r" -t \d+", options), (job["rule"], options)


def test_training_jobs_request_one_gpu_and_the_preset_resources(paper_jobs):
    jobs, resources = paper_jobs
    training = [job for job in jobs if job["rule"] in TRAINING_RULES]
    assert {job["rule"] for job in training} == TRAINING_RULES
    for job in training:
        options = sbatch_options(job)
        assert "--gpus=1" in options, options
        assert f"--mem {resources['training_mem_mb']}" in options
        assert f"-t {resources['training_runtime_min']}" in options
    others = [job for job in jobs if job["rule"] not in TRAINING_RULES | {"all"}]
    assert others and not any("--gpus" in sbatch_options(job) for job in others)


def test_filter_and_scoring_jobs_scale_with_the_preset(paper_jobs):
    jobs, resources = paper_jobs
    filters = [job for job in jobs if job["rule"] == "denoise_filter"]
    assert filters
    for job in filters:
        options = sbatch_options(job)
        assert f"--cpus-per-task={resources['filter_threads']}" in options, options
        assert f"--mem {resources['filter_mem_mb']}" in options
        assert f"-t {resources['filter_runtime_min']}" in options
    scoring = [job for job in jobs if job["rule"].startswith(("compute_metrics", "fit_and_score"))]
    assert {job["rule"] for job in scoring} == {"compute_metrics", "fit_and_score_dwi"}
    for job in scoring:
        assert job["resources"]["mem_mb"] == resources["metrics_mem_mb"]
        assert job["resources"]["runtime"] == resources["metrics_runtime_min"]


def test_a_unit_is_prepared_in_one_group_job(paper_jobs):
    jobs, _ = paper_jobs
    prepared = [job for job in jobs if job["rule"] in ("simulate_subject", "average_repetitions")]
    assert prepared and all(job["group"] == "prepare" for job in prepared)
    assert all(job["group"] is None for job in jobs if job["rule"] == "denoise_n2a")


def test_downloads_summaries_and_plots_run_on_the_submit_host(tmp_path):
    """Rules whose jobs take seconds (or need the internet) are local rules."""
    (tmp_path / "config").symlink_to(REPO / "config")
    with SnakemakeApi() as api:
        workflow = api.workflow(
            snakefile=REPO / "Snakefile", workdir=tmp_path,
            config_settings=ConfigSettings(configfiles=[REPO / "config/config.yaml"]),
            resource_settings=ResourceSettings(), storage_settings=StorageSettings(),
        )._workflow
        rules = {rule.name: rule for rule in workflow.rules}
        assert HOST_RULES <= set(rules)
        assert workflow._localrules == HOST_RULES


@pytest.mark.parametrize("device, gpus", [("cuda", 1), ("cpu", 0)])
def test_local_training_jobs_share_the_one_gpu_of_the_default_profile(run_snakemake, device,
                                                                      gpus):
    """Training jobs on CUDA request the ``gpu`` resource that profiles/default caps at 1."""
    profile = yaml.safe_load((REPO / "profiles/default/profile.yaml").read_text())
    assert profile["resources"]["gpu"] == 1
    override = run_snakemake.workdir / "device.yaml"
    override.write_text(yaml.safe_dump({"training": {"device": device}}))
    jobs = dry_run_jobs(run_snakemake("-n", extra_configfiles=[override]).stdout)
    training = [job for job in jobs if job["rule"] in TRAINING_RULES]
    assert training
    assert all(job["resources"].get("gpu", 0) == gpus for job in training)
