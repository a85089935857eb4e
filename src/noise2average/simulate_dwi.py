"""Simulated diffusion subjects (data types 3 and 4) on the anatomy of `noise2average.simulate`.

Common phantom
--------------
The subject anatomy is built exactly as in `noise2average.simulate` (same calls, same random
stream ``[seed, 0]``): the working Colin 27 anatomy deformed by a smooth random field, with
its receive bias field, on the configured slab. From its tissue fractions:

- WM fibre directions from the WM fraction (`diffusion_phantom.fibre_directions`);
- partial-volume tensors (`diffusion_phantom.tensor_field`) with the configured tissue FA/MD;
- a T2-weighted b0 (`diffusion_phantom.b0_image`, echo time ``te_ms``, times the bias);
- noise-free DWIs ``S0 exp(-b g^T D g)`` on one single-shell gradient table
  (`diffusion_phantom.gradient_table`; the protocol, the same for every subject).

Noise: magnitude of complex Gaussian noise (`noise.add_magnitude_noise`; Rician for one coil)
with per-component std ``sigma_0 g(x)``, ``g`` the g-factor map of `noise.g_factor_map` fixed
to the scanner frame (the same field of view as in `simulate`), ``sigma_0`` the configured
relative noise times the mean white-matter b0 of the noise-free data.

``dwi_appa`` (data type 3)
    Two acquisitions of the whole table with opposite phase encoding along array axis 1
    (``pe_sign`` +1 = AP, -1 = PA). A smooth off-resonance field ``B``
    (`distortion.smooth_field_hz`) distorts each (`distortion.distort`, Jacobian intensity
    modulation included); noise is added in the distorted (scanner) frame; both are
    corrected (`distortion.undistort`) with one imperfect field estimate
    ``B^ = field_error(B)`` (topup estimates one field from both polarities), so their
    residual displacements ``+-(B - B^) T`` are opposite and a mismatch between them
    remains. Negative values from the cubic spline are clipped to 0. Truth: the
    undistorted noise-free DWIs on the full table.

``dti_subsets`` (data type 4, SDnDTI)
    One acquisition of the full table with independent noise, turned into repetitions by
    `sdndti.subset_repetitions` (as for an acquired series): `dti_subsets.select_subsets`
    picks ``n_subsets`` disjoint, well-conditioned 6-direction subsets of the
    diffusion-weighted volumes (deterministic from the table: the same for every subject).
    For each subset a tensor is fitted by linear least squares on the log signals
    (`dti_subsets.tensor_design_matrix`) with the mean of the b0 volumes as ``S0``, and
    DWIs are synthesized from it along the common set ``[b0] + directions of subset 1``
    (``M = 7``): one repetition per subset. Truth: the ground-truth tensors (equal to the
    all-direction fit of the noise-free data, since the phantom is a single tensor per
    voxel) synthesized on the same common set with the noise-free b0. The b0 channel of
    every repetition is the same mean noisy b0 (as in SDnDTI): its noise is shared, not
    independent, across the repetitions.

Randomness: anatomy from ``seed`` alone (stream 0, shared with `simulate`); field, field
estimate and noise from stream ``[seed, DWI_DATA_TYPES[data_type]]``; the gradient table
from ``diffusion['gradient_seed']`` and the subsets from ``diffusion['subset_seed']``.
"""

import copy
from dataclasses import dataclass, field

import numpy as np

from noise2average import diffusion_phantom as _phantom
from noise2average import distortion as _distortion
from noise2average import noise as _noise
from noise2average.sdndti import subset_repetitions

# Private validation helpers of simulate.py, reused so both modules read `simulation` alike.
from noise2average.simulate import (
    _check_anatomy_and_noise,
    _check_seed,
    _number,
    _subject_anatomy,
)

__all__ = [
    "DWI_DATA_TYPES",
    "DEFAULT_DIFFUSION",
    "DwiSubject",
    "simulate_dwi_subject",
    "options_from_config",
]

#: Data types and their random stream (0 is the anatomy; 1 and 2 are used by `simulate`).
DWI_DATA_TYPES = {"dwi_appa": 3, "dti_subsets": 4}

