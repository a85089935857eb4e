from pathlib import Path
from types import SimpleNamespace

from snakemake.utils import validate

from noise2average.datasets import plan_dataset, reference_label
from noise2average.dti_metrics import DTI_METRIC_NAMES
from noise2average.runtime import training_gpus
from noise2average.summary import FINAL


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results_dir"]
T1W_TYPES = ["t1w_rep", "memprage"]
DWI_TYPES = ["dwi_appa", "dti_subsets"]
METHODS = config["methods"]
# Joint-series denoisers need many volumes: they run on diffusion data only.
DWI_ONLY_METHODS = ("mppca", "patch2self")
NETWORK_METHODS = ("n2a", "n2n", "supervised")
N2A_ITERATIONS = list(range(1, config["n2a"]["iterations"] + 1))
DTI_MAPS = ["fa", "md", "ad", "rd", "v1", "colorfa"]


# Training jobs on CUDA request the `gpu` resource, which the local workflow profile
# (profiles/default) caps at 1 so that they take turns on the GPU; the SLURM profile requests a
# GPU for every training job whatever the submit host has.
TRAINING_GPUS = training_gpus(config["training"]["device"])

for _section in ("network", "dwi_network"):
    if config[_section]["depth"] % 4 != 2:
        raise ValueError(
            f"config {_section}.depth: {config[_section]['depth']} is not a MU-Net depth; "
            "use 6, 10, 14, 18, ... (two convolutions per stage, an odd number of stages)"
        )

# Units (subjects, or subject_ses-label) and repetitions of every dataset, found at parse
# time from the BIDS file names (or the download list), before anything is read.
DATASETS = {}
for _entry in config["datasets"]:
    if _entry["name"] in DATASETS:
        raise ValueError(f"config datasets: {_entry['name']}: name: used twice")
    DATASETS[_entry["name"]] = plan_dataset(_entry, cache_dir=config["download"]["cache_dir"])
    for _data_type, _units in DATASETS[_entry["name"]]["data_types"].items():
        _shared = set(_units["evaluation"]) & set(_units["training"])
        if _shared:
            raise ValueError(
                f"config datasets: {_entry['name']}: subjects: {sorted(_shared)} are both "
                "evaluation and training subjects; pretraining must never see an evaluation subject"
            )
        if not _units["training"] and set(METHODS) & set(NETWORK_METHODS):
            raise ValueError(
                f"config datasets: {_entry['name']}: subjects.training: the network methods "
                f"need at least one training subject for {_data_type} pretraining"
            )
SYNTHETIC = [name for name, plan in DATASETS.items() if plan["source"] == "synthetic"]
REAL = [name for name in DATASETS if name not in SYNTHETIC]


def data_types(dataset):
    return list(DATASETS[dataset]["data_types"])


def units(dataset, data_type, role="evaluation"):
    """Evaluation or training units of one data type of a dataset."""
    return DATASETS[dataset]["data_types"][data_type][role]


def one_of(names):
    """Wildcard regex matching exactly ``names`` (and nothing when the list is empty)."""
    return "|".join(names) if names else "(?!)"


def is_dwi(data_type):
    return data_type in DWI_TYPES


def is_real(dataset):
    return dataset in REAL


def applies(method, data_type):
    """Whether a method runs on a data type.

    MP-PCA and Patch2Self need a series: diffusion data only. Patch2Self regresses each
    volume on all the others and needs at least 10 volumes (dipy's advice); the SDnDTI
    repetitions have 7 (b0 + 6 directions).
    """
    if method not in DWI_ONLY_METHODS:
        return True
    if method == "patch2self":
        return data_type == "dwi_appa"
    return is_dwi(data_type)


def scored_methods(data_type):
    """Methods evaluated on a data type; the single noisy repetition always comes first."""
    return ["noisy"] + [m for m in METHODS if applies(m, data_type)]


def network_config(data_type):
    """MU-Net section of a data type (architecture and blocks), with batch norm for DWI."""
    section = config["dwi_network"] if is_dwi(data_type) else config["network"]
    return {**section, "batch_norm": is_dwi(data_type)}


wildcard_constraints:
    dataset=one_of(DATASETS),
    subject="[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?",
    data_type=one_of(T1W_TYPES + DWI_TYPES),
    method=one_of(["noisy", *METHODS]),
    iteration="[0-9]+",


