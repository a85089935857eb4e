"""Diffusion-tensor maps of a (denoised) DWI series and their errors against a reference.

A denoiser is judged not only on the DWIs but on what they are used for: the diffusion
tensor. :func:`fit_tensor` fits dipy's weighted-least-squares tensor model and returns the
scalar maps and the principal direction; the error functions compare those maps with the
maps of the noise-free (ground-truth) data inside a mask.

Units
-----
b-values are in s/mm^2, so the diffusivities MD, AD and RD are in mm^2/s (about 0.7e-3 in
brain tissue). FA is dimensionless in [0, 1] for a positive-definite tensor. Angles are in
degrees.

Definitions
-----------
FA, MD, AD, RD
    Fractional anisotropy, mean diffusivity ``(l1 + l2 + l3) / 3``, axial diffusivity
    ``l1`` and radial diffusivity ``(l2 + l3) / 2`` of the eigenvalues ``l1 >= l2 >= l3``
    (dipy's definitions).
V1
    Unit eigenvector of ``l1``. Its sign is arbitrary: ``v`` and ``-v`` are the same
    direction.
colour FA
    ``|V1| * FA`` per component (x, y, z), the usual red/green/blue direction map.
V1 angular error (degrees, in [0, 90])
    ``atan2(|v x r|, |v . r|)`` per voxel, i.e. the angle between the two axes regardless of
    sign, averaged over the mask. The ``atan2`` form is accurate for small angles (unlike
    ``arccos`` of a dot product near 1).
map MAE
    ``mean(|x - r|[M])`` in the map's own units (not normalised, unlike
    :func:`noise2average.metrics.mae`).
"""

from __future__ import annotations

import numpy as np

from ._validation import as_mask, check_shapes

__all__ = [
    "DTI_SCALAR_MAPS",
    "DTI_METRIC_NAMES",
    "fit_tensor",
    "angular_error_map",
    "angular_error_deg",
    "map_mae",
    "white_matter_mask",
    "dti_metrics",
]

#: Scalar maps returned by :func:`fit_tensor` (float32, shape (X, Y, Z)).
DTI_SCALAR_MAPS = ("fa", "md", "ad", "rd")

#: Metric names reported by :func:`dti_metrics`, in order; lower is better for all of them.
DTI_METRIC_NAMES = ("fa_mae", "md_mae", "ad_mae", "rd_mae", "v1_angle")


def _check_gradient_table(bvals, bvecs, b0_threshold):
    """Validate a DWI gradient table on its own, without the image.

    Parameters
    ----------
    bvals : array_like of shape (N,)
        b-values in s/mm^2.
    bvecs : array_like of shape (N, 3)
        Gradient directions.
    b0_threshold : float
        Volumes with ``bval <= b0_threshold`` (s/mm^2) are b=0 volumes.

    Returns
    -------
    bvals : ndarray of float64, shape (N,)
    bvecs : ndarray of float64, shape (N, 3)
    b0_threshold : float

    Raises
    ------
    ValueError
        If the shapes or counts disagree, a value is non-finite or a b-value negative,
        no volume is a b=0 volume, or fewer than 6 are diffusion weighted (a tensor fit
        needs 6).
    """
    bvals = np.asarray(bvals, dtype=np.float64)
    bvecs = np.asarray(bvecs, dtype=np.float64)
    if bvals.ndim != 1:
        raise ValueError(f"bvals must be 1D (N,), got shape {bvals.shape}")
    if bvecs.ndim != 2 or bvecs.shape[1] != 3:
        raise ValueError(f"bvecs must have shape (N, 3), got shape {bvecs.shape}")
    if bvals.shape[0] != bvecs.shape[0]:
        raise ValueError(
            f"bvals has {bvals.shape[0]} entries but bvecs has {bvecs.shape[0]} directions"
        )
    if not (np.all(np.isfinite(bvals)) and np.all(np.isfinite(bvecs))):
        raise ValueError("bvals and bvecs must be finite")
    if np.any(bvals < 0):
        raise ValueError(f"bvals must be >= 0, got minimum {bvals.min()}")
    b0_threshold = float(b0_threshold)
    if not b0_threshold >= 0:
        raise ValueError(f"b0_threshold must be >= 0, got {b0_threshold}")
    n_b0 = int(np.sum(bvals <= b0_threshold))
    if n_b0 == 0:
        raise ValueError(
            f"no b=0 volume: all bvals exceed b0_threshold={b0_threshold} "
            f"(minimum bval {bvals.min()})"
        )
    if bvals.shape[0] - n_b0 < 6:
        n_dw = bvals.shape[0] - n_b0
        raise ValueError(f"a tensor fit needs at least 6 diffusion-weighted volumes, got {n_dw}")
    return bvals, bvecs, b0_threshold


