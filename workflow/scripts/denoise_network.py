"""Denoise one subject with a network method: N2A (every iteration), N2N or supervised."""

from noise2average.runtime import configure_logging, derive_seed, set_num_threads, software_versions

log = configure_logging(snakemake.log[0])
set_num_threads(snakemake.threads)

from noise2average.io import load_nifti, save_nifti, write_json
from noise2average.training import (
    build_network,
    load_checkpoint,
    noise2average,
    noise2noise,
    settings_from_config,
    supervised,
)

method = snakemake.params.method
wildcards = snakemake.wildcards
repetitions, affine, header = load_nifti(snakemake.input.noisy, ndim=(4, 5))
mask = load_nifti(snakemake.input.mask, ndim=3)[0] > 0
checkpoint = load_checkpoint(snakemake.input.model)
network = build_network(checkpoint["network_config"])
settings = settings_from_config(
    snakemake.params.training,
    snakemake.params.network,
    stage="finetune",
    seed=derive_seed(snakemake.params.seed, method, wildcards.subject, wildcards.data_type),
)
common = dict(network=network, pretrained_state=checkpoint["state_dict"], settings=settings)
log.info("%s on sub-%s %s: %s", method, wildcards.subject, wildcards.data_type, settings)

if method == "n2a":
    images, history = noise2average(
        repetitions, mask, iterations=snakemake.params.iterations, **common
    )
    outputs = snakemake.output.images
elif method == "n2n":
    image, history = noise2noise(repetitions, mask, **common)
    images, outputs = [image], [snakemake.output.image]
else:
    reference = load_nifti(snakemake.input.reference, ndim=(3, 4))[0]
    image, history = supervised(repetitions, mask, reference, **common)
    images, outputs = [image], [snakemake.output.image]

for image, path in zip(images, outputs, strict=True):
    save_nifti(path, image, affine, header=header)
write_json(
    snakemake.output.sidecar,
    {
        "method": method,
        "inputs": {"repetitions": snakemake.input.noisy, "pretrained": snakemake.input.model},
        "outputs": list(outputs),
        "settings": settings,
        "history": history,
        "software": software_versions(),
    },
)
