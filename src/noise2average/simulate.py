"""Simulated subjects: noisy repetitions of a deformed Colin 27 anatomy with known truth.

Two data types (``params`` is the ``simulation`` section of the config):

``t1w_rep``
    Repeated accelerated T1w acquisitions of one subject. Repetition 1 is the reference:
    ``J_1 = s_1 |b S + n_1|`` on the output grid. For ``k > 1`` the head has moved by a
    rigid ``T_k`` (within ``motion.max_translation_mm`` / ``max_rotation_deg``); the
    scanner acquires the moved object on a fixed grid (padded so that resampling never
    leaves it), where the receive bias ``b`` and the g-factor map stay (they belong to the
    coil, not the head), and adds noise there; registration to repetition 1 estimates
    ``T^_k = T_k E_k^-1`` with a residual error ``E_k`` (within
    ``residual_translation_mm`` / ``residual_rotation_deg``) and resamples the acquired
    image with cubic B-splines: ``J_k(x) = s_k A_k(T^_k x)``. The result is misaligned by
    ``E_k`` and its noise is interpolated (spatially correlated). ``s_k`` is a global
    intensity scale per repetition (receiver gain / prescan normalisation, applied to
    signal and noise alike), uniform in ``[1 - intensity_scale_jitter,
    1 + intensity_scale_jitter]``. Truth: ``mean_k(s_k) b S`` on the reference grid, the
    noise-free, perfectly aligned image at the mean gain, which is what averaging the
    repetitions estimates.

``memprage``
    The echoes of one multi-echo MPRAGE shot, each echo a repetition:
    ``E_e = S0 exp(-TE_e R2*)`` with ``S0 = b S`` (the subject's T1w, taken as the signal
    at TE = 0) and ``R2* = sum_t f_t / T2*_t`` over CSF, GM, WM and non-brain tissue
    (relaxation rates add, weighted by the volume fractions ``f_t``; the non-brain
    fraction is ``1 - f_csf - f_gm - f_wm``). Independent noise per echo with the same
    noise map (receiver noise does not depend on TE); no motion and no gain change
    between echoes (same shot, same reconstruction). Truth: ``mean_e E_e``, the mean of
    the noise-free echoes, which is what averaging the echoes estimates.

Common to both: the subject anatomy ``S(x) = A(x + u(x))`` is the working Colin 27
anatomy deformed by a smooth random field ``u`` (`noise2average.anatomy`), on an axial
slab centred on the ventricles (or the whole brain). Noise: magnitude of complex Gaussian
noise with per-component standard deviation ``sigma_0 g(x)``, Rician for ``coils = 1``,
noncentral chi otherwise (`noise2average.noise`); ``sigma_0 = sigma_relative_to_wm`` times
the mean white-matter intensity of the noise-free image at unit gain (``b S`` for
``t1w_rep``, the truth for ``memprage``), so each repetition has the configured
white-matter SNR. ``g`` rises from 1 at the edge of the head's field of view (the whole
working crop) to ``g_max`` at its centre, fixed to the scanner frame.

Randomness: the anatomy (deformation, bias field) is drawn from ``seed`` alone, so a
subject has the same anatomy in every data type; noise, motion and gains are drawn from a
stream of ``seed`` specific to the data type.
"""

from dataclasses import dataclass, field

import numpy as np

from noise2average import anatomy as _anatomy
from noise2average import motion as _motion
from noise2average import noise as _noise

__all__ = ["DATA_TYPES", "SimulatedSubject", "simulate_subject"]

#: Supported data types and the random stream each draws its noise and motion from
#: (stream 0 is the anatomy).
DATA_TYPES = {"t1w_rep": 1, "memprage": 2}

#: T2* (ms) of non-brain head tissue (scalp muscle, fat, skin) used when
#: ``memprage.t2star_ms`` has no ``other`` entry: skeletal muscle is about 30 ms at 3 T; fat
#: dephases faster than mono-exponentially (multi-peak spectrum), ignored here.
DEFAULT_OTHER_T2STAR_MS = 30.0

