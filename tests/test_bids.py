"""Tests for noise2average.bids: finding repetition sets in a BIDS dataset."""

import json

import nibabel as nib
import numpy as np
import pytest

from noise2average import bids


def _image(path, shape=(4, 4, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=np.float32), np.eye(4)), path)


def _text(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def _dwi(stem, *, gradients=True):
    _image(stem.with_name(stem.name + ".nii.gz"), (4, 4, 4, 3))
    if gradients:
        _text(stem.with_name(stem.name + ".bval"), "0 1000 1000\n")
        _text(stem.with_name(stem.name + ".bvec"), "0 1 0\n0 0 1\n0 0 0\n")


@pytest.fixture
def dataset(tmp_path):
    """sub-01 without sessions (runs 1, 2, 10; echoes 1-4; DWI AP/PA), sub-02 with two."""
    root = tmp_path / "ds"
    _text(root / "dataset_description.json", {"Name": "tiny", "BIDSVersion": "1.9.0"})
    _text(root / "T1w.json", {"EchoTime": 0.003, "RepetitionTime": 2.3})
    _text(root / "dwi.bval", "0 1000 1000\n")
    _text(root / "dwi.bvec", "0 1 0\n0 0 1\n0 0 0\n")
    _text(root / ".bidsignore", "extra\n")
    _image(root / "derivatives/n2a/sub-01/anat/sub-01_run-1_desc-denoised_T1w.nii.gz")
    _image(root / "sourcedata/sub-01/anat/sub-01_run-9_T1w.nii.gz")
    _text(root / "code/convert.py", "")

    anat = root / "sub-01/anat"
    for run in (1, 2, 10):
        _image(anat / f"sub-01_run-{run}_T1w.nii.gz")
    _text(anat / "sub-01_run-1_T1w.json", {"EchoTime": 0.0025})
    for echo, time in zip((1, 2, 3, 4), (0.0016, 0.0035, 0.0054, 0.0073)):
        _image(anat / f"sub-01_echo-{echo}_T1w.nii.gz")
        _text(anat / f"sub-01_echo-{echo}_T1w.json", {"EchoTime": time})
    for direction, encoding in (("PA", "j"), ("AP", "j-")):
        _dwi(root / f"sub-01/dwi/sub-01_dir-{direction}_dwi")
        _text(root / f"sub-01/dwi/sub-01_dir-{direction}_dwi.json",
              {"PhaseEncodingDirection": encoding, "TotalReadoutTime": 0.05})

    for run in (1, 2, 3):
        _image(root / f"sub-02/ses-1/anat/sub-02_ses-1_run-{run}_T1w.nii.gz")
    _dwi(root / "sub-02/ses-1/dwi/sub-02_ses-1_dwi", gradients=False)
    _image(root / "sub-02/ses-2/anat/sub-02_ses-2_run-1_T1w.nii.gz")
    return root


def test_list_bids_files_skips_derivatives_sourcedata_code_and_hidden(dataset):
    paths = bids.list_bids_files(dataset)
    assert "sub-01/anat/sub-01_run-10_T1w.nii.gz" in paths
    assert "T1w.json" in paths
    assert paths == sorted(paths)
    assert not [p for p in paths if p.split("/")[0] in ("derivatives", "sourcedata", "code")]
    assert ".bidsignore" not in paths


def test_list_bids_files_names_folder_without_dataset_description(tmp_path):
    (tmp_path / "raw/sub-01").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"raw.*dataset_description\.json"):
        bids.list_bids_files(tmp_path / "raw")
    with pytest.raises(ValueError, match="absent.*not found"):
        bids.list_bids_files(tmp_path / "absent")


def test_parse_entities_gives_string_values_and_pybids_names():
    entities = bids.parse_entities("sub-01/ses-2/dwi/sub-01_ses-2_acq-hi_dir-AP_run-01_dwi.nii.gz")
    assert entities == {
        "subject": "01", "session": "2", "acquisition": "hi", "direction": "AP", "run": "01",
        "suffix": "dwi", "datatype": "dwi", "extension": ".nii.gz",
    }


