"""Image panel of one subject: every method beside the truth, zoomed inset, error maps."""

from noise2average.runtime import configure_logging

log = configure_logging(snakemake.log[0])

from noise2average.figures import plot_image_panel, save_figure
from noise2average.io import load_nifti

images = {}
for method in snakemake.params.methods:
    image = load_nifti(snakemake.input[method], ndim=(3, 4))[0]
    images[method] = image[..., 0] if image.ndim == 4 else image
truth = load_nifti(snakemake.input.truth, ndim=3)[0]
mask = load_nifti(snakemake.input.mask, ndim=3)[0] > 0

figure = plot_image_panel(
    images,
    truth,
    mask,
    title=f"sub-{snakemake.params.subject} {snakemake.wildcards.data_type}",
)
save_figure(figure, snakemake.output.png, snakemake.output.pdf)