_SPLINE_PAD_VOXELS = 3  # extra padding of the acquisition grid for the cubic kernel


@dataclass(eq=False)
class SimulatedSubject:
    """One simulated subject of one data type.

    Attributes
    ----------
    truth : ndarray of float32, shape (X, Y, Z)
        Noise-free reference that averaging the repetitions estimates (see the module
        docstring).
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask of the subject (brain volume fraction >= 0.5).
    dseg : ndarray of int8, shape (X, Y, Z)
        0 background, 1 CSF, 2 GM, 3 WM.
    repetitions : ndarray of float32, shape (X, Y, Z, N)
        Noisy repetitions (``t1w_rep``) or echoes (``memprage``), registered to the grid
        of ``truth``; repetition 0 is the reference.
    affine : ndarray of float64, shape (4, 4)
        Voxel-to-world (mm) transform shared by all arrays.
    info : dict
        Every drawn and derived parameter, JSON-serialisable (plain floats, ints, strings
        and lists).
    sigma_map : ndarray of float32, shape (X, Y, Z), optional
        Noise standard deviation per real/imaginary component and channel in the scanner
        frame, ``sigma_0 g``, before the per-repetition gain.
    """

    truth: np.ndarray
    mask: np.ndarray
    dseg: np.ndarray
    repetitions: np.ndarray
    affine: np.ndarray
    info: dict = field(default_factory=dict)
    sigma_map: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _get(params, path):
    node = params
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"params is missing simulation.{path}")
        node = node[key]
    return node


def _number(params, path, *, low=None, high=None, low_open=False, integer=False):
    value = _get(params, path)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"simulation.{path}={value!r} must be a number")
    if integer and float(value) != int(value):
        raise ValueError(f"simulation.{path}={value!r} must be an integer")
    value = int(value) if integer else float(value)
    if not np.isfinite(value):
        raise ValueError(f"simulation.{path}={value!r} must be finite")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"simulation.{path}={value!r} must be {'>' if low_open else '>='} {low}")
    if high is not None and value > high:
        raise ValueError(f"simulation.{path}={value!r} must be <= {high}")
    return value


