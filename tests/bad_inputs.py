"""A catalogue of bad inputs, each written as a tiny BIDS dataset, for three test suites.

The same cases go through the validation API (``tests/test_validate.py``), the ``n2a``
command line and the workflow's BIDS ingestion, which must all refuse them with a message
that names the culprit. ``CASES`` maps a case id to its builder; ``build(root)`` writes
subject ``sub-01`` under ``root`` and returns a `Case`:

- T1w repetitions ``sub-01/anat/sub-01_run-<k>_T1w.nii.gz`` (two runs unless said);
- DWI repetitions ``sub-01/dwi/sub-01_dir-{AP,PA}_dwi.nii.gz`` with their ``.bval`` and
  ``.bvec`` beside them;
- a mask ``sub-01/<anat or dwi>/sub-01_desc-brain_mask.nii.gz``: the workflow takes a mask
  from the data type's own folder (``noise2average.datasets._dataset_masks``).

Images are 12^3 voxels: a bright noisy ball on a dim background. `t1w` and `dwi` build the
valid datasets the cases start from.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from noise2average.io import save_nifti

SHAPE = (12, 12, 12)
#: 2 mm voxels, centred on the world origin.
AFFINE = np.array([[2.0, 0, 0, -11], [0, 2.0, 0, -11], [0, 0, 2.0, -11], [0, 0, 0, 1]])
#: One b=0 volume and six directions at b=1000 s/mm^2.
BVALS = np.array([0.0, 1000, 1000, 1000, 1000, 1000, 1000])
BVECS = np.array(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=float
)
BVECS /= np.maximum(np.linalg.norm(BVECS, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class Case:
    """One input set and, for a bad one, what its error message must say.

    Attributes
    ----------
    repetitions : list of Path
        The repetition images, in order.
    mask : Path or None
    bvals, bvecs : list of Path or None
        Gradient files, one per repetition (DWI only).
    method : str
        Denoising method asked for.
    data_type : {"t1w_rep", "dwi_appa"}
        The workflow's data type of the repetitions.
    culprit : Path or str or None
        What the message must name (the validation API starts with it): a file, or an
        argument name (``"method"``); None for valid inputs.
    message : str or None
        Regular expression the message must contain.
    bids_applicable : bool
        False when the workflow's BIDS ingestion cannot express the case (a method is a
        workflow setting, not part of the dataset).
    """

    repetitions: list
    mask: Path = None
    bvals: list = None
    bvecs: list = None
    method: str = "n2a"
    data_type: str = "t1w_rep"
    culprit: object = None
    message: str = None
    bids_applicable: bool = True

    @property
    def dwi(self):
        """Diffusion series rather than T1w volumes."""
        return self.data_type == "dwi_appa"


CASES = {}


def _case(build):
    """Register a builder in `CASES` under its function name."""
    CASES[build.__name__] = build
    return build


# -- valid inputs and the writers the cases use ------------------------------------------------


def _signal(dwi=False):
    """Noise-free phantom of shape SHAPE (+ (7,) for DWI): a ball of 100 in a background of 10."""
    radius = np.linalg.norm(np.indices(SHAPE) - (np.array(SHAPE)[:, None, None, None] - 1) / 2,
                            axis=0)
    ball = np.where(radius < 4.5, 100.0, 10.0)
    # Diffusion weighting attenuates the signal as in brain tissue (D = 0.7e-3 mm^2/s).
    return ball[..., None] * np.exp(-0.7e-3 * BVALS) if dwi else ball


def _noisy(signal, seed):
    return (signal + np.random.default_rng(seed).normal(0.0, 5.0, signal.shape)).astype(np.float32)


def _save(path, data, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_nifti(path, data, affine)
    return path


def write_rows(path, rows):
    """A gradient file in FSL layout: one line per row of ``rows``."""
    np.savetxt(path, np.atleast_2d(rows), fmt="%.6g")
    return path


def truncate(path):
    """Cut a file in half, as an interrupted copy or download leaves it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _dataset(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        '{"Name": "noise2average bad input", "BIDSVersion": "1.9.0"}\n'
    )


def _mask_path(root, folder):
    return root / "sub-01" / folder / "sub-01_desc-brain_mask.nii.gz"


def t1w(root, *, runs=2, mask=False):
    """Valid T1w runs (and mask) of ``sub-01``."""
    _dataset(root)
    anat = root / "sub-01" / "anat"
    repetitions = [_save(anat / f"sub-01_run-{k}_T1w.nii.gz", _noisy(_signal(), seed=k))
                   for k in range(1, runs + 1)]
    mask = _save(_mask_path(root, "anat"), _signal() > 50) if mask else None
    return Case(repetitions=repetitions, mask=mask)


