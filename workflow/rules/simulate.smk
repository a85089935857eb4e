rule simulate_subject:
    output:
        truth=subject_file("truth"),
        mask=subject_file("mask"),
        dseg=subject_file("dseg"),
        noisy=subject_file("noisy"),
        sidecar=subject_file("noisy", ext=".json"),
    params:
        simulation=config["simulation"],
        seed=config["seed"],
    log:
        log_file("simulate_subject", "sub-{subject}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../scripts/simulate_subject.py"
