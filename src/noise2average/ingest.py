"""Turn one unit's BIDS repetitions into the workflow's inputs: repetitions, reference, mask.

Real data have no ground truth, so the reference is the best the data offer, and it is
labelled as such in every table:

- repeated scans (``t1w_rep`` runs, ``memprage`` echoes, ``dwi_appa`` phase-encoding
  directions): the mean of *all* repetitions, after the same alignment as the inputs; the
  denoisers get the first ``inputs`` of them;
- ``dti_subsets``: the all-direction tensor fit of the one series, synthesized on the common
  gradient set of the SDnDTI repetitions (:mod:`noise2average.sdndti`).

Repetitions must share a grid (``registration="none"``) or are registered rigidly to the
first (``"rigid"``), as a real preprocessing pipeline would. Images, gradient tables and the
dataset's mask go through the checks of the ``n2a`` command line
(:func:`noise2average.validate.open_repetitions`), headers of all files before any voxel
data, and errors name the file.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import alignment as _alignment
from . import bids as _bids
from . import masking as _masking
from . import sdndti as _sdndti
from . import validate as _validate

__all__ = ["Ingested", "ingest_repetitions"]

_LOG = logging.getLogger(__name__)


@dataclass
class Ingested:
    """The inputs of one unit.

    Attributes
    ----------
    noisy : ndarray of float32, shape (X, Y, Z, R) or (X, Y, Z, M, R)
        The repetitions given to the denoisers, last axis = repetition.
    reference : ndarray of float32, shape (X, Y, Z) or (X, Y, Z, M)
        The reference of the metrics (not a ground truth).
    mask : ndarray of bool, shape (X, Y, Z)
    affine : ndarray of shape (4, 4)
        Grid of the first repetition, which every output shares.
    header : nibabel header of the first repetition
    bvals, bvecs : ndarray of shape (M,) and (M, 3), or None
        Gradient table of ``noisy`` and ``reference`` (diffusion only).
    tensor_fit_series, tensor_fit_bvals, tensor_fit_bvecs : ndarray or None
        Series the reference tensor maps are fitted to (all repetitions' mean, or for
        ``dti_subsets`` every direction of the shell), with its table.
    info : dict
        JSON-serialisable record for the sidecar.
    """

    noisy: np.ndarray
    reference: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    header: object
    bvals: np.ndarray = None
    bvecs: np.ndarray = None
    tensor_fit_series: np.ndarray = None
    tensor_fit_bvals: np.ndarray = None
    tensor_fit_bvecs: np.ndarray = None
    info: dict = field(default_factory=dict)


def _acquisition_warnings(data_type, parameters, names):
    """Sidecar facts that contradict the data type, worth a look but not a stop."""
    warnings = []
    directions = parameters.get("PhaseEncodingDirection") or []
    if data_type == "dwi_appa" and None not in directions and len(set(directions)) == 1:
        warnings.append(
            f"all repetitions share PhaseEncodingDirection {directions[0]!r} although "
            f"dwi_appa expects opposite phase encoding: {', '.join(names)}"
        )
    for warning in warnings:
        _LOG.warning(warning)
    return warnings


def _alignment_volume(image, bvals, b0_threshold):
    """The 3D volume registration works on: the image, or a series' mean b=0 volume."""
    if image.ndim == 3:
        return image
    return image[..., bvals <= b0_threshold].mean(axis=-1)


def _align(images, affines, bvals, registration, b0_threshold):
    """Repetitions on the first one's grid, and a record of what was done."""
    if registration == "none":
        return images, {"registration": "none (one grid checked)"}
    static = _alignment_volume(images[0], bvals, b0_threshold)
    aligned, matrices = [images[0]], [np.eye(4).tolist()]
    for image, affine in zip(images[1:], affines[1:]):
        moving = _alignment_volume(image, bvals, b0_threshold)
        _, matrix = _alignment.rigid_register(moving, affine, static, affines[0])
        resampled = _alignment.apply_rigid(image, affine, images[0].shape, affines[0], matrix)
        aligned.append(resampled.astype(np.float32))
        matrices.append(np.asarray(matrix).tolist())
    return aligned, {
        "registration": "rigid to the first repetition (dipy, mutual information, linear "
                        "interpolation); diffusion directions are not rotated",
        "registration_matrices": matrices,
    }


def _mask(given, mask_path, reference, bvals, b0_threshold):
    """The dataset's mask when it ships one, else one computed from the reference."""
    if given is not None:
        return given, f"from the dataset: {mask_path}"
    if reference.ndim == 4:
        return (_masking.dwi_brain_mask(reference, bvals, b0_threshold=b0_threshold),
                "computed: median_otsu on the mean b=0 volume of the reference")
    return (_masking.t1w_brain_mask(reference),
            "computed: Otsu threshold, largest component, holes filled (a head-region mask)")


