"""EPI susceptibility distortion along the phase-encoding axis (data type 3: AP/PA DWI).

Model (as in FSL topup / applytopup with Jacobian modulation)
------------------------------------------------------------
An off-resonance field ``B(x)`` (Hz), given on the grid of the *undistorted* object, moves
the signal of the object point ``x`` along the phase-encoding (PE) axis to

    ``y(x) = x + d(x)``,  ``d(x) = s * B(x) * T``  (voxels, `displacement_voxels`),

with ``s = pe_sign`` (+1 or -1: the two polarities, e.g. AP and PA, displace in opposite
directions) and ``T`` the total readout time in s (FSL's definition: effective echo spacing
times (number of PE lines - 1)). A positive displacement points towards increasing voxel
index along ``pe_axis``. Signal is conserved along each PE line, ``O(x) dx = D(y) dy``, so
the intensity is scaled by the inverse of the Jacobian ``J(x) = 1 + dd/dx``
(`jacobian`): compressed regions (``J < 1``) pile up and brighten, stretched ones dim.

- Forward (`distort`): ``D(y) = O(x(y)) / J(x(y))``, where ``x(y)`` inverts ``y = x + d(x)``
  on each PE line (piecewise linear inversion between voxel centres, linear extrapolation
  with the end displacement beyond them). ``O`` is resampled by spline interpolation at
  ``x(y)``; ``J`` linearly.
- Inverse (`undistort`): ``C(x) = D(x + d(x)) * J(x)``, the standard Jacobian-modulated
  correction. With the true field, ``undistort(distort(O)) = O`` up to interpolation error
  wherever the map is monotonic (``J > 0``). Folding (``J <= 0``) cannot be inverted: the
  forward model then warns and keeps only the monotone envelope of ``y(x)``.

Signal displaced beyond the field of view is lost; zeros enter from outside it.

`smooth_field_hz` draws a smooth random off-resonance map and `field_error` perturbs it
smoothly to model an imperfect field estimate (topup's estimate), whose residual
displacement ``s * (B - B^) * T`` leaves the corrected repetitions slightly mismatched.
"""

import warnings

import numpy as np
from scipy import ndimage

from .anatomy import grid_points, random_smooth_field

__all__ = [
    "displacement_voxels",
    "jacobian",
    "distort",
    "undistort",
    "smooth_field_hz",
    "field_error",
]


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _check_pe(pe_sign, readout_time_s):
    if pe_sign not in (1, -1) or isinstance(pe_sign, bool):
        raise ValueError(f"pe_sign={pe_sign!r} must be +1 or -1")
    if not (np.isscalar(readout_time_s) and np.isfinite(readout_time_s) and readout_time_s > 0):
        raise ValueError(f"readout_time_s={readout_time_s!r} must be a positive finite number (s)")


def _check_field(field_hz):
    field = np.asarray(field_hz, dtype=np.float64)
    if field.ndim != 3:
        raise ValueError(f"field_hz must be 3D (X, Y, Z), got shape {field.shape}")
    if not np.all(np.isfinite(field)):
        raise ValueError("field_hz contains non-finite values")
    return field


def _check_axis(pe_axis):
    if isinstance(pe_axis, bool) or pe_axis not in (0, 1, 2):
        raise ValueError(f"pe_axis={pe_axis!r} must be 0, 1 or 2")
    return int(pe_axis)


def _check_inputs(image, field_hz, pe_axis, pe_sign, readout_time_s, order):
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be (X, Y, Z) or (X, Y, Z, N), got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"image must be real-valued, got dtype {image.dtype}")
    field = _check_field(field_hz)
    if field.shape != image.shape[:3]:
        raise ValueError(
            f"field_hz shape {field.shape} does not match image spatial shape {image.shape[:3]}"
        )
    pe_axis = _check_axis(pe_axis)
    _check_pe(pe_sign, readout_time_s)
    if isinstance(order, bool) or order not in range(6):
        raise ValueError(f"order={order!r} must be an integer spline order in 0..5")
    return image, field, pe_axis


# ---------------------------------------------------------------------------------------------
# Displacement and Jacobian
# ---------------------------------------------------------------------------------------------


