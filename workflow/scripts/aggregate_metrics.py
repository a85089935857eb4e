"""Gather the per-job metric tables into metrics.csv and summarise them."""

from noise2average.runtime import configure_logging

log = configure_logging(snakemake.log[0])

from pathlib import Path

from noise2average.summary import read_metrics, summarize, summary_markdown

metrics = read_metrics(snakemake.input.tables)
metrics.to_csv(snakemake.output.metrics, index=False)
summary = summarize(metrics)
summary.to_csv(snakemake.output.summary, index=False)
Path(snakemake.output.markdown).write_text(summary_markdown(summary))
log.info("%d metric rows, %d summary rows", len(metrics), len(summary))
