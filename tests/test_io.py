import gzip

import nibabel as nib
import numpy as np
import pytest

from noise2average.io import (
    load_gradients,
    load_nifti,
    read_json,
    save_gradients,
    save_nifti,
    write_json,
)


@pytest.fixture
def affine():
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    return affine


def test_round_trip_keeps_values_geometry_and_float32(tmp_path, affine):
    data = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    path = tmp_path / "image.nii.gz"
    save_nifti(path, data, affine)
    loaded, loaded_affine, header = load_nifti(path, ndim=3)
    np.testing.assert_array_equal(loaded, data)
    np.testing.assert_allclose(loaded_affine, affine)
    assert header.get_data_dtype() == np.float32
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_header_codes_are_kept_from_the_source(tmp_path, affine):
    source = nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), affine)
    source.set_sform(affine, code=4)
    save_nifti(tmp_path / "out.nii.gz", np.ones((3, 3, 3)), affine, header=source.header)
    _, _, header = load_nifti(tmp_path / "out.nii.gz")
    assert int(header["sform_code"]) == 4


def test_bool_masks_are_stored_as_uint8(tmp_path, affine):
    save_nifti(tmp_path / "mask.nii.gz", np.ones((2, 2, 2), bool), affine)
    assert nib.load(tmp_path / "mask.nii.gz").get_data_dtype() == np.uint8


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="absent.nii.gz: file not found"):
        load_nifti(tmp_path / "absent.nii.gz")


def test_text_file_is_not_nifti(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("not an image")
    with pytest.raises(ValueError, match="notes.nii.gz: not a readable NIfTI"):
        load_nifti(path)


def test_truncated_file_is_reported(tmp_path, affine):
    path = tmp_path / "whole.nii.gz"
    save_nifti(path, np.ones((20, 20, 20)), affine)
    raw = gzip.decompress(path.read_bytes())
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(ValueError, match="cut.nii.gz"):
        load_nifti(truncated)


def test_wrong_dimensionality_is_reported(tmp_path, affine):
    save_nifti(tmp_path / "vol.nii.gz", np.ones((2, 2, 2)), affine)
    with pytest.raises(ValueError, match=r"vol.nii.gz: expected a 4D image, got shape \(2, 2, 2\)"):
        load_nifti(tmp_path / "vol.nii.gz", ndim=4)


def test_nan_is_reported(tmp_path, affine):
    data = np.ones((2, 2, 2))
    data[0, 0, 0] = np.nan
    save_nifti(tmp_path / "nan.nii.gz", data, affine)
    with pytest.raises(ValueError, match="nan.nii.gz: contains 1 NaN or Inf"):
        load_nifti(tmp_path / "nan.nii.gz")


def test_json_round_trip_converts_numpy(tmp_path):
    write_json(tmp_path / "a.json", {"x": np.float32(1.5), "v": np.arange(3)})
    assert read_json(tmp_path / "a.json") == {"x": 1.5, "v": [0, 1, 2]}


def test_gradient_table_round_trip_in_fsl_layout(tmp_path):
    bvals = np.array([0.0, 1000.0, 1000.0, 5.0])
    bvecs = np.array([[0, 0, 0], [1, 0, 0], [0, 0.6, 0.8], [0, 0, 0]], dtype=float)
    bval, bvec = tmp_path / "dwi.bval", tmp_path / "dwi.bvec"
    save_gradients(bval, bvec, bvals, bvecs)
    assert bval.read_text().split() == ["0", "1000", "1000", "5"]
    assert len(bvec.read_text().splitlines()) == 3  # FSL: one row per axis
    read_bvals, read_bvecs = load_gradients(bval, bvec, n_volumes=4)
    np.testing.assert_array_equal(read_bvals, bvals)
    np.testing.assert_allclose(read_bvecs, bvecs)
    # Column layout (one row per volume) is accepted too.
    np.savetxt(bvec, bvecs)
    np.testing.assert_allclose(load_gradients(bval, bvec)[1], bvecs)


@pytest.mark.parametrize(
    "bvals, bvecs, n_volumes, message",
    [
        ("0 1000", "0 1\n0 0\n0 0", 3, "2 b-values for a series of 3 volumes"),
        ("0 -1000", "0 1\n0 0\n0 0", None, "finite and >= 0"),
        ("0 1000", "0 1 0\n0 0 1\n0 0 0", None, "does not match the 2 b-values"),
        ("0 1000", "0 0.5\n0 0\n0 0", None, "unit vectors"),
        ("0 abc", "0 1\n0 0\n0 0", None, "cannot read"),
    ],
)
def test_bad_gradient_tables_name_the_file(tmp_path, bvals, bvecs, n_volumes, message):
    bval, bvec = tmp_path / "dwi.bval", tmp_path / "dwi.bvec"
    bval.write_text(bvals)
    bvec.write_text(bvecs)
    with pytest.raises(ValueError, match=message) as error:
        load_gradients(bval, bvec, n_volumes=n_volumes)
    assert "dwi.bv" in str(error.value)
