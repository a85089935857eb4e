"""SDnDTI repetitions from one diffusion series, simulated or acquired.

SDnDTI (Tian et al., NeuroImage 2022;253:119033) turns one multi-direction diffusion scan
into several "repetitions" with identical contrast and independent noise:

1. the b=0 volumes (``bval <= b0_threshold``) are averaged into one ``S0``;
2. the directions of one shell are split into disjoint, well-conditioned 6-direction
   subsets (`dti_subsets.select_subsets`); `subset_design` gives this design from the
   gradient table alone;
3. a tensor is fitted to each subset by linear least squares on
   ``-log(S / S0) / b = g^T D g`` (`dti_subsets.tensor_design_matrix`, each volume with its
   own b-value, so slightly different b-values of a real shell are honoured), and its
   negative eigenvalues (noise, mostly outside the head) are set to 0;
4. every subset's tensor synthesizes ``S0 exp(-b g^T D g)`` on one common set, the mean b0
   plus the volumes (b-values and directions) of subset 1: one repetition per subset.

The b0 channel of every repetition is the same mean b0: its noise is shared, not
independent, across the repetitions. Other shells of a multi-shell series are ignored.

Real data have no ground truth; `reference_series` gives the reference they do offer: the
same fit on all directions of the shell, synthesized on the same common set. Its noise is
lower than a repetition's (all directions instead of six) but not zero.

Units: b-values in s/mm^2, diffusivities in mm^2/s, signals in the unit of the series.
Memory: the fitted volumes are converted to float64, one subset (or, for the reference,
the whole shell) at a time.
"""

import numbers

import numpy as np

from .diffusion_phantom import synthesize_dwi
# The package's checks of a DWI gradient table, with and without the image.
from .dti_metrics import _check_gradient_table, _check_gradients
from .dti_subsets import design_condition_number, select_subsets, tensor_design_matrix

__all__ = ["subset_design", "subset_repetitions", "reference_series"]

# Volumes within this fraction of a shell's b-value belong to the shell: scanners write
# slightly different b-values per direction (e.g. 990-1010 for a b=1000 shell).
_SHELL_TOLERANCE = 0.1


def _shell(bvals, b0_threshold, bvalue, min_directions):
    """The shell's median b-value and the b0, shell and ignored volume indices.

    ``bvals`` (M,) in s/mm^2 and ``b0_threshold`` are already validated by
    `dti_metrics._check_gradient_table`. The shell is centred on ``bvalue`` or, when None,
    on the lowest non-zero b-value. Returns the median b-value of the shell in s/mm^2 and
    int index arrays of the b0, shell and other (ignored) volumes.
    """
    is_b0 = bvals <= b0_threshold
    if bvalue is None:
        bvalue = float(bvals[~is_b0].min())
    elif not (np.isfinite(bvalue) and bvalue > b0_threshold):
        raise ValueError(
            f"bvalue must be a finite b-value above b0_threshold={b0_threshold} s/mm^2, "
            f"got {bvalue!r}"
        )
    in_shell = ~is_b0 & (np.abs(bvals - bvalue) <= _SHELL_TOLERANCE * bvalue)
    if in_shell.sum() < min_directions:
        raise ValueError(
            f"the b={bvalue:g} s/mm^2 shell (+-{_SHELL_TOLERANCE:.0%}) holds "
            f"{int(in_shell.sum())} directions, {min_directions} are needed; b-values of the "
            f"diffusion-weighted volumes: {np.unique(np.round(bvals[~is_b0])).tolist()}"
        )
    b0 = np.flatnonzero(is_b0)
    shell = np.flatnonzero(in_shell)
    ignored = np.flatnonzero(~is_b0 & ~in_shell)
    return float(np.median(bvals[shell])), b0, shell, ignored


def _fit_log_linear(dwi, b0, bvals, bvecs):
    """Tensors (X, Y, Z, 3, 3) in mm^2/s from DWIs (X, Y, Z, K) by log-linear least squares.

    ``b0`` (X, Y, Z) is ``S0``, ``bvals`` (K,) and ``bvecs`` (K, 3) the volumes' b-values
    and directions. Voxels with ``b0 <= 0`` (air) get the zero tensor; non-positive DWIs
    are clipped to the smallest float32 so their log is finite.
    """
    tiny = np.finfo(np.float32).tiny
    valid = b0 > 0
    ratio = np.maximum(dwi, tiny) / np.where(valid, b0, 1.0)[..., None]
    adc = np.where(valid[..., None], -np.log(ratio) / bvals, 0.0)
    coef = adc @ np.linalg.pinv(tensor_design_matrix(bvecs)).T  # (..., 6)
    xx, xy, xz, yy, yz, zz = np.moveaxis(coef, -1, 0)
    return np.stack(
        [np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1), np.stack([xz, yz, zz], -1)],
        axis=-2,
    )


