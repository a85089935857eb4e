"""Metric figures from metrics.csv: distributions across subjects, or N2A against iteration."""

from noise2average.runtime import configure_logging

log = configure_logging(snakemake.log[0])

import pandas as pd

from noise2average.figures import plot_iterations, plot_metric_distributions, save_figure

plotters = {
    "plot_metric_distributions": plot_metric_distributions,
    "plot_iterations": plot_iterations,
}
metrics = pd.read_csv(snakemake.input.metrics, dtype={"subject": str, "iteration": str})
figure = plotters[snakemake.rule](
    metrics, data_type=snakemake.wildcards.data_type, dataset=snakemake.wildcards.dataset,
    **snakemake.params.selection
)
save_figure(figure, snakemake.output.png, snakemake.output.pdf)