def _check_gradients(dwi, bvals, bvecs, b0_threshold):
    """Validate DWI series and gradient table; return float64 bvals (N,) and bvecs (N, 3)."""
    if dwi.ndim != 4:
        raise ValueError(f"dwi must be 4D (X, Y, Z, N), got shape {dwi.shape}")
    # The table is checked first: its volume count is only defined once bvals is (N,).
    bvals, bvecs, b0_threshold = _check_gradient_table(bvals, bvecs, b0_threshold)
    if bvals.shape[0] != dwi.shape[-1]:
        raise ValueError(
            f"bvals/bvecs have {bvals.shape[0]} entries but dwi has {dwi.shape[-1]} volumes"
        )
    return bvals, bvecs, b0_threshold


def fit_tensor(dwi, bvals, bvecs, *, mask=None, b0_threshold=50.0):
    """Fit a diffusion tensor per voxel (dipy, weighted least squares) and return its maps.

    Parameters
    ----------
    dwi : ndarray, shape (X, Y, Z, N)
        Diffusion-weighted series, magnitude intensities, including at least one b=0 volume.
    bvals : array-like, shape (N,)
        b-values in s/mm^2.
    bvecs : array-like, shape (N, 3)
        Unit gradient directions (any vector, e.g. zeros, for the b=0 volumes).
    mask : ndarray of bool, shape (X, Y, Z), optional
        Voxels to fit. None: every voxel. Voxels outside the mask are 0 in every map.
    b0_threshold : float, optional
        Volumes with ``bval <= b0_threshold`` (s/mm^2) are b=0 volumes.

    Returns
    -------
    dict of str to ndarray
        ``"fa"``, ``"md"``, ``"ad"``, ``"rd"``: float32, shape (X, Y, Z); FA dimensionless,
        diffusivities in mm^2/s. ``"v1"``: float32, shape (X, Y, Z, 3), unit principal
        eigenvector (arbitrary sign). ``"color_fa"``: float32, shape (X, Y, Z, 3),
        ``|v1| * fa``.

    Raises
    ------
    ValueError
        If the shapes or counts of ``dwi``, ``bvals``, ``bvecs`` and ``mask`` disagree, the
        mask is empty, no volume is a b=0 volume, or fewer than 6 are diffusion weighted.

    Notes
    -----
    Uses ``dipy.reconst.dti.TensorModel(gtab, fit_method="WLS")``. Non-finite map values
    (degenerate fits) are set to 0. FA is not clipped: a tensor with a negative eigenvalue
    (possible in noisy data) can have FA > 1.
    """
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    dwi = np.asarray(dwi)
    bvals, bvecs, b0_threshold = _check_gradients(dwi, bvals, bvecs, b0_threshold)
    mask = as_mask(mask, dwi.shape[:3])

    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=b0_threshold)
    fit = TensorModel(gtab, fit_method="WLS").fit(dwi.astype(np.float64), mask=mask)

    inside = np.ones(dwi.shape[:3], dtype=bool) if mask is None else mask
    maps = {}
    for name in DTI_SCALAR_MAPS:
        values = np.nan_to_num(np.asarray(getattr(fit, name), dtype=np.float64))
        maps[name] = np.where(inside, values, 0.0).astype(np.float32)
    v1 = np.nan_to_num(np.asarray(fit.evecs[..., :, 0], dtype=np.float64))
    maps["v1"] = np.where(inside[..., None], v1, 0.0).astype(np.float32)
    maps["color_fa"] = (np.abs(maps["v1"]) * maps["fa"][..., None]).astype(np.float32)
    return maps