def _positive_semidefinite(tensors):
    """``tensors`` (..., 3, 3) with negative eigenvalues set to 0.

    A diffusion tensor cannot amplify the signal. Where noise dominates (air, or a DWI
    above its b0) the free fit can have eigenvalues of -0.01 mm^2/s and below, and its
    synthesis exp(+b |lambda|) would overflow; the clipped tensor synthesizes at most S0.
    """
    values, vectors = np.linalg.eigh(tensors)
    return (vectors * np.maximum(values, 0.0)[..., None, :]) @ np.swapaxes(vectors, -1, -2)


def _fit_and_synthesize(series, b0_mean, bvals, bvecs, volumes, out_bvals, out_bvecs):
    """Tensor fit of ``series[..., volumes]`` synthesized on the output table, (X, Y, Z, M)."""
    fitted = _fit_log_linear(
        series[..., volumes].astype(np.float64), b0_mean, bvals[volumes], bvecs[volumes]
    )
    return synthesize_dwi(_positive_semidefinite(fitted), b0_mean, out_bvals, out_bvecs)


def subset_design(
    bvals,
    bvecs,
    *,
    n_subsets,
    max_condition=1.6,
    n_rotations=20000,
    seed=0,
    b0_threshold=50.0,
    bvalue=None,
):
    """SDnDTI direction subsets and common set of a gradient table, without the image.

    The design `subset_repetitions` fits and synthesizes: which volumes of the table form
    each repetition's 6-direction subset, and the table the repetitions are written on.

    Parameters
    ----------
    bvals : array_like of shape (M,)
        b-values in s/mm^2.
    bvecs : array_like of shape (M, 3)
        Gradient directions in the voxel-axis frame; unit norm (within 1e-3) on the shell.
    n_subsets : int
        Number of subsets (repetitions, >= 2); the shell needs at least ``6 * n_subsets``
        directions.
    max_condition, n_rotations, seed
        Subset search options of `dti_subsets.select_subsets` (condition number bound,
        random DSM6 rotations per round, seed of the rotations).
    b0_threshold : float, optional
        Volumes with ``bval <= b0_threshold`` (s/mm^2) are b=0 volumes.
    bvalue : float, optional
        Shell to use, in s/mm^2: the volumes with ``|bval - bvalue| <= 0.1 bvalue``. None
        takes the lowest non-zero b-value. Volumes of other shells are ignored.

    Returns
    -------
    volumes : list of n_subsets ndarrays of int, shape (6,)
        Indices into the table of each subset's volumes, all in the shell, disjoint.
    out_bvals : ndarray of float64, shape (7,)
        The common set: 0 (the mean b0), then the b-values of subset 1's volumes, s/mm^2.
    out_bvecs : ndarray of float64, shape (7, 3)
        A zero row, then the directions of subset 1's volumes.
    info : dict
        JSON-serialisable record: b0, shell and ignored volumes (indices into the table),
        the shell's median b-value (``bvalue``) and the ignored b-values, the subset
        options, the volumes and condition number of every subset (``repetitions``,
        ``volumes``) and how the common set, fit and b0 channel are made.

    Raises
    ------
    ValueError
        For a malformed gradient table, no b=0 volume, a shell with fewer than
        ``6 * n_subsets`` directions, or when `dti_subsets.select_subsets` finds fewer than
        ``n_subsets`` subsets below ``max_condition`` (message with the direction count).
    """
    if isinstance(n_subsets, bool) or not isinstance(n_subsets, numbers.Integral) \
            or n_subsets < 2:
        raise ValueError(f"n_subsets must be an int >= 2 (repetitions), got {n_subsets!r}")
    bvals, bvecs, b0_threshold = _check_gradient_table(bvals, bvecs, b0_threshold)
    bvalue, b0, shell, ignored = _shell(bvals, b0_threshold, bvalue, 6 * n_subsets)
    try:
        subsets = select_subsets(
            bvecs[shell],
            n_subsets=int(n_subsets),
            max_condition=max_condition,
            n_rotations=n_rotations,
            seed=seed,
        )
    except ValueError as error:
        raise ValueError(f"b={bvalue:.0f} s/mm^2 shell: {error}") from error
    volumes = [shell[subset] for subset in subsets]

    out_bvals = np.concatenate([[0.0], bvals[volumes[0]]])
    out_bvecs = np.concatenate([np.zeros((1, 3)), bvecs[volumes[0]]])
    info = {
        "b0_threshold": b0_threshold,
        "b0_volumes": b0.tolist(),
        "bvalue": bvalue,
        "shell_volumes": shell.tolist(),
        "ignored_volumes": ignored.tolist(),
        "ignored_bvals": np.unique(bvals[ignored]).tolist(),
        "n_subsets": len(volumes),
        "max_condition": float(max_condition),
        "n_rotations": int(n_rotations),
        "subset_seed": int(seed) if isinstance(seed, numbers.Integral) else repr(seed),
        "volumes": [v.tolist() for v in volumes],
        "common_set": "mean b0 + the volumes (b-values, directions) of subset 1",
        "fit": "linear least squares on -log(S / mean b0) / b, tensor_design_matrix",
        "b0_channel": f"mean of the {b0.size} b0 volumes, shared by all repetitions",
        "repetitions": [
            {
                "index": k + 1,
                "volumes": v.tolist(),
                "condition_number": design_condition_number(bvecs[v]),
            }
            for k, v in enumerate(volumes)
        ],
    }
    return volumes, out_bvals, out_bvecs, info