# One folder per dataset and data type; inside, BIDS-derivatives-like key-value file names.
DATA_DIR = f"{RESULTS}/{{dataset}}/{{data_type}}"


def subject_file(suffix, *, folder="inputs", method=None, ext=".nii.gz"):
    """Path pattern of one unit's file, entities in a fixed order."""
    entities = "sub-{subject}"
    if method is not None:
        entities += f"_method-{method}"
    return f"{DATA_DIR}/sub-{{subject}}/{folder}/{entities}_{suffix}{ext}"


def denoised_file(method, ext=".nii.gz"):
    return subject_file("denoised", folder="denoised", method=method, ext=ext)


def n2a_iteration_file(iteration, ext=".nii.gz"):
    return subject_file(
        "denoised", folder="denoised", method=f"n2a_iter-{iteration}", ext=ext
    )


def gradient_file(ext):
    """b-values (``.bval``) or directions (``.bvec``, FSL layout) of a diffusion series."""
    return subject_file("dwi", ext=ext)


def reference_map(name):
    """A DTI map of the reference: the phantom's tensors, or a fit of the reference series."""
    return subject_file(f"desc-reference_{name}")


def tensor_folder():
    """Folder of the DTI maps fitted to every diffusion result of one unit.

    The job that fits them declares the folder, not its files: tens of map files per unit
    as separate outputs double the time Snakemake takes to build the DAG of hundreds of
    subjects (every input file is matched against every output pattern).
    """
    return f"{DATA_DIR}/sub-{{subject}}/dti"


def tensor_map(name, result):
    """A DTI map fitted to one result: a method's output or one N2A iteration (``n2a_iter-k``)."""
    return subject_file(name, folder="dti", method=result)


def fill(pattern, wildcards, subject=None):
    """A unit's path pattern filled in for one unit (``subject``, default the wildcard's)."""
    return pattern.format(dataset=wildcards.dataset, data_type=wildcards.data_type,
                          subject=wildcards.subject if subject is None else subject)


def tensor_map_files(wildcards):
    """{result: {map name: path}} of the maps fitted to every scored result of one unit."""
    return {
        result: {name: fill(tensor_map(name, result), wildcards) for name in DTI_MAPS}
        for _, result, _ in scored_results(wildcards.data_type)
    }


def method_results(method):
    """Labels of the results of a method: every N2A iteration, or the method itself."""
    if method == "n2a":
        return [f"n2a_iter-{k}" for k in N2A_ITERATIONS]
    return [method]


def scored_results(data_type):
    """(method, result, iteration labels) of every result scored for one unit, ``noisy`` first.

    N2A is scored at every iteration (labels "1", "2", ...); its last iteration is also its
    final result.
    """
    scored = []
    for method in scored_methods(data_type):
        results = method_results(method)
        for k, result in enumerate(results, start=1):
            labels = [str(k)] if method == "n2a" else []
            if k == len(results):
                labels.append(FINAL)
            scored.append((method, result, labels))
    return scored


def denoised_results(wildcards):
    """Images of every scored result but ``noisy`` (the first repetition of the input)."""
    return [
        subject_file("denoised", folder="denoised", method=result)
        for method, result, _ in scored_results(wildcards.data_type)
        if method != "noisy"
    ]


def dwi_metric_inputs(wildcards):
    """Every diffusion result of one unit, its gradient table, and the reference."""
    return {
        "images": denoised_results(wildcards),
        "reference": subject_file("reference"),
        "noisy": subject_file("noisy"),
        "mask": subject_file("mask"),
        "bval": gradient_file(".bval"),
        "bvec": gradient_file(".bvec"),
        "reference_maps": [reference_map(name) for name in DTI_MAPS],
    }


def t1w_metric_inputs(wildcards):
    """Images of every result of one unit, the reference, and tissue labels where they exist.

    Real data have no tissue segmentation: the boundary-sharpness metric is then left out.
    """
    inputs = {
        "images": denoised_results(wildcards),
        "reference": subject_file("reference"),
        "noisy": subject_file("noisy"),
        "mask": subject_file("mask"),
    }
    if not is_real(wildcards.dataset):
        inputs["dseg"] = subject_file("dseg")
    return inputs


