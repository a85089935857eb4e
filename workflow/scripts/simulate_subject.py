"""Simulate one synthetic subject of one data type (truth, mask, tissue labels, repetitions).

Diffusion subjects also get their gradient table and the ground-truth DTI maps.
"""

from noise2average.runtime import configure_logging, derive_seed, software_versions

log = configure_logging(snakemake.log[0])

import numpy as np

from noise2average.io import save_gradients, save_nifti, write_json

subject_id = snakemake.wildcards.subject
data_type = snakemake.wildcards.data_type
seed = derive_seed(snakemake.params.seed, "subject", subject_id)
log.info("simulating sub-%s %s with seed %d", subject_id, data_type, seed)
output = snakemake.output

if snakemake.rule == "simulate_dwi_subject":
    from noise2average.simulate_dwi import options_from_config, simulate_dwi_subject

    params, options = options_from_config(
        snakemake.params.simulation, snakemake.params.diffusion, data_type
    )
    subject = simulate_dwi_subject(data_type, seed=seed, params=params, diffusion=options)
    save_gradients(output.bval, output.bvec, subject.bvals, subject.bvecs)
    maps = dict(subject.reference_maps)
    maps["colorfa"] = np.abs(maps["v1"]) * maps["fa"][..., None]
    for name, path in zip(snakemake.params.map_names, output.maps, strict=True):
        save_nifti(path, maps[name], subject.affine)
    simulation = {"simulation": params, "diffusion": options}
else:
    from noise2average.simulate import simulate_subject

    subject = simulate_subject(data_type, seed=seed, params=snakemake.params.simulation)
    simulation = snakemake.params.simulation

save_nifti(output.reference, subject.truth, subject.affine)
save_nifti(output.mask, subject.mask, subject.affine)
save_nifti(output.dseg, subject.dseg, subject.affine, dtype=np.int8)
save_nifti(output.noisy, subject.repetitions, subject.affine)
write_json(
    output.sidecar,
    {
        "data_type": data_type,
        "subject": subject_id,
        "seed": seed,
        "repetitions": subject.repetitions.shape[-1],
        "simulation": simulation,
        "drawn": subject.info,
        "software": software_versions(),
    },
)