#: Defaults of the ``diffusion`` dict (see `simulate_dwi_subject`).
DEFAULT_DIFFUSION = {
    "n_directions": 90,
    "n_b0": 6,
    "bvalue": 1000.0,
    "gradient_seed": 0,
    "wm_fa": 0.7,
    "wm_md": 0.7e-3,
    "gm_fa": 0.15,
    "gm_md": 0.8e-3,
    "csf_md": 3.0e-3,
    "te_ms": 89.5,
    "fibre_smoothness_voxels": 2.0,
    "sigma_relative_to_b0_wm": None,
    "pe_axis": 1,
    "readout_time_s": 0.05,
    "field_max_hz": 60.0,
    "field_smoothness_mm": 30.0,
    "field_error_relative": 0.05,
    "field_error_smoothness_voxels": 10.0,
    "n_subsets": 2,
    "max_condition": 1.6,
    "n_rotations": 20000,
    "subset_seed": 0,
}

_PE_SIGNS = {"AP": 1, "PA": -1}


@dataclass(eq=False)
class DwiSubject:
    """One simulated diffusion subject of one data type.

    Attributes
    ----------
    truth : ndarray of float32, shape (X, Y, Z, M)
        Noise-free reference DWIs on the gradient table (``bvals``, ``bvecs``).
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask (brain volume fraction >= 0.5), identical to `simulate`'s for the seed.
    dseg : ndarray of int8, shape (X, Y, Z)
        0 background, 1 CSF, 2 GM, 3 WM.
    repetitions : ndarray of float32, shape (X, Y, Z, M, N)
        Noisy repetitions on the grid and table of ``truth``.
    bvals : ndarray of float64, shape (M,)
        b-values in s/mm^2.
    bvecs : ndarray of float64, shape (M, 3)
        Unit directions in the voxel-axis frame (zero rows for b0).
    affine : ndarray of float64, shape (4, 4)
        Voxel-to-world (mm) transform.
    reference_maps : dict of str to ndarray
        ``fa``, ``md``, ``ad``, ``rd`` (float32, (X, Y, Z); mm^2/s except FA) and ``v1``
        (float32, (X, Y, Z, 3)) of the ground-truth tensors.
    info : dict
        Every drawn and derived parameter, JSON-serialisable.
    sigma_map : ndarray of float32, shape (X, Y, Z)
        Noise std per real/imaginary component in the scanner frame, ``sigma_0 g``.
    """

    truth: np.ndarray
    mask: np.ndarray
    dseg: np.ndarray
    repetitions: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    affine: np.ndarray
    reference_maps: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    sigma_map: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _dnumber(d, key, **limits):
    """`simulate._number` on the diffusion dict, with messages naming ``diffusion.<key>``."""
    try:
        return _number(d, key, **limits)
    except ValueError as error:
        raise ValueError(str(error).replace("simulation.", "diffusion.")) from None


def _check_diffusion(diffusion):
    if diffusion is None:
        diffusion = {}
    if not isinstance(diffusion, dict):
        raise ValueError(f"diffusion must be a dict, got {type(diffusion).__name__}")
    unknown = sorted(set(diffusion) - set(DEFAULT_DIFFUSION))
    if unknown:
        raise ValueError(
            f"diffusion has unknown keys {unknown}; known: {sorted(DEFAULT_DIFFUSION)}"
        )
    d = {**copy.deepcopy(DEFAULT_DIFFUSION), **diffusion}
    if d["sigma_relative_to_b0_wm"] is None:
        d.pop("sigma_relative_to_b0_wm")
        rel = None
    else:
        rel = _dnumber(d, "sigma_relative_to_b0_wm", low=0)
    q = {
        "n_directions": _dnumber(d, "n_directions", low=6, integer=True),
        "n_b0": _dnumber(d, "n_b0", low=1, integer=True),
        "bvalue": _dnumber(d, "bvalue", low=0, low_open=True),
        "gradient_seed": _dnumber(d, "gradient_seed", low=0, integer=True),
        "wm_fa": _dnumber(d, "wm_fa", low=0, high=0.99),
        "wm_md": _dnumber(d, "wm_md", low=0, low_open=True),
        "gm_fa": _dnumber(d, "gm_fa", low=0, high=0.99),
        "gm_md": _dnumber(d, "gm_md", low=0, low_open=True),
        "csf_md": _dnumber(d, "csf_md", low=0),
        "te_ms": _dnumber(d, "te_ms", low=0),
        "fibre_smoothness_voxels": _dnumber(d, "fibre_smoothness_voxels", low=0, low_open=True),
        "sigma_relative_to_b0_wm": rel,
        "pe_axis": _dnumber(d, "pe_axis", low=0, high=2, integer=True),
        "readout_time_s": _dnumber(d, "readout_time_s", low=0, low_open=True),
        "field_max_hz": _dnumber(d, "field_max_hz", low=0),
        "field_smoothness_mm": _dnumber(d, "field_smoothness_mm", low=0, low_open=True),
        "field_error_relative": _dnumber(d, "field_error_relative", low=0),
        "field_error_smoothness_voxels": _number(
            d, "field_error_smoothness_voxels", low=0, low_open=True
        ),
        "n_subsets": _dnumber(d, "n_subsets", low=2, integer=True),
        "max_condition": _dnumber(d, "max_condition", low=1, low_open=True),
        "n_rotations": _dnumber(d, "n_rotations", low=1, integer=True),
        "subset_seed": _dnumber(d, "subset_seed", low=0, integer=True),
    }
    return q


