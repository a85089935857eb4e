"""Image panel of the first evaluation unit: every method beside the reference.

T1w: the images with zoomed insets and error maps. Diffusion: colour FA, and the FA and MD
errors of each method's tensor fit.
"""

from noise2average.runtime import configure_logging

log = configure_logging(snakemake.log[0])

from noise2average.figures import plot_dti_panel, plot_image_panel, save_figure
from noise2average.io import load_nifti

inputs = snakemake.input
methods = snakemake.params.methods
mask = load_nifti(inputs.mask, ndim=3)[0] > 0
title = f"sub-{snakemake.params.subject} {snakemake.wildcards.data_type}"


def read(path):
    return load_nifti(path, ndim=(3, 4))[0]


if snakemake.rule == "plot_dti_panel":
    names = {"fa": "fa", "md": "md", "color_fa": "colorfa"}
    fitted = {method: {key: read(snakemake.params.maps[method][name])
                       for key, name in names.items()} for method in methods}
    reference = {key: read(inputs[f"reference_{name}"]) for key, name in names.items()}
    figure = plot_dti_panel(fitted, reference, mask, title=title)
else:
    images = {}
    for method in methods:
        image = load_nifti(inputs[method], ndim=(3, 4))[0]
        images[method] = image[..., 0] if image.ndim == 4 else image
    figure = plot_image_panel(images, read(inputs.reference), mask, title=title)
save_figure(figure, snakemake.output.png, snakemake.output.pdf)
