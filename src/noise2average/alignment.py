"""Put repetitions on one grid: rigid registration, resampling, alignment QC.

Convention
----------
A registration ``matrix`` is a 4x4 rigid transform in world millimetres that maps a point
of the static (reference) image to the corresponding point of the moving image, so the
resampled image is ``R(x) = moving(matrix @ x)``, as dipy's ``AffineMap.affine`` and
`noise2average.motion.registration_transform` use it.
"""

import numpy as np

from ._validation import as_mask

__all__ = ["rigid_register", "apply_rigid", "alignment_qc"]

# Coarse-to-fine schedule: iterations, Gaussian smoothing (voxels) and downsampling per level.
_LEVEL_ITERS = [1000, 100, 10]
_SIGMAS = [3.0, 1.0, 0.0]
_FACTORS = [4, 2, 1]


def rigid_register(moving, moving_affine, static, static_affine, *, mask=None):
    """Rigidly register a volume to a reference with mutual information.

    Parameters
    ----------
    moving : ndarray, shape (X', Y', Z')
        Volume to align.
    moving_affine : ndarray of shape (4, 4)
        Its voxel-to-world transform (mm).
    static : ndarray, shape (X, Y, Z)
        Reference volume.
    static_affine : ndarray of shape (4, 4)
        Its voxel-to-world transform (mm).
    mask : ndarray of bool, shape (X, Y, Z), optional
        Reference voxels the metric is computed on (e.g. a head mask); None uses all.

    Returns
    -------
    resampled : ndarray of float64, shape (X, Y, Z)
        ``moving`` resampled on the reference grid with linear interpolation (0 outside
        its field of view).
    matrix : ndarray of float64, shape (4, 4)
        Rigid transform from reference world to moving world (mm), for `apply_rigid`.

    Notes
    -----
    Mutual information on all voxels (dense sampling) makes the result deterministic; the
    search starts from the alignment of the centres of mass and runs at 4x, 2x and 1x
    downsampling.
    """
    from dipy.align.imaffine import (
        AffineRegistration,
        MutualInformationMetric,
        transform_centers_of_mass,
    )
    from dipy.align.transforms import RigidTransform3D

    moving = np.asarray(moving, dtype=np.float64)
    static = np.asarray(static, dtype=np.float64)
    if moving.ndim != 3 or static.ndim != 3:
        raise ValueError(f"rigid_register needs 3D volumes, got {moving.shape} and {static.shape}")
    mask = as_mask(mask, static.shape)
    start = transform_centers_of_mass(static, static_affine, moving, moving_affine)
    registration = AffineRegistration(
        metric=MutualInformationMetric(nbins=32, sampling_proportion=None),
        level_iters=_LEVEL_ITERS, sigmas=_SIGMAS, factors=_FACTORS, verbosity=0,
    )
    transform = registration.optimize(
        static, moving, RigidTransform3D(), None,
        static_grid2world=static_affine, moving_grid2world=moving_affine,
        starting_affine=start.affine,
        # dipy's Cython pyramid code takes integer masks only (bool has no matching signature).
        static_mask=None if mask is None else mask.astype(np.int32),
    )
    matrix = transform.affine.copy()
    return apply_rigid(moving, moving_affine, static.shape, static_affine, matrix), matrix


def apply_rigid(volume_or_series, moving_affine, static_shape, static_affine, matrix):
    """Resample an image onto a reference grid through a rigid transform.

    Parameters
    ----------
    volume_or_series : ndarray, shape (X', Y', Z') or (X', Y', Z', M)
        Image on its own grid; every volume of a series gets the same transform.
    moving_affine : ndarray of shape (4, 4)
        Its voxel-to-world transform (mm).
    static_shape : tuple of int
        Reference grid shape (X, Y, Z); extra axes are ignored.
    static_affine : ndarray of shape (4, 4)
        Reference voxel-to-world transform (mm).
    matrix : ndarray of shape (4, 4)
        Reference world to moving world transform (`rigid_register`).

    Returns
    -------
    resampled : ndarray of float64, shape (X, Y, Z) or (X, Y, Z, M)
        Linear interpolation, 0 outside the image's field of view. DWI b-vectors are not
        rotated here.
    """
    from dipy.align.imaffine import AffineMap

    image = np.asarray(volume_or_series, dtype=np.float64)
    if image.ndim not in (3, 4):
        raise ValueError(f"apply_rigid needs a 3D or 4D image, got shape {image.shape}")
    mapping = AffineMap(
        np.asarray(matrix, dtype=np.float64),
        domain_grid_shape=tuple(static_shape[:3]), domain_grid2world=static_affine,
        codomain_grid_shape=image.shape[:3], codomain_grid2world=moving_affine,
    )
    if image.ndim == 3:
        return mapping.transform(image, interpolation="linear")
    return np.stack(
        [mapping.transform(image[..., k], interpolation="linear") for k in range(image.shape[3])],
        axis=-1,
    )


def alignment_qc(repetitions, mask):
    """Correlation of each repetition with the first inside a mask.

    Parameters
    ----------
    repetitions : sequence of ndarray, each of shape (X, Y, Z)
        Repetitions on one grid, the reference first.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels compared (e.g. the head mask).

    Returns
    -------
    correlations : list of float
        Pearson correlation with the first repetition, one per repetition (1.0 for the
        first); misalignment lowers it.

    Raises
    ------
    ValueError
        When shapes differ, the mask is empty, or a repetition is constant in the mask
        (its correlation is undefined).
    """
    reference = np.asarray(repetitions[0], dtype=np.float64)
    mask = as_mask(mask, reference.shape)
    first = reference[mask] - reference[mask].mean()
    correlations = []
    for index, repetition in enumerate(repetitions):
        repetition = np.asarray(repetition, dtype=np.float64)
        if repetition.shape != reference.shape:
            raise ValueError(
                f"repetition {index + 1} shape {repetition.shape} does not match the first "
                f"{reference.shape}"
            )
        values = repetition[mask] - repetition[mask].mean()
        norm = np.linalg.norm(values) * np.linalg.norm(first)
        if norm == 0:
            raise ValueError(f"repetition {index + 1} or the first is constant inside the mask")
        correlations.append(float(values @ first / norm))
    return correlations