# ---------------------------------------------------------------------------------------------
# Phantom
# ---------------------------------------------------------------------------------------------


def _maps(tensors):
    maps = _phantom.dti_maps(tensors)
    return {k: np.asarray(v, dtype=np.float32) for k, v in maps.items()}


# ---------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------


#: Keys of the workflow's ``diffusion`` section that set the diffusion grid.
_GRID_KEYS = ("voxel_size_mm", "slab_slices")
#: Keys of the workflow's ``diffusion`` section read by the analysis, not the simulation.
_ANALYSIS_KEYS = ("b0_threshold",)


def options_from_config(simulation, diffusion, data_type):
    """Arguments of `simulate_dwi_subject` from the workflow config.

    Parameters
    ----------
    simulation : dict
        The config's ``simulation`` section (anatomy, noise).
    diffusion : dict
        The config's ``diffusion`` section: the diffusion grid (``voxel_size_mm``,
        ``slab_slices``), options shared by the diffusion data types, and one sub-dict per
        data type (``dwi_appa``, ``dti_subsets``) with its protocol.
    data_type : {'dwi_appa', 'dti_subsets'}

    Returns
    -------
    params : dict
        ``simulation`` with the diffusion grid in place of the T1w grid.
    options : dict
        The flat ``diffusion`` argument: shared options plus this data type's protocol.
    """
    if data_type not in DWI_DATA_TYPES:
        raise ValueError(f"data_type={data_type!r} must be one of {sorted(DWI_DATA_TYPES)}")
    params = {**simulation, **{k: diffusion[k] for k in _GRID_KEYS if k in diffusion}}
    skipped = set(_GRID_KEYS) | set(_ANALYSIS_KEYS) | set(DWI_DATA_TYPES)
    options = {k: v for k, v in diffusion.items() if k not in skipped}
    options.update(diffusion.get(data_type, {}))
    return params, options


