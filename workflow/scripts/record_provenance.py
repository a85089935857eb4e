"""Record software versions and the resolved configuration next to the results."""

from noise2average.runtime import configure_logging, software_versions

log = configure_logging(snakemake.log[0])

import yaml

from noise2average.io import write_json

write_json(snakemake.output.versions, software_versions())
with open(snakemake.output.config, "w") as handle:
    yaml.safe_dump(dict(snakemake.params.config), handle, sort_keys=False)
