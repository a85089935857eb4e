# Tensor fits (dipy, weighted least squares) and scores of every result of one diffusion unit:
# each method, each N2A iteration and the first noisy repetition, one series at a time. One
# job per unit keeps the DAG of hundreds of subjects small.
rule fit_and_score_dwi:
    input:
        unpack(dwi_metric_inputs),
    output:
        table=metrics_table(),
        maps=directory(tensor_folder()),
    wildcard_constraints:
        data_type=one_of(DWI_TYPES),
    params:
        reference=metric_reference,
        results=lambda wildcards: scored_results(wildcards.data_type),
        map_files=tensor_map_files,
        map_names=DTI_MAPS,
        b0_threshold=config["diffusion"]["b0_threshold"],
    log:
        log_file("fit_and_score_dwi", "{dataset}", "sub-{subject}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=config["resources"]["metrics_mem_mb"],
        runtime=config["resources"]["metrics_runtime_min"],
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/fit_and_score_dwi.py"
