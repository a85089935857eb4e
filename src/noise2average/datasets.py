"""Plan the experiments of one configured dataset: its units, repetitions and downloads.

A dataset entry of the workflow config names a ``source``:

``synthetic``
    The embedded phantom (Colin 27 anatomy): subjects are simulated, the reference is the
    ground truth.
``bids``
    A local BIDS directory.
``openneuro``
    Files of an OpenNeuro snapshot, downloaded over HTTPS into a cache and verified.
``hcp``
    Files of the Human Connectome Project's S3 bucket (credentials from the environment),
    renamed to BIDS paths in the cache.

For the three real sources the repetitions of each data type are found by BIDS entities
(:mod:`noise2average.bids`) from a list of relative paths, so planning works at Snakemake's
parse time, before anything is downloaded. Every error names the dataset and the key.
"""

from pathlib import Path, PurePosixPath

from . import bids as _bids

__all__ = ["SOURCES", "REFERENCE_SYNTHETIC", "plan_dataset", "reference_label",
           "derivative_description"]

SOURCES = ("synthetic", "bids", "openneuro", "hcp")
# The data types are those whose repetitions `bids` knows how to find.
DATA_TYPES = tuple(_bids.REPETITION_ENTITY)
REFERENCE_SYNTHETIC = "ground truth"
_REPETITION_NOUN = {"run": "runs", "echo": "echoes", "dir": "phase-encoding directions"}


def _fail(name, key, problem):
    raise ValueError(f"config datasets: {name}: {key}: {problem}")


def _data_type_options(name, data_types):
    """``{data_type: options}`` from a list of names or a mapping of names to options."""
    if isinstance(data_types, (list, tuple)):
        data_types = {data_type: {} for data_type in data_types}
    if not data_types:
        _fail(name, "data_types", "no data type selected")
    for data_type in data_types:
        if data_type not in DATA_TYPES:
            _fail(name, "data_types", f"unknown data type {data_type!r}; use one of {DATA_TYPES}")
    return {data_type: dict(options or {}) for data_type, options in data_types.items()}


def _label(subject):
    return str(subject).removeprefix("sub-")


def _synthetic_plan(entry):
    subjects = entry.get("subjects") or {}
    requested = subjects.get("evaluation")
    if not requested or requested == "all":
        _fail(entry["name"], "subjects.evaluation", "list the synthetic subjects to evaluate")
    evaluation = [_label(s) for s in requested]
    training = [_label(s) for s in subjects.get("training") or []]
    return {
        data_type: {"evaluation": evaluation, "training": training, "sets": {}, "masks": {},
                    "options": options}
        for data_type, options in _data_type_options(entry["name"], entry["data_types"]).items()
    }


def _download_manifest(entry):
    """``{relative path: download record}`` of an OpenNeuro or HCP dataset."""
    name, files = entry["name"], entry.get("files") or []
    if not files:
        _fail(name, "files", "list the files to download")
    manifest = {}
    for index, item in enumerate(files):
        record = {"path": item} if isinstance(item, str) else dict(item)
        path = record.get("path")
        if not path or PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
            _fail(name, f"files[{index}].path", f"{path!r} is not a relative path inside the dataset")
        if entry["source"] == "hcp" and not record.get("key"):
            _fail(name, f"files[{index}].key", "the S3 key of the HCP file is missing")
        if path in manifest:
            _fail(name, f"files[{index}].path", f"{path} is listed twice")
        manifest[path] = record
    return manifest


def _dataset_masks(paths, sets, data_type):
    """``{unit: mask path or None}``: a brain mask the dataset ships for the unit's images.

    A ``*_mask.nii[.gz]`` of the same subject, session and datatype folder; ``desc-brain``
    is preferred when there are several.
    """
    datatype = _bids.DEFAULT_FILTERS[data_type]["datatype"]
    candidates = {}
    for path in paths:
        if not path.endswith((".nii", ".nii.gz")):
            continue
        entities = _bids.parse_entities(path)
        if entities.get("suffix") != "mask" or entities.get("datatype") != datatype:
            continue
        key = (str(entities.get("subject")), entities.get("session"))
        candidates.setdefault(key, []).append((entities.get("desc") != "brain", path))
    return {
        unit: min(candidates[(s.subject, s.session)])[1]
        if (s.subject, s.session) in candidates else None
        for unit, s in sets.items()
    }


def _resolve_units(name, key, labels, sets, data_type):
    """Unit labels for configured labels: a unit itself, or a subject with one unit."""
    units = []
    for label in labels:
        if label in sets:
            units.append(label)
            continue
        matches = [unit for unit, found in sets.items() if found.subject == label]
        if len(matches) != 1:
            problem = (f"has several sessions {matches}: name one as <sub>_ses-<ses> or set "
                       "`sessions`") if matches else "has no"
            _fail(name, key, f"{label!r} {problem} {data_type} repetitions"
                  f"{'' if matches else f' (found: {sorted(sets)})'}")
        units.append(matches[0])
    return units


