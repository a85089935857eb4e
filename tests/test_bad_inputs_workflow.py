"""The workflow's BIDS ingestion refuses every bad input of the catalogue (`bad_inputs`).

Each case is its own ``source: bids`` dataset (the case's ``sub-01`` to evaluate, a valid
``sub-02`` to train on, as planning asks for with the network methods). It must stop with
a message that names the culprit and matches the case's ``message``, and leave no ingest
output behind:

- a few cases stop the planning (Snakemake's DAG): each gets its own dry run;
- every other case goes into one Snakemake run (``--keep-going``) of the ingestion jobs of
  all of them, beside a valid T1w and DWI dataset that must be ingested, and its ingest
  job's log must give the message.
"""

import re
import shutil
import subprocess

import pytest
import yaml

from bad_inputs import CASES, dwi, t1w
from conftest import REPO, job_counts, snakemake_command

pytestmark = pytest.mark.workflow

TEST_CONFIG = REPO / "config" / "test.yaml"

# Cases the BIDS ingestion cannot express: the method is a workflow setting.
NOT_APPLICABLE = {"unknown_method", "dwi_method_on_t1w"}
APPLICABLE = [case_id for case_id in CASES if case_id not in NOT_APPLICABLE]

# Cases refused while Snakemake plans the DAG, before any job runs; every other applicable
# case is refused by its ingest job.
PLANNING = {
    # The unfetched link is caught by `ingest_inputs` (workflow/rules/common.smk).
    "missing_file",
    # Too few runs to plan the unit at all.
    "one_repetition",
}

# The workflow's own wording where it differs from the validation API's, whose messages
# start with the culprit: (how the culprit is named, message). Planning refuses a single run
# as too few repetitions of the data type, whatever the method, naming the run relative to
# the dataset.
WORKFLOW_MESSAGES = {
    "one_repetition": (
        "(run: sub-01/anat/sub-01_run-1_T1w.nii.gz)",
        r"onerepetition: data_types\.t1w_rep: unit '01': 1 t1w_rep repetition\(s\) .*"
        r"fewer than min_repetitions=2",
    ),
}

RULES = {"t1w_rep": "ingest_anat", "dwi_appa": "ingest_dwi"}
BUILDERS = {"t1w_rep": t1w, "dwi_appa": dwi}


def _name(case_id):
    """Dataset name of a case (the config allows letters and digits only)."""
    return case_id.replace("_", "")


def _build(case_id, root):
    """The case's dataset under ``root``, with a valid training subject ``sub-02``."""
    root = root.resolve()
    case = CASES[case_id](root)
    _add_training_subject(root, case.data_type)
    return case


def _add_training_subject(root, data_type):
    """Write a valid ``sub-02`` of ``data_type`` into the dataset at ``root``."""
    scratch = root.with_name(root.name + "_training")
    BUILDERS[data_type](scratch)
    for path in sorted((scratch / "sub-01").rglob("*")):
        if path.is_file():
            relative = path.relative_to(scratch / "sub-01")
            target = root / "sub-02" / relative.parent / path.name.replace("sub-01", "sub-02")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
    shutil.rmtree(scratch)


def _entry(case_id, root, data_types):
    return {
        "name": _name(case_id),
        "source": "bids",
        "bids_dir": str(root.resolve()),
        "subjects": {"evaluation": ["01"], "training": ["02"]},
        # The catalogue's repetitions share one grid unless the case says otherwise.
        "registration": "none",
        "data_types": {data_type: {} for data_type in data_types},
    }


def _inputs_dir(workdir, case_id, data_type):
    return workdir / "results" / _name(case_id) / data_type / "sub-01" / "inputs"


def _target(case_id, data_type):
    return f"results/{_name(case_id)}/{data_type}/sub-01/inputs/sub-01_noisy.nii.gz"


def _write_config(workdir, entries):
    path = workdir / "bad_inputs.yaml"
    path.write_text(yaml.safe_dump({"results_dir": "results", "datasets": entries}))
    return path


def _expected(case_id, case):
    """(culprit as named, message regex) the workflow must report."""
    return WORKFLOW_MESSAGES.get(case_id, (f"{case.culprit}: ", case.message))


def _reported(text, culprit, message):
    """Whether one line of ``text`` names ``culprit`` and matches ``message``."""
    return any(culprit in line and re.search(message, line) for line in text.splitlines())


def _assert_no_ingest_output(workdir, case_id, data_type):
    inputs = _inputs_dir(workdir, case_id, data_type)
    left = sorted(path.name for path in inputs.rglob("*") if path.is_file()) \
        if inputs.exists() else []
    assert not left, f"{case_id}: a refused ingestion left {left} in {inputs}"


