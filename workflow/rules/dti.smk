# Weighted-least-squares tensor fit of one result: a method's output, every N2A iteration,
# or the first noisy repetition.
rule fit_tensor:
    input:
        image=fitted_image,
        mask=subject_file("mask"),
        bval=gradient_file(".bval"),
        bvec=gradient_file(".bvec"),
    output:
        maps=[tensor_map(name) for name in DTI_MAPS],
    wildcard_constraints:
        data_type=one_of(DWI_TYPES),
        result="[a-z0-9]+(_iter-[0-9]+)?",
    params:
        map_names=DTI_MAPS,
        b0_threshold=config["diffusion"]["b0_threshold"],
    log:
        log_file("fit_tensor", "{dataset}", "sub-{subject}", "dtype-{data_type}", "method-{result}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/filters.yaml"
    script:
        "../scripts/fit_tensor.py"
