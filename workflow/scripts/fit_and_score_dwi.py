"""Fit tensors to every diffusion result of one unit, write the maps, and score the results."""

from noise2average.runtime import configure_logging

log = configure_logging(snakemake.log[0])

from pathlib import Path

import pandas as pd

from noise2average.dti_metrics import dti_metrics, fit_tensor, white_matter_mask
from noise2average.io import load_gradients, load_nifti, save_nifti
from noise2average.metrics import series_metrics
from noise2average.quality import no_reference_metrics
from noise2average.summary import metrics_rows

wildcards = snakemake.wildcards
names = snakemake.params.map_names

reference_series = load_nifti(snakemake.input.reference, ndim=4)[0]
mask = load_nifti(snakemake.input.mask, ndim=3)[0] > 0
reference = {
    name: load_nifti(path, ndim=(3, 4))[0]
    for name, path in zip(names, snakemake.input.reference_maps, strict=True)
}
regions = {"brain": mask, "wm": white_matter_mask(reference["fa"], mask)}
noisy, affine, _ = load_nifti(snakemake.input.noisy, ndim=5)
# The first repetition: the reference frame of the others, untouched by correction. A copy,
# so that the other repetitions' memory is freed.
first_repetition = noisy[..., 0].copy()
del noisy
bvals, bvecs = load_gradients(snakemake.input.bval, snakemake.input.bvec,
                              n_volumes=first_repetition.shape[3])
denoised = iter(snakemake.input.images)
Path(snakemake.output.maps).mkdir(parents=True, exist_ok=True)
labels = {"dataset": wildcards.dataset, "subject": wildcards.subject,
          "data_type": wildcards.data_type, "reference": snakemake.params.reference}

tables = []
# One series at a time: a whole-brain diffusion series is gigabytes at the paper's scale.
for method, result, iterations in snakemake.params.results:
    series = first_repetition if method == "noisy" else load_nifti(next(denoised), ndim=4)[0]
    fitted = fit_tensor(series, bvals, bvecs, mask=mask,
                        b0_threshold=snakemake.params.b0_threshold)
    fitted["colorfa"] = fitted.pop("color_fa")
    for name, path in snakemake.params.map_files[result].items():
        save_nifti(path, fitted[name], affine)
    log.info("%s: mean FA in the mask %.3f", result, float(fitted["fa"][mask].mean()))
    image_values = {**series_metrics(series, reference_series, mask),
                    **no_reference_metrics(series, first_repetition, mask)}
    dti_rows = pd.DataFrame(dti_metrics(fitted, reference, regions))
    for iteration in iterations:
        tables.append(metrics_rows(image_values, iteration=iteration, region="brain",
                                   method=method, **labels))
        for region, rows in dti_rows.groupby("region", sort=False):
            tables.append(metrics_rows(dict(zip(rows["metric"], rows["value"])),
                                       iteration=iteration, region=region, method=method,
                                       **labels))
table = pd.concat(tables, ignore_index=True)
table.to_csv(snakemake.output.table, index=False)
log.info("%d metric rows for %d results", len(table), len(snakemake.params.results))
