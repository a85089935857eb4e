"""Average the repetitions, and denoise that average with BM4D or AONLM.

The noise level is estimated on the average itself, never taken from the ground truth.
"""

from noise2average.runtime import configure_logging, set_num_threads, software_versions

log = configure_logging(snakemake.log[0])
set_num_threads(snakemake.threads)

from noise2average.io import load_nifti, save_nifti, write_json

method = snakemake.params.method
options = dict(snakemake.params.options)
repetitions, affine, header = load_nifti(snakemake.input.noisy, ndim=4)
mask = load_nifti(snakemake.input.mask, ndim=3)[0] > 0
average = repetitions.mean(axis=-1)
details = {}

if method == "average":
    result = average
else:
    from noise2average.noise_estimate import estimate_sigma

    sigma = estimate_sigma(average, mask)
    details["sigma_estimated"] = sigma
    log.info("%s: noise std estimated on the average: %.4g", method, sigma)
    if method == "bm4d":
        from noise2average.bm4d_rician import bm4d_rician

        result = bm4d_rician(average, sigma, mask=mask, num_threads=snakemake.threads, **options)
    else:
        from noise2average.aonlm import aonlm

        result = aonlm(average, mask=mask, sigma=sigma, num_threads=snakemake.threads, **options)

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
