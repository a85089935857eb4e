"""One unit of a BIDS dataset -> repetitions, reference, mask (and, for diffusion, the
gradient table and the reference tensor maps), with a sidecar recording where they came from.
"""

from noise2average.runtime import configure_logging, software_versions

log = configure_logging(snakemake.log[0])

from noise2average.ingest import ingest_repetitions
from noise2average.io import save_gradients, save_nifti, write_json

settings = dict(snakemake.params.settings)
wildcards = snakemake.wildcards
output = snakemake.output
mask_path = snakemake.input.get("mask")
log.info("ingesting %s sub-%s %s from %s", wildcards.dataset, wildcards.subject,
         wildcards.data_type, settings["bids_dir"])
unit = ingest_repetitions(
    settings.pop("bids_dir"), settings.pop("repetition_set"), wildcards.data_type,
    mask_path=mask_path, **settings,
)

if snakemake.rule == "ingest_dwi":
    from noise2average.dti_metrics import fit_tensor

    save_gradients(output.bval, output.bvec, unit.bvals, unit.bvecs)
    maps = fit_tensor(unit.tensor_fit_series, unit.tensor_fit_bvals, unit.tensor_fit_bvecs,
                      mask=unit.mask, b0_threshold=settings["b0_threshold"])
    maps["colorfa"] = maps.pop("color_fa")
    for name, path in zip(snakemake.params.map_names, output.maps, strict=True):
        save_nifti(path, maps[name], unit.affine, header=unit.header)
    unit.info["reference_maps"] = "dipy WLS tensor fit of " + (
        "every direction of the shell" if wildcards.data_type == "dti_subsets"
        else "the mean of all repetitions"
    )

save_nifti(output.reference, unit.reference, unit.affine, header=unit.header)
save_nifti(output.mask, unit.mask, unit.affine, header=unit.header)
save_nifti(output.noisy, unit.noisy, unit.affine, header=unit.header)
write_json(
    output.sidecar,
    {
        "dataset": wildcards.dataset,
        "data_type": wildcards.data_type,
        "subject": wildcards.subject,
        "repetitions": unit.noisy.shape[-1],
        "settings": settings,
        "seed": snakemake.params.seed,
        **unit.info,
        "software": software_versions(),
    },
)
log.info("%d repetitions of shape %s; %s", unit.noisy.shape[-1], unit.noisy.shape[:-1],
         unit.info["reference"])
