"""Score one method's diffusion result(s) for one unit: the series and its tensor maps."""

from noise2average.runtime import configure_logging

log = configure_logging(snakemake.log[0])

import pandas as pd

from noise2average.dti_metrics import dti_metrics, white_matter_mask
from noise2average.io import load_nifti
from noise2average.metrics import series_metrics
from noise2average.quality import no_reference_metrics
from noise2average.summary import FINAL, metrics_rows

wildcards = snakemake.wildcards
names = snakemake.params.map_names
results = snakemake.params.results


def read_maps(paths):
    return {
        name: load_nifti(path, ndim=(3, 4))[0] for name, path in zip(names, paths, strict=True)
    }


reference_series = load_nifti(snakemake.input.reference, ndim=4)[0]
mask = load_nifti(snakemake.input.mask, ndim=3)[0] > 0
reference = read_maps(snakemake.input.reference_maps)
regions = {"brain": mask, "wm": white_matter_mask(reference["fa"], mask)}
# The first repetition: the reference frame of the others, untouched by correction.
first_repetition = load_nifti(snakemake.input.noisy, ndim=5)[0][..., 0]
if wildcards.method == "noisy":
    series = [first_repetition]
else:
    images = snakemake.input.images
    paths = [images] if isinstance(images, str) else list(images)
    series = [load_nifti(path, ndim=4)[0] for path in paths]
maps = snakemake.input.maps
per_result = len(names)

labels = {"dataset": wildcards.dataset, "subject": wildcards.subject,
          "data_type": wildcards.data_type, "reference": snakemake.params.reference,
          "method": wildcards.method}
tables = []
for index, image in enumerate(series):
    # N2A reports every iteration, and its last one again as the final result.
    iterations = [str(index + 1)] if len(series) > 1 else []
    if index == len(series) - 1:
        iterations.append(FINAL)
    fitted = read_maps(maps[index * per_result:(index + 1) * per_result])
    dti_rows = pd.DataFrame(dti_metrics(fitted, reference, regions))
    for iteration in iterations:
        image_values = {**series_metrics(image, reference_series, mask),
                        **no_reference_metrics(image, first_repetition, mask)}
        tables.append(metrics_rows(image_values, iteration=iteration, region="brain", **labels))
        for region, rows in dti_rows.groupby("region", sort=False):
            tables.append(metrics_rows(dict(zip(rows["metric"], rows["value"])),
                                       iteration=iteration, region=region, **labels))
table = pd.concat(tables, ignore_index=True)
table.to_csv(snakemake.output.table, index=False)
log.info("%d metric rows for %s results %s", len(table), wildcards.method, results)
