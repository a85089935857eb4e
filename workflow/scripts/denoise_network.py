"""Denoise one subject with a network method: N2A (every iteration), N2N or supervised.

Training writes a resume file every epoch beside the sidecar; a job killed mid-way and run
again continues from its last epoch (``noise2average.denoise.resume_folder``).
"""

from noise2average.runtime import configure_logging, derive_seed, set_num_threads, software_versions

log = configure_logging(snakemake.log[0])
set_num_threads(snakemake.threads)

import dataclasses

from noise2average.denoise import (
    discard_resume_files,
    file_checksums,
    resume_folder,
    train_and_denoise,
)
from noise2average.io import load_nifti, save_nifti, write_json
from noise2average.training import build_network, load_checkpoint, settings_from_config

method = snakemake.params.method
wildcards = snakemake.wildcards
repetitions, affine, header = load_nifti(snakemake.input.noisy, ndim=(4, 5))
mask = load_nifti(snakemake.input.mask, ndim=3)[0] > 0
reference = (load_nifti(snakemake.input.reference, ndim=(3, 4))[0]
             if method == "supervised" else None)
checkpoint = load_checkpoint(snakemake.input.model)
network = build_network(checkpoint["network_config"])
settings = settings_from_config(
    snakemake.params.training,
    snakemake.params.network,
    stage="finetune",
    seed=derive_seed(snakemake.params.seed, method, wildcards.subject, wildcards.data_type),
)
iterations = snakemake.params.get("iterations", 1)
inputs = file_checksums([snakemake.input.noisy, snakemake.input.mask, snakemake.input.model])
job = {"method": method, "settings": dataclasses.asdict(settings), "iterations": iterations,
       "inputs": inputs}
log.info("%s on sub-%s %s: %s", method, wildcards.subject, wildcards.data_type, settings)
images, history = train_and_denoise(
    method, repetitions, mask, network=network, pretrained_state=checkpoint["state_dict"],
    settings=settings, iterations=iterations, reference=reference,
    checkpoint_dir=resume_folder(snakemake.output.sidecar, job),
)
outputs = snakemake.output.images if method == "n2a" else [snakemake.output.image]
for image, path in zip(images, outputs, strict=True):
    save_nifti(path, image, affine, header=header)
write_json(
    snakemake.output.sidecar,
    {
        "method": method,
        "inputs": inputs,
        "outputs": list(outputs),
        "settings": settings,
        "iterations": iterations if method == "n2a" else None,
        "history": history,
        "software": software_versions(),
    },
)
discard_resume_files(snakemake.output.sidecar)
