"""A tiny BIDS dataset written from the phantom, for the ingestion and workflow tests.

Per subject: three T1w runs (``run-1..3``), four MEMPRAGE echoes with EchoTime sidecars, an
AP/PA diffusion pair with gradient tables and PhaseEncodingDirection sidecars, and one
60-direction series (``acq-multidir``) for the SDnDTI subsets; a top-level ``T1w.json``
that the runs inherit.
"""

import copy
import json
from pathlib import Path

import numpy as np
import yaml

from noise2average.io import save_gradients, save_nifti
from noise2average.simulate import simulate_subject
from noise2average.simulate_dwi import options_from_config, simulate_dwi_subject

CONFIG = Path(__file__).resolve().parents[1] / "config"


def _config():
    config = yaml.safe_load((CONFIG / "config.yaml").read_text())
    test = yaml.safe_load((CONFIG / "test.yaml").read_text())
    simulation = copy.deepcopy(config["simulation"])
    simulation.update(test["simulation"])
    simulation["repetitions"] = 3
    diffusion = copy.deepcopy(config["diffusion"])
    diffusion.update({k: v for k, v in test["diffusion"].items() if not isinstance(v, dict)})
    diffusion["dwi_appa"] = {**diffusion["dwi_appa"], **test["diffusion"]["dwi_appa"]}
    return simulation, diffusion


def _write_json(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def write_bids_example(root, subjects=("01", "02"), *, seed=7):
    """Write the example dataset under ``root``; returns ``root`` as a Path."""
    root = Path(root)
    simulation, diffusion = _config()
    _write_json(root / "dataset_description.json",
                {"Name": "noise2average phantom example", "BIDSVersion": "1.9.0"})
    _write_json(root / "T1w.json", {"MagneticFieldStrength": 3, "EchoTime": 0.0023})
    for index, subject in enumerate(subjects):
        anat, dwi = root / f"sub-{subject}" / "anat", root / f"sub-{subject}" / "dwi"
        t1w = simulate_subject("t1w_rep", seed=seed + index, params=simulation)
        for run in range(3):
            save_nifti(anat / f"sub-{subject}_run-{run + 1}_T1w.nii.gz",
                       t1w.repetitions[..., run], t1w.affine)
        memprage = simulate_subject("memprage", seed=seed + index, params=simulation)
        echo_times = simulation["memprage"]["echo_times_ms"]
        for echo, echo_time in enumerate(echo_times, start=1):
            stem = anat / f"sub-{subject}_echo-{echo}_T1w"
            save_nifti(stem.with_suffix(".nii.gz"), memprage.repetitions[..., echo - 1],
                       memprage.affine)
            _write_json(stem.with_suffix(".json"), {"EchoTime": echo_time / 1000})
        params, options = options_from_config(simulation, diffusion, "dwi_appa")
        appa = simulate_dwi_subject("dwi_appa", seed=seed + index, params=params,
                                    diffusion=options)
        for k, direction in enumerate(("AP", "PA")):
            stem = dwi / f"sub-{subject}_dir-{direction}_dwi"
            save_nifti(stem.with_suffix(".nii.gz"), appa.repetitions[..., k], appa.affine)
            save_gradients(stem.with_suffix(".bval"), stem.with_suffix(".bvec"),
                           appa.bvals, appa.bvecs)
            _write_json(stem.with_suffix(".json"), {
                "PhaseEncodingDirection": "j-" if direction == "AP" else "j",
                "TotalReadoutTime": 0.05})
        many = {**options, "n_directions": 60, "n_b0": 3}
        series = simulate_dwi_subject("dwi_appa", seed=seed + 100 + index, params=params,
                                      diffusion=many)
        stem = dwi / f"sub-{subject}_acq-multidir_dwi"
        save_nifti(stem.with_suffix(".nii.gz"), series.repetitions[..., 0], series.affine)
        save_gradients(stem.with_suffix(".bval"), stem.with_suffix(".bvec"),
                       series.bvals, series.bvecs)
    return root


def bids_config(bids_dir, *, results_dir, source="bids", **extra):
    """Workflow config for the example: every data type, subject 02 pretrains."""
    dataset = {
        "name": "example",
        "source": source,
        "subjects": {"evaluation": ["01"], "training": ["02"]},
        "data_types": {
            "t1w_rep": {"inputs": 2},
            "memprage": None,
            "dwi_appa": None,
            "dti_subsets": {"filters": {"acq": "multidir"}},
        },
        **extra,
    }
    if source == "bids":
        dataset["bids_dir"] = str(bids_dir)
    return {"results_dir": results_dir, "datasets": [dataset]}


def array(path):
    import nibabel as nib

    return np.asarray(nib.load(path).dataobj)
