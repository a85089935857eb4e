# One scoring job per unit and data type, over every method's results: scoring is seconds
# of work, and one job instead of one per method keeps the DAG of hundreds of subjects small.
rule compute_metrics:
    input:
        unpack(t1w_metric_inputs),
    output:
        table=metrics_table(),
    wildcard_constraints:
        data_type=one_of(T1W_TYPES),
    params:
        reference=metric_reference,
        results=lambda wildcards: scored_results(wildcards.data_type),
    log:
        log_file("compute_metrics", "{dataset}", "sub-{subject}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=config["resources"]["metrics_mem_mb"],
        runtime=config["resources"]["metrics_runtime_min"],
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/compute_metrics.py"


# Concatenating the tables and writing the provenance and the dataset descriptions take
# seconds: they run on the submit host of a cluster.
localrules:
    aggregate_metrics,
    record_provenance,
    describe_derivatives,


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
        versions=report(
            f"{RESULTS}/provenance/versions.json",
            caption="../report/provenance.rst",
            category="Configuration",
        ),
        config=report(
            f"{RESULTS}/provenance/config.yaml",
            caption="../report/provenance.rst",
            category="Configuration",
        ),
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
