from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results_dir"]
DATASET = config["dataset"]
DATA_TYPES = config["data_types"]
EVALUATION_SUBJECTS = config["subjects"]["evaluation"]
TRAINING_SUBJECTS = config["subjects"]["training"]
METHODS = config["methods"]
NETWORK_METHODS = [m for m in ("n2a", "n2n", "supervised") if m in METHODS]
N2A_ITERATIONS = list(range(1, config["n2a"]["iterations"] + 1))
# The single noisy repetition is always scored, as the starting point of every method.
SCORED_METHODS = ["noisy", *METHODS]

if config["network"]["depth"] % 4 != 2:
    raise ValueError(
        f"config network.depth: {config['network']['depth']} is not a MU-Net depth; "
        "use 6, 10, 14, 18, ... (two convolutions per stage, an odd number of stages)"
    )

_shared = set(EVALUATION_SUBJECTS) & set(TRAINING_SUBJECTS)
if _shared:
    raise ValueError(
        f"config subjects: {sorted(_shared)} are both evaluation and training subjects; "
        "pretraining must never see an evaluation subject"
    )


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    data_type="|".join(DATA_TYPES),
    method="|".join(SCORED_METHODS),
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


def panel_images(wildcards):
    """Images of the first evaluation subject shown in the figure panel."""
    subject = EVALUATION_SUBJECTS[0]
    files = {
        method: (
            n2a_iteration_file(N2A_ITERATIONS[-1])
            if method == "n2a"
            else subject_file("noisy") if method == "noisy" else denoised_file(method)
        )
        for method in SCORED_METHODS
    }
    files.update(truth=subject_file("truth"), mask=subject_file("mask"))
    return {
        name: path.format(subject=subject, data_type=wildcards.data_type)
        for name, path in files.items()
    }


def get_final_output():
    figures = expand(
        figure_file("{kind}", "{ext}"),
        data_type=DATA_TYPES,
        kind=["panel", "distributions"] + (["iterations"] if "n2a" in METHODS else []),
        ext=["png", "pdf"],
    )
    return [
        f"{RESULTS}/metrics.csv",
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/summary.md",
        f"{RESULTS}/provenance/{DATASET}_versions.json",
        *figures,
    ]
