rule average_repetitions:
    input:
        unpack(filter_inputs),
    output:
        image=denoised_file("average"),
        sidecar=denoised_file("average", ext=".json"),
    params:
        method="average",
        options={},
        b0_threshold=config["diffusion"]["b0_threshold"],
    log:
        log_file("average_repetitions", "{dataset}", "sub-{subject}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/filters.yaml"
    script:
        "../scripts/denoise_filter.py"


# Classical filters denoise the average of the repetitions, with the noise level estimated
# on that average (never from the ground truth); diffusion series volume by volume for BM4D
# and AONLM, jointly for MP-PCA and Patch2Self.
rule denoise_filter:
    input:
        unpack(filter_inputs),
    output:
        image=denoised_file("{method}"),
        sidecar=denoised_file("{method}", ext=".json"),
    wildcard_constraints:
        method="bm4d|aonlm|mppca|patch2self",
    params:
        method="{method}",
        options=lambda wildcards: config[wildcards.method],
        b0_threshold=config["diffusion"]["b0_threshold"],
    log:
        log_file("denoise_filter", "{dataset}", "sub-{subject}", "dtype-{data_type}", "method-{method}"),
    threads: config["resources"]["filter_threads"]
    resources:
        mem_mb=config["resources"]["filter_mem_mb"],
        runtime=config["resources"]["filter_runtime_min"],
    conda:
        "../../envs/filters.yaml"
    script:
        "../scripts/denoise_filter.py"


# K iterations, each fine-tuned from the pretrained weights towards the previous result.
rule denoise_n2a:
    input:
        noisy=subject_file("noisy"),
        mask=subject_file("mask"),
        model=pretrained_model(),
    output:
        images=[n2a_iteration_file(k) for k in N2A_ITERATIONS],
        sidecar=denoised_file("n2a", ext=".json"),
    params:
        method="n2a",
        training=config["training"],
        network=lambda wildcards: network_config(wildcards.data_type),
        iterations=config["n2a"]["iterations"],
        seed=config["seed"],
    log:
        log_file("denoise_n2a", "{dataset}", "sub-{subject}", "dtype-{data_type}"),
    threads: config["resources"]["training_threads"]
    resources:
        mem_mb=config["resources"]["training_mem_mb"],
        runtime=config["resources"]["training_runtime_min"],
        gpu=TRAINING_GPUS,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/denoise_network.py"


# Noise2Noise over all ordered pairs of repetitions, and the supervised upper bound
# fine-tuned on the subject's own noise-free reference.
rule denoise_network:
    input:
        unpack(network_inputs),
    output:
        image=denoised_file("{method}"),
        sidecar=denoised_file("{method}", ext=".json"),
    wildcard_constraints:
        method="n2n|supervised",
    params:
        method="{method}",
        training=config["training"],
        network=lambda wildcards: network_config(wildcards.data_type),
        seed=config["seed"],
    log:
        log_file("denoise_network", "{dataset}", "sub-{subject}", "dtype-{data_type}", "method-{method}"),
    threads: config["resources"]["training_threads"]
    resources:
        mem_mb=config["resources"]["training_mem_mb"],
        runtime=config["resources"]["training_runtime_min"],
        gpu=TRAINING_GPUS,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/denoise_network.py"
