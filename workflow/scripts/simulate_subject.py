"""Simulate one synthetic subject of one data type (truth, mask, tissue labels, repetitions)."""

from noise2average.runtime import configure_logging, derive_seed, software_versions

log = configure_logging(snakemake.log[0])

from noise2average.io import save_nifti, write_json
from noise2average.simulate import simulate_subject

import numpy as np

subject_id = snakemake.wildcards.subject
data_type = snakemake.wildcards.data_type
seed = derive_seed(snakemake.params.seed, "subject", subject_id)
log.info("simulating sub-%s %s with seed %d", subject_id, data_type, seed)
subject = simulate_subject(data_type, seed=seed, params=snakemake.params.simulation)

output = snakemake.output
save_nifti(output.truth, subject.truth, subject.affine)
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
        "simulation": snakemake.params.simulation,
        "drawn": subject.info,
        "software": software_versions(),
    },
)
