"""Find repeated acquisitions in a BIDS dataset from file names alone.

Everything here works on lists of relative POSIX paths (as `list_bids_files` returns), so
the workflow can decide its jobs when Snakemake parses the Snakefile, before image data is
downloaded. Only `read_sidecar_metadata` opens files (small JSON sidecars).

Entity names
------------
`parse_entities` returns pybids' entity names (``subject``, ``session``, ``acquisition``,
``direction``, ``run``, ``echo``, ...), with every value a string as written in the file
name (``run-01`` gives ``"01"``). Wherever a name is given to this module (filters,
repetition entity) the BIDS file-name key (``sub``, ``ses``, ``acq``, ``dir``, ...) is
accepted too. pybids drops key-value pairs it does not know (``foo-bar``), so two files that
differ only in such a pair are reported as duplicates.

Units and repetition sets
-------------------------
A unit is one subject, or one subject and session when the dataset has sessions; its label
is ``"<sub>"`` or ``"<sub>_ses-<ses>"``. Within a unit, the images of a data type that carry
its repetition entity (`REPETITION_ENTITY`) and agree in every other entity form its
repetition set.
"""

import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

from .io import read_json

_LOG = logging.getLogger(__name__)

__all__ = [
    "REPETITION_ENTITY",
    "DEFAULT_FILTERS",
    "IMAGE_EXTENSIONS",
    "RepetitionSet",
    "list_bids_files",
    "parse_entities",
    "find_repetitions",
    "read_sidecar_metadata",
    "repetition_metadata",
]

#: BIDS entity that numbers the repetitions of each data type (None: a single image).
REPETITION_ENTITY = {
    "t1w_rep": "run",
    "memprage": "echo",
    "dwi_appa": "dir",
    "dti_subsets": None,
}

#: Entities an image must have for each data type; ``filters`` are merged over these.
DEFAULT_FILTERS = {
    "t1w_rep": {"datatype": "anat", "suffix": "T1w"},
    "memprage": {"datatype": "anat", "suffix": "T1w"},
    "dwi_appa": {"datatype": "dwi", "suffix": "dwi"},
    "dti_subsets": {"datatype": "dwi", "suffix": "dwi"},
}

IMAGE_EXTENSIONS = (".nii", ".nii.gz")

_DWI_TYPES = ("dwi_appa", "dti_subsets")
# Top-level folders that hold no raw data (BIDS: derivatives, sourcedata and code).
_SKIPPED_FOLDERS = ("derivatives", "sourcedata", "code")
# Entities that locate a file rather than describe the acquisition.
_NON_ACQUISITION = ("subject", "session", "extension")
# Entities set by the file's place and type; inheritance compares them separately.
_FILE_TYPE = ("suffix", "extension", "datatype")
_METADATA = ("PhaseEncodingDirection", "TotalReadoutTime", "EchoTime")


@dataclass(frozen=True)
class RepetitionSet:
    """The repeated images of one unit, as paths relative to the dataset root.

    Attributes
    ----------
    unit : str
        ``"<sub>"`` or ``"<sub>_ses-<ses>"``.
    subject : str
        Subject label without ``sub-``.
    session : str or None
        Session label without ``ses-``; None when the dataset has no sessions.
    images : tuple of str
        The N images, ordered by the repetition entity: runs and echoes numerically,
        directions alphabetically (AP before PA, LR before RL).
    labels : tuple of str
        The N repetition entity values as written (``("1", "2")``, ``("AP", "PA")``); empty
        for a data type without repetition entity.
    bvals, bvecs : tuple of str
        Per image, the gradient files that apply to it (DWI); empty for anatomical data.
    sidecars : tuple of tuple of str
        Per image, the JSON sidecars that apply to it by BIDS inheritance, most general
        first (merge them in this order with `read_sidecar_metadata`).
    """

    unit: str
    subject: str
    session: str | None
    images: tuple
    labels: tuple
    bvals: tuple
    bvecs: tuple
    sidecars: tuple


