"""Noise2Average: self-supervised MRI denoising from repeated noisy scans.

The package holds the science of the benchmark as plain functions on numpy arrays; the
Snakemake workflow in ``workflow/`` calls them through thin scripts. See ``docs/design.md``
for the module map.
"""

__version__ = "0.1.0"
