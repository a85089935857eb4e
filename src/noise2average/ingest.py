"""Turn one unit's BIDS repetitions into the workflow's inputs: repetitions, reference, mask.

Real data have no ground truth, so the reference is the best the data offer, and it is
labelled as such in every table:

- repeated scans (``t1w_rep`` runs, ``memprage`` echoes, ``dwi_appa`` phase-encoding
  directions): the mean of *all* repetitions, after the same alignment as the inputs; the
  denoisers get the first ``inputs`` of them;
- ``dti_subsets``: the all-direction tensor fit of the one series, synthesized on the common
  gradient set of the SDnDTI repetitions (:mod:`noise2average.sdndti`).

Repetitions must share a grid (``registration="none"``) or are registered rigidly to the
first (``"rigid"``), as a real preprocessing pipeline would. Everything is checked before any
heavy computation, and errors name the file.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import alignment as _alignment
from . import bids as _bids
from . import masking as _masking
from . import sdndti as _sdndti
from .io import load_gradients, load_nifti

__all__ = ["Ingested", "ingest_repetitions"]

_LOG = logging.getLogger(__name__)

#: Largest difference between the gradient tables of two DWI repetitions: b-values
#: (s/mm^2, relative) and directions (sign-invariant, 1 - |cos|).
_BVAL_RTOL = 0.02
_BVEC_TOL = 1e-3


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


def _same_table(names, tables):
    bvals0, bvecs0 = tables[0]
    for name, (bvals, bvecs) in zip(names[1:], tables[1:]):
        if bvals.shape != bvals0.shape:
            raise ValueError(
                f"{name}: {bvals.size} volumes, but {names[0]} has {bvals0.size}; the "
                "repetitions of a diffusion series need one gradient table"
            )
        scale = np.maximum(np.abs(bvals0), 1.0)
        weighted = bvals0 > 0
        cosine = np.abs(np.sum(bvecs[weighted] * bvecs0[weighted], axis=1))
        if np.any(np.abs(bvals - bvals0) > _BVAL_RTOL * scale) or np.any(1 - cosine > _BVEC_TOL):
            raise ValueError(
                f"{name}: its gradient table differs from {names[0]}'s; the repetitions "
                "of a diffusion series need one gradient table"
            )


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


def _unit_directions(bvals, bvecs):
    """The table with its directions scaled to unit length (files carry 4-6 decimals)."""
    norms = np.linalg.norm(bvecs, axis=1, keepdims=True)
    return bvals, np.where(norms > 1e-6, bvecs / np.where(norms > 1e-6, norms, 1.0), 0.0)


def _volume(image, name):
    """A T1w image as a 3D volume; converters often write a trailing axis of length 1."""
    if image.ndim == 4:
        if image.shape[3] != 1:
            raise ValueError(
                f"{name}: {image.shape[3]} volumes along the 4th axis, but a T1w repetition is "
                "one 3D volume"
            )
        return image[..., 0]
    return image


def _alignment_volume(image, bvals, b0_threshold):
    """The 3D volume registration works on: the image, or a series' mean b=0 volume."""
    if image.ndim == 3:
        return image
    return image[..., bvals <= b0_threshold].mean(axis=-1)


def _align(images, affines, names, bvals, registration, b0_threshold):
    """Repetitions on the first one's grid, and a record of what was done."""
    shapes = [image.shape[:3] for image in images]
    if registration == "none":
        _alignment.check_same_grid(names, shapes, affines)
        return images, {"registration": "none (one grid checked)"}
    static = _alignment_volume(images[0], bvals, b0_threshold)
    aligned, matrices = [images[0]], [np.eye(4).tolist()]
    for image, affine in zip(images[1:], affines[1:]):
        moving = _alignment_volume(image, bvals, b0_threshold)
        _, matrix = _alignment.rigid_register(moving, affine, static, affines[0])
        aligned.append(
            _alignment.apply_rigid(image, affine, shapes[0], affines[0], matrix).astype(np.float32)
        )
        matrices.append(np.asarray(matrix).tolist())
    return aligned, {
        "registration": "rigid to the first repetition (dipy, mutual information, linear "
                        "interpolation); diffusion directions are not rotated",
        "registration_matrices": matrices,
    }


def _mask(mask_path, reference, bvals, affine, b0_threshold):
    if mask_path is not None:
        mask, mask_affine = load_nifti(mask_path, ndim=3)[:2]
        _alignment.check_same_grid(
            ["the first repetition", str(mask_path)], [reference.shape[:3], mask.shape],
            [affine, mask_affine],
        )
        mask = mask > 0
        if not mask.any():
            raise ValueError(f"{mask_path}: the mask is empty")
        return mask, f"from the dataset: {mask_path}"
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
        Naming the file: unreadable or non-NIfTI images, wrong dimensionality, NaN or Inf,
        grids that differ without registration, gradient tables that differ between
        repetitions or do not match their series, fewer repetitions than ``inputs``, echo
        times out of order, an empty mask.
    """
    root = Path(bids_dir)
    names = [str(root / image) for image in repetition_set.images]
    dwi = data_type in ("dwi_appa", "dti_subsets")
    if data_type != "dti_subsets" and len(names) < inputs:
        raise ValueError(
            f"{names[0]}: {len(names)} repetitions found, {inputs} requested as inputs"
        )
    metadata = [_bids.read_sidecar_metadata(root, sidecars)
                for sidecars in repetition_set.sidecars]
    parameters = _bids.repetition_metadata(metadata, data_type=data_type, names=names)

    loaded = [load_nifti(name, ndim=4 if dwi else (3, 4)) for name in names]
    images = [image if dwi else _volume(image, name) for (image, _, _), name in zip(loaded, names)]
    affines = [affine for _, affine, _ in loaded]
    header = loaded[0][2]
    bvals = bvecs = None
    if dwi:
        tables = [
            _unit_directions(*load_gradients(root / bval, root / bvec, n_volumes=image.shape[3]))
            for bval, bvec, image in zip(repetition_set.bvals, repetition_set.bvecs, images)
        ]
        _same_table(names, tables)
        bvals, bvecs = tables[0]
    images, record = _align(images, affines, names, bvals, registration, b0_threshold)
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
        mask, mask_origin = _mask(mask_path, series, bvals, affines[0], b0_threshold)
        bvals, bvecs = out_bvals, out_bvecs
    else:
        stack = np.stack(images, axis=-1)
        reference = stack.mean(axis=-1, dtype=np.float64).astype(np.float32)
        noisy = stack[..., :inputs]
        fit = (reference, bvals, bvecs) if dwi else (None, None, None)
        info["inputs"] = [names[k] for k in range(inputs)]
        info["reference"] = f"mean of all {len(names)} repetitions (not a ground truth)"
        mask, mask_origin = _mask(mask_path, reference, bvals, affines[0], b0_threshold)
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