def displacement_voxels(field_hz, *, pe_sign, readout_time_s):
    """Displacement along the phase-encoding axis caused by an off-resonance field.

    Parameters
    ----------
    field_hz : array_like
        Off-resonance field in Hz (any shape).
    pe_sign : {+1, -1}
        Phase-encoding polarity (e.g. +1 for AP, -1 for PA).
    readout_time_s : float
        Total readout time in s (effective echo spacing times (PE lines - 1)).

    Returns
    -------
    displacement : ndarray of float64, same shape as ``field_hz``
        ``pe_sign * field_hz * readout_time_s``, in voxels along the PE axis (positive
        towards increasing voxel index).
    """
    _check_pe(pe_sign, readout_time_s)
    field = np.asarray(field_hz, dtype=np.float64)
    return float(pe_sign) * float(readout_time_s) * field


def jacobian(field_hz, *, pe_axis, pe_sign, readout_time_s):
    """Jacobian ``1 + dd/dx`` of the distortion map along the phase-encoding axis.

    Parameters
    ----------
    field_hz : ndarray, shape (X, Y, Z)
        Off-resonance field in Hz on the undistorted grid.
    pe_axis : {0, 1, 2}
        Array axis of the phase-encoding direction.
    pe_sign : {+1, -1}
        Phase-encoding polarity.
    readout_time_s : float
        Total readout time in s.

    Returns
    -------
    jac : ndarray of float64, shape (X, Y, Z)
        Dimensionless; ``> 1`` where the image is stretched (signal dimmed), ``< 1`` where it is
        compressed (signal piled up), ``<= 0`` where it folds. Derivative by central
        differences (one-sided at the ends of each line).
    """
    field = _check_field(field_hz)
    pe_axis = _check_axis(pe_axis)
    d = displacement_voxels(field, pe_sign=pe_sign, readout_time_s=readout_time_s)
    if d.shape[pe_axis] < 2:
        return np.ones_like(d)
    return 1.0 + np.gradient(d, axis=pe_axis)


def _inverse_positions(d):
    """Solve ``x + d(x) = j`` for every grid position ``j`` of every line (last axis).

    ``d`` has shape (..., n); ``y_i = i + d_i`` is taken piecewise linear between voxel
    centres and extrapolated beyond them with the end displacements. Returns ``x`` of the
    same shape, and whether any line was non-monotonic (folding).
    """
    n = d.shape[-1]
    lines = d.reshape(-1, n)
    y = np.arange(n, dtype=np.float64) + lines
    folded = bool(np.any(np.diff(y, axis=-1) <= 0))
    if folded:
        y = np.maximum.accumulate(y, axis=-1)
        # strictly increasing for np.interp (ties from folding get a negligible slope)
        y = y + np.arange(n) * 1e-9
    # All lines in one np.interp call: offset line k by k * stride so the lines are
    # disjoint, increasing pieces of one sequence.
    span = float(np.max(np.abs(lines))) if lines.size else 0.0
    stride = n + 2.0 * span + 4.0
    offsets = np.arange(lines.shape[0], dtype=np.float64)[:, None] * stride
    xp = (y + offsets).ravel()
    fp = np.broadcast_to(np.arange(n, dtype=np.float64), lines.shape).ravel()
    query = np.arange(n, dtype=np.float64)[None, :]
    x = np.interp((query + offsets).ravel(), xp, fp).reshape(lines.shape)
    below = query < y[:, :1]
    above = query > y[:, -1:]
    x = np.where(below, query - lines[:, :1], x)
    x = np.where(above, query - lines[:, -1:], x)
    return x.reshape(d.shape), folded


def _resample_along(volume, positions, pe_axis, order):
    """``volume`` sampled at ``positions`` (voxel index) along ``pe_axis``, others fixed."""
    coords = np.indices(volume.shape, dtype=np.float64)
    coords[pe_axis] = positions
    return ndimage.map_coordinates(
        volume, coords, order=order, mode="grid-constant", cval=0.0, prefilter=order > 1
    )


def _apply(image, sample, out_dtype):
    if image.ndim == 3:
        return sample(image.astype(np.float64)).astype(out_dtype, copy=False)
    out = np.empty(image.shape, dtype=out_dtype)
    for k in range(image.shape[-1]):
        out[..., k] = sample(image[..., k].astype(np.float64))
    return out