def angular_error_map(v1, v1_reference, mask=None):
    """Angle between two principal-direction fields, per voxel, ignoring sign.

    Parameters
    ----------
    v1 : ndarray, shape (X, Y, Z, 3)
        Estimated principal eigenvectors (any non-zero length).
    v1_reference : ndarray, shape (X, Y, Z, 3)
        Reference principal eigenvectors.
    mask : ndarray of bool, shape (X, Y, Z), optional
        Voxels to compute. None: every voxel.

    Returns
    -------
    ndarray, shape (X, Y, Z), float64
        Angle in degrees in [0, 90]; ``v`` and ``-v`` give 0. NaN outside the mask and where
        either vector has zero length.

    Raises
    ------
    ValueError
        If the shapes differ or are not (X, Y, Z, 3), or the mask is empty.
    """
    v1, v1_reference, mask = _check_vectors(v1, v1_reference, mask)
    cross = np.linalg.norm(np.cross(v1, v1_reference), axis=-1)
    dot = np.abs(np.sum(v1 * v1_reference, axis=-1))
    angle = np.degrees(np.arctan2(cross, dot))
    degenerate = (np.linalg.norm(v1, axis=-1) == 0) | (np.linalg.norm(v1_reference, axis=-1) == 0)
    angle[degenerate] = np.nan
    if mask is not None:
        angle[~mask] = np.nan
    return angle


def angular_error_deg(v1, v1_reference, mask):
    """Mean angle between two principal-direction fields inside a mask, ignoring sign.

    Parameters
    ----------
    v1 : ndarray, shape (X, Y, Z, 3)
        Estimated principal eigenvectors (any non-zero length).
    v1_reference : ndarray, shape (X, Y, Z, 3)
        Reference principal eigenvectors.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels to average over.

    Returns
    -------
    float
        Mean angle in degrees, in [0, 90]. Lower is better.

    Raises
    ------
    ValueError
        If the shapes differ, the mask is empty, or a vector inside the mask is zero or
        non-finite (its direction is undefined).
    """
    _, _, mask = _check_vectors(v1, v1_reference, mask, required=True)
    angle = angular_error_map(v1, v1_reference, mask)[mask]
    n_bad = int(np.sum(~np.isfinite(angle)))
    if n_bad:
        raise ValueError(
            f"{n_bad} voxel(s) inside the mask have a zero or non-finite vector "
            "(undefined direction)"
        )
    return float(np.mean(angle))


def _check_vectors(v1, v1_reference, mask, *, required=False):
    v1 = np.asarray(v1, dtype=np.float64)
    v1_reference = np.asarray(v1_reference, dtype=np.float64)
    if v1_reference.ndim != 4 or v1_reference.shape[-1] != 3:
        raise ValueError(
            f"v1_reference must have shape (X, Y, Z, 3), got shape {v1_reference.shape}"
        )
    check_shapes(v1_reference, reference_name="v1_reference", v1=v1)
    if required and mask is None:
        raise ValueError("mask is required, got None")
    mask = as_mask(mask, v1_reference.shape[:3])
    return v1, v1_reference, mask


