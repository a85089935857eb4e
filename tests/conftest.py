import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def snakemake_command(*args, workdir, configfile=None):
    """Command line running this checkout's workflow with the current interpreter."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir)]
    if configfile is not None:
        command += ["--configfile", str(configfile)]
    return command + list(args)


@pytest.fixture
def run_snakemake(tmp_path):
    """Run snakemake in a fresh working directory that holds a copy of the config folder."""
    shutil.copytree(REPO / "config", tmp_path / "config")

    def run(*args, configfile=None, check=True):
        result = subprocess.run(
            snakemake_command(*args, workdir=tmp_path, configfile=configfile),
            capture_output=True, text=True, cwd=tmp_path,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    run.workdir = tmp_path
    return run
