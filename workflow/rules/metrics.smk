rule compute_metrics:
    input:
        unpack(t1w_metric_inputs),
    output:
        table=metrics_table(),
    wildcard_constraints:
        data_type=one_of(T1W_TYPES),
    params:
        reference=metric_reference,
    log:
        log_file("compute_metrics", "{dataset}", "sub-{subject}", "dtype-{data_type}", "method-{method}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/compute_metrics.py"


# Image metrics over all volumes of the series, and the tensor maps' errors in the brain and
# in white matter (reference FA > 0.2), for every N2A iteration.
rule compute_dwi_metrics:
    input:
        unpack(dwi_metric_inputs),
    output:
        table=metrics_table(),
    wildcard_constraints:
        data_type=one_of(DWI_TYPES),
    params:
        reference=metric_reference,
        results=lambda wildcards: method_results(wildcards.method),
        map_names=DTI_MAPS,
    log:
        log_file("compute_dwi_metrics", "{dataset}", "sub-{subject}", "dtype-{data_type}", "method-{method}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/compute_dwi_metrics.py"


rule aggregate_metrics:
    input:
        tables=metric_tables(),
    output:
        metrics=f"{RESULTS}/metrics.csv",
        summary=report(
            f"{RESULTS}/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
        ),
        markdown=f"{RESULTS}/summary.md",
    log:
        log_file("aggregate_metrics", "all"),
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
        versions=f"{RESULTS}/provenance/versions.json",
        config=f"{RESULTS}/provenance/config.yaml",
    params:
        config=config,
    log:
        log_file("record_provenance", "all"),
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/record_provenance.py"


# Each dataset's output folder is a BIDS derivative dataset.
rule describe_derivatives:
    output:
        description=f"{RESULTS}/{{dataset}}/dataset_description.json",
    params:
        entry=lambda wildcards: dataset_entry(wildcards.dataset),
    log:
        log_file("describe_derivatives", "{dataset}"),
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../scripts/describe_derivatives.py"