def ingest_repetitions(bids_dir, repetition_set, data_type, *, inputs=2, registration="none",
                       b0_threshold=50.0, subsets=None, mask_path=None):
    """Load, check and align one unit's repetitions and build its reference and mask.

    Parameters
    ----------
    bids_dir : str or Path
        Dataset root.
    repetition_set : noise2average.bids.RepetitionSet
        The unit's images (and gradient tables, sidecars), paths relative to ``bids_dir``.
    data_type : {"t1w_rep", "memprage", "dwi_appa", "dti_subsets"}
    inputs : int, optional
        Number of repetitions given to the denoisers (the first ones); the reference
        averages all of them. Ignored for ``dti_subsets``.
    registration : {"none", "rigid"}, optional
        ``none`` requires one grid; ``rigid`` registers every repetition to the first.
    b0_threshold : float, optional
        Largest b-value (s/mm^2) counted as b=0.
    subsets : dict, optional
        ``dti_subsets`` options of :func:`noise2average.sdndti.subset_repetitions`
        (``n_subsets``, ``max_condition``, ``n_rotations``, ``seed``, ``bvalue``).
    mask_path : str or Path, optional
        Brain mask from the dataset, on the first repetition's grid; None computes one.

    Returns
    -------
    Ingested

    Raises
    ------
    ValueError
        Naming the files: echo times out of order; and, as
        `noise2average.validate.InputError`, every problem
        :func:`noise2average.validate.load_repetitions` reports, with fewer repetitions
        than ``inputs`` as too few and grids compared only when ``registration="none"``.
    """
    root = Path(bids_dir)
    names = [str(root / image) for image in repetition_set.images]
    dwi = data_type in ("dwi_appa", "dti_subsets")
    metadata = [_bids.read_sidecar_metadata(root, sidecars)
                for sidecars in repetition_set.sidecars]
    parameters = _bids.repetition_metadata(metadata, data_type=data_type, names=names)

    opened = _validate.open_repetitions(
        names, dwi=dwi, mask=mask_path,
        bvals=[root / bval for bval in repetition_set.bvals] if dwi else None,
        bvecs=[root / bvec for bvec in repetition_set.bvecs] if dwi else None,
        min_repetitions=1 if data_type == "dti_subsets" else inputs,
        b0_threshold=b0_threshold, same_grid=registration == "none",
    )
    images = [opened.read(index) for index in range(len(names))]
    given_mask = opened.read_mask()
    affines = [image.affine for image in opened.images]
    header = opened.images[0].header
    bvals, bvecs = opened.bvals, opened.bvecs
    images, record = _align(images, affines, bvals, registration, b0_threshold)
    info = {
        "unit": repetition_set.unit,
        "source_files": names,
        "repetition_labels": list(repetition_set.labels),
        "acquisition": parameters,
        **record,
        "warnings": _acquisition_warnings(data_type, parameters, names),
    }

    if data_type == "dti_subsets":
        series = images[0]
        options = dict(subsets or {})
        noisy, out_bvals, out_bvecs, subset_info = _sdndti.subset_repetitions(
            series, bvals, bvecs, b0_threshold=b0_threshold, **options
        )
        reference = _sdndti.reference_series(
            series, bvals, bvecs, out_bvals, out_bvecs, b0_threshold=b0_threshold,
            bvalue=options.get("bvalue"),
        )
        used = np.sort(np.concatenate([subset_info["b0_volumes"], subset_info["shell_volumes"]]))
        fit = (series[..., used], bvals[used], bvecs[used])
        info["subsets"] = subset_info
        info["reference"] = "tensor fit of all directions of the shell, synthesized on the common set"
        mask, mask_origin = _mask(given_mask, mask_path, series, bvals, b0_threshold)
        bvals, bvecs = out_bvals, out_bvecs
    else:
        stack = np.stack(images, axis=-1)
        reference = stack.mean(axis=-1, dtype=np.float64).astype(np.float32)
        noisy = stack[..., :inputs]
        fit = (reference, bvals, bvecs) if dwi else (None, None, None)
        info["inputs"] = [names[k] for k in range(inputs)]
        info["reference"] = f"mean of all {len(names)} repetitions (not a ground truth)"
        mask, mask_origin = _mask(given_mask, mask_path, reference, bvals, b0_threshold)
        volumes = [_alignment_volume(image, bvals, b0_threshold) for image in images]
        info["alignment_correlation_with_first"] = _alignment.alignment_qc(volumes, mask)
    info["mask"] = mask_origin
    return Ingested(
        noisy=np.asarray(noisy, dtype=np.float32),
        reference=np.asarray(reference, dtype=np.float32),
        mask=mask,
        affine=affines[0],
        header=header,
        bvals=bvals,
        bvecs=bvecs,
        tensor_fit_series=fit[0],
        tensor_fit_bvals=fit[1],
        tensor_fit_bvecs=fit[2],
        info=info,
    )