def pretrained_model():
    return f"{DATA_DIR}/models/desc-pretrained_model.pt"


def metrics_table():
    return f"{DATA_DIR}/metrics/sub-{{subject}}_metrics.csv"


def figure_file(kind, ext):
    return f"{RESULTS}/figures/{{dataset}}_dtype-{{data_type}}_{kind}.{ext}"


def log_file(rule_name, *entities):
    return f"{RESULTS}/logs/{rule_name}/" + "_".join(entities) + ".log"


def training_inputs(wildcards):
    """Repetitions, references and masks of every training subject of one data type."""
    return {
        suffix: expand(
            subject_file(suffix),
            subject=units(wildcards.dataset, wildcards.data_type, "training"),
            dataset=wildcards.dataset,
            data_type=wildcards.data_type,
        )
        for suffix in ("noisy", "reference", "mask")
    }


def filter_inputs(wildcards):
    """Repetitions and mask of a subject, with the gradient table of a diffusion series."""
    inputs = {"noisy": subject_file("noisy"), "mask": subject_file("mask")}
    if is_dwi(wildcards.data_type):
        inputs.update(bval=gradient_file(".bval"), bvec=gradient_file(".bvec"))
    return inputs


def network_inputs(wildcards):
    """Inputs of a network method; the supervised upper bound also gets the reference."""
    inputs = {
        "noisy": subject_file("noisy"),
        "mask": subject_file("mask"),
        "model": pretrained_model(),
    }
    if wildcards.method == "supervised":
        inputs["reference"] = subject_file("reference")
    return inputs


def final_output(method):
    """Pattern of a method's final result (the repetitions themselves for ``noisy``)."""
    if method == "noisy":
        return subject_file("noisy")
    if method == "n2a":
        return n2a_iteration_file(N2A_ITERATIONS[-1])
    return denoised_file(method)


def first_unit(wildcards):
    return units(wildcards.dataset, wildcards.data_type)[0]


def first_subject(files, wildcards):
    """``files`` filled in for the first evaluation unit of a dataset's data type."""
    return {name: fill(path, wildcards, first_unit(wildcards)) for name, path in files.items()}


def panel_images(wildcards):
    """Images of the first evaluation unit shown in the figure panel."""
    files = {method: final_output(method) for method in scored_methods(wildcards.data_type)}
    files.update(reference=subject_file("reference"), mask=subject_file("mask"))
    return first_subject(files, wildcards)


def dti_panel_inputs(wildcards):
    """Tensor-map folder, reference FA, MD and colour-FA maps and mask of the first unit."""
    files = {f"reference_{name}": reference_map(name) for name in ("fa", "md", "colorfa")}
    files.update(maps=tensor_folder(), mask=subject_file("mask"))
    return first_subject(files, wildcards)


def dti_panel_maps(wildcards):
    """{method: {map name: path}} of the final result of every method, first unit."""
    unit = SimpleNamespace(dataset=wildcards.dataset, data_type=wildcards.data_type,
                           subject=first_unit(wildcards))
    fitted = tensor_map_files(unit)
    return {method: fitted[method_results(method)[-1]]
            for method in scored_methods(wildcards.data_type)}


def metric_tables():
    """Every per-unit metric table: each dataset and data type with its own methods."""
    return [
        metrics_table().format(dataset=dataset, subject=subject, data_type=data_type)
        for dataset in DATASETS
        for data_type in data_types(dataset)
        for subject in units(dataset, data_type)
    ]


def metric_selection(data_type):
    """Region and metrics of the metric figures: DTI errors in white matter for diffusion."""
    if is_dwi(data_type):
        return {"region": "wm", "metric_names": list(DTI_METRIC_NAMES)}
    return {"region": "brain", "metric_names": None}


def figure_kinds(data_type):
    image = ["dti"] if is_dwi(data_type) else ["panel"]
    return image + ["distributions"] + (["iterations"] if "n2a" in METHODS else [])