def _out_dtype(image):
    return image.dtype if np.issubdtype(image.dtype, np.floating) else np.float64


# ---------------------------------------------------------------------------------------------
# Forward and inverse
# ---------------------------------------------------------------------------------------------


def distort(image, field_hz, *, pe_axis, pe_sign, readout_time_s, order=3):
    """Apply EPI susceptibility distortion along the phase-encoding axis (forward model).

    ``D(y) = O(x(y)) / J(x(y))`` with ``x(y)`` the inverse of ``y = x + d(x)`` on each PE
    line, ``d = pe_sign * field_hz * readout_time_s`` voxels and ``J = 1 + dd/dx`` (see the
    module docstring). Signal along each PE line is conserved up to interpolation error and
    signal pushed beyond the field of view.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z) or (X, Y, Z, N)
        Undistorted object (any real intensity unit). Every volume of a 4D image is distorted
        by the same field.
    field_hz : ndarray, shape (X, Y, Z)
        Off-resonance field in Hz on the undistorted grid.
    pe_axis : {0, 1, 2}
        Array axis of the phase-encoding direction.
    pe_sign : {+1, -1}
        Phase-encoding polarity (+1 e.g. AP, -1 e.g. PA): the direction of the displacement of
        a positive off-resonance along ``pe_axis``.
    readout_time_s : float
        Total readout time in s.
    order : int, optional
        Spline order used to resample the image (0-5). The Jacobian is interpolated
        linearly.

    Returns
    -------
    distorted : ndarray, shape of ``image``
        Floating dtype of ``image`` (float64 for integer input).

    Warns
    -----
    UserWarning
        Where the map folds (``J <= 0``): the forward model is then not invertible and only
        the monotone envelope of the displacement is used.
    """
    image, field, pe_axis = _check_inputs(image, field_hz, pe_axis, pe_sign, readout_time_s, order)
    d = displacement_voxels(field, pe_sign=pe_sign, readout_time_s=readout_time_s)
    jac = jacobian(field, pe_axis=pe_axis, pe_sign=pe_sign, readout_time_s=readout_time_s)
    x, folded = _inverse_positions(np.moveaxis(d, pe_axis, -1))
    x = np.moveaxis(x, -1, pe_axis)
    if folded:
        warnings.warn(
            f"the distortion folds (minimum Jacobian {jac.min():.3g} <= 0): the forward model "
            "uses the monotone envelope of the displacement and is not invertible there",
            stacklevel=2,
        )
    # Linear inside the line; positions beyond it carry J of the nearest end.
    jac_at_x = _resample_along_nearest(jac, x, pe_axis)
    scale = np.where(jac_at_x > 0, 1.0 / np.maximum(jac_at_x, 1e-12), 0.0)
    return _apply(
        image, lambda v: _resample_along(v, x, pe_axis, order) * scale, _out_dtype(image)
    )


def _resample_along_nearest(volume, positions, pe_axis):
    coords = np.indices(volume.shape, dtype=np.float64)
    coords[pe_axis] = positions
    return ndimage.map_coordinates(volume, coords, order=1, mode="nearest")


def undistort(image, field_hz, *, pe_axis, pe_sign, readout_time_s, order=3):
    """Correct EPI susceptibility distortion with a field map (Jacobian-modulated unwarping).

    ``C(x) = D(x + d(x)) * J(x)`` with ``d = pe_sign * field_hz * readout_time_s`` voxels and
    ``J = 1 + dd/dx``, as FSL applytopup's Jacobian method. With the true field it inverts
    `distort` up to interpolation error where ``J > 0``; with an estimated field the
    residual displacement ``pe_sign * (field - estimate) * readout_time_s`` remains.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z) or (X, Y, Z, N)
        Distorted image (any real intensity unit); every volume is corrected with the same
        field.
    field_hz : ndarray, shape (X, Y, Z)
        Off-resonance field (or its estimate) in Hz on the undistorted grid.
    pe_axis : {0, 1, 2}
        Array axis of the phase-encoding direction.
    pe_sign : {+1, -1}
        Phase-encoding polarity of ``image``.
    readout_time_s : float
        Total readout time in s.
    order : int, optional
        Spline order used to resample the image (0-5).

    Returns
    -------
    corrected : ndarray, shape of ``image``
        Floating dtype of ``image`` (float64 for integer input). Voxels where ``J <= 0`` are
        set to 0.
    """
    image, field, pe_axis = _check_inputs(image, field_hz, pe_axis, pe_sign, readout_time_s, order)
    d = displacement_voxels(field, pe_sign=pe_sign, readout_time_s=readout_time_s)
    jac = jacobian(field, pe_axis=pe_axis, pe_sign=pe_sign, readout_time_s=readout_time_s)
    positions = np.indices(field.shape, dtype=np.float64)[pe_axis] + d
    scale = np.clip(jac, 0.0, None)
    return _apply(
        image, lambda v: _resample_along(v, positions, pe_axis, order) * scale, _out_dtype(image)
    )