def test_the_catalogue_split_is_explicit():
    assert NOT_APPLICABLE <= set(CASES) and PLANNING <= set(APPLICABLE)
    assert set(WORKFLOW_MESSAGES) <= PLANNING
    assert len({_name(case_id) for case_id in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def ingestion(tmp_path_factory):
    """One Snakemake run ingesting every case that gets past planning, and a valid dataset."""
    workdir = tmp_path_factory.mktemp("bad_inputs_workflow")
    shutil.copytree(REPO / "config", workdir / "config")
    cases, entries, targets = {}, [], []
    for case_id in CASES:
        case = _build(case_id, workdir / "bids" / case_id)
        assert case.bids_applicable == (case_id not in NOT_APPLICABLE), case_id
        if case_id in NOT_APPLICABLE or case_id in PLANNING:
            continue
        cases[case_id] = case
        entries.append(_entry(case_id, workdir / "bids" / case_id, [case.data_type]))
        targets.append(_target(case_id, case.data_type))
    valid = workdir / "bids" / "valid"
    t1w(valid.resolve(), mask=True)   # the dataset's mask is used
    dwi(valid.resolve())              # a mask is computed
    for data_type in RULES:
        _add_training_subject(valid.resolve(), data_type)
        targets.append(_target("valid", data_type))
    entries.append(_entry("valid", valid, RULES))
    config = _write_config(workdir, entries)
    result = subprocess.run(
        snakemake_command("--cores", "2", "--keep-going", *targets, workdir=workdir,
                          configfiles=[TEST_CONFIG, config]),
        capture_output=True, text=True, cwd=workdir,
    )
    return {"workdir": workdir, "cases": cases, "result": result}


def _output(result):
    return f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"


def test_valid_datasets_are_ingested_beside_the_refused_ones(ingestion):
    result, workdir = ingestion["result"], ingestion["workdir"]
    assert result.returncode != 0, "the bad inputs were not refused:\n" + _output(result)
    # Only ingestion ran: one job per case and per valid data type, nothing else.
    counts = job_counts(result.stdout + result.stderr)
    per_rule = {rule: sum(case.data_type == data_type for case in ingestion["cases"].values()) + 1
                for data_type, rule in RULES.items()}
    assert counts == {**per_rule, "total": sum(per_rule.values())}, _output(result)
    for data_type in RULES:
        inputs = _inputs_dir(workdir, "valid", data_type)
        for suffix in ("noisy", "reference", "mask"):
            assert (inputs / f"sub-01_{suffix}.nii.gz").is_file(), (data_type, _output(result))
    sidecar = yaml.safe_load(
        (_inputs_dir(workdir, "valid", "t1w_rep") / "sub-01_noisy.json").read_text())
    assert sidecar["mask"].startswith("from the dataset: "), sidecar["mask"]


@pytest.mark.parametrize("case_id", APPLICABLE)
def test_bad_input_is_refused_by_the_workflow_naming_the_culprit(case_id, request, tmp_path):
    if case_id in PLANNING:
        # Planning fails for the whole DAG: a dry run of this case alone.
        workdir = tmp_path
        shutil.copytree(REPO / "config", workdir / "config")
        case = _build(case_id, workdir / "bids" / case_id)
        config = _write_config(workdir, [_entry(case_id, workdir / "bids" / case_id,
                                                [case.data_type])])
        result = subprocess.run(
            snakemake_command("-n", _target(case_id, case.data_type), workdir=workdir,
                              configfiles=[TEST_CONFIG, config]),
            capture_output=True, text=True, cwd=workdir,
        )
        assert result.returncode != 0, f"{case_id}: planning accepted it:\n{_output(result)}"
        culprit, message = _expected(case_id, case)
        assert _reported(result.stdout + result.stderr, culprit, message), (
            f"{case_id}: planning's message does not name {culprit} with /{message}/:\n"
            + _output(result))
    else:
        ingestion = request.getfixturevalue("ingestion")
        workdir, result = ingestion["workdir"], ingestion["result"]
        case = ingestion["cases"][case_id]
        log = (workdir / "results" / "logs" / RULES[case.data_type]
               / f"{_name(case_id)}_sub-01_dtype-{case.data_type}.log")
        assert log.is_file(), f"{case_id}: no ingest log (did planning fail?):\n{_output(result)}"
        culprit, message = _expected(case_id, case)
        text = log.read_text()
        assert _reported(text, culprit, message), (
            f"{case_id}: the ingest log does not name {culprit} with /{message}/:\n{text[-3000:]}")
    _assert_no_ingest_output(workdir, case_id, case.data_type)