def dwi(root, *, mask=False):
    """A valid AP/PA diffusion pair of ``sub-01``, each with its gradient table (and mask)."""
    _dataset(root)
    stems = [root / "sub-01" / "dwi" / f"sub-01_dir-{d}_dwi" for d in ("AP", "PA")]
    repetitions = [_save(stem.with_suffix(".nii.gz"), _noisy(_signal(dwi=True), seed=k))
                   for k, stem in enumerate(stems)]
    bvals = [write_rows(stem.with_suffix(".bval"), BVALS) for stem in stems]
    bvecs = [write_rows(stem.with_suffix(".bvec"), BVECS.T) for stem in stems]
    mask = _save(_mask_path(root, "dwi"), _signal() > 50) if mask else None
    return Case(repetitions=repetitions, mask=mask, bvals=bvals, bvecs=bvecs,
                data_type="dwi_appa")


def _shifted(affine=AFFINE, mm=4.0):
    moved = affine.copy()
    moved[0, 3] += mm
    return moved


# -- files that are not readable images ---------------------------------------------------------


@_case
def missing_file(root):
    """Run 2 is a dangling link, as a DataLad/git-annex file that was never fetched."""
    case = t1w(root)
    path = case.repetitions[1]
    path.unlink()
    path.symlink_to("never-fetched.nii.gz")
    return replace(case, culprit=path, message="file not found")


@_case
def empty_file(root):
    case = t1w(root)
    case.repetitions[1].write_bytes(b"")
    return replace(case, culprit=case.repetitions[1], message=r"empty file \(0 bytes\)")


@_case
def text_named_nifti(root):
    case = t1w(root)
    case.repetitions[1].write_text("run 2 was exported as DICOM, see the scanner console\n")
    return replace(case, culprit=case.repetitions[1], message="not a readable NIfTI image")


@_case
def truncated_gzip(root):
    """Run 2's gzip stream is cut: the header reads, the voxel data do not."""
    case = t1w(root)
    truncate(case.repetitions[1])
    return replace(case, culprit=case.repetitions[1], message="truncated or corrupt image data")


@_case
def truncated_uncompressed(root):
    """Run 2 is an uncompressed ``.nii`` cut in the middle of its voxel data."""
    case = t1w(root)
    case.repetitions[1].unlink()
    path = _save(root / "sub-01" / "anat" / "sub-01_run-2_T1w.nii", _noisy(_signal(), seed=2))
    truncate(path)
    return replace(case, repetitions=[case.repetitions[0], path], culprit=path,
                   message="truncated or corrupt image data")


# -- dimensionality, shape and grid ---------------------------------------------------------------


@_case
def t1w_2d(root):
    case = t1w(root)
    _save(case.repetitions[1], _noisy(_signal(), seed=2)[:, :, 6])
    return replace(case, culprit=case.repetitions[1], message=r"expected a 3D .*shape \(12, 12\)")


@_case
def t1w_several_volumes(root):
    case = t1w(root)
    volume = _noisy(_signal(), seed=2)
    _save(case.repetitions[1], np.stack([volume, volume], axis=-1))
    return replace(case, culprit=case.repetitions[1], message="2 volumes along the 4th axis")


@_case
def dwi_3d(root):
    case = dwi(root)
    _save(case.repetitions[1], _noisy(_signal(), seed=2))
    return replace(case, culprit=case.repetitions[1], message="expected a 4D image")


@_case
def dwi_volume_count_mismatch(root):
    """PA lacks its last volume, and its gradient table matches it."""
    case = dwi(root)
    _save(case.repetitions[1], _noisy(_signal(dwi=True), seed=2)[..., :6])
    write_rows(case.bvals[1], BVALS[:6])
    write_rows(case.bvecs[1], BVECS[:6].T)
    return replace(case, culprit=case.repetitions[1], message="6 volumes, but .*dir-AP.* has 7")


@_case
def shape_mismatch(root):
    case = t1w(root)
    _save(case.repetitions[1], _noisy(_signal(), seed=2)[:, :, :10])
    return replace(case, culprit=case.repetitions[1],
                   message=r"grid shape \(12, 12, 10\) differs from \(12, 12, 12\) of .*run-1")


@_case
def affine_mismatch(root):
    case = t1w(root)
    _save(case.repetitions[1], _noisy(_signal(), seed=2), _shifted())
    return replace(case, culprit=case.repetitions[1], message="4 mm away from those of .*run-1")


# -- voxel values ---------------------------------------------------------------------------------


