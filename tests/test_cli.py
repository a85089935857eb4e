"""The ``n2a`` command line: end to end on tiny repetitions, bad input, resume files, OOM."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

pytest.importorskip("torch")
nib = pytest.importorskip("nibabel")

from bad_inputs import CASES, dwi, t1w  # noqa: E402
from noise2average import cli, training  # noqa: E402

N2A = Path(sys.executable).with_name("n2a")
# Small enough for seconds per run: 8^3 blocks on the 12^3 phantom, one epoch per fit.
FAST = ["--epochs", "1", "--block-size", "8", "--block-stride", "4", "--device", "cpu",
        "--threads", "1", "--quiet"]


def _run(*args):
    """``n2a`` in this process: (exit status, stderr)."""
    return cli.main([str(arg) for arg in args])


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_help_explains_every_subcommand():
    result = subprocess.run([N2A, "denoise", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--method", "--mask", "--bvals", "--bvecs", "--pretrained",
                   "--iterations", "--device", "--epochs", "--block-size", "--batch-size",
                   "--seed", "--restart", "examples:", "co-registered"):
        assert option in result.stdout, option
    for command in ("pretrain", "subsets"):
        result = subprocess.run([N2A, command, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: n2a " + command in result.stdout


def test_denoise_t1w_pair_end_to_end_with_sidecar(tmp_path):
    case = t1w(tmp_path / "bids")
    output = tmp_path / "out" / "sub-01_desc-n2a_T1w.nii.gz"
    result = subprocess.run([N2A, "denoise", *case.repetitions, "-o", output, *FAST],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    image = nib.load(output)
    source = nib.load(case.repetitions[0])
    assert image.shape == source.shape and np.allclose(image.affine, source.affine)
    denoised = np.asarray(image.dataobj)
    mean = np.mean([np.asarray(nib.load(p).dataobj) for p in case.repetitions], axis=0)
    assert np.isfinite(denoised).all() and not np.allclose(denoised, mean)

    sidecar = json.loads(output.with_name("sub-01_desc-n2a_T1w.json").read_text())
    assert sidecar["method"] == "n2a" and sidecar["seed"] == 0
    assert [entry["sha256"] for entry in sidecar["inputs"]] == [
        _sha256(path) for path in case.repetitions]
    assert sidecar["parameters"]["iterations"] == 2
    assert sidecar["parameters"]["settings"]["epochs"] == 1
    assert len(sidecar["history"]) == 2  # one epoch per iteration
    assert sidecar["mask"].startswith("computed")
    assert sidecar["software"]["noise2average"] and sidecar["software"]["torch"]
    # Brain voxels changed; the background keeps the mean of the repetitions.
    assert np.abs(denoised - mean).max() > 0
    # No resume files are left once the output is written.
    assert not any(path.name.endswith(".resume") for path in output.parent.iterdir())


def test_precision_option_reaches_the_training_settings(tmp_path):
    case = t1w(tmp_path / "bids")
    output = tmp_path / "bf16.nii.gz"
    assert _run("denoise", *case.repetitions, "-o", output, *FAST, "--precision", "bf16") == 0
    sidecar = json.loads(output.with_name("bf16.json").read_text())
    assert sidecar["parameters"]["settings"]["precision"] == "bf16"


def test_same_seed_same_image_other_seed_other_image(tmp_path):
    case = t1w(tmp_path / "bids")
    outputs = [tmp_path / f"{name}.nii.gz" for name in ("a", "b", "c")]
    for output, seed in zip(outputs, (3, 3, 4)):
        assert _run("denoise", *case.repetitions, "-o", output, "--iterations", "1",
                    "--seed", seed, *FAST) == 0
    a, b, c = (np.asarray(nib.load(output).dataobj) for output in outputs)
    assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pretrained_model_is_used_and_checked(tmp_path, capsys):
    case = t1w(tmp_path / "t1w", mask=True)
    model = tmp_path / "t1w_model.pt"
    assert _run("pretrain", "--subject", case.repetitions[0], case.repetitions[1],
                "-o", model, "--depth", 6, "--width", 4, *FAST) == 0
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert sidecar["network"]["depth"] == 6 and sidecar["data_type"] == "t1w"
    output = tmp_path / "n2a.nii.gz"
    assert _run("denoise", *case.repetitions, "--mask", case.mask, "--pretrained", model,
                "-o", output, *FAST) == 0
    sidecar = json.loads(output.with_suffix("").with_suffix(".json").read_text())
    assert sidecar["pretrained"]["sha256"] == _sha256(model)
    assert sidecar["parameters"]["network"]["width"] == 4
    assert sidecar["parameters"]["settings"]["learning_rate"] == 5e-5  # fine-tuning
    assert sidecar["mask"] == f"given: {case.mask}"
    # A T1w model cannot denoise a 7-volume diffusion series.
    series = dwi(tmp_path / "dwi")
    capsys.readouterr()
    assert _run("denoise", *series.repetitions, "--bvals", *series.bvals, "--bvecs",
                *series.bvecs, "--pretrained", model, "-o", tmp_path / "dwi.nii.gz",
                *FAST) == 2
    error = capsys.readouterr().err
    assert f"{model}: the model takes 1 channel(s), the repetitions have 7" in error
    assert not (tmp_path / "dwi.nii.gz").exists()


def test_filter_on_a_diffusion_pair_writes_its_gradient_table(tmp_path):
    series = dwi(tmp_path / "dwi")
    output = tmp_path / "mppca.nii.gz"
    assert _run("denoise", *series.repetitions, "--bvals", series.bvals[0], "--bvecs",
                series.bvecs[0], "--method", "mppca", "-o", output, "--quiet") == 0
    assert nib.load(output).shape == (12, 12, 12, 7)
    assert_array_equal(np.loadtxt(tmp_path / "mppca.bval"), np.loadtxt(series.bvals[0]))
    sidecar = json.loads((tmp_path / "mppca.json").read_text())
    assert sidecar["input"] == "mean of the repetitions" and "warnings" in sidecar


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_bad_input_is_refused_naming_the_culprit(case_id, tmp_path, capsys):
    case = CASES[case_id](tmp_path / "bids")
    output = tmp_path / "out.nii.gz"
    args = ["denoise", *case.repetitions, "-o", output, "--method", case.method, *FAST]
    if case.mask is not None:
        args += ["--mask", case.mask]
    if case.dwi:
        args += ["--bvals", *case.bvals, "--bvecs", *case.bvecs]
    if case.method not in ("n2a", "n2n"):
        args = [arg for arg in args if arg not in FAST] + ["--quiet"]
    assert _run(*args) == 2
    error = capsys.readouterr().err
    assert error.startswith("n2a denoise: error: ") and error.count("\n") == 1, error
    assert str(case.culprit) in error and re.search(case.message, error), error
    assert not output.exists() and not list(tmp_path.glob(".out.nii.gz.resume"))


@pytest.mark.parametrize("args, message", [
    (["--epochs", "-1"], "epochs must be a non-negative integer"),
    (["--block-size", "0"], "block_size must be a positive integer"),
    (["--block-stride", "9"], "block_stride 9 must not exceed block_size 8"),
    (["--iterations", "0"], "iterations: must be a positive integer, got 0"),
    (["--threads", "0"], "threads: must be a positive integer, got 0"),
])
def test_bad_training_options_are_refused(args, message, tmp_path, capsys):
    case = t1w(tmp_path / "bids")
    assert _run("denoise", *case.repetitions, "-o", tmp_path / "x.nii.gz", *FAST, *args) == 2
    assert message in capsys.readouterr().err


def test_output_must_be_nifti_and_filters_take_no_training_options(tmp_path, capsys):
    case = t1w(tmp_path / "bids")
    assert _run("denoise", *case.repetitions, "-o", tmp_path / "x.mgz") == 2
    assert "x.mgz: the output must be a NIfTI file" in capsys.readouterr().err
    assert _run("denoise", *case.repetitions, "-o", tmp_path / "x.nii.gz", "--method",
                "bm4d", "--epochs", "3") == 2
    assert "training options and pretrained models apply to the network methods" in \
        capsys.readouterr().err


def test_stale_resume_files_of_another_job_are_discarded(tmp_path):
    case = t1w(tmp_path / "bids")
    output = tmp_path / "n2a.nii.gz"
    stale = tmp_path / ".n2a.nii.gz.resume" / "0123456789abcdef"
    stale.mkdir(parents=True)
    (stale / "iteration-1.pt").write_bytes(b"from another run")
    assert _run("denoise", *case.repetitions, "-o", output, "--iterations", "1", *FAST) == 0
    assert output.exists() and not stale.parent.exists()


def test_out_of_memory_exits_with_the_remedy(tmp_path, capsys, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    import torch

    monkeypatch.setattr(training, "_train_step", out_of_memory)
    case = t1w(tmp_path / "bids")
    output = tmp_path / "n2a.nii.gz"
    assert _run("denoise", *case.repetitions, "-o", output, *FAST) == 1
    error = capsys.readouterr().err
    assert error.startswith("n2a denoise: failed: out of memory on cpu during training")
    assert "block_size 8 and batch_size 2" in error and "--block-size" in error
    assert not output.exists()


def _table(folder, n_directions=60, n_b0=6):
    from noise2average.diffusion_phantom import gradient_table
    from noise2average.io import save_gradients

    bvals, bvecs = gradient_table(n_directions, n_b0=n_b0, bvalue=1000.0, seed=0)
    paths = folder / "dwi.bval", folder / "dwi.bvec"
    save_gradients(*paths, bvals, bvecs)
    return paths, bvals


def test_subsets_design_and_repetitions(tmp_path):
    from noise2average.dti_subsets import design_condition_number

    (bval, bvec), bvals = _table(tmp_path)
    design = tmp_path / "design.json"
    assert _run("subsets", "--bvals", bval, "--bvecs", bvec, "-o", design, "--quiet") == 0
    info = json.loads(design.read_text())["design"]
    volumes = [set(subset) for subset in info["volumes"]]
    assert len(volumes) == 2 and all(len(v) == 6 for v in volumes)
    assert not volumes[0] & volumes[1] and all(bvals[list(v)].min() > 50 for v in volumes)
    bvecs = np.loadtxt(bvec).T
    assert all(design_condition_number(bvecs[sorted(v)]) < 1.6 for v in volumes)

    # With the series: one 7-volume repetition per subset, ready for `n2a denoise`.
    shape = (6, 6, 6)
    series = np.exp(-0.7e-3 * bvals) * np.full(shape + (bvals.size,), 100.0)
    nib.save(nib.Nifti1Image(series.astype(np.float32), np.eye(4)), tmp_path / "dwi.nii.gz")
    assert _run("subsets", "--bvals", bval, "--bvecs", bvec, "-o", design, "--dwi",
                tmp_path / "dwi.nii.gz", "--prefix", tmp_path / "sdn", "--quiet") == 0
    written = json.loads(design.read_text())["outputs"]
    assert written == [str(tmp_path / name) for name in
                       ("sdn_rep-1.nii.gz", "sdn_rep-2.nii.gz", "sdn.bval", "sdn.bvec")]
    repetition = np.asarray(nib.load(tmp_path / "sdn_rep-1.nii.gz").dataobj)
    assert repetition.shape == shape + (7,)
    # A noise-free isotropic series gives the same signal from every subset.
    assert np.allclose(repetition, np.asarray(nib.load(tmp_path / "sdn_rep-2.nii.gz").dataobj),
                       rtol=1e-4)


def test_subsets_of_too_few_directions_is_an_input_error(tmp_path, capsys):
    (bval, bvec), _ = _table(tmp_path, n_directions=9)
    assert _run("subsets", "--bvals", bval, "--bvecs", bvec, "-o", tmp_path / "d.json") == 2
    error = capsys.readouterr().err
    assert error.startswith(f"n2a subsets: error: {bval}: ") and "directions" in error
    assert not (tmp_path / "d.json").exists()


def test_tool_defaults_are_the_workflows_cpu_defaults():
    """The tool's network and learning rates are those of ``config/config.yaml``."""
    import yaml

    from noise2average.scans import DEFAULT_NETWORK, TRAINING_DEFAULTS

    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    assert DEFAULT_NETWORK == {key: config["network"][key] for key in DEFAULT_NETWORK}
    assert TRAINING_DEFAULTS["pretrain"] == config["training"]["pretrain"]
    # Fine-tuning keeps the paper's rate; the workflow shortens its epochs for the CPU budget.
    assert (TRAINING_DEFAULTS["finetune"]["learning_rate"]
            == config["training"]["finetune"]["learning_rate"])