def test_runs_are_ordered_numerically_and_units_labelled_by_session(dataset):
    sets = bids.find_repetitions(bids.list_bids_files(dataset), "t1w_rep")
    # sub-02 session 2 has a single run: left out since no subject was requested.
    assert list(sets) == ["01", "02_ses-1"]
    first = sets["01"]
    assert first.labels == ("1", "2", "10")
    assert first.images == tuple(f"sub-01/anat/sub-01_run-{r}_T1w.nii.gz" for r in (1, 2, 10))
    assert (first.subject, first.session, first.bvals) == ("01", None, ())
    second = sets["02_ses-1"]
    assert (second.subject, second.session, second.labels) == ("02", "1", ("1", "2", "3"))


def test_subject_and_session_labels_accepted_with_or_without_prefix(dataset):
    paths = bids.list_bids_files(dataset)
    plain = bids.find_repetitions(paths, "t1w_rep", subjects=["02"], sessions=["1"])
    prefixed = bids.find_repetitions(paths, "t1w_rep", subjects=["sub-02"], sessions=["ses-1"])
    assert list(plain) == list(prefixed) == ["02_ses-1"]
    assert plain == prefixed


def test_requested_subject_without_enough_repetitions_raises(dataset):
    paths = bids.list_bids_files(dataset)
    message = r"02_ses-2.*sub-02_ses-2_run-1_T1w\.nii\.gz.*min_repetitions"
    with pytest.raises(ValueError, match=message):
        bids.find_repetitions(paths, "t1w_rep", subjects=["02"])
    with pytest.raises(ValueError, match="subject.*03"):
        bids.find_repetitions(paths, "t1w_rep", subjects=["03"])


def test_unit_with_one_repetition_is_left_out_of_all_with_its_file_named(dataset, caplog):
    sets = bids.find_repetitions(bids.list_bids_files(dataset), "t1w_rep")
    assert "02_ses-2" not in sets and "02_ses-1" in sets
    [warning] = [record for record in caplog.records if record.levelname == "WARNING"]
    assert "'02_ses-2'" in warning.getMessage()
    assert "sub-02/ses-2/anat/sub-02_ses-2_run-1_T1w.nii.gz" in warning.getMessage()


def test_differing_acquisitions_raise_and_a_filter_selects_one(dataset):
    for run in (1, 2):
        _image(dataset / f"sub-01/anat/sub-01_acq-fast_run-{run}_T1w.nii.gz")
    paths = bids.list_bids_files(dataset)
    message = r"'01'.*acquisition.*'fast'.*sub-01_acq-fast_run-1_T1w.*filter"
    with pytest.raises(ValueError, match=message) as error:
        bids.find_repetitions(paths, "t1w_rep")
    assert "sub-01_run-10_T1w" in str(error.value)
    fast = bids.find_repetitions(paths, "t1w_rep", filters={"acq": "fast"})
    assert fast["01"].labels == ("1", "2")
    plain = bids.find_repetitions(paths, "t1w_rep", filters={"acquisition": None})
    assert plain["01"].labels == ("1", "2", "10")


def test_same_label_twice_raises(dataset):
    paths = bids.list_bids_files(dataset) + ["sub-01/anat/sub-01_run-2_T1w.nii"]
    with pytest.raises(ValueError, match=r"'01'.*sub-01_run-2_T1w\.nii,"):
        bids.find_repetitions(paths, "t1w_rep")


def test_sidecars_inherit_and_specific_values_override(dataset):
    sets = bids.find_repetitions(bids.list_bids_files(dataset), "t1w_rep")
    run1, run2, _ = sets["01"].sidecars
    assert run1 == ("T1w.json", "sub-01/anat/sub-01_run-1_T1w.json")
    assert run2 == ("T1w.json",)
    assert bids.read_sidecar_metadata(dataset, run1) == {"EchoTime": 0.0025, "RepetitionTime": 2.3}
    assert bids.read_sidecar_metadata(dataset, run2)["EchoTime"] == 0.003