@_case
def nan_voxel(root):
    case = t1w(root)
    volume = _noisy(_signal(), seed=2)
    volume[6, 6, 6] = np.nan
    _save(case.repetitions[1], volume)
    return replace(case, culprit=case.repetitions[1], message="1 NaN or Inf voxels")


@_case
def inf_voxel(root):
    case = t1w(root)
    volume = _noisy(_signal(), seed=2)
    volume[0, 0, :3] = np.inf
    _save(case.repetitions[1], volume)
    return replace(case, culprit=case.repetitions[1], message="3 NaN or Inf voxels")


# -- mask -----------------------------------------------------------------------------------------


@_case
def mask_empty(root):
    case = t1w(root, mask=True)
    _save(case.mask, np.zeros(SHAPE, dtype=bool))
    return replace(case, culprit=case.mask, message="the mask is empty")


@_case
def mask_shape_mismatch(root):
    case = t1w(root, mask=True)
    _save(case.mask, _signal()[:, :, :10] > 50)
    return replace(case, culprit=case.mask, message=r"grid shape \(12, 12, 10\) differs")


@_case
def mask_affine_mismatch(root):
    case = t1w(root, mask=True)
    _save(case.mask, _signal() > 50, _shifted())
    return replace(case, culprit=case.mask, message="4 mm away from those of .*run-1")


@_case
def mask_4d(root):
    case = t1w(root, mask=True)
    _save(case.mask, np.stack([_signal() > 50] * 2, axis=-1))
    return replace(case, culprit=case.mask, message="expected a 3D image")


# -- gradient tables ------------------------------------------------------------------------------


@_case
def bval_count(root):
    case = dwi(root)
    write_rows(case.bvals[1], BVALS[:6])
    return replace(case, culprit=case.bvals[1], message="6 b-values for a series of 7 volumes")


@_case
def bvec_count(root):
    case = dwi(root)
    write_rows(case.bvecs[1], BVECS[:6].T)
    return replace(case, culprit=case.bvecs[1], message=r"shape \(3, 6\) does not match the 7")


@_case
def bvec_not_unit(root):
    case = dwi(root)
    write_rows(case.bvecs[1], (BVECS * np.array([1, 1, 0.5, 1, 1, 1, 1])[:, None]).T)
    return replace(case, culprit=case.bvecs[1], message=r"unit vectors.*volume\(s\) \[2\]")


@_case
def bvec_zero_on_weighted(root):
    """Volume 3 has b=1000 but no direction."""
    case = dwi(root)
    bvecs = BVECS.copy()
    bvecs[3] = 0.0
    write_rows(case.bvecs[1], bvecs.T)
    return replace(case, culprit=case.bvecs[1], message=r"zero direction .* volume\(s\) \[3\]")


@_case
def bval_negative(root):
    case = dwi(root)
    write_rows(case.bvals[1], BVALS * np.array([1, 1, 1, -1, 1, 1, 1]))
    return replace(case, culprit=case.bvals[1], message="finite and >= 0")


@_case
def bval_not_numeric(root):
    case = dwi(root)
    case.bvals[1].write_text("0 1000 1000 b1000 1000 1000 1000\n")
    return replace(case, culprit=case.bvals[1], message="cannot read a numeric gradient table")


@_case
def bvals_differ(root):
    """PA's last volume was acquired at b=1500, AP's at b=1000."""
    case = dwi(root)
    write_rows(case.bvals[1], np.append(BVALS[:-1], 1500))
    return replace(case, culprit=case.bvals[1],
                   message=r"b-values of volume\(s\) \[6\] differ from those of .*dir-AP")


@_case
def bvecs_differ(root):
    """PA's directions are AP's in another order."""
    case = dwi(root)
    write_rows(case.bvecs[1], BVECS[[0, 2, 1, 3, 4, 5, 6]].T)
    return replace(case, culprit=case.bvecs[1],
                   message=r"directions of volume\(s\) \[1, 2\] differ from those of .*dir-AP")


# -- method ---------------------------------------------------------------------------------------


@_case
def one_repetition(root):
    """One run for Noise2Average, which learns from pairs (the workflow's planning refuses a
    single run with a message of its own)."""
    return replace(t1w(root, runs=1), culprit="method", message="n2a needs at least 2 repetitions")


@_case
def unknown_method(root):
    return replace(t1w(root), method="n3a", culprit="method", bids_applicable=False,
                   message=r"unknown method 'n3a'; expected one of .*n2a")


@_case
def dwi_method_on_t1w(root):
    return replace(t1w(root), method="mppca", culprit="method", bids_applicable=False,
                   message="mppca denoises diffusion series only")
