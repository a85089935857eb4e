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
    params:
        methods=SCORED_METHODS,
        subject=EVALUATION_SUBJECTS[0],
    log:
        log_file("plot_image_panel", "dtype-{data_type}"),
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
    log:
        log_file("plot_metric_distributions", "dtype-{data_type}"),
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
    log:
        log_file("plot_iterations", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/plot_metrics.py"
