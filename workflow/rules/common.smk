from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results_dir"]
DATASET = config["dataset"]
DATA_TYPES = config["data_types"]
EVALUATION_SUBJECTS = config["subjects"]["evaluation"]
TRAINING_SUBJECTS = config["subjects"]["training"]
DWI_TYPES = [t for t in DATA_TYPES if t in ("dwi_appa", "dti_subsets")]
T1W_TYPES = [t for t in DATA_TYPES if t not in DWI_TYPES]
METHODS = config["methods"]
# Joint-series denoisers need many volumes: they run on diffusion data only.
DWI_ONLY_METHODS = ("mppca", "patch2self")
N2A_ITERATIONS = list(range(1, config["n2a"]["iterations"] + 1))
DTI_MAPS = ["fa", "md", "ad", "rd", "v1", "colorfa"]

for _section in ("network", "dwi_network"):
    if config[_section]["depth"] % 4 != 2:
        raise ValueError(
            f"config {_section}.depth: {config[_section]['depth']} is not a MU-Net depth; "
            "use 6, 10, 14, 18, ... (two convolutions per stage, an odd number of stages)"
        )

_shared = set(EVALUATION_SUBJECTS) & set(TRAINING_SUBJECTS)
if _shared:
    raise ValueError(
        f"config subjects: {sorted(_shared)} are both evaluation and training subjects; "
        "pretraining must never see an evaluation subject"
    )


def one_of(names):
    """Wildcard regex matching exactly ``names`` (and nothing when the list is empty)."""
    return "|".join(names) if names else "(?!)"


def is_dwi(data_type):
    return data_type in DWI_TYPES


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
    subject="[A-Za-z0-9]+",
    data_type=one_of(DATA_TYPES),
    method=one_of(["noisy", *METHODS]),
    iteration="[0-9]+",


DATA_DIR = f"{RESULTS}/{DATASET}"


def subject_file(suffix, *, folder="simulated", method=None, ext=".nii.gz"):
    """Path pattern of one subject's file, entities in a fixed order."""
    entities = "sub-{subject}_dtype-{data_type}"
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
    """A DTI map of the ground-truth tensors, written by the simulation."""
    return subject_file(f"desc-truth_{name}")


def tensor_map(name, result="{result}"):
    """A DTI map fitted to one result: a method's output or one N2A iteration (``n2a_iter-k``)."""
    return subject_file(name, folder="dti", method=result)


def method_results(method):
    """Labels of the results of a method: every N2A iteration, or the method itself."""
    if method == "n2a":
        return [f"n2a_iter-{k}" for k in N2A_ITERATIONS]
    return [method]


def fitted_image(wildcards):
    """The series a tensor is fitted to (the first repetition for ``noisy``)."""
    if wildcards.result == "noisy":
        return subject_file("noisy")
    return subject_file("denoised", folder="denoised", method=wildcards.result)


def dwi_metric_inputs(wildcards):
    """Series and tensor maps of one method (every N2A iteration), and the truth."""
    results = method_results(wildcards.method)
    return {
        "images": method_outputs(wildcards),
        "truth": subject_file("truth"),
        "mask": subject_file("mask"),
        "maps": [tensor_map(name, result) for result in results for name in DTI_MAPS],
        "reference": [reference_map(name) for name in DTI_MAPS],
    }


def pretrained_model():
    return f"{DATA_DIR}/models/dtype-{{data_type}}_desc-pretrained_model.pt"


def metrics_table():
    return f"{DATA_DIR}/metrics/sub-{{subject}}_dtype-{{data_type}}_method-{{method}}_metrics.csv"


def figure_file(kind, ext):
    return f"{RESULTS}/figures/{DATASET}_dtype-{{data_type}}_{kind}.{ext}"


def log_file(rule_name, *entities):
    return f"{RESULTS}/logs/{rule_name}/" + "_".join(entities) + ".log"


def training_inputs(wildcards):
    """Repetitions, references and masks of every training subject of one data type."""
    return {
        suffix: expand(
            subject_file(suffix),
            subject=TRAINING_SUBJECTS,
            data_type=wildcards.data_type,
        )
        for suffix in ("noisy", "truth", "mask")
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
        inputs["reference"] = subject_file("truth")
    return inputs


def method_outputs(wildcards):
    """The image(s) a method produced for one subject: every N2A iteration, in order."""
    if wildcards.method == "noisy":
        return subject_file("noisy")
    if wildcards.method == "n2a":
        return [n2a_iteration_file(k) for k in N2A_ITERATIONS]
    return denoised_file(wildcards.method)


def final_output(method):
    """Pattern of a method's final result (the repetitions themselves for ``noisy``)."""
    if method == "noisy":
        return subject_file("noisy")
    if method == "n2a":
        return n2a_iteration_file(N2A_ITERATIONS[-1])
    return denoised_file(method)


def first_subject(files, data_type):
    return {
        name: path.format(subject=EVALUATION_SUBJECTS[0], data_type=data_type)
        for name, path in files.items()
    }


def panel_images(wildcards):
    """Images of the first evaluation subject shown in the figure panel."""
    files = {method: final_output(method) for method in scored_methods(wildcards.data_type)}
    files.update(truth=subject_file("truth"), mask=subject_file("mask"))
    return first_subject(files, wildcards.data_type)


def dti_panel_maps(wildcards):
    """FA, MD and colour-FA maps of every method and of the truth, first evaluation subject."""
    files = {
        f"{method}_{name}": tensor_map(name, method_results(method)[-1])
        for method in scored_methods(wildcards.data_type)
        for name in ("fa", "md", "colorfa")
    }
    files.update({f"truth_{name}": reference_map(name) for name in ("fa", "md", "colorfa")})
    files["mask"] = subject_file("mask")
    return first_subject(files, wildcards.data_type)


def metric_tables():
    """Every per-subject metric table: each data type with its own methods."""
    return [
        metrics_table().format(subject=subject, data_type=data_type, method=method)
        for data_type in DATA_TYPES
        for subject in EVALUATION_SUBJECTS
        for method in scored_methods(data_type)
    ]


def metric_selection(data_type):
    """Region and metrics of the metric figures: DTI errors in white matter for diffusion."""
    if is_dwi(data_type):
        return {"region": "wm", "metric_names": ["fa_mae", "md_mae", "ad_mae", "rd_mae", "v1_angle"]}
    return {"region": "brain", "metric_names": None}


def figure_kinds(data_type):
    image = ["dti"] if is_dwi(data_type) else ["panel"]
    return image + ["distributions"] + (["iterations"] if "n2a" in METHODS else [])


def get_final_output():
    figures = [
        figure_file(kind, ext).format(data_type=data_type)
        for data_type in DATA_TYPES
        for kind in figure_kinds(data_type)
        for ext in ("png", "pdf")
    ]
    return [
        f"{RESULTS}/metrics.csv",
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/summary.md",
        f"{RESULTS}/provenance/{DATASET}_versions.json",
        *figures,
    ]
