rule compute_metrics:
    input:
        images=method_outputs,
        truth=subject_file("truth"),
        mask=subject_file("mask"),
        dseg=subject_file("dseg"),
    output:
        table=metrics_table(),
    params:
        dataset=DATASET,
    log:
        log_file("compute_metrics", "sub-{subject}", "dtype-{data_type}", "method-{method}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/compute_metrics.py"


rule aggregate_metrics:
    input:
        tables=expand(
            metrics_table(),
            subject=EVALUATION_SUBJECTS,
            data_type=DATA_TYPES,
            method=SCORED_METHODS,
        ),
    output:
        metrics=f"{RESULTS}/metrics.csv",
        summary=report(
            f"{RESULTS}/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
        ),
        markdown=f"{RESULTS}/summary.md",
    log:
        log_file("aggregate_metrics", DATASET),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/aggregate_metrics.py"


rule record_provenance:
    output:
        versions=f"{RESULTS}/provenance/{DATASET}_versions.json",
        config=f"{RESULTS}/provenance/{DATASET}_config.yaml",
    params:
        config=config,
    log:
        log_file("record_provenance", DATASET),
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/record_provenance.py"
