"""Fit diffusion tensors (dipy, WLS) to one series and write FA, MD, AD, RD, V1 and colour FA."""

from noise2average.runtime import configure_logging

log = configure_logging(snakemake.log[0])

from noise2average.dti_metrics import fit_tensor
from noise2average.io import load_gradients, load_nifti, save_nifti

series, affine, header = load_nifti(snakemake.input.image, ndim=(4, 5))
if series.ndim == 5:
    # The noisy input: its first repetition, the reference frame of the others.
    series = series[..., 0]
mask = load_nifti(snakemake.input.mask, ndim=3)[0] > 0
bvals, bvecs = load_gradients(
    snakemake.input.bval, snakemake.input.bvec, n_volumes=series.shape[3]
)
maps = fit_tensor(
    series, bvals, bvecs, mask=mask, b0_threshold=snakemake.params.b0_threshold
)
maps["colorfa"] = maps.pop("color_fa")
for name, path in zip(snakemake.params.map_names, snakemake.output.maps, strict=True):
    save_nifti(path, maps[name], affine)
log.info("tensor maps of %s: mean FA in the mask %.3f", snakemake.input.image,
         float(maps["fa"][mask].mean()))
