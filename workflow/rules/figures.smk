# Figures take seconds and read only small tables and slices: on a cluster they run on the
# submit host instead of waiting in the queue.
localrules:
    plot_image_panel,
    plot_dti_panel,
    plot_metric_distributions,
    plot_iterations,


rule plot_image_panel:
    input:
        unpack(panel_images),
    output:
        png=report(
            figure_file("panel", "png"),
            caption="../report/panel.rst",
            category="Images",
            subcategory="{data_type}",
        ),
        pdf=figure_file("panel", "pdf"),
    wildcard_constraints:
        data_type=one_of(T1W_TYPES),
    params:
        methods=lambda wildcards: scored_methods(wildcards.data_type),
        subject=first_unit,
    log:
        log_file("plot_image_panel", "{dataset}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/plot_image_panel.py"


rule plot_dti_panel:
    input:
        unpack(dti_panel_inputs),
    output:
        png=report(
            figure_file("dti", "png"),
            caption="../report/dti.rst",
            category="Images",
            subcategory="{data_type}",
        ),
        pdf=figure_file("dti", "pdf"),
    wildcard_constraints:
        data_type=one_of(DWI_TYPES),
    params:
        methods=lambda wildcards: scored_methods(wildcards.data_type),
        maps=dti_panel_maps,
        subject=first_unit,
    log:
        log_file("plot_dti_panel", "{dataset}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/plot_image_panel.py"


rule plot_metric_distributions:
    input:
        metrics=f"{RESULTS}/metrics.csv",
    output:
        png=report(
            figure_file("distributions", "png"),
            caption="../report/distributions.rst",
            category="Metrics",
            subcategory="{data_type}",
        ),
        pdf=figure_file("distributions", "pdf"),
    params:
        selection=lambda wildcards: metric_selection(wildcards.data_type),
    log:
        log_file("plot_metric_distributions", "{dataset}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/plot_metrics.py"


rule plot_iterations:
    input:
        metrics=f"{RESULTS}/metrics.csv",
    output:
        png=report(
            figure_file("iterations", "png"),
            caption="../report/iterations.rst",
            category="N2A iterations",
            subcategory="{data_type}",
        ),
        pdf=figure_file("iterations", "pdf"),
    params:
        selection=lambda wildcards: metric_selection(wildcards.data_type),
    log:
        log_file("plot_iterations", "{dataset}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/plot_metrics.py"
