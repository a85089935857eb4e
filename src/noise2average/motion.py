"""Rigid head motion between repetitions, resampling, and the residual-registration model.

Conventions
-----------
A rigid transform is a 4x4 matrix ``T`` in world millimetres that maps the position of a
material point before the motion to its position after it. An object ``O`` moved by ``T``
is ``O'(x) = O(T^-1 x)`` (`transform_image`): a translation ``t`` moves its centre of mass
by ``+t``. Rotations are given as rotation vectors in degrees (axis times angle, right-hand
rule about the world axes; the norm is the rotation angle), applied about a centre point,
by default the centre of the volume.

Repetition model (`registration_transform`)
--------------------------------------------
Between repetition 1 and repetition ``k`` the head moves by ``T_k``. The scanner acquires
the moved object on its fixed grid, where the noise (and its g-factor map) lives. Rigid
registration to repetition 1 estimates the motion imperfectly, ``T^_k = T_k E_k^-1`` with a
small residual error ``E_k``; resampling the acquired image with ``T^_k``,
``R_k(x) = J_k(T^_k x)``, gives ``O(E_k^-1 x)``: the object left misaligned by ``E_k``, with
its noise interpolated (spatially correlated, variance reduced) and its g-factor pattern
slightly displaced. Repetition 1 is the reference and is not resampled.
"""

import numpy as np
from scipy import ndimage

__all__ = [
    "rotation_matrix",
    "rigid_matrix",
    "rigid_parameters",
    "volume_center_mm",
    "apply_to_points",
    "transform_image",
    "random_rigid",
    "registration_transform",
    "max_displacement_mm",
]


def _vector3(value, name):
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (3,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name}={value!r} must be a finite 3-vector")
    return array


def _affine(affine, name="affine"):
    array = np.asarray(affine, dtype=np.float64)
    if array.shape != (4, 4) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be a finite (4, 4) matrix, got shape {array.shape}")
    return array