def get_final_output():
    figures = [
        figure_file(kind, ext).format(dataset=dataset, data_type=data_type)
        for dataset in DATASETS
        for data_type in data_types(dataset)
        for kind in figure_kinds(data_type)
        for ext in ("png", "pdf")
    ]
    return [
        f"{RESULTS}/metrics.csv",
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/summary.md",
        f"{RESULTS}/provenance/versions.json",
        *[f"{RESULTS}/{dataset}/dataset_description.json" for dataset in DATASETS],
        *figures,
    ]


def metric_reference(wildcards):
    """The ``reference`` column of a metric table: ground truth, or what a real dataset offers."""
    return reference_label(DATASETS[wildcards.dataset], wildcards.data_type)


CACHE_DIR = Path(config["download"]["cache_dir"]).expanduser().resolve()
# (source, identifier, relative path) -> the dataset entry and the file's download record.
DOWNLOADS = {
    (plan["source"], plan["root"].name, path): (entry, record)
    for entry in config["datasets"]
    for plan in [DATASETS[entry["name"]]]
    for path, record in plan["downloads"].items()
}


def cached_file(suffix=""):
    """Pattern of a downloaded file in the cache (``suffix``: its download record)."""
    if suffix:
        return f"{CACHE_DIR}/{{source}}/{{identifier}}/.records/{{path}}{suffix}"
    return f"{CACHE_DIR}/{{source}}/{{identifier}}/{{path}}"


def download_params(wildcards):
    """Where a cached file comes from and how it is verified."""
    entry, record = DOWNLOADS[(wildcards.source, wildcards.identifier, wildcards.path)]
    settings = config["download"]
    params = {
        "source": entry["source"],
        "retries": settings["retries"],
        **{key: record[key] for key in ("size", "md5", "sha256") if key in record},
    }
    if entry["source"] == "hcp":
        params.update(bucket=settings["hcp_bucket"], key=record["key"])
    else:
        params.update(
            url=f"{settings['openneuro_url']}/{entry['dataset_id']}/{wildcards.path}",
            dataset_id=entry["dataset_id"],
            version=entry.get("version"),
            path=wildcards.path,
            annex_base_url=settings["annex_url"],
        )
    return params


def repetition_set(wildcards):
    return DATASETS[wildcards.dataset]["data_types"][wildcards.data_type]["sets"][wildcards.subject]


def ingest_inputs(wildcards):
    """A unit's images, gradient tables, JSON sidecars and (if the dataset has one) mask."""
    plan = DATASETS[wildcards.dataset]
    found = repetition_set(wildcards)
    files = [*found.images, *found.bvals, *found.bvecs]
    files += [sidecar for sidecars in found.sidecars for sidecar in sidecars]
    mask = plan["data_types"][wildcards.data_type]["masks"].get(wildcards.subject)
    inputs = {"files": [str(plan["root"] / path) for path in dict.fromkeys(files)]}
    if mask is not None:
        inputs["mask"] = str(plan["root"] / mask)
    if plan["source"] == "bids":
        # The planning lists links whose target is missing (DataLad/git-annex files not
        # fetched); Snakemake itself would only say that such a file "existed before".
        missing = [path for path in [*inputs["files"], inputs.get("mask")]
                   if path is not None and not Path(path).exists()]
        if missing:
            others = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ValueError(
                f"{missing[0]}: file not found{others}: a link to a missing file, such as a "
                "DataLad/git-annex file not fetched yet (`datalad get` it)"
            )
    return inputs


def dataset_entry(dataset):
    """The config entry of a dataset."""
    return next(entry for entry in config["datasets"] if entry["name"] == dataset)


def ingest_settings(wildcards):
    """How a unit is ingested: root, repetition set, inputs, registration, SDnDTI options."""
    plan = DATASETS[wildcards.dataset]
    info = plan["data_types"][wildcards.data_type]
    entry = dataset_entry(wildcards.dataset)
    diffusion = config["diffusion"]
    subsets = diffusion["dti_subsets"]
    return {
        "bids_dir": str(plan["root"]),
        "repetition_set": repetition_set(wildcards),
        "inputs": info["options"]["inputs"],
        "registration": entry["registration"],
        "b0_threshold": diffusion["b0_threshold"],
        "subsets": {
            "n_subsets": subsets["n_subsets"],
            "max_condition": subsets["max_condition"],
            "n_rotations": subsets["n_rotations"],
            "seed": subsets["subset_seed"],
        },
    }