def test_memprage_echoes_give_increasing_echo_times(dataset):
    echoes = bids.find_repetitions(bids.list_bids_files(dataset), "memprage")["01"]
    assert echoes.labels == ("1", "2", "3", "4")
    metadata = [bids.read_sidecar_metadata(dataset, s) for s in echoes.sidecars]
    parameters = bids.repetition_metadata(metadata, data_type="memprage", names=echoes.images)
    assert parameters == {"EchoTime": [0.0016, 0.0035, 0.0054, 0.0073]}


@pytest.mark.parametrize("echo_time", [0.001, 0.0016])
def test_echo_times_not_increasing_raise_naming_files(dataset, echo_time):
    # Echo 2 earlier than, or simultaneous with, echo 1 (0.0016 s).
    _text(dataset / "sub-01/anat/sub-01_echo-2_T1w.json", {"EchoTime": echo_time})
    echoes = bids.find_repetitions(bids.list_bids_files(dataset), "memprage")["01"]
    metadata = [bids.read_sidecar_metadata(dataset, s) for s in echoes.sidecars]
    with pytest.raises(ValueError, match=rf"sub-01_echo-2_T1w\.nii\.gz: EchoTime={echo_time}"):
        bids.repetition_metadata(metadata, data_type="memprage", names=echoes.images)
    # Other data types have no echo ordering to check.
    assert bids.repetition_metadata(metadata, data_type="t1w_rep")["EchoTime"][1] == echo_time


def test_dwi_directions_ordered_with_their_own_gradients(dataset):
    pair = bids.find_repetitions(bids.list_bids_files(dataset), "dwi_appa")["01"]
    assert pair.labels == ("AP", "PA")
    assert pair.bvals == ("sub-01/dwi/sub-01_dir-AP_dwi.bval", "sub-01/dwi/sub-01_dir-PA_dwi.bval")
    assert pair.bvecs == ("sub-01/dwi/sub-01_dir-AP_dwi.bvec", "sub-01/dwi/sub-01_dir-PA_dwi.bvec")
    metadata = [bids.read_sidecar_metadata(dataset, s) for s in pair.sidecars]
    parameters = bids.repetition_metadata(metadata, data_type="dwi_appa")
    assert parameters == {"PhaseEncodingDirection": ["j-", "j"], "TotalReadoutTime": [0.05, 0.05]}


def test_single_dwi_inherits_top_level_gradients_and_directions_are_ambiguous(dataset):
    paths = bids.list_bids_files(dataset)
    single = bids.find_repetitions(paths, "dti_subsets", subjects=["02"])
    assert list(single) == ["02_ses-1"]
    assert single["02_ses-1"].images == ("sub-02/ses-1/dwi/sub-02_ses-1_dwi.nii.gz",)
    assert (single["02_ses-1"].bvals, single["02_ses-1"].bvecs) == (("dwi.bval",), ("dwi.bvec",))
    with pytest.raises(ValueError, match=r"'01'.*direction.*'AP'.*'PA'"):
        bids.find_repetitions(paths, "dti_subsets")


def test_gradients_inherited_from_subject_file_or_missing(dataset):
    paths = [p for p in bids.list_bids_files(dataset)
             if p not in ("dwi.bval", "sub-01/dwi/sub-01_dir-PA_dwi.bval")]
    with pytest.raises(ValueError, match=r"sub-01_dir-PA_dwi\.nii\.gz: no \.bval"):
        bids.find_repetitions(paths, "dwi_appa")
    pair = bids.find_repetitions(paths + ["sub-01/dwi/sub-01_dwi.bval"], "dwi_appa")["01"]
    assert pair.bvals == ("sub-01/dwi/sub-01_dir-AP_dwi.bval", "sub-01/dwi/sub-01_dwi.bval")