def subset_repetitions(
    series,
    bvals,
    bvecs,
    *,
    n_subsets,
    max_condition=1.6,
    n_rotations=20000,
    seed=0,
    b0_threshold=50.0,
    bvalue=None,
):
    """SDnDTI repetitions of one (noisy) diffusion series.

    Parameters
    ----------
    series : array_like of shape (X, Y, Z, M)
        Magnitude DWI series, any intensity unit and dtype.
    bvals, bvecs, n_subsets, max_condition, n_rotations, seed, b0_threshold, bvalue
        The gradient table (M entries) and design options of `subset_design`.

    Returns
    -------
    repetitions : ndarray of float32, shape (X, Y, Z, 7, n_subsets)
        Repetition ``k`` is subset ``k``'s tensor synthesized on the common set.
    out_bvals : ndarray of float64, shape (7,)
        0 (the mean b0), then the b-values of subset 1's volumes, s/mm^2.
    out_bvecs : ndarray of float64, shape (7, 3)
        A zero row, then the directions of subset 1's volumes.
    info : dict
        The ``info`` of `subset_design`; its volume indices index the series.

    Raises
    ------
    ValueError
        For a series whose shape disagrees with the table, and as `subset_design`.
    """
    series = np.asarray(series)
    bvals, bvecs, b0_threshold = _check_gradients(series, bvals, bvecs, b0_threshold)
    volumes, out_bvals, out_bvecs, info = subset_design(
        bvals,
        bvecs,
        n_subsets=n_subsets,
        max_condition=max_condition,
        n_rotations=n_rotations,
        seed=seed,
        b0_threshold=b0_threshold,
        bvalue=bvalue,
    )
    b0_mean = series[..., info["b0_volumes"]].mean(axis=-1, dtype=np.float64)
    repetitions = np.empty(series.shape[:3] + (7, len(volumes)), dtype=np.float32)
    for k, subset in enumerate(volumes):
        repetitions[..., k] = _fit_and_synthesize(
            series, b0_mean, bvals, bvecs, subset, out_bvals, out_bvecs
        )
    return repetitions, out_bvals, out_bvecs, info


def reference_series(
    series, bvals, bvecs, out_bvals, out_bvecs, *, b0_threshold=50.0, bvalue=None
):
    """All-direction tensor fit of one shell, synthesized on a given table.

    The reference a real dataset offers for `subset_repetitions` (it has no ground truth):
    the same log-linear fit with the same mean b0, on every direction of the shell.

    Parameters
    ----------
    series, bvals, bvecs
        As for `subset_repetitions`.
    out_bvals : array_like of shape (N,)
        b-values of the output table in s/mm^2 (0 gives the mean b0), e.g. the
        ``out_bvals`` of `subset_repetitions`.
    out_bvecs : array_like of shape (N, 3)
        Unit directions of the output table (ignored where ``out_bvals`` is 0).
    b0_threshold, bvalue : float, optional
        As for `subset_repetitions`; pass the same values to fit the same shell.

    Returns
    -------
    reference : ndarray of float32, shape (X, Y, Z, N)
        ``mean b0 * exp(-b g^T D g)`` of the all-direction tensor ``D``.

    Raises
    ------
    ValueError
        For a malformed series or table, no b=0 volume, or fewer than 6 directions on the
        shell.
    """
    series = np.asarray(series)
    bvals, bvecs, b0_threshold = _check_gradients(series, bvals, bvecs, b0_threshold)
    _, b0, shell, _ = _shell(bvals, b0_threshold, bvalue, 6)
    b0_mean = series[..., b0].mean(axis=-1, dtype=np.float64)
    reference = _fit_and_synthesize(series, b0_mean, bvals, bvecs, shell, out_bvals, out_bvecs)
    return reference.astype(np.float32)
