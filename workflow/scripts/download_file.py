"""Download one raw input file, verified, and record where its checksum came from.

OpenNeuro files are checked against the checksum in the configuration or, when none is
given, against the git-annex key of the pinned snapshot. HCP files come from S3 with the
credentials in the environment, which are never logged.

The rule's ``download`` param holds ``source`` ("openneuro" or "hcp"), optional ``size``,
``md5``, ``sha256`` and ``retries``; for OpenNeuro ``url`` and, to resolve a missing
checksum, ``dataset_id``, ``version``, ``path`` and ``annex_base_url``; for the HCP
``bucket`` and ``key``.
"""

from noise2average.runtime import configure_logging

log = configure_logging(snakemake.log[0])

from noise2average.download import fetch, fetch_s3, resolve_checksum
from noise2average.io import write_json

settings = snakemake.params.download
source = settings.get("source")
size = settings.get("size")
retries = {"retries": settings["retries"]} if settings.get("retries") is not None else {}

if source == "openneuro":
    checksum = {name: settings[name] for name in ("md5", "sha256") if settings.get(name)}
    origin = "config"
    if not checksum:
        version = settings.get("version")
        if not version:
            raise ValueError(f"{settings['url']}: no checksum in the configuration and no "
                             f"snapshot version to resolve one from its git-annex key")
        annex_base_url = settings.get("annex_base_url")
        key = resolve_checksum(
            settings["dataset_id"], version, settings["path"], **retries,
            **({"base_url": annex_base_url} if annex_base_url else {}),
        )
        # A size in the configuration still has to agree with the file: fetch checks it.
        size = key.pop("size") if size is None else size
        checksum = key
        # The snapshot's git-annex key, or for small files kept in git their content there.
        origin = f"snapshot {version}"
    result = fetch(settings["url"], snakemake.output.file, size=size, **checksum, **retries,
                   log=log)
elif source == "hcp":
    md5 = settings.get("md5")
    origin = "config" if md5 else "S3 ETag"
    result = fetch_s3(settings["bucket"], settings["key"], snakemake.output.file, size=size,
                      md5=md5, **retries, log=log)
else:
    raise ValueError(f"{snakemake.output.file}: unknown download source {source!r} "
                     f"(expected 'openneuro' or 'hcp')")

record = {
    "source": source,
    "url": result["url"],
    "size": result["size"],
    **{name: result[name] for name in ("md5", "sha256") if name in result},
    "checksum_origin": origin,
    "downloaded": result["downloaded"],
}
write_json(snakemake.output.record, record)
log.info("%s: %d bytes verified (checksum from %s)", snakemake.output.file, result["size"], origin)
