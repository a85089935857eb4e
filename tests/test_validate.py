"""Tests for noise2average.validate: the checks on users' repetitions, masks and tables."""

import re
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest

from bad_inputs import AFFINE, BVALS, BVECS, CASES, SHAPE, dwi, t1w, truncate, write_rows
from noise2average import io
from noise2average.validate import InputError, check_method, load_repetitions

# Cases whose problem only the voxel data show; every other one is found from headers and
# gradient tables alone.
DATA_CASES = {"truncated_gzip", "truncated_uncompressed", "nan_voxel", "inf_voxel", "mask_empty"}


def _validate(case):
    """The command line's order: the method (no file opened), then the files."""
    check_method(case.method, len(case.repetitions), dwi=case.dwi)
    return load_repetitions(case.repetitions, dwi=case.dwi, mask=case.mask, bvals=case.bvals,
                            bvecs=case.bvecs)


def test_the_catalogue_covers_every_kind_of_bad_input():
    assert len(CASES) >= 22
    assert DATA_CASES <= set(CASES)


@pytest.mark.parametrize("case_id", CASES)
def test_bad_input_is_refused_naming_the_culprit(tmp_path, case_id):
    case = CASES[case_id](tmp_path)
    with pytest.raises(InputError, match=case.message) as error:
        _validate(case)
    assert str(error.value).startswith(f"{case.culprit}: "), str(error.value)


@pytest.mark.parametrize("case_id", sorted(set(CASES) - DATA_CASES))
def test_header_problems_are_found_without_reading_voxel_data(tmp_path, monkeypatch, case_id):
    case = CASES[case_id](tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("voxel data read before every header was checked")

    monkeypatch.setattr(io, "read_nifti_data", refuse)
    with pytest.raises(InputError, match=case.message):
        _validate(case)


def test_a_grid_problem_of_run_2_is_reported_before_the_truncated_data_of_run_1(tmp_path):
    case = CASES["shape_mismatch"](tmp_path)
    truncate(case.repetitions[0])
    with pytest.raises(InputError, match=case.message):
        _validate(case)


def test_valid_t1w_runs_load_as_float32_on_the_last_axis(tmp_path):
    case = t1w(tmp_path, runs=3, mask=True)
    # A converter's trailing axis of length 1 is dropped.
    run_3 = nib.load(case.repetitions[2])
    nib.save(nib.Nifti1Image(run_3.get_fdata(dtype=np.float32)[..., None], run_3.affine),
             case.repetitions[2])
    repetitions = _validate(case)
    assert repetitions.data.shape == SHAPE + (3,) and repetitions.data.dtype == np.float32
    for index, path in enumerate(case.repetitions):
        np.testing.assert_array_equal(repetitions.data[..., index],
                                      np.squeeze(nib.load(path).get_fdata(dtype=np.float32)))
    np.testing.assert_array_equal(repetitions.affine, AFFINE)
    assert repetitions.paths == tuple(case.repetitions)
    assert repetitions.header.get_data_shape() == SHAPE
    assert repetitions.mask.dtype == bool and repetitions.mask.shape == SHAPE
    assert 0 < repetitions.mask.mean() < 1
    assert repetitions.bvals is None and repetitions.bvecs is None
    assert load_repetitions(case.repetitions).mask is None


def test_affines_within_header_round_off_count_as_one_grid(tmp_path):
    case = t1w(tmp_path)
    run_2 = nib.load(case.repetitions[1])
    data = run_2.get_fdata(dtype=np.float32)
    for shift_mm, accepted in ((1e-3, True), (0.3, False)):
        shifted = AFFINE.copy()
        shifted[0, 3] += shift_mm
        nib.save(nib.Nifti1Image(data, shifted), case.repetitions[1])
        if accepted:
            np.testing.assert_array_equal(_validate(case).data[..., 1], data)
        else:
            message = re.escape(f"{case.repetitions[1]}: its affine places voxels up to 0.3 mm")
            with pytest.raises(InputError, match=f"^{message}"):
                _validate(case)


def test_valid_dwi_pair_loads_with_its_unit_gradient_table(tmp_path):
    case = replace(dwi(tmp_path, mask=True), method="mppca")
    # Directions written with 3 decimals are scaled to unit length.
    write_rows(case.bvecs[1], np.round(BVECS, 3).T)
    repetitions = _validate(case)
    assert repetitions.data.shape == SHAPE + (7, 2) and repetitions.data.dtype == np.float32
    np.testing.assert_array_equal(repetitions.data[..., 1],
                                  nib.load(case.repetitions[1]).get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(repetitions.bvals, BVALS)
    np.testing.assert_allclose(repetitions.bvecs, BVECS, atol=1e-12)
    assert repetitions.mask.shape == SHAPE and repetitions.mask.any()


def test_too_few_files_and_misplaced_gradient_tables_name_the_argument(tmp_path):
    case = dwi(tmp_path)
    with pytest.raises(InputError, match=r"dir-AP_dwi.nii.gz: 2 repetition\(s\) given, at least 3"):
        load_repetitions(case.repetitions, dwi=True, bvals=case.bvals, bvecs=case.bvecs,
                         min_repetitions=3)
    with pytest.raises(InputError, match=r"^bvecs: 1 file\(s\) for 2 repetitions"):
        load_repetitions(case.repetitions, dwi=True, bvals=case.bvals, bvecs=case.bvecs[:1])
    with pytest.raises(InputError, match=r"^bvals: gradient tables belong to diffusion"):
        load_repetitions(t1w(tmp_path).repetitions, bvals=case.bvals)


@pytest.mark.parametrize("method", ["average", "n2a", "n2n", "bm4d", "aonlm"])
def test_every_method_accepts_two_repetitions_of_either_data_type(method):
    check_method(method, 2, dwi=False)
    check_method(method, 2, dwi=True)


def test_diffusion_methods_need_a_diffusion_series_and_one_repetition():
    for method in ("mppca", "patch2self"):
        check_method(method, 1, dwi=True)
    with pytest.raises(InputError, match="expected one of average, n2a, n2n, bm4d, aonlm, mppca"):
        check_method("n3a", 2, dwi=True)


def test_load_gradients_refuses_a_zero_direction_only_above_the_b0_threshold(tmp_path):
    bval, bvec = tmp_path / "dwi.bval", tmp_path / "dwi.bvec"
    write_rows(bval, [0, 5, 1000])
    write_rows(bvec, np.zeros((3, 3)))
    # Without a threshold (existing callers), zero directions pass anywhere.
    io.load_gradients(bval, bvec)
    io.load_gradients(bval, bvec, b0_threshold=1000)
    with pytest.raises(ValueError, match=r"dwi.bvec: zero direction .*volume\(s\) \[2\]"):
        io.load_gradients(bval, bvec, b0_threshold=50)
