"""Average the repetitions, and denoise that average with a classical filter.

T1w volumes: BM4D or AONLM with the noise level estimated on the average itself. Diffusion
series: BM4D or AONLM volume by volume (sigma estimated per volume, volumes in parallel),
MP-PCA or Patch2Self on the whole series. Never from the ground truth.
"""

from noise2average.runtime import configure_logging, set_num_threads, software_versions

log = configure_logging(snakemake.log[0])
set_num_threads(snakemake.threads)

from noise2average.denoise import filter_average
from noise2average.io import load_gradients, load_nifti, save_nifti, write_json

method = snakemake.params.method
options = dict(snakemake.params.options)
repetitions, affine, header = load_nifti(snakemake.input.noisy, ndim=(4, 5))
mask = load_nifti(snakemake.input.mask, ndim=3)[0] > 0
average = repetitions.mean(axis=-1)
bvals = None
if average.ndim == 4:
    bvals, _ = load_gradients(snakemake.input.bval, snakemake.input.bvec,
                              n_volumes=average.shape[3])

# Intensity-shift warnings (e.g. a Patch2Self volume whose mean moved) go to the log and the
# sidecar: the result is kept, and the change is reported beside it.
result, details = filter_average(average, mask, method, bvals=bvals,
                                 b0_threshold=snakemake.params.b0_threshold, options=options,
                                 num_threads=snakemake.threads)
save_nifti(snakemake.output.image, result, affine, header=header)
write_json(
    snakemake.output.sidecar,
    {
        "method": method,
        "input": "mean of the repetitions",
        "repetitions": snakemake.input.noisy,
        "options": options,
        **details,
        "software": software_versions(),
    },
)