def map_mae(estimate, reference, mask):
    """Mean absolute error of a scalar map inside a mask, in the map's units.

    Parameters
    ----------
    estimate : ndarray, shape (X, Y, Z)
        Map to evaluate (e.g. FA, dimensionless, or MD in mm^2/s).
    reference : ndarray, shape (X, Y, Z)
        Reference map, same units.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels to average over.

    Returns
    -------
    float
        ``mean(|estimate - reference|[mask])`` in the map's units. Lower is better.

    Raises
    ------
    ValueError
        If the shapes differ, the reference is not 3D, the mask is empty, or a value inside
        the mask is not finite.
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if reference.ndim != 3:
        raise ValueError(f"reference must be 3D (X, Y, Z), got shape {reference.shape}")
    check_shapes(reference, estimate=estimate)
    mask = as_mask(mask, reference.shape)
    if mask is None:
        raise ValueError("mask is required, got None")
    for name, array in (("estimate", estimate), ("reference", reference)):
        if not np.all(np.isfinite(array[mask])):
            raise ValueError(f"{name} has non-finite values inside the mask")
    return float(np.mean(np.abs(estimate[mask] - reference[mask])))


def white_matter_mask(reference_fa, brain_mask, *, fa_threshold=0.2):
    """White-matter region for DTI metrics: reference FA above a threshold within the brain.

    Parameters
    ----------
    reference_fa : ndarray, shape (X, Y, Z)
        FA of the reference (noise-free) data, dimensionless.
    brain_mask : ndarray of bool, shape (X, Y, Z)
        Brain mask.
    fa_threshold : float, optional
        Voxels with ``reference_fa > fa_threshold`` are white matter.

    Returns
    -------
    ndarray of bool, shape (X, Y, Z)
        ``brain_mask & (reference_fa > fa_threshold)`` (may be empty).
    """
    reference_fa = np.asarray(reference_fa, dtype=np.float64)
    if reference_fa.ndim != 3:
        raise ValueError(f"reference_fa must be 3D (X, Y, Z), got shape {reference_fa.shape}")
    brain_mask = as_mask(brain_mask, reference_fa.shape)
    if brain_mask is None:
        raise ValueError("brain_mask is required, got None")
    fa_threshold = float(fa_threshold)
    if not np.isfinite(fa_threshold):
        raise ValueError(f"fa_threshold must be finite, got {fa_threshold}")
    return brain_mask & (reference_fa > fa_threshold)


def dti_metrics(maps, reference_maps, regions):
    """Errors of DTI maps against reference maps, per region.

    Parameters
    ----------
    maps : dict of str to ndarray
        Maps of the data to evaluate, as returned by :func:`fit_tensor`: at least ``"fa"``,
        ``"md"``, ``"ad"``, ``"rd"`` of shape (X, Y, Z) and ``"v1"`` of shape (X, Y, Z, 3).
    reference_maps : dict of str to ndarray
        The same maps of the reference (noise-free) data.
    regions : dict of str to ndarray of bool
        Region name to mask of shape (X, Y, Z), e.g. ``{"brain": brain, "wm": wm}`` with
        ``wm`` from :func:`white_matter_mask`.

    Returns
    -------
    list of dict
        One row ``{"region": name, "metric": metric, "value": float}`` per region (in the
        order of ``regions``) and metric (in the order of :data:`DTI_METRIC_NAMES`):
        ``fa_mae`` (dimensionless), ``md_mae``, ``ad_mae``, ``rd_mae`` (mm^2/s) from
        :func:`map_mae` and ``v1_angle`` (degrees) from :func:`angular_error_deg`. Lower is
        better for all.

    Raises
    ------
    ValueError
        If a map is missing or misshapen, ``regions`` is empty, or a region's mask is empty
        or of the wrong shape (the message names the region).
    """
    needed = (*DTI_SCALAR_MAPS, "v1")
    for label, given in (("maps", maps), ("reference_maps", reference_maps)):
        missing = [key for key in needed if key not in given]
        if missing:
            raise ValueError(f"{label} is missing {missing}; needs {list(needed)}")
    if not regions:
        raise ValueError("regions is empty: give at least one name -> mask")
    rows = []
    for region, mask in regions.items():
        try:
            values = [
                map_mae(maps[name], reference_maps[name], mask) for name in DTI_SCALAR_MAPS
            ]
            values.append(angular_error_deg(maps["v1"], reference_maps["v1"], mask))
        except ValueError as error:
            raise ValueError(f"region {region!r}: {error}") from error
        for metric, value in zip(DTI_METRIC_NAMES, values):
            rows.append({"region": region, "metric": metric, "value": value})
    return rows