def list_bids_files(bids_dir):
    """Relative paths of the files of a BIDS dataset.

    Parameters
    ----------
    bids_dir : str or Path
        Dataset root holding ``dataset_description.json``.

    Returns
    -------
    paths : list of str
        Sorted POSIX paths relative to ``bids_dir``, without the top-level ``derivatives/``,
        ``sourcedata/`` and ``code/`` folders and without hidden files and folders. Links
        are listed whether or not their target exists (DataLad/git-annex files that are
        not downloaded yet).

    Raises
    ------
    ValueError
        Naming the folder when it does not exist or has no ``dataset_description.json``.
    """
    root = Path(bids_dir)
    if not root.is_dir():
        raise ValueError(f"{root}: BIDS folder not found")
    if not (root / "dataset_description.json").is_file():
        raise ValueError(f"{root}: not a BIDS dataset (no dataset_description.json)")
    paths = []
    for folder, subfolders, files in os.walk(root):
        relative = Path(folder).relative_to(root)
        top = relative == Path(".")
        # Pruning in place stops os.walk from descending into skipped folders.
        subfolders[:] = [
            name for name in subfolders
            if not name.startswith(".") and not (top and name in _SKIPPED_FOLDERS)
        ]
        paths += [(relative / name).as_posix() for name in files if not name.startswith(".")]
    return sorted(paths)


@lru_cache(maxsize=1)
def _pybids_entities():
    """pybids' entity definitions (raw and derivatives), loaded once: loading is slow."""
    from bids.layout.models import Config

    entities = {}
    for name in ("bids", "derivatives"):
        entities.update(Config.load(name).entities)
    return tuple(entities.values())


@lru_cache(maxsize=1)
def _short_names():
    """File-name key (``acq``) to pybids entity name (``acquisition``)."""
    names = {}
    for entity in _pybids_entities():
        match = re.search(r"\]\+?([a-z]+)-\(", entity.pattern or "")
        if match:
            names[match.group(1)] = entity.name
    return names


def _entity_name(name):
    """pybids' name for an entity given by its pybids name or its file-name key."""
    return _short_names().get(name, name)


def parse_entities(path):
    """BIDS entities of a file from its path.

    Parameters
    ----------
    path : str or Path
        Path relative to the dataset root (folders give ``subject``, ``session`` and
        ``datatype`` when the name does not).

    Returns
    -------
    entities : dict of str to str
        pybids entity names to values as written (``{"subject": "01", "run": "01",
        "suffix": "T1w", "datatype": "anat", "extension": ".nii.gz"}``); unknown
        key-value pairs are left out.
    """
    from bids.layout import parse_file_entities

    # pybids gives run as an int subclass; strings keep "01" and "1" apart as written.
    found = parse_file_entities(str(path), entities=_pybids_entities())
    return {name: str(value) for name, value in found.items()}


def _same_value(a, b):
    """Entity values equal, with indices compared as numbers (``run-01`` is ``run-1``)."""
    if a is None or b is None:
        return a is b
    if a.isdigit() and b.isdigit():
        return int(a) == int(b)
    return a == b


def _label_order(label):
    """Sort key: numeric labels by value and before text labels, text alphabetically."""
    return (0, int(label), label) if label.isdigit() else (1, 0, label)