def _check_anatomy_and_noise(params):
    """Checked values of the ``simulation`` keys every data type uses (grid, anatomy, noise)."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be the simulation dict, got {type(params).__name__}")
    p = {
        "voxel_size_mm": _number(params, "voxel_size_mm", low=1.0),
        "deformation_max_mm": _number(params, "anatomy.deformation_max_mm", low=0),
        "deformation_smoothness_mm": _number(
            params, "anatomy.deformation_smoothness_mm", low=0, low_open=True
        ),
        "bias_field_amplitude": _number(params, "anatomy.bias_field_amplitude", low=0, high=0.9),
        "sigma_relative_to_wm": _number(params, "noise.sigma_relative_to_wm", low=0),
        "g_max": _number(params, "noise.g_max", low=1),
        "coils": _number(params, "noise.coils", low=1, integer=True),
    }
    slab = _get(params, "slab_slices")
    if slab is not None:
        slab = _number(params, "slab_slices", low=1, integer=True)
    p["slab_slices"] = slab
    return p


def _check_params(params, data_type):
    p = _check_anatomy_and_noise(params)
    if data_type == "t1w_rep":
        p["repetitions"] = _number(params, "repetitions", low=2, integer=True)
        p["intensity_scale_jitter"] = _number(
            params, "intensity_scale_jitter", low=0, high=0.5
        )
        for key in (
            "max_translation_mm",
            "max_rotation_deg",
            "residual_translation_mm",
            "residual_rotation_deg",
        ):
            p[key] = _number(params, f"motion.{key}", low=0)
    else:
        echo_times = _get(params, "memprage.echo_times_ms")
        if not isinstance(echo_times, (list, tuple)) or len(echo_times) < 2:
            raise ValueError(
                f"simulation.memprage.echo_times_ms={echo_times!r} must list at least 2 echo times"
            )
        echo_times = np.asarray(echo_times, dtype=np.float64)
        if np.any(~np.isfinite(echo_times)) or np.any(echo_times < 0):
            raise ValueError(
                f"simulation.memprage.echo_times_ms={echo_times.tolist()!r} must be >= 0"
            )
        p["echo_times_ms"] = echo_times
        t2star = dict(_get(params, "memprage.t2star_ms"))
        t2star.setdefault("other", DEFAULT_OTHER_T2STAR_MS)
        for tissue in ("csf", "gm", "wm", "other"):
            if tissue not in t2star:
                raise ValueError(f"params is missing simulation.memprage.t2star_ms.{tissue}")
            value = t2star[tissue]
            if isinstance(value, bool) or not (np.isfinite(value) and value > 0):
                raise ValueError(f"simulation.memprage.t2star_ms.{tissue}={value!r} must be > 0")
        p["t2star_ms"] = {k: float(t2star[k]) for k in ("csf", "gm", "wm", "other")}
    return p


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    return int(seed)


# ---------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------


def _rigid_info(rotation_deg, translation_mm):
    return {
        "rotation_deg": [float(v) for v in rotation_deg],
        "translation_mm": [float(v) for v in translation_mm],
        "rotation_angle_deg": float(np.linalg.norm(rotation_deg)),
        "translation_norm_mm": float(np.linalg.norm(translation_mm)),
    }


def _t1w_repetitions(s_ref, sigma_ref, grid, rng, p, subject):
    """Repetitions of the ``t1w_rep`` model; returns (repetitions, scales, per-rep info)."""
    shape, affine = grid["shape"], grid["affine"]
    n = p["repetitions"]
    jitter = p["intensity_scale_jitter"]
    scales = rng.uniform(1 - jitter, 1 + jitter, size=n)
    center = _motion.volume_center_mm(shape, affine)
    reps = np.empty(shape + (n,), dtype=np.float32)
    reference = _noise.add_magnitude_noise(s_ref, sigma_ref, rng, coils=p["coils"])
    reps[..., 0] = scales[0] * reference
    zero = _rigid_info(np.zeros(3), np.zeros(3))
    info = [
        {
            "index": 1,
            "intensity_scale": float(scales[0]),
            "motion": zero,
            "registration_residual": zero,
            "resampled": False,
        }
    ]
    # Scanner grid of the moved acquisitions: the output grid padded so that resampling
    # with any registration estimate within the limits stays inside it.
    reach = _motion.max_displacement_mm(
        shape,
        affine,
        translation_mm=p["max_translation_mm"] + p["residual_translation_mm"],
        rotation_deg=p["max_rotation_deg"] + p["residual_rotation_deg"],
        center_mm=center,
    )
    voxel = float(np.min(np.sqrt(np.sum(affine[:3, :3] ** 2, axis=0))))
    pad = int(np.ceil(reach / voxel)) + _SPLINE_PAD_VOXELS
    acq_shape = tuple(int(n_) + 2 * pad for n_ in shape)
    acq_affine = np.array(affine, dtype=np.float64)
    acq_affine[:3, 3] -= acq_affine[:3, :3] @ np.full(3, float(pad))
    acq_bias = subject["bias"](_anatomy.grid_points(acq_shape, acq_affine))[..., 0]
    acq_bias = acq_bias.astype(np.float32)
    acq_sigma = subject["sigma_0"] * _noise.g_factor_map(
        acq_shape, acq_affine, g_max=p["g_max"], **subject["fov"]
    )
    for k in range(1, n):
        rot_t, trans_t = _motion.random_rigid(
            rng, max_translation_mm=p["max_translation_mm"], max_rotation_deg=p["max_rotation_deg"]
        )
        rot_e, trans_e = _motion.random_rigid(
            rng,
            max_translation_mm=p["residual_translation_mm"],
            max_rotation_deg=p["residual_rotation_deg"],
        )
        motion = _motion.rigid_matrix(rot_t, trans_t, center_mm=center)
        residual = _motion.rigid_matrix(rot_e, trans_e, center_mm=center)
        estimate = _motion.registration_transform(motion, residual)
        # Scanner grid points pulled back into the reference position: T^-1 x.
        moved_points = _anatomy.grid_points(acq_shape, np.linalg.inv(motion) @ acq_affine)
        moved = _anatomy.sample_anatomy(
            subject["source"], moved_points, deformation=subject["deformation"], fractions=False
        )
        del moved_points
        acquired = _noise.add_magnitude_noise(
            moved * acq_bias, acq_sigma, rng, coils=p["coils"]
        )
        registered = _motion.transform_image(
            acquired,
            acq_affine,
            np.linalg.inv(estimate),
            order=3,
            output_shape=shape,
            output_affine=affine,
            mode="nearest",
        )
        # Magnitude images are non-negative; cubic splines overshoot slightly in the air.
        negative = float(np.mean(registered < 0))
        reps[..., k] = scales[k] * np.maximum(registered, 0)
        est_rot, est_trans = _motion.rigid_parameters(estimate, center_mm=center)
        info.append(
            {
                "index": k + 1,
                "intensity_scale": float(scales[k]),
                "motion": _rigid_info(rot_t, trans_t),
                "registration_residual": _rigid_info(rot_e, trans_e),
                "registration_estimate": _rigid_info(est_rot, est_trans),
                "resampled": True,
                "interpolation": "cubic B-spline",
                "clipped_negative_fraction": negative,
            }
        )
    grid_info = {
        "acquisition_padding_voxels": pad,
        "acquisition_shape": list(acq_shape),
        "rotation_center_mm": [float(v) for v in center],
    }
    return reps, scales, info, grid_info


def _subject_anatomy(seed, p):
    """One subject's anatomy on the working grid, drawn from ``seed`` alone.

    Shared by every data type (`simulate_subject` and `noise2average.simulate_dwi`), so a
    subject has the same anatomy in all of them. ``p`` holds ``voxel_size_mm``,
    ``slab_slices``, ``deformation_max_mm``, ``deformation_smoothness_mm`` and
    ``bias_field_amplitude``.

    Returns
    -------
    dict
        ``source`` (the working Colin 27 `Anatomy`), ``shape``, ``affine``, ``start`` (first
        slab slice), ``points`` (grid points in mm), ``deformation`` and ``bias_field``
        (callables of points), ``image`` and ``fractions`` (deformed anatomy), ``bias``
        (the bias field on the grid, float32), ``mask``, ``dseg`` and ``fov`` (centre and
        semi-axes of the field of view, in mm, for the g-factor map).
    """
    source = _anatomy.working_anatomy(voxel_size_mm=p["voxel_size_mm"])
    shape, affine, start = _anatomy.slab_grid(source, slab_slices=p["slab_slices"])
    shape = tuple(int(n) for n in shape)
    points = _anatomy.grid_points(shape, affine)
    anatomy_rng = np.random.default_rng([seed, 0])
    if tuple(source.shape) == shape:
        head_points = points
    else:
        head_points = _anatomy.grid_points(source.shape, source.affine)
    deformation = _anatomy.random_deformation(
        anatomy_rng,
        head_points,
        max_displacement_mm=p["deformation_max_mm"],
        smoothness_mm=p["deformation_smoothness_mm"],
    )
    bias_field = _anatomy.random_bias_field(
        anatomy_rng, head_points, amplitude=p["bias_field_amplitude"]
    )
    del head_points
    image, fractions = _anatomy.sample_anatomy(source, points, deformation=deformation)
    mask, dseg = _anatomy.labels_from_fractions(fractions)
    return {
        "source": source,
        "shape": shape,
        "affine": np.array(affine, dtype=np.float64),
        "start": int(start),
        "points": points,
        "deformation": deformation,
        "bias_field": bias_field,
        "image": image,
        "fractions": fractions,
        "bias": bias_field(points)[..., 0].astype(np.float32),
        "mask": mask,
        "dseg": dseg,
        "fov": {
            "center_mm": _motion.volume_center_mm(source.shape, source.affine),
            "semi_axes_mm": np.array(source.shape) * source.voxel_size / 2,
        },
    }


def simulate_subject(data_type, *, seed, params):
    """Simulate one subject of one data type.

    Parameters
    ----------
    data_type : {'t1w_rep', 'memprage'}
        Repeated T1w acquisitions with motion, or multi-echo MPRAGE echoes (see the module
        docstring for the models).
    seed : int
        Non-negative subject seed. The anatomy depends on it alone; noise and motion
        depend on it and ``data_type``.
    params : dict
        The config's ``simulation`` section: ``voxel_size_mm``, ``slab_slices``,
        ``anatomy.{deformation_max_mm, deformation_smoothness_mm, bias_field_amplitude}``,
        ``noise.{sigma_relative_to_wm, g_max, coils}``; for ``t1w_rep`` also
        ``motion.{max_translation_mm, max_rotation_deg, residual_translation_mm,
        residual_rotation_deg}``, ``intensity_scale_jitter`` and ``repetitions``; for
        ``memprage`` ``memprage.{echo_times_ms, t2star_ms.{csf, gm, wm[, other]}}`` (ms).

    Returns
    -------
    subject : SimulatedSubject
        ``truth``, ``mask``, ``dseg`` of shape (X, Y, Z), ``repetitions`` of shape
        (X, Y, Z, N) with N = ``repetitions`` or the number of echo times, ``affine``,
        ``sigma_map`` and an ``info`` dict for a JSON sidecar.

    Raises
    ------
    ValueError
        Naming the offending data type, seed or parameter.
    """
    if data_type not in DATA_TYPES:
        raise ValueError(f"data_type={data_type!r} must be one of {sorted(DATA_TYPES)}")
    seed = _check_seed(seed)
    p = _check_params(params, data_type)

    a = _subject_anatomy(seed, p)
    source, shape, affine, start = a["source"], a["shape"], a["affine"], a["start"]
    points, deformation, bias, bias_ref = a["points"], a["deformation"], a["bias_field"], a["bias"]
    fractions, mask, dseg, fov = a["fractions"], a["mask"], a["dseg"], a["fov"]
    s_ref = a["image"] * bias_ref
    wm = dseg == 3
    if not wm.any():
        raise ValueError("the simulated grid holds no white matter; check slab_slices")

    g = _noise.g_factor_map(shape, affine, g_max=p["g_max"], **fov)
    rng = np.random.default_rng([seed, DATA_TYPES[data_type]])

    displacement = np.sqrt(np.sum(deformation(points) ** 2, axis=-1))
    jacobian = _anatomy.jacobian_determinant(deformation, points)
    del points
    info = {
        "data_type": data_type,
        "seed": seed,
        "shape": list(shape),
        "voxel_size_mm": p["voxel_size_mm"],
        "slab_slices": p["slab_slices"],
        "slab_start_slice": int(start),
        "anatomy": {
            "source": "Colin 27 (Holmes et al. 1998), see noise2average/data/NOTICE.md",
            "deformation_max_mm": p["deformation_max_mm"],
            "deformation_smoothness_mm": p["deformation_smoothness_mm"],
            "deformation_peak_mm": float(displacement.max()),
            "deformation_mean_mm": float(displacement[mask].mean()),
            "jacobian_min": float(jacobian.min()),
            "jacobian_max": float(jacobian.max()),
            "bias_field_amplitude": p["bias_field_amplitude"],
            "bias_field_range": [float(bias_ref.min()), float(bias_ref.max())],
            "bias_field_frame": "scanner",
        },
        "noise": {
            "model": "rician" if p["coils"] == 1 else "noncentral_chi",
            "coils": p["coils"],
            "sigma_relative_to_wm": p["sigma_relative_to_wm"],
            "g_max": p["g_max"],
            "g_range_fov": [float(g.min()), float(g.max())],
            "g_range_brain": [float(g[mask].min()), float(g[mask].max())],
            "g_fov_center_mm": [float(v) for v in fov["center_mm"]],
            "g_fov_semi_axes_mm": [float(v) for v in fov["semi_axes_mm"]],
        },
    }

    if data_type == "t1w_rep":
        wm_mean = float(s_ref[wm].mean())
        sigma_0 = p["sigma_relative_to_wm"] * wm_mean
        subject = {
            "source": source,
            "deformation": deformation,
            "bias": bias,
            "sigma_0": sigma_0,
            "fov": fov,
        }
        reps, scales, rep_info, grid_info = _t1w_repetitions(
            s_ref, sigma_0 * g, {"shape": shape, "affine": affine}, rng, p, subject
        )
        truth = (float(scales.mean()) * s_ref).astype(np.float32)
        info["truth"] = "mean gain x noise-free reference-position image (bias included)"
        info["wm_mean_unit_gain"] = wm_mean
        info["motion"] = {
            "max_translation_mm": p["max_translation_mm"],
            "max_rotation_deg": p["max_rotation_deg"],
            "residual_translation_mm": p["residual_translation_mm"],
            "residual_rotation_deg": p["residual_rotation_deg"],
            "rotation_parametrisation": "rotation vector (axis x angle), degrees",
            **grid_info,
        }
        info["intensity_scale_jitter"] = p["intensity_scale_jitter"]
        info["intensity_scales"] = [float(s) for s in scales]
        info["repetitions"] = rep_info
    else:
        t2 = p["t2star_ms"]
        brain = fractions.sum(axis=-1)
        rate = (
            fractions[..., 0] / t2["csf"]
            + fractions[..., 1] / t2["gm"]
            + fractions[..., 2] / t2["wm"]
            + np.clip(1 - brain, 0, 1) / t2["other"]
        )  # 1/ms
        echoes = np.stack(
            [s_ref * np.exp(-te * rate) for te in p["echo_times_ms"]], axis=-1
        ).astype(np.float32)
        truth = echoes.mean(axis=-1).astype(np.float32)
        wm_mean = float(truth[wm].mean())
        sigma_0 = p["sigma_relative_to_wm"] * wm_mean
        reps = np.empty_like(echoes)
        for e in range(echoes.shape[-1]):
            reps[..., e] = _noise.add_magnitude_noise(
                echoes[..., e], sigma_0 * g, rng, coils=p["coils"]
            )
        info["truth"] = "mean of the noise-free echoes"
        info["wm_mean_truth"] = wm_mean
        info["echo_times_ms"] = [float(t) for t in p["echo_times_ms"]]
        info["t2star_ms"] = t2
        info["intensity_scales"] = [1.0] * echoes.shape[-1]
        info["repetitions"] = [
            {"index": e + 1, "echo_time_ms": float(te), "intensity_scale": 1.0, "resampled": False}
            for e, te in enumerate(p["echo_times_ms"])
        ]

    info["sigma"] = float(sigma_0)
    info["sigma_definition"] = (
        "noise std per real/imaginary component and channel at g = 1 and unit gain; "
        "the noise std in repetition k at voxel x is intensity_scale_k * sigma * g(x)"
    )
    info["n_repetitions"] = int(reps.shape[-1])
    return SimulatedSubject(
        truth=truth,
        mask=mask,
        dseg=dseg,
        repetitions=reps,
        affine=np.array(affine, dtype=np.float64),
        info=info,
        sigma_map=(sigma_0 * g).astype(np.float32),
    )