def rotation_matrix(rotation_deg):
    """Rotation matrix of a rotation vector (Rodrigues' formula).

    Parameters
    ----------
    rotation_deg : array_like of shape (3,)
        Rotation vector in degrees: unit axis times angle (right-hand rule).

    Returns
    -------
    R : ndarray of float64, shape (3, 3)
        Proper rotation matrix (``R @ R.T = I``, ``det R = 1``).
    """
    vector = np.deg2rad(_vector3(rotation_deg, "rotation_deg"))
    angle = np.linalg.norm(vector)
    if angle == 0:
        return np.eye(3)
    kx, ky, kz = vector / angle
    cross = np.array([[0, -kz, ky], [kz, 0, -kx], [-ky, kx, 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def rigid_matrix(rotation_deg, translation_mm, *, center_mm=(0.0, 0.0, 0.0)):
    """Homogeneous rigid transform: rotation about a centre, then translation.

    Parameters
    ----------
    rotation_deg : array_like of shape (3,)
        Rotation vector in degrees (see `rotation_matrix`).
    translation_mm : array_like of shape (3,)
        Translation in world mm.
    center_mm : array_like of shape (3,), optional
        Centre of rotation in world mm (e.g. `volume_center_mm`).

    Returns
    -------
    T : ndarray of float64, shape (4, 4)
        ``T x = R (x - c) + c + t`` for world points ``x``.
    """
    rotation = rotation_matrix(rotation_deg)
    translation = _vector3(translation_mm, "translation_mm")
    center = _vector3(center_mm, "center_mm")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = center - rotation @ center + translation
    return matrix


def rigid_parameters(matrix, *, center_mm=(0.0, 0.0, 0.0)):
    """Rotation vector and translation of a rigid transform (inverse of `rigid_matrix`).

    Parameters
    ----------
    matrix : ndarray, shape (4, 4)
        Rigid transform.
    center_mm : array_like of shape (3,), optional
        Centre of rotation in world mm.

    Returns
    -------
    rotation_deg : ndarray of float64, shape (3,)
        Rotation vector in degrees (angle below 180 degrees).
    translation_mm : ndarray of float64, shape (3,)
        Translation in mm.
    """
    matrix = _affine(matrix, "matrix")
    center = _vector3(center_mm, "center_mm")
    rotation = matrix[:3, :3]
    cos_angle = np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos_angle)
    axis = np.array(
        [
            rotation[2, 1] - rotation[1, 2],
            rotation[0, 2] - rotation[2, 0],
            rotation[1, 0] - rotation[0, 1],
        ]
    )
    if angle < 1e-12:
        vector = np.zeros(3)
    else:
        vector = axis / (2 * np.sin(angle)) * angle
    translation = matrix[:3, 3] - center + rotation @ center
    return np.rad2deg(vector), translation


def volume_center_mm(shape, affine):
    """World coordinates (mm) of the centre of a voxel grid, shape (3,)."""
    affine = _affine(affine)
    centre = (np.asarray(shape, dtype=np.float64)[:3] - 1) / 2
    return affine[:3, :3] @ centre + affine[:3, 3]


def apply_to_points(transform, points_mm):
    """Apply a 4x4 transform to world points of shape (..., 3); returns the same shape."""
    transform = _affine(transform, "transform")
    points = np.asarray(points_mm, dtype=np.float64)
    if points.shape[-1] != 3:
        raise ValueError(f"points_mm must have shape (..., 3), got {points.shape}")
    return points @ transform[:3, :3].T + transform[:3, 3]


def transform_image(
    image,
    affine,
    transform,
    *,
    order=3,
    output_shape=None,
    output_affine=None,
    mode="constant",
    cval=0.0,
):
    """Resample the image of an object moved by a rigid (or any affine) transform.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        Input image on the grid of ``affine``.
    affine : ndarray, shape (4, 4)
        Voxel-to-world (mm) transform of ``image``.
    transform : ndarray, shape (4, 4)
        Motion ``T`` in world mm (see the module conventions). The output is
        ``O'(x) = image(T^-1 x)`` sampled at the world coordinates ``x`` of the output grid.
    order : int, optional
        Spline interpolation order (1 linear, 3 cubic B-spline) of
        `scipy.ndimage.affine_transform`.
    output_shape : tuple of 3 int, optional
        Output grid shape; None keeps the input grid.
    output_affine : ndarray, shape (4, 4), optional
        Output voxel-to-world transform; None keeps the input grid's.
    mode, cval : optional
        Handling of points outside the input grid (`scipy.ndimage.affine_transform`).

    Returns
    -------
    moved : ndarray of float32, shape ``output_shape``
        Resampled image (not clipped: cubic splines may overshoot at edges).
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be 3D, got shape {image.shape}")
    affine = _affine(affine)
    transform = _affine(transform, "transform")
    if order not in (0, 1, 2, 3, 4, 5):
        raise ValueError(f"order={order!r} must be an integer spline order 0-5")
    out_affine = affine if output_affine is None else _affine(output_affine, "output_affine")
    out_shape = image.shape if output_shape is None else tuple(int(n) for n in output_shape)
    # output voxel -> world -> source world (T^-1) -> input voxel
    voxel_map = np.linalg.inv(affine) @ np.linalg.inv(transform) @ out_affine
    moved = ndimage.affine_transform(
        image.astype(np.float64, copy=False),
        voxel_map[:3, :3],
        offset=voxel_map[:3, 3],
        output_shape=out_shape,
        order=order,
        mode=mode,
        cval=cval,
    )
    return moved.astype(np.float32)


def random_rigid(rng, *, max_translation_mm, max_rotation_deg):
    """Draw a rigid motion uniformly inside translation and rotation balls.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    max_translation_mm : float
        Radius of the translation ball: ``|t| <= max_translation_mm``.
    max_rotation_deg : float
        Radius of the rotation-vector ball: the rotation angle is at most this.

    Returns
    -------
    rotation_deg : ndarray of float64, shape (3,)
        Rotation vector in degrees, uniform in its ball (isotropic axis).
    translation_mm : ndarray of float64, shape (3,)
        Translation in mm, uniform in its ball.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    for name, value in (
        ("max_translation_mm", max_translation_mm),
        ("max_rotation_deg", max_rotation_deg),
    ):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name}={value!r} must be a non-negative number")

    def ball(radius):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        return direction * radius * rng.uniform() ** (1 / 3)

    rotation = ball(float(max_rotation_deg))
    translation = ball(float(max_translation_mm))
    return rotation, translation


def registration_transform(motion, residual):
    """Motion estimate of an imperfect registration, ``T^ = T E^-1``.

    Parameters
    ----------
    motion : ndarray, shape (4, 4)
        True head motion ``T`` of the repetition relative to the reference.
    residual : ndarray, shape (4, 4)
        Residual error ``E``: after resampling with ``T^`` the object is moved by ``E``
        relative to the reference.

    Returns
    -------
    estimate : ndarray of float64, shape (4, 4)
        ``T^``. Registering the acquired image ``J`` is
        ``transform_image(J, acq_affine, inv(T^), output_shape=..., output_affine=...)``.
    """
    return _affine(motion, "motion") @ np.linalg.inv(_affine(residual, "residual"))


def max_displacement_mm(shape, affine, *, translation_mm, rotation_deg, center_mm=None):
    """Bound on how far a rigid motion within limits moves any point of a grid.

    Parameters
    ----------
    shape : tuple of 3 int
        Grid shape.
    affine : ndarray, shape (4, 4)
        Voxel-to-world transform.
    translation_mm : float
        Largest translation magnitude in mm.
    rotation_deg : float
        Largest rotation angle in degrees.
    center_mm : array_like of shape (3,), optional
        Centre of rotation; None is the grid centre.

    Returns
    -------
    bound : float
        ``translation + 2 sin(angle / 2) r_max`` in mm, with ``r_max`` the largest distance
        from the centre to a corner voxel of the grid.
    """
    affine = _affine(affine)
    if center_mm is None:
        center = volume_center_mm(shape, affine)
    else:
        center = _vector3(center_mm, "center_mm")
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3, None]
    radius = np.sqrt(np.sum((world - center[:, None]) ** 2, axis=0)).max()
    chord = 2 * np.sin(np.deg2rad(float(rotation_deg)) / 2) * radius
    return float(translation_mm) + chord
