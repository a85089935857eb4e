"""Score one method's output(s) for one unit: against the reference, and without one."""

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
first_repetition = load_nifti(inputs.noisy, ndim=4)[0][..., 0]

if wildcards.method == "noisy":
    # The first repetition: the reference frame of the others, untouched by registration.
    images = {"final": first_repetition}
elif wildcards.method == "n2a":
    images = {
        str(k): load_nifti(path, ndim=3)[0]
        for k, path in enumerate(snakemake.input.images, start=1)
    }
    images["final"] = images[str(len(images))]
else:
    images = {"final": load_nifti(snakemake.input.images, ndim=3)[0]}

table = pd.concat(
    [
        metrics_rows(
            {**image_metrics(image, reference, mask, dseg),
             **no_reference_metrics(image, first_repetition, mask)},
            dataset=wildcards.dataset,
            reference=snakemake.params.reference,
            subject=wildcards.subject,
            data_type=wildcards.data_type,
            method=wildcards.method,
            iteration=iteration,
            region="brain",
        )
        for iteration, image in images.items()
    ]
)
table.to_csv(snakemake.output.table, index=False)
log.info("%d metric rows", len(table))