def _real_plan(entry, paths):
    name = entry["name"]
    subjects = entry.get("subjects") or {}
    training_labels = [_label(s) for s in subjects.get("training") or []]
    requested = subjects.get("evaluation", "all")
    plan = {}
    for data_type, options in _data_type_options(name, entry["data_types"]).items():
        explicit = None
        if requested != "all":
            explicit = [_label(s).split("_ses-")[0] for s in [*requested, *training_labels]]
        try:
            sets = _bids.find_repetitions(
                paths,
                data_type,
                filters=options.get("filters"),
                repetition_entity=options.get("repetition_entity", "default"),
                subjects=explicit,
                sessions=entry.get("sessions"),
                min_repetitions=1 if data_type == "dti_subsets" else 2,
            )
        except ValueError as error:
            _fail(name, f"data_types.{data_type}", str(error))
        training = _resolve_units(name, "subjects.training", training_labels, sets, data_type)
        if requested == "all":
            evaluation = sorted(unit for unit in sets if unit not in training)
        else:
            evaluation = [unit for unit in _resolve_units(
                name, "subjects.evaluation", [_label(s) for s in requested], sets, data_type)
                if unit not in training]
        if not evaluation:
            _fail(name, "subjects.evaluation",
                  f"no {data_type} unit left to evaluate (found: {sorted(sets)}, training: {training})")
        n_inputs = options.get("inputs", 2)
        if data_type != "dti_subsets":
            short = [unit for unit in evaluation + training if len(sets[unit].images) < n_inputs]
            if short:
                _fail(name, f"data_types.{data_type}.inputs",
                      f"{n_inputs} input repetitions requested but {short} have fewer")
        chosen = {unit: sets[unit] for unit in evaluation + training}
        plan[data_type] = {
            "evaluation": evaluation,
            "training": training,
            "sets": chosen,
            "masks": _dataset_masks(paths, chosen, data_type),
            "options": {**options, "inputs": n_inputs},
        }
    return plan


def plan_dataset(entry, *, cache_dir):
    """Units, repetitions and downloads of one dataset entry of the workflow config.

    Parameters
    ----------
    entry : dict
        One item of the config's ``datasets`` list (already checked by the JSON schema).
    cache_dir : str or Path
        Download cache; downloaded datasets live under ``<cache_dir>/<source>/<id>/``.

    Returns
    -------
    dict
        ``name``, ``source``, ``root`` (the BIDS root as a Path, None for synthetic),
        ``downloads`` (``{relative path: record}``, empty unless downloaded) and
        ``data_types``: ``{data_type: {"evaluation": [unit], "training": [unit],
        "sets": {unit: RepetitionSet}, "masks": {unit: relative path or None},
        "options": dict}}``.

    Raises
    ------
    ValueError
        Naming the dataset and the key: unknown source or data type, missing folder,
        requested subjects without repetitions, training subjects that are not found,
        no unit left to evaluate.
    """
    name, source = entry["name"], entry["source"]
    if source not in SOURCES:
        _fail(name, "source", f"unknown source {source!r}; use one of {SOURCES}")
    if source == "synthetic":
        return {"name": name, "source": source, "root": None, "downloads": {},
                "data_types": _synthetic_plan(entry)}
    if source == "bids":
        if not entry.get("bids_dir"):
            _fail(name, "bids_dir", "the BIDS directory of a 'bids' dataset is missing")
        root = Path(entry["bids_dir"]).expanduser().resolve()
        try:
            paths = _bids.list_bids_files(root)
        except ValueError as error:
            _fail(name, "bids_dir", str(error))
        downloads = {}
    else:
        identifier = entry.get("dataset_id") if source == "openneuro" else "HCP_1200"
        if not identifier:
            _fail(name, "dataset_id", "the OpenNeuro accession (e.g. ds003097) is missing")
        root = Path(cache_dir).expanduser().resolve() / source / identifier
        downloads = _download_manifest(entry)
        paths = sorted(downloads)
    return {"name": name, "source": source, "root": root, "downloads": downloads,
            "data_types": _real_plan(entry, paths)}


def reference_label(plan, data_type):
    """What the metrics of a dataset's data type are measured against, in words.

    Written into the ``reference`` column of the metric tables so that no one mistakes
    the reference of a real dataset for a ground truth.
    """
    if plan["source"] == "synthetic":
        return REFERENCE_SYNTHETIC
    if data_type == "dti_subsets":
        return "tensor fit of all directions (not a ground truth)"
    info = plan["data_types"][data_type]
    entity = info["options"].get("repetition_entity", "default")
    if entity == "default":
        entity = _bids.REPETITION_ENTITY[data_type]
    noun = _REPETITION_NOUN.get(entity, f"{entity} repetitions")
    counts = sorted({len(s.images) for s in info["sets"].values()})
    count = "/".join(str(c) for c in counts)
    return f"mean of all {count} {noun} (not a ground truth)"


def derivative_description(entry, *, version):
    """``dataset_description.json`` of a dataset's outputs, a BIDS derivative dataset.

    Parameters
    ----------
    entry : dict
        The dataset's entry of the workflow config.
    version : str
        Version of noise2average that made the outputs.

    Returns
    -------
    dict
        ``Name``, ``BIDSVersion``, ``DatasetType`` ("derivative"), ``GeneratedBy`` and
        ``SourceDatasets`` (where the inputs came from).
    """
    source = entry["source"]
    if source == "synthetic":
        origin = {"Name": "noise2average phantom from the Colin 27 average brain (MNI)"}
    elif source == "bids":
        origin = {"URL": Path(entry["bids_dir"]).expanduser().resolve().as_uri()}
    elif source == "openneuro":
        origin = {"URL": f"https://openneuro.org/datasets/{entry['dataset_id']}"
                         + (f"/versions/{entry['version']}" if entry.get("version") else ""),
                  "Version": entry.get("version")}
    else:
        origin = {"Name": "Human Connectome Project, WU-Minn HCP 1200 (hcp-openaccess S3)"}
    return {
        "Name": f"noise2average denoising benchmark: {entry['name']}",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "noise2average", "Version": version,
                         "Description": "repetitions, references, denoised images, tensor "
                                        "maps and metrics"}],
        "SourceDatasets": [{key: value for key, value in origin.items() if value is not None}],
    }
