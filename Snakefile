# Noise2Average benchmark: simulate repeated noisy scans or read them from BIDS data (local,
# or downloaded and verified), pretrain the MU-Net, denoise every subject with every method,
# fit diffusion tensors, score against the reference, plot and report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/denoise.smk"
include: "workflow/rules/dti.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
