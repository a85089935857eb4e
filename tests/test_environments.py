"""The conda environments agree with the package's Python dependencies."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import REPO

# conda-forge names of PyPI packages where they differ.
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
TOOLS = {"python", "pip"}
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def pinned_packages(env_file):
    """{pypi name: version} of an environment file's conda and pip pins."""
    environment = yaml.safe_load(env_file.read_text())
    pins = {}
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            for requirement in entry.get("pip", []):
                if requirement.startswith("-e"):
                    continue
                name, version = requirement.split("==")
                pins[name] = version
            continue
        name, _, version = entry.partition("=")
        assert re.fullmatch(r"\d+(\.\d+)+", version), f"{env_file.name}: {entry} is not an exact pin"
        if name not in TOOLS:
            pins[CONDA_TO_PYPI.get(name, name)] = version
    return pins


def project_requirements():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in ("torch", "neuro", "download"):
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]
                         if not r.startswith("noise2average")]
    return {r.name: r for r in requirements}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_pins_satisfy_the_project_requirements(env_file):
    requirements = project_requirements()
    for name, version in pinned_packages(env_file).items():
        if name in requirements:
            assert requirements[name].specifier.contains(version), (
                f"{env_file.name}: {name}=={version} violates pyproject's {requirements[name]}"
            )


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_environment_channels_and_package_install(env_file):
    environment = yaml.safe_load(env_file.read_text())
    assert environment["channels"] == ["conda-forge", "nodefaults"]
    pip_section = next(e["pip"] for e in environment["dependencies"] if isinstance(e, dict))
    assert "-e .." in pip_section  # the package itself, relative to envs/


def test_every_project_dependency_is_pinned_somewhere():
    pinned = {name for env_file in ENV_FILES for name in pinned_packages(env_file)}
    missing = set(project_requirements()) - pinned
    assert not missing, f"not pinned in any envs/*.yaml: {sorted(missing)}"


def test_one_version_per_package_across_environments():
    versions = {}
    for env_file in ENV_FILES:
        for name, version in pinned_packages(env_file).items():
            versions.setdefault(name, set()).add(version)
    assert {name: v for name, v in versions.items() if len(v) > 1} == {}


def test_every_rule_environment_exists():
    for rules in (REPO / "workflow/rules").glob("*.smk"):
        for relative in re.findall(r'conda:\s*\n\s*"([^"]+)"', rules.read_text()):
            assert (rules.parent / relative).resolve().is_file(), f"{rules.name}: {relative}"