def simulate_dwi_subject(data_type, *, seed, params, diffusion=None):
    """Simulate one diffusion subject of data type ``dwi_appa`` or ``dti_subsets``.

    Parameters
    ----------
    data_type : {'dwi_appa', 'dti_subsets'}
        Opposite phase-encoding repetitions, or SDnDTI direction-subset repetitions (see
        the module docstring for the models).
    seed : int
        Non-negative subject seed; the anatomy depends on it alone and equals that of
        `simulate.simulate_subject` for the same seed and ``params``.
    params : dict
        The config's ``simulation`` section; read: ``voxel_size_mm``, ``slab_slices``,
        ``anatomy.{deformation_max_mm, deformation_smoothness_mm, bias_field_amplitude}``,
        ``noise.{sigma_relative_to_wm, g_max, coils}``.
    diffusion : dict, optional
        Diffusion options; missing keys take `DEFAULT_DIFFUSION`, unknown keys raise.
        Protocol: ``n_directions`` (>= 6; 90, the HCP b=1000 shell; ``dti_subsets`` needs
        about 60 for two subsets below ``max_condition`` 1.6), ``n_b0`` (>= 1; 6),
        ``bvalue`` (s/mm^2; 1000), ``gradient_seed`` (0). Tissue: ``wm_fa`` (0.7),
        ``wm_md`` (0.7e-3 mm^2/s),
        ``gm_fa`` (0.15), ``gm_md`` (0.8e-3), ``csf_md`` (3.0e-3), ``te_ms`` (89.5, HCP),
        ``fibre_smoothness_voxels`` (2.0). Noise: ``sigma_relative_to_b0_wm`` (std per
        component relative to the mean WM b0; None uses ``noise.sigma_relative_to_wm``).
        ``dwi_appa``: ``pe_axis`` (1), ``readout_time_s`` (total readout of the simulated
        grid, s; 0.05: displacement in voxels is ``field * readout_time_s``),
        ``field_max_hz`` (peak |B|, 60), ``field_smoothness_mm`` (30),
        ``field_error_relative`` (peak error of the field estimate relative to peak |B|,
        0.05), ``field_error_smoothness_voxels`` (10). ``dti_subsets``: ``n_subsets``
        (>= 2; 2), ``max_condition`` (1.6), ``n_rotations`` (20000), ``subset_seed`` (0).

    Returns
    -------
    subject : DwiSubject
        ``dwi_appa``: M = ``n_b0 + n_directions``, N = 2 (AP, PA). ``dti_subsets``: M = 7
        (mean b0 + the 6 directions of subset 1), N = ``n_subsets``.

    Raises
    ------
    ValueError
        Naming the offending data type, seed or parameter.
    """
    if data_type not in DWI_DATA_TYPES:
        raise ValueError(f"data_type={data_type!r} must be one of {sorted(DWI_DATA_TYPES)}")
    seed = _check_seed(seed)
    p = _check_anatomy_and_noise(params)
    d = _check_diffusion(diffusion)
    if 6 * d["n_subsets"] > d["n_directions"]:
        raise ValueError(
            f"diffusion.n_subsets={d['n_subsets']} needs {6 * d['n_subsets']} directions, "
            f"n_directions={d['n_directions']}"
        )

    a = _subject_anatomy(seed, p)
    shape, affine, mask, fractions = a["shape"], a["affine"], a["mask"], a["fractions"]
    wm = a["dseg"] == 3
    if not wm.any():
        raise ValueError("the simulated grid holds no white matter; check slab_slices")

    # Noise-free phantom (seed-only through the anatomy).
    directions = _phantom.fibre_directions(
        fractions[..., 2], mask, smoothness_voxels=d["fibre_smoothness_voxels"]
    )
    tensors = _phantom.tensor_field(
        fractions,
        directions,
        wm_fa=d["wm_fa"],
        wm_md=d["wm_md"],
        gm_fa=d["gm_fa"],
        gm_md=d["gm_md"],
        csf_md=d["csf_md"],
    )
    b0 = _phantom.b0_image(fractions, a["image"], te_ms=d["te_ms"], bias=a["bias"])
    bvals, bvecs = _phantom.gradient_table(
        d["n_directions"], n_b0=d["n_b0"], bvalue=d["bvalue"], seed=d["gradient_seed"]
    )
    clean = _phantom.synthesize_dwi(tensors, b0, bvals, bvecs).astype(np.float32)

    relative = d["sigma_relative_to_b0_wm"]
    if relative is None:
        relative = p["sigma_relative_to_wm"]
    wm_b0 = float(b0[wm].mean())
    sigma_0 = relative * wm_b0
    g = _noise.g_factor_map(shape, affine, g_max=p["g_max"], **a["fov"])
    sigma_map = (sigma_0 * g).astype(np.float32)
    rng = np.random.default_rng([seed, DWI_DATA_TYPES[data_type]])

    info = {
        "data_type": data_type,
        "seed": seed,
        "shape": list(shape),
        "voxel_size_mm": p["voxel_size_mm"],
        "slab_slices": p["slab_slices"],
        "slab_start_slice": a["start"],
        "anatomy": {
            "source": "Colin 27 (Holmes et al. 1998), see noise2average/data/NOTICE.md",
            "construction": "as noise2average.simulate (stream [seed, 0])",
            "deformation_max_mm": p["deformation_max_mm"],
            "deformation_smoothness_mm": p["deformation_smoothness_mm"],
            "bias_field_amplitude": p["bias_field_amplitude"],
            "bias_field_range": [float(a["bias"].min()), float(a["bias"].max())],
        },
        "diffusion": {k: v for k, v in d.items()},
        "full_bvals": [float(v) for v in bvals],
        "full_bvecs": [[float(c) for c in row] for row in bvecs],
        "noise": {
            "model": "rician" if p["coils"] == 1 else "noncentral_chi",
            "coils": p["coils"],
            "sigma_relative_to_b0_wm": float(relative),
            "g_max": p["g_max"],
            "g_range_brain": [float(g[mask].min()), float(g[mask].max())],
        },
        "wm_b0_mean": wm_b0,
        "sigma": float(sigma_0),
        "sigma_definition": (
            "noise std per real/imaginary component and channel at g = 1 in the acquired "
            "(scanner) frame; at voxel x it is sigma * g(x)"
        ),
    }
    info["diffusion"]["sigma_relative_to_b0_wm"] = float(relative)

    if data_type == "dwi_appa":
        reps, truth, out_bvals, out_bvecs = _appa(clean, sigma_map, rng, p, d, shape, affine, info)
    else:
        reps, truth, out_bvals, out_bvecs = _sdndti(
            clean, tensors, b0, bvals, bvecs, sigma_map, rng, p, d, info
        )
    info["n_repetitions"] = int(reps.shape[-1])
    return DwiSubject(
        truth=truth,
        mask=mask,
        dseg=a["dseg"],
        repetitions=reps,
        bvals=np.asarray(out_bvals, dtype=np.float64),
        bvecs=np.asarray(out_bvecs, dtype=np.float64),
        affine=affine,
        reference_maps=_maps(tensors),
        info=info,
        sigma_map=sigma_map,
    )


