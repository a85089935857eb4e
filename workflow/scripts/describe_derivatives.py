"""Write the dataset_description.json that makes a dataset's outputs a BIDS derivative."""

from noise2average.runtime import configure_logging

log = configure_logging(snakemake.log[0])

from noise2average import __version__
from noise2average.datasets import derivative_description
from noise2average.io import write_json

write_json(snakemake.output.description,
           derivative_description(snakemake.params.entry, version=__version__))
