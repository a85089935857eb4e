"""Score one method's output(s) for one subject against the ground truth."""

from noise2average.runtime import configure_logging

log = configure_logging(snakemake.log[0])

import pandas as pd

from noise2average.io import load_nifti
from noise2average.metrics import image_metrics
from noise2average.summary import metrics_rows

wildcards = snakemake.wildcards
truth = load_nifti(snakemake.input.truth, ndim=3)[0]
mask = load_nifti(snakemake.input.mask, ndim=3)[0] > 0
dseg = load_nifti(snakemake.input.dseg, ndim=3, dtype=None)[0].astype("int8")

if wildcards.method == "noisy":
    # The first repetition: the reference frame of the others, untouched by registration.
    images = {"final": load_nifti(snakemake.input.images, ndim=4)[0][..., 0]}
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
            image_metrics(image, truth, mask, dseg),
            dataset=snakemake.params.dataset,
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
