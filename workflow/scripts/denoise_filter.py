"""Average the repetitions, and denoise that average with a classical filter.

T1w volumes: BM4D or AONLM with the noise level estimated on the average itself. Diffusion
series: BM4D or AONLM volume by volume (sigma estimated per volume, volumes in parallel),
MP-PCA or Patch2Self on the whole series. Never from the ground truth.
"""

from noise2average.runtime import configure_logging, set_num_threads, software_versions

log = configure_logging(snakemake.log[0])
set_num_threads(snakemake.threads)

import warnings

from noise2average.io import load_gradients, load_nifti, save_nifti, write_json

method = snakemake.params.method
options = dict(snakemake.params.options)
repetitions, affine, header = load_nifti(snakemake.input.noisy, ndim=(4, 5))
mask = load_nifti(snakemake.input.mask, ndim=3)[0] > 0
average = repetitions.mean(axis=-1)
details = {}


def denoise_volume(volume):
    from noise2average.noise_estimate import estimate_sigma

    sigma = estimate_sigma(volume, mask)
    details["sigma_estimated"] = sigma
    log.info("%s: noise std estimated on the average: %.4g", method, sigma)
    if method == "bm4d":
        from noise2average.bm4d_rician import bm4d_rician

        return bm4d_rician(volume, sigma, mask=mask, num_threads=snakemake.threads, **options)
    if method == "aonlm":
        from noise2average.aonlm import aonlm

        return aonlm(volume, mask=mask, sigma=sigma, num_threads=snakemake.threads, **options)
    raise ValueError(f"{method} needs a diffusion series; {snakemake.input.noisy} is a volume")


def denoise_series(series):
    from noise2average import dwi_denoise

    bvals, _ = load_gradients(
        snakemake.input.bval, snakemake.input.bvec, n_volumes=series.shape[3]
    )
    if method == "patch2self":
        return dwi_denoise.patch2self_dwi(
            series, bvals, mask=mask, b0_threshold=snakemake.params.b0_threshold, **options
        )
    if method == "mppca":
        return dwi_denoise.mppca_dwi(series, mask=mask, **options)
    per_volume = {"bm4d": dwi_denoise.bm4d_dwi, "aonlm": dwi_denoise.aonlm_dwi}[method]
    return per_volume(series, mask=mask, num_workers=snakemake.threads, **options)


if method == "average":
    result = average
else:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = denoise_series(average) if average.ndim == 4 else denoise_volume(average)
    # Intensity-shift warnings (e.g. a Patch2Self volume whose mean moved) go to the log
    # and the sidecar: the result is kept, and the change is reported beside it.
    details["warnings"] = [str(w.message) for w in caught]
    for message in details["warnings"]:
        log.warning("%s", message)

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
