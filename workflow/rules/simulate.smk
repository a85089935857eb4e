rule simulate_subject:
    output:
        reference=subject_file("reference"),
        mask=subject_file("mask"),
        dseg=subject_file("dseg"),
        noisy=subject_file("noisy"),
        sidecar=subject_file("noisy", ext=".json"),
    wildcard_constraints:
        dataset=one_of(SYNTHETIC),
        data_type=one_of(T1W_TYPES),
    params:
        simulation=config["simulation"],
        seed=config["seed"],
    log:
        log_file("simulate_subject", "{dataset}", "sub-{subject}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=config["resources"]["simulation_runtime_min"],
    conda:
        "../../envs/simulate.yaml"
    script:
        "../scripts/simulate_subject.py"


# The repetitions of a diffusion subject are one 5D series (X, Y, Z, volume, repetition) on
# one gradient table; the ground-truth tensor maps are written beside the noise-free series,
# which is the reference of the metrics.
rule simulate_dwi_subject:
    output:
        reference=subject_file("reference"),
        mask=subject_file("mask"),
        dseg=subject_file("dseg"),
        noisy=subject_file("noisy"),
        sidecar=subject_file("noisy", ext=".json"),
        bval=gradient_file(".bval"),
        bvec=gradient_file(".bvec"),
        maps=[reference_map(name) for name in DTI_MAPS],
    wildcard_constraints:
        dataset=one_of(SYNTHETIC),
        data_type=one_of(DWI_TYPES),
    params:
        simulation=config["simulation"],
        diffusion=config["diffusion"],
        map_names=DTI_MAPS,
        seed=config["seed"],
    log:
        log_file("simulate_dwi_subject", "{dataset}", "sub-{subject}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=config["resources"]["simulation_mem_mb"],
        runtime=config["resources"]["simulation_runtime_min"],
    conda:
        "../../envs/simulate.yaml"
    script:
        "../scripts/simulate_subject.py"