# ---------------------------------------------------------------------------------------------
# Random fields
# ---------------------------------------------------------------------------------------------


def _unit_peak(values):
    peak = float(np.max(np.abs(values)))
    return values / peak if peak > 0 else values


def smooth_field_hz(shape, affine, rng, *, max_hz, smoothness_mm=30.0, n_features=64):
    """Draw a smooth random off-resonance map with a given peak magnitude.

    A zero-mean Gaussian-process draw (`anatomy.random_smooth_field`, squared-exponential
    covariance) evaluated at the voxel centres and scaled so that ``max |B| = max_hz``.

    Parameters
    ----------
    shape : tuple of 3 int
        Grid shape ``(X, Y, Z)``.
    affine : ndarray, shape (4, 4)
        Voxel-to-world (mm) transform of the grid.
    rng : numpy.random.Generator
        Source of randomness.
    max_hz : float
        Peak absolute off-resonance in Hz (>= 0). Brain EPI at 3 T: tens of Hz in most of
        the brain, 100-200 Hz near the sinuses and ear canals.
    smoothness_mm : float, optional
        Correlation length of the field, in mm.
    n_features : int, optional
        Number of random Fourier features.

    Returns
    -------
    field_hz : ndarray of float64, shape (X, Y, Z)
        Off-resonance in Hz.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape={shape!r} must be 3 positive integers")
    if not (np.isfinite(max_hz) and max_hz >= 0):
        raise ValueError(f"max_hz={max_hz!r} must be a finite number >= 0")
    if not (np.isfinite(smoothness_mm) and smoothness_mm > 0):
        raise ValueError(f"smoothness_mm={smoothness_mm!r} must be positive")
    field = random_smooth_field(
        rng, n_components=1, correlation_length_mm=smoothness_mm, n_features=n_features
    )
    values = field(grid_points(shape, affine))[..., 0]
    return _unit_peak(values) * float(max_hz)


def field_error(field_hz, rng, *, relative_error, smoothness_voxels=10.0, n_features=64):
    """Perturb a field map smoothly to model an imperfect field estimate.

    ``B^ = B + relative_error * max|B| * e``, with ``e`` a smooth zero-mean random field of
    peak magnitude 1 (correlation length ``smoothness_voxels``). The residual displacement
    after correcting with ``B^`` is at most ``relative_error`` times the peak displacement
    of ``B``.

    Parameters
    ----------
    field_hz : ndarray, shape (X, Y, Z)
        True off-resonance field in Hz.
    rng : numpy.random.Generator
        Source of randomness.
    relative_error : float
        Peak error as a fraction of the peak absolute field (>= 0; 0 returns a copy).
    smoothness_voxels : float, optional
        Correlation length of the error field, in voxels.
    n_features : int, optional
        Number of random Fourier features.

    Returns
    -------
    estimate_hz : ndarray of float64, shape (X, Y, Z)
        Estimated field in Hz.
    """
    field = _check_field(field_hz)
    if not (np.isfinite(relative_error) and relative_error >= 0):
        raise ValueError(f"relative_error={relative_error!r} must be a finite number >= 0")
    if not (np.isfinite(smoothness_voxels) and smoothness_voxels > 0):
        raise ValueError(f"smoothness_voxels={smoothness_voxels!r} must be positive")
    error = random_smooth_field(
        rng, n_components=1, correlation_length_mm=smoothness_voxels, n_features=n_features
    )
    values = _unit_peak(error(grid_points(field.shape, np.eye(4)))[..., 0])
    return field + float(relative_error) * float(np.max(np.abs(field))) * values
