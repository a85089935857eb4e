"""Tests of the EPI susceptibility-distortion model (noise2average.distortion)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from noise2average.distortion import (
    displacement_voxels,
    distort,
    field_error,
    jacobian,
    smooth_field_hz,
    undistort,
)

SHAPE = (32, 40, 24)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
READOUT_S = 0.05  # total readout time: 20 Hz -> 1 voxel


def _phantom(shape=SHAPE):
    """Smooth head-like phantom: a broad ellipsoidal Gaussian plus a small bright blob."""
    idx = np.indices(shape, dtype=np.float64)
    centre = (np.array(shape, dtype=np.float64) - 1) / 2
    radii = np.array(shape, dtype=np.float64) / 6
    r2 = sum(((idx[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    blob = sum(((idx[i] - centre[i] - off) / 2.5) ** 2 for i, off in enumerate((3, -4, 2)))
    return np.exp(-1.5 * r2) + 0.3 * np.exp(-blob)


def _centre_of_mass(image, axis):
    coords = np.indices(image.shape, dtype=np.float64)[axis]
    return float(np.sum(coords * image) / np.sum(image))


def _field(seed=1, max_hz=80.0):
    return smooth_field_hz(SHAPE, AFFINE, np.random.default_rng(seed), max_hz=max_hz,
                           smoothness_mm=30.0)


def test_displacement_sign_and_scale():
    field = np.array([10.0, -20.0])
    assert_allclose(displacement_voxels(field, pe_sign=1, readout_time_s=0.05), [0.5, -1.0])
    assert_allclose(displacement_voxels(field, pe_sign=-1, readout_time_s=0.05), [-0.5, 1.0])


@pytest.mark.parametrize("pe_axis", [0, 1, 2])
def test_constant_field_shifts_blob_by_field_times_readout(pe_axis):
    # 50 Hz * 0.05 s = 2.5 voxels; opposite polarities shift in opposite directions.
    image = _phantom()
    field = np.full(SHAPE, 50.0)
    com = _centre_of_mass(image, pe_axis)
    for pe_sign in (1, -1):
        out = distort(image, field, pe_axis=pe_axis, pe_sign=pe_sign, readout_time_s=READOUT_S)
        assert_allclose(_centre_of_mass(out, pe_axis) - com, pe_sign * 2.5, atol=5e-3)
        assert_allclose(out.sum(), image.sum(), rtol=1e-3)  # J = 1: pure shift


@pytest.mark.parametrize("pe_axis", [0, 1, 2])
def test_undistort_inverts_distort_with_true_field(pe_axis):
    # Peak 80 Hz -> 4 voxels, Jacobian 0.80..1.24 (monotonic). Measured relative RMS
    # round-trip error <= 6e-4 for this field (cubic splines).
    image = _phantom()
    field = _field()
    jac = jacobian(field, pe_axis=pe_axis, pe_sign=1, readout_time_s=READOUT_S)
    assert jac.min() > 0.5
    for pe_sign in (1, -1):
        kwargs = dict(pe_axis=pe_axis, pe_sign=pe_sign, readout_time_s=READOUT_S)
        distorted = distort(image, field, **kwargs)
        # the distortion itself is large compared with the round-trip error
        assert np.sqrt(np.mean((distorted - image) ** 2)) > 0.05 * np.sqrt(np.mean(image**2))
        restored = undistort(distorted, field, **kwargs)
        rel_rms = np.sqrt(np.mean((restored - image) ** 2) / np.mean(image**2))
        assert rel_rms < 2e-3
        assert np.abs(restored - image).max() < 5e-3 * image.max()


def test_forward_model_conserves_signal_along_pe_lines():
    image = _phantom()
    field = _field(seed=2)
    for pe_axis in (0, 1, 2):
        out = distort(image, field, pe_axis=pe_axis, pe_sign=-1, readout_time_s=READOUT_S)
        line_in = image.sum(axis=pe_axis)
        line_out = out.sum(axis=pe_axis)
        # measured <= 4e-4 of the largest line sum
        assert_allclose(line_out, line_in, atol=2e-3 * line_in.max())


def test_jacobian_modulates_intensity():
    # A linear field compresses (J < 1) one polarity and stretches (J > 1) the other:
    # a uniform line brightens by 1/J in the interior.
    shape = (4, 64, 4)
    ramp = np.broadcast_to(np.arange(64.0)[None, :, None], shape)
    field = 4.0 * (ramp - 31.5)  # 4 Hz/voxel * 0.05 s -> dd/dy = +-0.2
    image = np.ones(shape)
    for pe_sign, jac in ((1, 1.2), (-1, 0.8)):
        assert_allclose(
            jacobian(field, pe_axis=1, pe_sign=pe_sign, readout_time_s=READOUT_S), jac
        )
        out = distort(image, field, pe_axis=1, pe_sign=pe_sign, readout_time_s=READOUT_S)
        assert_allclose(out[:, 24:40, :], 1 / jac, rtol=1e-6)


def test_opposite_polarities_mismatch_and_correction_aligns_them():
    image = _phantom()
    field = _field(seed=3)
    kw = dict(pe_axis=1, readout_time_s=READOUT_S)
    ap = distort(image, field, pe_sign=1, **kw)
    pa = distort(image, field, pe_sign=-1, **kw)
    raw = np.sqrt(np.mean((ap - pa) ** 2))
    ap_c = undistort(ap, field, pe_sign=1, **kw)
    pa_c = undistort(pa, field, pe_sign=-1, **kw)
    assert np.sqrt(np.mean((ap_c - pa_c) ** 2)) < 0.05 * raw


def test_residual_mismatch_grows_with_field_error():
    image = _phantom()
    field = _field(seed=4)
    kw = dict(pe_axis=1, readout_time_s=READOUT_S)
    ap = distort(image, field, pe_sign=1, **kw)
    pa = distort(image, field, pe_sign=-1, **kw)
    mismatch = []
    for relative_error in (0.0, 0.05, 0.15, 0.4):
        estimate = field_error(field, np.random.default_rng(7), relative_error=relative_error)
        assert_allclose(np.abs(estimate - field).max(), relative_error * np.abs(field).max())
        ap_c = undistort(ap, estimate, pe_sign=1, **kw)
        pa_c = undistort(pa, estimate, pe_sign=-1, **kw)
        mismatch.append(np.sqrt(np.mean((ap_c - pa_c) ** 2) / np.mean(image**2)))
    assert mismatch[0] < 5e-3
    assert np.all(np.diff(mismatch) > 0), mismatch
    assert mismatch[-1] > 10 * mismatch[0]


def test_4d_uses_same_field_for_every_volume():
    image = _phantom()
    stack = np.stack([image, 2 * image, image**2], axis=-1).astype(np.float32)
    field = _field(seed=5)
    kw = dict(pe_axis=0, pe_sign=1, readout_time_s=READOUT_S)
    out = distort(stack, field, **kw)
    assert out.shape == stack.shape and out.dtype == np.float32
    for k in range(stack.shape[-1]):
        assert_allclose(out[..., k], distort(stack[..., k], field, **kw), rtol=1e-5, atol=1e-6)
    back = undistort(out, field, **kw)
    assert back.shape == stack.shape


def test_smooth_field_peak_and_reproducibility():
    a = smooth_field_hz(SHAPE, AFFINE, np.random.default_rng(0), max_hz=120.0)
    b = smooth_field_hz(SHAPE, AFFINE, np.random.default_rng(0), max_hz=120.0)
    assert a.shape == SHAPE
    assert_allclose(np.abs(a).max(), 120.0)
    assert_allclose(a, b)
    # smooth: neighbouring voxels (2 mm apart, 30 mm correlation) differ little
    assert np.abs(np.diff(a, axis=0)).max() < 0.2 * 120.0
    assert_allclose(field_error(a, np.random.default_rng(1), relative_error=0.0), a)


def test_folding_warns():
    shape = (2, 32, 2)
    ramp = np.broadcast_to(np.arange(32.0)[None, :, None], shape)
    field = -30.0 * (ramp - 15.5)  # dd/dy = -1.5: folds
    with pytest.warns(UserWarning, match="folds"):
        distort(np.ones(shape), field, pe_axis=1, pe_sign=1, readout_time_s=READOUT_S)


@pytest.mark.parametrize(
    "image_shape, field_shape, options, match",
    [
        ((8, 8), (8, 8, 1), {}, "image must be"),
        ((8, 8, 8), (8, 8, 7), {}, "does not match"),
        ((8, 8, 8, 2), (8, 8, 7), {}, "does not match"),
        ((8, 8, 8), (8, 8, 8), {"pe_axis": 3}, "pe_axis=3"),
        ((8, 8, 8), (8, 8, 8), {"pe_axis": -1}, "pe_axis=-1"),
        ((8, 8, 8), (8, 8, 8), {"pe_sign": 0}, "pe_sign=0"),
        ((8, 8, 8), (8, 8, 8), {"readout_time_s": -0.05}, "readout_time_s=-0.05"),
        ((8, 8, 8), (8, 8, 8), {"order": 7}, "order=7"),
    ],
)
def test_validation_errors(image_shape, field_shape, options, match):
    kwargs = dict(pe_axis=1, pe_sign=1, readout_time_s=READOUT_S) | options
    for func in (distort, undistort):
        with pytest.raises(ValueError, match=match):
            func(np.ones(image_shape), np.zeros(field_shape), **kwargs)


def test_field_validation_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="max_hz=-1"):
        smooth_field_hz(SHAPE, AFFINE, rng, max_hz=-1.0)
    with pytest.raises(ValueError, match="shape="):
        smooth_field_hz((4, 4), AFFINE, rng, max_hz=10.0)
    with pytest.raises(ValueError, match="relative_error=-0.1"):
        field_error(np.zeros(SHAPE), rng, relative_error=-0.1)
    with pytest.raises(ValueError, match="non-finite"):
        field_error(np.full(SHAPE, np.nan), rng, relative_error=0.1)
    with pytest.raises(ValueError, match="rng must be"):
        smooth_field_hz(SHAPE, AFFINE, 0, max_hz=10.0)
