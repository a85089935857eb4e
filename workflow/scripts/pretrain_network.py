"""Supervised pretraining of the MU-Net on the training subjects of one data type.

The model is what ``n2a denoise --pretrained`` takes. Training writes a resume file every
epoch beside the model; a job killed mid-way and run again continues from its last epoch.
"""

from noise2average.runtime import configure_logging, derive_seed, set_num_threads, software_versions

log = configure_logging(snakemake.log[0])
set_num_threads(snakemake.threads)

import dataclasses

from noise2average.denoise import discard_resume_files, file_checksums, resume_folder
from noise2average.io import load_nifti, write_json
from noise2average.training import build_network, pretrain, save_checkpoint, settings_from_config

data_type = snakemake.wildcards.data_type
# T1w: (X, Y, Z, repetition); diffusion: (X, Y, Z, volume, repetition), volumes as channels.
noisy = [load_nifti(path, ndim=(4, 5))[0] for path in snakemake.input.noisy]
references = [load_nifti(path, ndim=(3, 4))[0] for path in snakemake.input.reference]
channels = {1 if series.ndim == 4 else series.shape[3] for series in noisy}
if len(channels) != 1:
    raise ValueError(
        f"training series of {data_type} have different volume counts {sorted(channels)}: "
        f"{list(snakemake.input.noisy)}"
    )
channels = channels.pop()
masks = [load_nifti(path, ndim=3)[0] > 0 for path in snakemake.input.mask]

network_config = snakemake.params.network
seed = derive_seed(snakemake.params.seed, "pretrain", data_type)
settings = settings_from_config(
    snakemake.params.training, network_config, stage="pretrain", seed=seed
)
architecture = {key: network_config[key] for key in ("depth", "width", "batch_norm")}
network = build_network(
    {"in_channels": channels, "out_channels": channels, **architecture}, seed=seed
)
inputs = file_checksums([*snakemake.input.noisy, *snakemake.input.reference,
                         *snakemake.input.mask])
job = {"method": "pretrain", "settings": dataclasses.asdict(settings),
       "network": network.config, "inputs": inputs}
log.info("pretraining %s on %d subjects: %s", data_type, len(noisy), settings)
state, history = pretrain(
    noisy, references, masks, network=network, settings=settings,
    checkpoint=resume_folder(snakemake.output.model, job) / "pretrain.pt",
)

save_checkpoint(
    snakemake.output.model,
    state,
    network.config,
    history=history,
    extra={
        "data_type": data_type,
        "training_inputs": list(snakemake.input.noisy),
        "inputs": inputs,
        "settings": dataclasses.asdict(settings),
    },
)
write_json(
    snakemake.output.history,
    {"settings": settings, "inputs": inputs, "history": history,
     "software": software_versions()},
)
discard_resume_files(snakemake.output.model)
