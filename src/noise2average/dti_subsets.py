"""Disjoint, well-conditioned 6-direction subsets of a DTI scan (the SDnDTI design).

SDnDTI (Tian et al., NeuroImage 2022;253:119033) turns one multi-direction diffusion scan
into several "repetitions" with identical contrast and independent noise: the acquired
directions are split into disjoint subsets of six, a tensor is fitted to each subset (with
the mean b0), and every subset's tensor synthesizes DWIs along one common set of
directions. This module picks the subsets; fitting and synthesis live elsewhere.

A subset is good for a 6-parameter tensor fit when its design matrix (one row
``[gx^2, 2 gx gy, 2 gx gz, gy^2, 2 gy gz, gz^2]`` per direction) is well conditioned. The
reference is the DSM6 scheme of Skare et al. (J Magn Reson 2000;147:340-352), whose
condition number is about 1.32, close to the minimum for six directions. A subset is built
by rotating DSM6 at random and taking, for each rotated direction, the nearest acquired
direction not yet used (directions are antipodally symmetric: ``g`` and ``-g`` are the
same measurement); it is kept when its condition number is below a threshold (1.6 in
SDnDTI). Among the kept candidates, subsets are chosen so that their union covers the
sphere evenly, measured by the electrostatic energy of the points ``+-g``
(Jones et al., Magn Reson Med 1999;42:515-525).

All direction arguments are unit 3-vectors (b-vectors of the diffusion-weighted volumes;
the caller removes the b=0 volumes).
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "DSM6",
    "tensor_design_matrix",
    "design_condition_number",
    "subset_energy",
    "select_subsets",
]

_DSM6_RAW = np.array(
    [
        [0.91, 0.416, 0.0],
        [0.0, 0.91, 0.416],
        [0.416, 0.0, 0.91],
        [0.91, -0.416, 0.0],
        [0.0, 0.91, -0.416],
        [-0.416, 0.0, 0.91],
    ]
)

#: ndarray of shape (6, 3): the DSM6 directions of Skare et al. (2000), unit norm.
DSM6 = _DSM6_RAW / np.linalg.norm(_DSM6_RAW, axis=1, keepdims=True)
DSM6.setflags(write=False)

# Tolerance on |norm - 1| of input directions: b-vector files are often written with
# 4-6 decimals, so exact unit norm cannot be asked for.
_UNIT_ATOL = 1e-3


def _as_directions(bvecs, *, name="bvecs", unit=True, min_count=1):
    """``bvecs`` as a float (N, 3) array, checked; ValueError naming the problem."""
    array = np.asarray(bvecs, dtype=float)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got shape {array.shape}")
    if array.shape[0] < min_count:
        raise ValueError(
            f"{name} holds {array.shape[0]} directions, at least {min_count} are needed"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values")
    if unit:
        norms = np.linalg.norm(array, axis=1)
        bad = np.abs(norms - 1.0) > _UNIT_ATOL
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name} must hold unit vectors (|norm - 1| <= {_UNIT_ATOL}); row {index} "
                f"has norm {norms[index]:.6g} ({int(bad.sum())} rows off); remove b=0 "
                "volumes and normalise the b-vectors first"
            )
    return array


def tensor_design_matrix(bvecs):
    """Design matrix of the 6-parameter diffusion tensor fit.

    Parameters
    ----------
    bvecs : array_like of shape (M, 3)
        Gradient directions (dimensionless; unit norm for a meaningful design).

    Returns
    -------
    design : ndarray of shape (M, 6)
        Row ``m`` is ``[gx^2, 2 gx gy, 2 gx gz, gy^2, 2 gy gz, gz^2]`` of direction ``m``,
        so that ``design @ [Dxx, Dxy, Dxz, Dyy, Dyz, Dzz] = g^T D g`` (the apparent
        diffusivity, in the unit of ``D``).
    """
    return _design(_as_directions(bvecs, unit=False))


def _design(g):
    """Tensor design rows of directions ``g`` of shape (..., 3): shape (..., 6)."""
    gx, gy, gz = g[..., 0], g[..., 1], g[..., 2]
    return np.stack(
        [gx * gx, 2 * gx * gy, 2 * gx * gz, gy * gy, 2 * gy * gz, gz * gz], axis=-1
    )


def _condition(designs):
    """Condition numbers of a stack of designs of shape (K, M, 6): shape (K,)."""
    singular = np.linalg.svd(designs, compute_uv=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        condition = singular[:, 0] / singular[:, -1]
    return np.where(np.isfinite(condition), condition, np.inf)


def design_condition_number(bvecs):
    """2-norm condition number of the tensor design matrix of ``bvecs``.

    Parameters
    ----------
    bvecs : array_like of shape (M, 3)
        Gradient directions, M >= 6.

    Returns
    -------
    condition : float
        Ratio of the largest to the smallest singular value of
        ``tensor_design_matrix(bvecs)``; ``inf`` when the design is singular (the tensor
        cannot be fitted). About 1.32 for `DSM6`.
    """
    g = _as_directions(bvecs, unit=False, min_count=6)
    singular = np.linalg.svd(tensor_design_matrix(g), compute_uv=False)
    if singular[-1] <= singular[0] * np.finfo(float).eps:
        return float("inf")
    return float(singular[0] / singular[-1])


def _pair_energy(g):
    """(N, N) electrostatic energy between the antipodal pairs ``+-g_i`` and ``+-g_j``.

    Entry (i, j), i != j, is ``2 / |g_i - g_j| + 2 / |g_i + g_j|`` (the four point pairs);
    the diagonal is 0. Coincident or antipodal directions give ``inf``.
    """
    gram = np.clip(g @ g.T, -1.0, 1.0)
    with np.errstate(divide="ignore"):
        minus = 2.0 / np.sqrt(np.maximum(2.0 - 2.0 * gram, 0.0))
        plus = 2.0 / np.sqrt(np.maximum(2.0 + 2.0 * gram, 0.0))
    energy = minus + plus
    np.fill_diagonal(energy, 0.0)
    return energy


def subset_energy(bvecs):
    """Electrostatic energy of the antipodally symmetric point set ``{+g, -g}``.

    Parameters
    ----------
    bvecs : array_like of shape (M, 3)
        Unit gradient directions.

    Returns
    -------
    energy : float
        ``sum over pairs of distinct points p, q of 1 / |p - q|`` over the 2M points
        ``+-g_m`` on the unit sphere (dimensionless). Lower is more even coverage; ``inf``
        when two directions coincide up to sign.

    Notes
    -----
    Each direction contributes ``1/2`` with its own antipode (distance 2), and each pair of
    directions ``i < j`` contributes ``2 / |g_i - g_j| + 2 / |g_i + g_j|``.
    """
    g = _as_directions(bvecs, min_count=1)
    return float(np.triu(_pair_energy(g), k=1).sum() + 0.5 * g.shape[0])


def _random_rotations(rng, count):
    """(count, 3, 3) rotation matrices, uniform on SO(3) (normalised Gaussian quaternions)."""
    q = rng.standard_normal((count, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def _candidates(g, available, templates, max_condition):
    """Distinct well-conditioned subsets matched to the rotated templates.

    Returns the candidate subsets as an int array of shape (K, 6) of sorted indices into
    ``g`` (rows in lexicographic order) and their condition numbers, shape (K,).
    """
    if len(available) < 6:
        return np.empty((0, 6), dtype=int), np.empty(0)
    # |cos| between each template direction and each free acquired direction, (R, 6, A):
    # directions are lines, so g and -g are equally near.
    cosine = np.abs(np.einsum("rkc,ac->rka", templates, g[available]))
    columns = np.argmax(cosine, axis=-1)  # nearest free direction, (R, 6)
    ordered = np.sort(columns, axis=1)
    clash = np.flatnonzero((np.diff(ordered, axis=1) == 0).any(axis=1))
    for r in clash:  # two template directions share a nearest neighbour: assign jointly
        _, columns[r] = linear_sum_assignment(np.arccos(np.clip(cosine[r], 0.0, 1.0)))
    members = np.unique(np.sort(available[columns], axis=1), axis=0)
    condition = _condition(_design(g[members]))
    keep = condition < max_condition
    return members[keep], condition[keep]


def select_subsets(bvecs, *, n_subsets=None, max_condition=1.6, n_rotations=20000, seed=0):
    """Disjoint 6-direction subsets close to rotated DSM6, covering the sphere evenly.

    Parameters
    ----------
    bvecs : array_like of shape (N, 3)
        Unit diffusion gradient directions of one shell, b=0 volumes excluded, N >= 6.
        ``g`` and ``-g`` are treated as the same direction.
    n_subsets : int, optional
        Number of subsets wanted (at least 1, at most ``N // 6``). None selects as many
        disjoint subsets as the greedy search below finds.
    max_condition : float, optional
        Keep only subsets whose tensor design condition number is strictly below this
        (must exceed 1; SDnDTI uses 1.6, DSM6 itself has about 1.32).
    n_rotations : int, optional
        Number of random rotations of DSM6 tried in every round (at least 1). More
        rotations give more candidates and a better choice, linearly slower.
    seed : int or numpy.random.Generator, optional
        Seed of (or generator for) the random rotations; the result is a deterministic
        function of ``bvecs`` and an integer seed.

    Returns
    -------
    subsets : list of ndarray of int, each of shape (6,)
        Indices into ``bvecs`` (sorted within a subset), pairwise disjoint, in the order
        they were chosen.

    Raises
    ------
    ValueError
        For malformed or non-unit ``bvecs``, invalid options, or when fewer than
        ``n_subsets`` subsets (fewer than one when ``n_subsets`` is None) meeting
        ``max_condition`` can be found.

    Notes
    -----
    One set of ``n_rotations`` uniformly random rotations is drawn once. The subsets are
    then chosen greedily, one per round:

    1. For every rotation ``R``, each direction of ``R @ DSM6`` is matched to its nearest
       unused acquired direction (largest ``|cos|``, so ``g`` and ``-g`` are equally
       near). When two template directions share a nearest neighbour, the six are
       assigned jointly to distinct directions with the smallest total angle (Hungarian
       assignment).
    2. Duplicate subsets are dropped and those with condition number
       ``>= max_condition`` discarded.
    3. The candidate that minimises the electrostatic energy (`subset_energy`) of the
       union of the already chosen directions and its own is chosen; its directions
       become unavailable.

    With the factor-2 design rows the condition number is not rotation invariant
    (Skare et al. 2000): DSM6 has about 1.32 in its own frame, but only about 4 % of
    uniformly random rotations of it stay below 1.6 (median about 1.94), and matching to
    acquired directions perturbs it further, so many rotations are needed per candidate.

    Rounds stop when ``n_subsets`` subsets are chosen or no candidate is left. Greedy
    selection does not guarantee the largest possible number of subsets nor the globally
    lowest energy; it is the simple, deterministic procedure described for SDnDTI.
    """
    g = _as_directions(bvecs, min_count=6)
    n_directions = g.shape[0]
    if n_subsets is not None:
        if isinstance(n_subsets, bool) or not isinstance(n_subsets, (int, np.integer)):
            raise ValueError(f"n_subsets must be an int or None, got {n_subsets!r}")
        if n_subsets < 1 or 6 * n_subsets > n_directions:
            raise ValueError(
                f"n_subsets={n_subsets} needs {6 * max(n_subsets, 1)} directions and at "
                f"least 1 subset; bvecs holds {n_directions} (at most "
                f"{n_directions // 6} subsets)"
            )
    if not np.isfinite(max_condition) or max_condition <= 1.0:
        raise ValueError(f"max_condition must be a finite number > 1, got {max_condition!r}")
    if isinstance(n_rotations, bool) or not isinstance(n_rotations, (int, np.integer)) \
            or n_rotations < 1:
        raise ValueError(f"n_rotations must be a positive int, got {n_rotations!r}")

    rng = np.random.default_rng(seed)
    templates = _random_rotations(rng, int(n_rotations)) @ DSM6.T  # (R, 3, 6)
    templates = np.swapaxes(templates, 1, 2)  # (R, 6, 3)
    pair_energy = _pair_energy(g)

    wanted = n_directions // 6 if n_subsets is None else int(n_subsets)
    used = np.zeros(n_directions, dtype=bool)
    chosen = []
    while len(chosen) < wanted:
        available = np.flatnonzero(~used)
        members, condition = _candidates(g, available, templates, max_condition)
        if len(members) == 0:
            break
        internal = pair_energy[members[:, :, None], members[:, None, :]].sum(axis=(1, 2)) / 2
        cross = pair_energy[members][:, :, used].sum(axis=(1, 2))
        # Energy of the union minus the constant energy of the chosen set; ties broken by
        # the condition number, then by the (lexicographic) order of the indices.
        order = np.lexsort((np.arange(len(members)), condition, internal + cross))
        best = members[order[0]]
        chosen.append(best.copy())
        used[best] = True

    if not chosen or (n_subsets is not None and len(chosen) < n_subsets):
        raise ValueError(
            f"found only {len(chosen)} disjoint subsets with condition number < "
            f"{max_condition} among {n_directions} directions "
            f"({n_subsets if n_subsets is not None else 'at least 1'} wanted); increase "
            "n_rotations or max_condition, or ask for fewer subsets"
        )
    return chosen