def _as_labels(values, prefix):
    """Labels without their ``sub-``/``ses-`` prefix; None stays None."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    return {str(value).removeprefix(prefix) for value in values}


def _matches(entities, filters):
    """True when every filter holds; a None value requires the entity to be absent."""
    for name, wanted in filters.items():
        value = entities.get(name)
        if not any(_same_value(value, None if w is None else str(w)) for w in wanted):
            return False
    return True


def _unit_label(subject, session):
    return subject if session is None else f"{subject}_ses-{session}"


def _index_by_folder(parsed, extensions):
    """Files with one of ``extensions`` by (folder, suffix): lists of (path, entities)."""
    index = defaultdict(list)
    for path, entities in parsed.items():
        if entities.get("extension") in extensions:
            index[(PurePosixPath(path).parent, entities.get("suffix"))].append((path, entities))
    return index


def _inherited(image, entities, index):
    """Files in ``index`` that apply to ``image`` by BIDS inheritance, most general first.

    A file applies when it sits in the image's folder or one above, has its suffix, and
    each of its other entities has the image's value.
    """
    folder = PurePosixPath(image).parent
    found = []
    for level in (folder, *folder.parents):
        for path, candidate in index.get((level, entities.get("suffix")), ()):
            keys = [name for name in candidate if name not in _FILE_TYPE]
            if all(_same_value(entities.get(name), candidate[name]) for name in keys):
                found.append((len(level.parts), len(keys), path))
    return tuple(path for *_, path in sorted(found))


def _ambiguity(unit, groups):
    """ValueError for a unit whose images form several candidate sets."""
    names = sorted({name for key in groups for name, _ in key})
    values = [dict(key) for key in groups]
    differing = [name for name in names if len({v.get(name) for v in values}) > 1]
    described = "; ".join(
        f"{name}: {', '.join(repr(v.get(name)) for v in values)}" for name in differing
    )
    files = [path for members in groups.values() for path, _ in members]
    example = {differing[0]: values[0].get(differing[0])}
    return ValueError(
        f"unit {unit!r}: images form {len(groups)} candidate repetition sets differing in "
        f"{described} ({', '.join(files)}); select one with a filter, e.g. "
        f"filters={example!r} (None selects files without the entity)"
    )


def find_repetitions(paths, data_type, *, filters=None, repetition_entity="default",
                     subjects=None, sessions=None, min_repetitions=2):
    """Group the images of a data type into one repetition set per unit.

    Parameters
    ----------
    paths : sequence of str
        Dataset files relative to its root (`list_bids_files`); the files need not exist.
    data_type : {"t1w_rep", "memprage", "dwi_appa", "dti_subsets"}
    filters : dict, optional
        Entity (pybids name or file-name key) to a value or list of accepted values, merged
        over ``DEFAULT_FILTERS[data_type]``; None as a value selects files without that
        entity (``{"acq": "mprage"}``, ``{"echo": None}``).
    repetition_entity : str or None, optional
        Entity that numbers the repetitions; ``"default"`` takes
        ``REPETITION_ENTITY[data_type]``. Images without it are not repetitions and are
        ignored (the echo-combined T1w beside its echoes, single runs beside echoes). None
        means one image per unit (``dti_subsets``).
    subjects, sessions : sequence of str, optional
        Labels to keep, with or without their ``sub-``/``ses-`` prefix; None keeps all.
    min_repetitions : int, optional
        Fewest repetitions a set needs; ignored without a repetition entity, where a unit
        needs exactly one image.

    Returns
    -------
    sets : dict of str to RepetitionSet
        By unit label, in subject then session order. A unit with too few repetitions is
        left out, with a warning naming its files, when ``subjects`` is None.

    Raises
    ------
    ValueError
        Unknown data type; a requested subject with no matching image or too few
        repetitions (naming the unit and its files); a unit whose images differ in other
        entities (naming the entities and files, suggesting a filter); two images with the
        same repetition label; a DWI image without applicable ``.bval``/``.bvec``.
    """
    if data_type not in REPETITION_ENTITY:
        raise ValueError(
            f"unknown data type {data_type!r}; expected one of {sorted(REPETITION_ENTITY)}"
        )
    entity = REPETITION_ENTITY[data_type] if repetition_entity == "default" else repetition_entity
    entity = None if entity is None else _entity_name(entity)
    merged = {_entity_name(k): v for k, v in DEFAULT_FILTERS[data_type].items()}
    merged.update({_entity_name(k): v for k, v in (filters or {}).items()})
    merged = {k: list(v) if isinstance(v, (list, tuple, set)) else [v] for k, v in merged.items()}
    wanted_subjects = _as_labels(subjects, "sub-")
    wanted_sessions = _as_labels(sessions, "ses-")

    parsed = {str(path): parse_entities(path) for path in paths}
    units = defaultdict(list)
    for path, entities in parsed.items():
        if (
            entities.get("extension") in IMAGE_EXTENSIONS
            and "subject" in entities
            and (entity is None or entity in entities)
            and _matches(entities, merged)
            and (wanted_subjects is None or entities["subject"] in wanted_subjects)
            and (wanted_sessions is None or entities.get("session") in wanted_sessions)
        ):
            units[(entities["subject"], entities.get("session"))].append((path, entities))

    if wanted_subjects is not None:
        missing = sorted(wanted_subjects - {subject for subject, _ in units})
        if missing:
            raise ValueError(
                f"requested subject(s) {', '.join(missing)} have no {data_type} image "
                f"matching {merged}"
                + (f" with a {entity} entity" if entity else "")
                + (f" in session(s) {sorted(wanted_sessions)}" if wanted_sessions else "")
            )

    sidecar_index = _index_by_folder(parsed, (".json",))
    bval_index = _index_by_folder(parsed, (".bval",))
    bvec_index = _index_by_folder(parsed, (".bvec",))
    sets = {}
    by_unit = sorted(units.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    for (subject, session), members in by_unit:
        unit = _unit_label(subject, session)
        groups = defaultdict(list)
        for path, entities in members:
            key = frozenset(
                (name, value) for name, value in entities.items()
                if name not in _NON_ACQUISITION and name != entity
            )
            groups[key].append((path, entities))
        if len(groups) > 1:
            raise _ambiguity(unit, groups)
        (members,) = groups.values()
        labels = [entities.get(entity, "") for _, entities in members]
        duplicated = sorted(
            path for (path, _), label in zip(members, labels) if labels.count(label) > 1
        )
        if duplicated:
            raise ValueError(
                f"unit {unit!r}: several images share "
                + (f"{entity} label(s)" if entity else "all entities")
                + f": {', '.join(duplicated)} (they differ only in extension or in entities "
                "pybids does not know; keep one)"
            )
        count = len(members)
        if entity is not None and count < min_repetitions:
            problem = (f"unit {unit!r}: {count} {data_type} repetition(s) ({entity}: "
                       f"{', '.join(path for path, _ in members)}), fewer than "
                       f"min_repetitions={min_repetitions}")
            if wanted_subjects is None:
                _LOG.warning("%s; left out", problem)
                continue
            raise ValueError(problem)
        members = sorted(members, key=lambda member: _label_order(member[1].get(entity, "")))

        bvals, bvecs = [], []
        if data_type in _DWI_TYPES:
            for path, entities in members:
                bval = _inherited(path, entities, bval_index)
                bvec = _inherited(path, entities, bvec_index)
                missing = [ext for ext, found in ((".bval", bval), (".bvec", bvec)) if not found]
                if missing:
                    raise ValueError(
                        f"{path}: no {' or '.join(missing)} file with the same name or "
                        "inherited from a parent folder"
                    )
                bvals.append(bval[-1])
                bvecs.append(bvec[-1])
        sets[unit] = RepetitionSet(
            unit=unit,
            subject=subject,
            session=session,
            images=tuple(path for path, _ in members),
            labels=tuple(entities[entity] for _, entities in members) if entity else (),
            bvals=tuple(bvals),
            bvecs=tuple(bvecs),
            sidecars=tuple(_inherited(path, entities, sidecar_index) for path, entities in members),
        )
    return sets


def read_sidecar_metadata(bids_dir, sidecars):
    """Merge JSON sidecars by BIDS inheritance.

    Parameters
    ----------
    bids_dir : str or Path
        Dataset root.
    sidecars : sequence of str
        Paths relative to ``bids_dir``, most general first (`RepetitionSet.sidecars`).

    Returns
    -------
    metadata : dict
        Union of the files' fields; a later (more specific) file overrides earlier ones.

    Raises
    ------
    ValueError
        Naming a file that is not valid JSON or does not hold a JSON object.
    """
    metadata = {}
    for sidecar in sidecars:
        path = Path(bids_dir) / sidecar
        content = read_json(path)
        if not isinstance(content, dict):
            raise ValueError(
                f"{path}: a sidecar must hold a JSON object, got {type(content).__name__}"
            )
        metadata.update(content)
    return metadata


def repetition_metadata(metadata_list, *, data_type, names=None):
    """Acquisition parameters that can differ between repetitions, checked.

    Parameters
    ----------
    metadata_list : sequence of dict
        Merged sidecar metadata of each repetition, in repetition order.
    data_type : str
        One of `REPETITION_ENTITY`; ``"memprage"`` echoes are checked for ordering.
    names : sequence of str, optional
        Image of each repetition, for error messages.

    Returns
    -------
    parameters : dict of str to list
        For each of ``PhaseEncodingDirection``, ``TotalReadoutTime`` (s) and ``EchoTime``
        (s) present in at least one repetition, its value per repetition (None where
        absent).

    Raises
    ------
    ValueError
        For ``memprage``, naming the files, when echo times given for all echoes do not
        increase strictly with the echo index (echo entity and echo order disagree).
    """
    if names is None:
        names = [f"repetition {k + 1}" for k in range(len(metadata_list))]
    names = list(names)
    if len(names) != len(metadata_list):
        raise ValueError(f"{len(names)} names for {len(metadata_list)} metadata dicts")
    parameters = {
        field: [metadata.get(field) for metadata in metadata_list]
        for field in _METADATA
        if any(field in metadata for metadata in metadata_list)
    }
    echo_times = parameters.get("EchoTime", [])
    if (
        data_type == "memprage"
        and echo_times
        and None not in echo_times
        and any(later <= earlier for earlier, later in zip(echo_times, echo_times[1:]))
    ):
        raise ValueError(
            "echo times do not increase with the echo index: "
            + ", ".join(f"{name}: EchoTime={time}" for name, time in zip(names, echo_times))
        )
    return parameters