def _appa(clean, sigma_map, rng, p, d, shape, affine, info):
    pe = {"pe_axis": d["pe_axis"], "readout_time_s": d["readout_time_s"]}
    field_hz = _distortion.smooth_field_hz(
        shape, affine, rng, max_hz=d["field_max_hz"], smoothness_mm=d["field_smoothness_mm"]
    )
    estimate = _distortion.field_error(
        field_hz,
        rng,
        relative_error=d["field_error_relative"],
        smoothness_voxels=d["field_error_smoothness_voxels"],
    )
    reps = np.empty(clean.shape + (2,), dtype=np.float32)
    rep_info = []
    for k, (name, sign) in enumerate(_PE_SIGNS.items()):
        distorted = _distortion.distort(clean, field_hz, pe_sign=sign, **pe)
        noisy = _noise.add_magnitude_noise(
            np.maximum(distorted, 0), sigma_map[..., None], rng, coils=p["coils"]
        )
        del distorted
        corrected = _distortion.undistort(noisy, estimate, pe_sign=sign, **pe)
        negative = float(np.mean(corrected < 0))
        reps[..., k] = np.maximum(corrected, 0)
        jac = _distortion.jacobian(field_hz, pe_sign=sign, **pe)
        rep_info.append(
            {
                "index": k + 1,
                "phase_encoding": name,
                "pe_sign": sign,
                "jacobian_range": [float(jac.min()), float(jac.max())],
                "clipped_negative_fraction": negative,
            }
        )
    residual = (field_hz - estimate) * d["readout_time_s"]
    voxel = float(np.abs(affine[d["pe_axis"], d["pe_axis"]]))
    info["distortion"] = {
        "pe_axis": d["pe_axis"],
        "readout_time_s": d["readout_time_s"],
        "field_max_hz": d["field_max_hz"],
        "field_range_hz": [float(field_hz.min()), float(field_hz.max())],
        "peak_displacement_voxels": float(np.abs(field_hz).max() * d["readout_time_s"]),
        "peak_displacement_mm": float(np.abs(field_hz).max() * d["readout_time_s"] * voxel),
        "field_error_relative": d["field_error_relative"],
        "peak_residual_displacement_voxels": float(np.abs(residual).max()),
        "estimate": "one field estimate for both polarities (topup-like)",
        "interpolation": "cubic B-spline along the PE axis",
    }
    info["repetitions"] = rep_info
    info["truth"] = "undistorted noise-free DWIs on the full table"
    return reps, clean, info["full_bvals"], info["full_bvecs"]


def _sdndti(clean, tensors, b0, bvals, bvecs, sigma_map, rng, p, d, info):
    noisy = _noise.add_magnitude_noise(clean, sigma_map[..., None], rng, coils=p["coils"])
    reps, out_bvals, out_bvecs, subsets = subset_repetitions(
        noisy,
        bvals,
        bvecs,
        n_subsets=d["n_subsets"],
        max_condition=d["max_condition"],
        n_rotations=d["n_rotations"],
        seed=d["subset_seed"],
        bvalue=d["bvalue"],
    )
    truth = _phantom.synthesize_dwi(tensors, b0, out_bvals, out_bvecs).astype(np.float32)
    info["repetitions"] = subsets.pop("repetitions")
    info["subsets"] = subsets
    info["truth"] = (
        "ground-truth tensors (= all-direction fit of the noise-free data) synthesized on "
        "the common set with the noise-free b0"
    )
    return reps, truth, out_bvals, out_bvecs
