"""Real data: planning a BIDS dataset, ingesting its repetitions, the workflow end to end on
a BIDS directory, and verified OpenNeuro downloads through the workflow (local server)."""

import hashlib
import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from bids_example import bids_config, write_bids_example
from conftest import REPO, job_counts
from noise2average.bids import find_repetitions, list_bids_files
from noise2average.datasets import derivative_description, plan_dataset, reference_label
from noise2average.ingest import ingest_repetitions

TEST_CONFIG = REPO / "config" / "test.yaml"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The phantom BIDS example, written once per module (read-only for the tests)."""
    return write_bids_example(tmp_path_factory.mktemp("example") / "bids")


@pytest.fixture
def editable_example(example, tmp_path):
    return shutil.copytree(example, tmp_path / "bids")


def _entry(bids_dir, **changes):
    return {**bids_config(bids_dir, results_dir="r")["datasets"][0], **changes}


def _set(bids_dir, data_type, **options):
    return find_repetitions(list_bids_files(bids_dir), data_type, **options)["01"]


# -- planning --------------------------------------------------------------------------------


def test_plan_finds_units_and_labels_the_reference(example):
    plan = plan_dataset(_entry(example, subjects={"evaluation": "all", "training": ["02"]}),
                        cache_dir="unused")
    assert plan["root"] == example.resolve()
    for data_type in ("t1w_rep", "memprage", "dwi_appa", "dti_subsets"):
        assert plan["data_types"][data_type]["evaluation"] == ["01"]
        assert plan["data_types"][data_type]["training"] == ["02"]
    runs = plan["data_types"]["t1w_rep"]["sets"]["01"]
    assert [path.split("/")[-1] for path in runs.images] == [
        "sub-01_run-1_T1w.nii.gz", "sub-01_run-2_T1w.nii.gz", "sub-01_run-3_T1w.nii.gz"]
    assert reference_label(plan, "t1w_rep") == "mean of all 3 runs (not a ground truth)"
    assert reference_label(plan, "memprage") == "mean of all 4 echoes (not a ground truth)"
    assert reference_label(plan, "dti_subsets").startswith("tensor fit of all directions")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"subjects": {"evaluation": "all", "training": ["07"]}},
         "example: subjects.training: '07' has no t1w_rep repetitions"),
        ({"subjects": {"evaluation": ["02"], "training": ["02"]}},
         "example: subjects.evaluation: no t1w_rep unit left"),
        ({"data_types": {"dti_subsets": None}}, "example: data_types.dti_subsets: .*acq"),
        ({"data_types": {"t1w_rep": {"inputs": 4}}}, r"data_types.t1w_rep.inputs: 4 input"),
        ({"data_types": ["t1w_rep", "magic"]}, "unknown data type 'magic'"),
    ],
)
def test_plan_errors_name_the_dataset_and_key(example, changes, message):
    with pytest.raises(ValueError, match=message):
        plan_dataset(_entry(example, **changes), cache_dir="unused")


def test_derivative_description_names_the_source():
    entry = {"name": "aomic", "source": "openneuro", "dataset_id": "ds003097", "version": "1.2.1"}
    description = derivative_description(entry, version="9.9")
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Version"] == "9.9"
    assert description["SourceDatasets"] == [
        {"URL": "https://openneuro.org/datasets/ds003097/versions/1.2.1", "Version": "1.2.1"}]


def test_plan_of_a_missing_bids_directory(tmp_path):
    with pytest.raises(ValueError, match="example: bids_dir: .*missing"):
        plan_dataset(_entry(tmp_path / "missing"), cache_dir="unused")


# -- ingestion -------------------------------------------------------------------------------


def test_t1w_inputs_are_the_first_runs_and_the_reference_their_mean(example):
    runs = _set(example, "t1w_rep")
    unit = ingest_repetitions(example, runs, "t1w_rep", inputs=2)
    volumes = [np.asarray(nib.load(example / path).dataobj, dtype=np.float32) for path in runs.images]
    assert unit.noisy.shape == volumes[0].shape + (2,)
    np.testing.assert_array_equal(unit.noisy[..., 1], volumes[1])
    np.testing.assert_allclose(unit.reference, np.mean(volumes, axis=0), rtol=1e-6, atol=1e-7)
    assert 0.05 < unit.mask.mean() < 0.95
    assert unit.info["reference"] == "mean of all 3 repetitions (not a ground truth)"
    assert len(unit.info["alignment_correlation_with_first"]) == 3
    assert unit.info["acquisition"]["EchoTime"] == [0.0023] * 3  # inherited from T1w.json


def test_grids_that_differ_are_an_error_or_registered(editable_example):
    root = editable_example
    runs = _set(root, "t1w_rep")
    moved = root / runs.images[1]
    image = nib.load(moved)
    data = np.asarray(image.dataobj, dtype=np.float32)
    # Run 2 on a grid shifted by 4 mm: refused without registration, naming the file.
    shifted = image.affine.copy()
    shifted[0, 3] += 4.0
    nib.save(nib.Nifti1Image(data, shifted), moved)
    with pytest.raises(ValueError, match=rf"{moved.name}.*rigid"):
        ingest_repetitions(root, runs, "t1w_rep", registration="none")
    # Same grid, but the head moved by two voxels: rigid registration realigns it.
    nib.save(nib.Nifti1Image(np.roll(data, 2, axis=1), image.affine), moved)
    unaligned = ingest_repetitions(root, runs, "t1w_rep", registration="none")
    aligned = ingest_repetitions(root, runs, "t1w_rep", registration="rigid")
    before = unaligned.info["alignment_correlation_with_first"][1]
    after = aligned.info["alignment_correlation_with_first"][1]
    assert after > before + 0.05, (before, after)
    assert aligned.info["registration"].startswith("rigid")


def test_t1w_runs_with_a_singleton_fourth_axis_and_4d_runs(editable_example):
    root = editable_example
    runs = _set(root, "t1w_rep")
    path = root / runs.images[0]
    image = nib.load(path)
    data = np.asarray(image.dataobj, dtype=np.float32)
    nib.save(nib.Nifti1Image(data[..., None], image.affine), path)
    unit = ingest_repetitions(root, runs, "t1w_rep")
    np.testing.assert_array_equal(unit.noisy[..., 0], data)
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), image.affine), path)
    with pytest.raises(ValueError, match=rf"{path.name}: 2 volumes along the 4th axis"):
        ingest_repetitions(root, runs, "t1w_rep")


def test_a_mask_shipped_with_the_dataset_is_used(editable_example):
    root = editable_example
    runs = _set(root, "t1w_rep")
    first = nib.load(root / runs.images[0])
    box = np.zeros(first.shape, dtype=np.uint8)
    box[5:-5, 5:-5, 2:-2] = 1
    mask_path = root / "sub-01/anat/sub-01_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(box, first.affine), mask_path)
    plan = plan_dataset(_entry(root), cache_dir="unused")
    assert plan["data_types"]["t1w_rep"]["masks"] == {
        "01": "sub-01/anat/sub-01_desc-brain_mask.nii.gz", "02": None}
    unit = ingest_repetitions(root, runs, "t1w_rep", mask_path=mask_path)
    np.testing.assert_array_equal(unit.mask, box > 0)
    assert unit.info["mask"] == f"from the dataset: {mask_path}"
    shifted = first.affine.copy()
    shifted[2, 3] += 3.0
    nib.save(nib.Nifti1Image(box, shifted), mask_path)
    with pytest.raises(ValueError, match="sub-01_desc-brain_mask.nii.gz"):
        ingest_repetitions(root, runs, "t1w_rep", mask_path=mask_path)


def test_dwi_pair_with_one_phase_encoding_is_flagged(editable_example):
    root = editable_example
    pair = _set(root, "dwi_appa")
    assert ingest_repetitions(root, pair, "dwi_appa").info["warnings"] == []
    sidecar = root / pair.sidecars[1][-1]
    sidecar.write_text(json.dumps({"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.05}))
    warnings = ingest_repetitions(root, pair, "dwi_appa").info["warnings"]
    assert len(warnings) == 1 and "share PhaseEncodingDirection 'j-'" in warnings[0]


def test_dwi_repetitions_need_one_gradient_table(editable_example):
    root = editable_example
    pair = _set(root, "dwi_appa")
    bval = root / pair.bvals[1]
    values = bval.read_text().split()
    values[-1] = str(float(values[-1]) + 500)
    bval.write_text(" ".join(values) + "\n")
    with pytest.raises(ValueError, match=r"dir-PA_dwi.bval: b-values of volume\(s\) \[\d+\] differ"):
        ingest_repetitions(root, pair, "dwi_appa")


def test_dti_subsets_from_one_acquired_series(example):
    series = _set(example, "dti_subsets", filters={"acq": "multidir"})
    unit = ingest_repetitions(example, series, "dti_subsets",
                              subsets={"n_subsets": 2, "n_rotations": 2000})
    assert unit.noisy.shape[3:] == (7, 2)
    assert unit.reference.shape == unit.noisy.shape[:4]
    assert unit.bvals[0] == 0 and np.all(unit.bvals[1:] > 900)
    # The reference tensors are fitted to every direction of the shell and the b0s.
    assert unit.tensor_fit_series.shape[3] == 63
    # Repetitions are bounded by the b0 (no exploding synthesis in the air).
    assert np.all(unit.noisy[..., 1:, :] <= unit.noisy[..., :1, :] * (1 + 1e-4) + 1e-6)


# -- the workflow on a BIDS directory ----------------------------------------------------------


@pytest.mark.workflow
def test_bids_dataset_end_to_end(run_snakemake, example):
    config = run_snakemake.workdir / "bids.yaml"
    config.write_text(yaml.safe_dump(bids_config(example, results_dir="results_bids")))
    run_snakemake("--cores", "2", configfile=None, extra_configfiles=[TEST_CONFIG, config])
    results = run_snakemake.workdir / "results_bids"
    metrics = pd.read_csv(results / "metrics.csv", dtype={"subject": str, "iteration": str})
    references = metrics.groupby("data_type")["reference"].agg(set).to_dict()
    assert references == {
        "t1w_rep": {"mean of all 3 runs (not a ground truth)"},
        "memprage": {"mean of all 4 echoes (not a ground truth)"},
        "dwi_appa": {"mean of all 2 phase-encoding directions (not a ground truth)"},
        "dti_subsets": {"tensor fit of all directions (not a ground truth)"},
    }
    assert set(metrics["subject"]) == {"01"}
    assert "sharpness" not in set(metrics["metric"])  # no tissue labels in real data
    assert {"background_sigma", "noise_sigma", "snr", "residual_std",
            "residual_whiteness"} <= set(metrics["metric"])

    def value(method, data_type, metric="psnr", region="brain"):
        rows = metrics.query("method == @method and data_type == @data_type and "
                             "metric == @metric and region == @region and iteration == 'final'")
        assert len(rows) == 1, (method, data_type, metric)
        return float(rows["value"].iloc[0])

    # Two of three runs averaged are closer to the three-run reference than one run.
    assert value("average", "t1w_rep") > value("noisy", "t1w_rep") + 1.5
    assert value("mppca", "dti_subsets", "fa_mae", "wm") < value("noisy", "dti_subsets", "fa_mae", "wm")
    sidecar = json.loads((results / "example/t1w_rep/sub-01/inputs/sub-01_noisy.json").read_text())
    assert sidecar["source_files"][0].endswith("sub-01_run-1_T1w.nii.gz")
    assert sidecar["inputs"] == sidecar["source_files"][:2]
    assert "software" in sidecar and sidecar["registration"].startswith("none")
    summary = (results / "summary.md").read_text()
    assert "Reference: mean of all 3 runs (not a ground truth)." in summary
    description = json.loads((results / "example/dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["SourceDatasets"] == [{"URL": example.resolve().as_uri()}]
    for data_type, kind in {"t1w_rep": "panel", "dti_subsets": "dti"}.items():
        assert (results / "figures" / f"example_dtype-{data_type}_{kind}.png").stat().st_size > 1000
    rerun = run_snakemake("-n", configfile=None, extra_configfiles=[TEST_CONFIG, config])
    assert "Nothing to be done" in rerun.stdout + rerun.stderr


# -- verified downloads through the workflow ---------------------------------------------------


def _publish(server, example, dataset_id="ds000001", version="1.0.0"):
    """Serve the example as an OpenNeuro snapshot: files on "S3", annex keys on the "mirror".

    Returns the relative paths served.
    """
    paths = list_bids_files(example)
    for path in paths:
        content = (example / path).read_bytes()
        server.add(f"{dataset_id}/{path}", content)
        if path.endswith(".nii.gz"):
            md5 = hashlib.md5(content).hexdigest()
            server.add(f"mirror/{dataset_id}/{version}/{path}", f"MD5E-s{len(content)}--{md5}.nii.gz")
        else:
            server.add(f"mirror/{dataset_id}/{version}/{path}", content)
    return paths


def _openneuro_config(workdir, server, paths, cache):
    config = {
        "results_dir": "results_on",
        "download": {"cache_dir": str(cache), "openneuro_url": server.url,
                     "annex_url": f"{server.url}/mirror", "retries": 1},
        "datasets": [{
            "name": "onexample", "source": "openneuro", "dataset_id": "ds000001",
            "version": "1.0.0", "files": [p for p in paths if "/dwi/" not in p],
            "subjects": {"evaluation": ["01"], "training": ["02"]},
            "data_types": {"t1w_rep": None},
        }],
    }
    path = workdir / "openneuro.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.workflow
def test_openneuro_download_verified_cached_and_failing_clearly(run_snakemake, server, example,
                                                              tmp_path):
    paths = _publish(server, example)
    cache = tmp_path / "cache"
    config = _openneuro_config(run_snakemake.workdir, server, paths, cache)
    target = "results_on/onexample/t1w_rep/sub-01/inputs/sub-01_noisy.nii.gz"
    run_snakemake("--cores", "1", target, configfile=None, extra_configfiles=[TEST_CONFIG, config])
    root = cache / "openneuro" / "ds000001"
    run1 = root / "sub-01/anat/sub-01_run-1_T1w.nii.gz"
    assert run1.read_bytes() == (example / "sub-01/anat/sub-01_run-1_T1w.nii.gz").read_bytes()
    record = json.loads((root / ".records/sub-01/anat/sub-01_run-1_T1w.nii.gz.json").read_text())
    assert record["checksum_origin"] == "snapshot 1.0.0" and record["md5"]
    assert (run_snakemake.workdir / target).is_file()
    downloads = len(server.requests)

    # A second run downloads nothing.
    rerun = run_snakemake("--cores", "1", target, configfile=None,
                          extra_configfiles=[TEST_CONFIG, config])
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
    assert len(server.requests) == downloads

    # A corrupted transfer fails with the checksum and leaves no file behind.
    shutil.rmtree(cache)
    server.corrupt.add("ds000001/sub-01/anat/sub-01_run-2_T1w.nii.gz")
    failed = run_snakemake("--cores", "1", target, "--forceall", configfile=None,
                           extra_configfiles=[TEST_CONFIG, config], check=False)
    assert failed.returncode != 0
    log = _logs(run_snakemake.workdir, "download_file")
    assert "checksum mismatch" in log and "sub-01_run-2_T1w.nii.gz" in log
    # Neither the file nor a temporary part of it (Snakemake may also remove the emptied
    # folder of a failed job's output).
    assert not cache.exists() or not [path for path in cache.rglob("*") if "run-2" in path.name]

    # A file missing on the server (HTTP 404) fails clearly, after a single request.
    server.corrupt.clear()
    missing = "ds000001/sub-01/anat/sub-01_run-3_T1w.nii.gz"
    shutil.rmtree(cache, ignore_errors=True)
    server.missing.add(missing)
    requests = server.count(missing)
    failed = run_snakemake("--cores", "1", target, "--forceall", configfile=None,
                           extra_configfiles=[TEST_CONFIG, config], check=False)
    assert failed.returncode != 0
    assert "not found on the server (HTTP 404)" in _logs(run_snakemake.workdir, "download_file")
    assert server.count(missing) == requests + 1


def _logs(workdir, rule):
    return "\n".join(path.read_text() for path in (workdir / "results_on/logs" / rule).rglob("*.log"))


def test_subject_labels_resolve_to_their_session(tmp_path):
    files = [f"sub-{s}/ses-{t}/anat/sub-{s}_ses-{t}_run-{r}_T1w.nii.gz"
             for s in ("a", "b") for t in ("1", "2") for r in (1, 2)]
    entry = {"name": "sessions", "source": "openneuro", "dataset_id": "ds000001",
             "version": "1.0.0", "files": files, "data_types": ["t1w_rep"],
             "subjects": {"evaluation": ["b"], "training": ["a"]}}
    with pytest.raises(ValueError, match=r"sessions: subjects.training: 'a' has several sessions"):
        plan_dataset(entry, cache_dir=tmp_path)
    plan = plan_dataset({**entry, "sessions": ["2"]}, cache_dir=tmp_path)
    units = plan["data_types"]["t1w_rep"]
    assert units["training"] == ["a_ses-2"] and units["evaluation"] == ["b_ses-2"]
    assert plan["root"] == tmp_path.resolve() / "openneuro" / "ds000001"
    assert sorted(plan["downloads"]) == sorted(files)


def test_one_run_mixes_the_phantom_and_a_bids_dataset(run_snakemake, example):
    config = bids_config(example, results_dir="results_mixed")
    config["datasets"].insert(0, {
        "name": "synthetic", "source": "synthetic", "data_types": ["t1w_rep"],
        "subjects": {"evaluation": ["01"], "training": ["train01"]},
    })
    path = run_snakemake.workdir / "mixed.yaml"
    path.write_text(yaml.safe_dump(config))
    counts = job_counts(
        run_snakemake("-n", configfile=None, extra_configfiles=[TEST_CONFIG, path]).stdout)
    assert counts["simulate_subject"] == 2                 # one evaluation, one training
    assert counts["ingest_anat"] == counts["ingest_dwi"] == 4   # two types x two units
    assert counts["pretrain_network"] == 1 + 4
    assert counts["plot_image_panel"] == 1 + 2 and counts["plot_dti_panel"] == 2
