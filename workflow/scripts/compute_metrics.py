"""Score every result of one unit: against the reference, and without one."""

from noise2average.runtime import configure_logging

log = configure_logging(snakemake.log[0])

import pandas as pd

from noise2average.io import load_nifti
from noise2average.metrics import image_metrics
from noise2average.quality import no_reference_metrics
from noise2average.summary import metrics_rows

wildcards = snakemake.wildcards
inputs = snakemake.input
reference = load_nifti(inputs.reference, ndim=3)[0]
mask = load_nifti(inputs.mask, ndim=3)[0] > 0
# Real data have no tissue labels: no boundary sharpness.
dseg = load_nifti(inputs.dseg, ndim=3, dtype=None)[0].astype("int8") if "dseg" in inputs.keys() else None
# The first repetition: the reference frame of the others, untouched by registration.
first_repetition = load_nifti(inputs.noisy, ndim=4)[0][..., 0].copy()
denoised = iter(inputs.images)

tables = []
for method, result, iterations in snakemake.params.results:
    image = first_repetition if method == "noisy" else load_nifti(next(denoised), ndim=3)[0]
    values = {**image_metrics(image, reference, mask, dseg),
              **no_reference_metrics(image, first_repetition, mask)}
    for iteration in iterations:
        tables.append(metrics_rows(values, dataset=wildcards.dataset,
                                   reference=snakemake.params.reference, subject=wildcards.subject,
                                   data_type=wildcards.data_type, method=method,
                                   iteration=iteration, region="brain"))
table = pd.concat(tables, ignore_index=True)
table.to_csv(snakemake.output.table, index=False)
log.info("%d metric rows for %d results", len(table), len(snakemake.params.results))
