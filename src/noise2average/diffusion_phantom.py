"""Noise-free diffusion-tensor phantom on an anatomy grid: gradients, tensors, DWIs, b0.

Pipeline
--------
1. `gradient_table`: an HCP-like single-shell scheme, b=0 volumes interleaved with
   diffusion directions spread evenly on the sphere (electrostatic repulsion of the
   antipodal points ``+-g``; Jones et al., Magn Reson Med 1999;42:515-525).
2. `fibre_directions`: a smooth white-matter orientation field from a T1-weighted image
   (least-variation direction of the structure tensor).
3. `tensor_field`: per-voxel partial-volume mixture of CSF, grey and white matter
   tensors (mm^2/s).
4. `b0_image`: the non-diffusion-weighted image with T2-weighted contrast.
5. `synthesize_dwi`: the single-tensor signal ``S = S0 exp(-b g^T D g)``.
6. `dti_maps`: FA, MD, AD, RD and the principal direction of a tensor field.

Frame: all directions (b-vectors, fibre directions, tensor axes) are expressed in the
voxel-axis frame of the grid (axis 0, 1, 2). For the working anatomy, whose affine is
diagonal, this is also the world (MNI) frame up to axis signs.
"""

import numpy as np
from scipy import ndimage

__all__ = [
    "gradient_table",
    "prolate_eigenvalues",
    "tensor_field",
    "fibre_directions",
    "synthesize_dwi",
    "dti_maps",
    "b0_image",
]

#: Relative proton density (water content) of CSF, GM, WM (order of ``anatomy.TISSUES``):
#: about 1.0, 0.81 and 0.70 (Neeb et al., NeuroImage 2006;31:1156-1168; Whittall et al.,
#: Magn Reson Med 1997;37:34-43).
PROTON_DENSITY = (1.0, 0.81, 0.70)
#: T2 in ms of CSF, GM, WM at 3 T: GM 99 ms and WM 69 ms (Stanisz et al., Magn Reson Med
#: 2005;54:507-512); CSF about 2000 ms (Spijkerman et al., MAGMA 2018;31:415-424 report
#: 1.5-2 s for bulk CSF at 3 T).
T2_MS = (2000.0, 99.0, 69.0)


# --------------------------------------------------------------------------------------
# Gradient table
# --------------------------------------------------------------------------------------


def _fibonacci_hemisphere(n):
    i = np.arange(n) + 0.5
    z = 1.0 - i / n
    phi = np.pi * (1.0 + np.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _antipodal_energy(g):
    gram = np.clip(g @ g.T, -1.0, 1.0)
    with np.errstate(divide="ignore"):
        e = 1.0 / np.sqrt(np.maximum(2.0 - 2.0 * gram, 0.0))
        e += 1.0 / np.sqrt(np.maximum(2.0 + 2.0 * gram, 0.0))
    np.fill_diagonal(e, 0.0)
    return 0.5 * e.sum()


def _antipodal_forces(g):
    diff = g[:, None, :] - g[None, :, :]
    summ = g[:, None, :] + g[None, :, :]
    dm = np.linalg.norm(diff, axis=-1)
    dp = np.linalg.norm(summ, axis=-1)
    np.fill_diagonal(dm, np.inf)
    np.fill_diagonal(dp, np.inf)
    dm = np.maximum(dm, 1e-12)
    dp = np.maximum(dp, 1e-12)
    force = (diff / dm[..., None] ** 3).sum(axis=1) + (summ / dp[..., None] ** 3).sum(axis=1)
    # keep the tangential part only
    return force - (force * g).sum(axis=1, keepdims=True) * g


def _relax(g, n_iter):
    """Minimise the antipodal electrostatic energy of unit directions ``g`` (N, 3)."""
    n = g.shape[0]
    if n < 2:
        return g
    spacing = np.sqrt(2.0 * np.pi / n)  # typical angular spacing on the hemisphere
    step = 0.2 * spacing
    energy = _antipodal_energy(g)
    for _ in range(n_iter):
        force = _antipodal_forces(g)
        largest = np.linalg.norm(force, axis=1).max()
        if largest == 0:
            break
        trial = g + (step / largest) * force
        trial /= np.linalg.norm(trial, axis=1, keepdims=True)
        trial_energy = _antipodal_energy(trial)
        if trial_energy < energy:
            g, energy = trial, trial_energy
            step *= 1.1
        else:
            step *= 0.5
            if step < 1e-7 * spacing:
                break
    return g


def gradient_table(n_directions, *, n_b0, bvalue=1000.0, seed=0):
    """HCP-like single-shell gradient table with interleaved b=0 volumes.

    Parameters
    ----------
    n_directions : int
        Number of diffusion-weighted volumes (at least 1).
    n_b0 : int
        Number of b=0 volumes (at least 0). They are interleaved at (rounded) equal
        intervals, the first volume being a b=0 when ``n_b0 > 0``, as in the HCP scheme.
    bvalue : float, optional
        b-value of the diffusion-weighted volumes, in s/mm^2 (positive).
    seed : int, optional
        Seed of the random rotation applied to the initial Fibonacci lattice before
        relaxation; the same seed gives the same table.

    Returns
    -------
    bvals : ndarray of shape (M,)
        b-values in s/mm^2, ``M = n_directions + n_b0``; 0 for the b=0 volumes.
    bvecs : ndarray of shape (M, 3)
        Unit gradient directions (voxel-axis frame); zero rows for the b=0 volumes.

    Notes
    -----
    The directions start from a Fibonacci lattice on the upper hemisphere, randomly
    rotated, then are relaxed for up to 300 iterations of projected gradient descent on
    the electrostatic energy of the antipodal point set ``{+g, -g}`` (Jones et al. 1999),
    with a step accepted only when the energy decreases. The directions are finally
    flipped to the upper hemisphere (``z >= 0``); the sign does not matter for diffusion.
    """
    if int(n_directions) != n_directions or n_directions < 1:
        raise ValueError(f"n_directions must be a positive integer, got {n_directions!r}")
    if int(n_b0) != n_b0 or n_b0 < 0:
        raise ValueError(f"n_b0 must be a non-negative integer, got {n_b0!r}")
    if not np.isfinite(bvalue) or bvalue <= 0:
        raise ValueError(f"bvalue must be positive (s/mm^2), got {bvalue!r}")
    n_directions, n_b0 = int(n_directions), int(n_b0)
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    rotation = q * np.sign(np.diag(r))
    g = _fibonacci_hemisphere(n_directions) @ rotation.T
    g = _relax(g, 300)
    g = np.where(g[:, 2:3] < 0, -g, g)
    g /= np.linalg.norm(g, axis=1, keepdims=True)

    m = n_directions + n_b0
    is_b0 = np.zeros(m, dtype=bool)
    if n_b0:
        is_b0[np.round(np.arange(n_b0) * m / n_b0).astype(int)] = True
    bvals = np.where(is_b0, 0.0, float(bvalue))
    bvecs = np.zeros((m, 3))
    bvecs[~is_b0] = g
    return bvals, bvecs


# --------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------


def prolate_eigenvalues(fa, md):
    """Eigenvalues of the prolate tensor (``lambda2 = lambda3``) with given FA and MD.

    Parameters
    ----------
    fa : float
        Fractional anisotropy, in [0, 1).
    md : float
        Mean diffusivity in mm^2/s (non-negative).

    Returns
    -------
    lambda1, lambda2 : float
        Axial and radial eigenvalues in mm^2/s.

    Notes
    -----
    Write ``lambda1 = MD (1 + 2 r)`` and ``lambda2 = lambda3 = MD (1 - r)`` (so the mean is
    MD). Then ``FA^2 = 3 r^2 / (1 + 2 r^2)``, hence ``r = FA / sqrt(3 - 2 FA^2)``. FA must
    be below 1 for ``lambda2 > 0``. Example: FA 0.7, MD 0.7e-3 gives lambda1 = 1.39e-3
    and lambda2 = 0.355e-3 mm^2/s.
    """
    if not np.isfinite(fa) or not 0.0 <= fa < 1.0:
        raise ValueError(f"fa must be in [0, 1), got {fa!r}")
    if not np.isfinite(md) or md < 0:
        raise ValueError(f"md must be non-negative (mm^2/s), got {md!r}")
    r = fa / np.sqrt(3.0 - 2.0 * fa * fa)
    return md * (1.0 + 2.0 * r), md * (1.0 - r)


def _unit_field(vectors, name):
    vectors = np.asarray(vectors, dtype=float)
    if vectors.shape[-1] != 3:
        raise ValueError(f"{name} must have a last axis of length 3, got {vectors.shape}")
    if not np.all(np.isfinite(vectors)):
        raise ValueError(f"{name} contains non-finite values")
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norm > 0, norm, 1.0), norm[..., 0] > 0


def _prolate(direction, lambda1, lambda2):
    """(..., 3, 3) tensors ``lambda2 I + (lambda1 - lambda2) v v^T``."""
    outer = direction[..., :, None] * direction[..., None, :]
    return lambda2 * np.eye(3) + (lambda1 - lambda2) * outer


def tensor_field(
    fractions,
    white_matter_direction,
    *,
    wm_fa=0.7,
    wm_md=0.7e-3,
    gm_fa=0.15,
    gm_md=0.8e-3,
    csf_md=3.0e-3,
    background_md=1.0e-3,
):
    """Partial-volume diffusion tensor field from tissue fractions.

    Parameters
    ----------
    fractions : array_like of shape (X, Y, Z, 3)
        CSF, GM, WM volume fractions (order ``anatomy.TISSUES``), each in [0, 1].
    white_matter_direction : array_like of shape (X, Y, Z, 3)
        Fibre direction (voxel-axis frame) of the WM tensor; normalised here. It must be
        non-zero wherever the WM fraction is positive.
    wm_fa, gm_fa : float, optional
        Fractional anisotropy of pure WM and pure GM, in [0, 1).
    wm_md, gm_md, csf_md : float, optional
        Mean diffusivity of pure WM, GM and CSF in mm^2/s (CSF: free water at 37 C).
    background_md : float, optional
        MD in mm^2/s of the isotropic tensor given to voxels without brain (all fractions
        0): non-brain head tissue. Their signal is set by the b0 image (0 in air).

    Returns
    -------
    tensors : ndarray of shape (X, Y, Z, 3, 3)
        Symmetric diffusion tensors in mm^2/s.

    Notes
    -----
    Each tissue is one tensor: WM prolate along ``white_matter_direction`` with
    eigenvalues from `prolate_eigenvalues` (``wm_fa``, ``wm_md``); GM prolate with
    eigenvalues from (``gm_fa``, ``gm_md``) along the radial direction from the
    GM-weighted centroid of the grid (a crude stand-in for the radial anisotropy of the
    cortex); CSF isotropic. A voxel's tensor is the fraction-weighted mean of the tissue
    tensors, the weights normalised by the brain fraction (sum of the fractions). This
    is a mixture of tensors, not of signals: the true multi-compartment signal would be
    multi-exponential in b, while the mixed tensor keeps the single-tensor model exact
    (noise-free DTI recovers it exactly), which is what a denoising benchmark needs.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 4 or fractions.shape[-1] != 3:
        raise ValueError(f"fractions must have shape (X, Y, Z, 3), got {fractions.shape}")
    if not np.all(np.isfinite(fractions)) or fractions.min() < 0 or fractions.max() > 1:
        raise ValueError("fractions must be finite and within [0, 1]")
    direction = np.asarray(white_matter_direction, dtype=float)
    if direction.shape != fractions.shape:
        raise ValueError(
            f"white_matter_direction shape {direction.shape} does not match fractions "
            f"shape {fractions.shape}"
        )
    direction, nonzero = _unit_field(direction, "white_matter_direction")
    if np.any((fractions[..., 2] > 0) & ~nonzero):
        raise ValueError("white_matter_direction is zero in voxels with a positive WM fraction")
    for name, value in (("csf_md", csf_md), ("background_md", background_md)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be non-negative (mm^2/s), got {value!r}")
    wm_l1, wm_l2 = prolate_eigenvalues(wm_fa, wm_md)
    gm_l1, gm_l2 = prolate_eigenvalues(gm_fa, gm_md)

    shape = fractions.shape[:3]
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), -1)
    gm_weight = fractions[..., 1]
    if gm_weight.sum() > 0:
        centre = (grid * gm_weight[..., None]).sum(axis=(0, 1, 2)) / gm_weight.sum()
    else:
        centre = (np.asarray(shape, dtype=float) - 1) / 2
    radial = grid - centre
    radial[np.linalg.norm(radial, axis=-1) == 0] = (0.0, 0.0, 1.0)
    radial, _ = _unit_field(radial, "radial")

    brain = fractions.sum(axis=-1)
    weights = fractions / np.where(brain > 0, brain, 1.0)[..., None]
    tensors = weights[..., 0, None, None] * (csf_md * np.eye(3))
    tensors += weights[..., 1, None, None] * _prolate(radial, gm_l1, gm_l2)
    tensors += weights[..., 2, None, None] * _prolate(direction, wm_l1, wm_l2)
    tensors[brain <= 0] = background_md * np.eye(3)
    return tensors


def _sign_normalise(vectors):
    """Flip vectors (..., 3) so that their largest-magnitude component is positive."""
    index = np.argmax(np.abs(vectors), axis=-1)[..., None]
    sign = np.sign(np.take_along_axis(vectors, index, axis=-1))
    return vectors * np.where(sign == 0, 1.0, sign)


def fibre_directions(anatomy_image, mask, *, smoothness_voxels=2.0, gradient_sigma_voxels=1.0):
    """Smooth white-matter fibre orientation from an anatomical image.

    Parameters
    ----------
    anatomy_image : array_like of shape (X, Y, Z)
        Anatomical (e.g. T1-weighted or WM-fraction) image, arbitrary units.
    mask : array_like of bool, shape (X, Y, Z)
        Voxels whose image gradients contribute (e.g. the brain or WM mask); the brain
        outline then creates no spurious edge.
    smoothness_voxels : float, optional
        Standard deviation in voxels of the Gaussian that integrates the structure tensor
        (positive): larger values give smoother, more coherent directions.
    gradient_sigma_voxels : float, optional
        Standard deviation in voxels of the Gaussian derivative used for the image
        gradient (positive).

    Returns
    -------
    directions : ndarray of shape (X, Y, Z, 3)
        Unit vectors (voxel-axis frame), sign-normalised so that the largest-magnitude
        component is positive. Defined everywhere; meaningful only inside ``mask``.

    Notes
    -----
    The structure tensor ``J = G_s * (grad I grad I^T)`` (gradients zeroed outside
    ``mask``, then smoothed component-wise with ``smoothness_voxels``) summarises how the
    image varies around each voxel; its smallest-eigenvalue eigenvector is the direction
    along which the intensity varies least. Inside an elongated, tract-like structure
    (a tube) this is the tube axis. Because the tensor, not the vector, is smoothed,
    neighbouring voxels agree and the sign ambiguity does not matter.

    Limits: this follows elongated intensity structures, not fibres. A T1 image carries
    no orientation information within uniform WM: in flat or sheet-like regions (two small
    eigenvalues) the direction is ill-defined and arbitrary within the sheet, crossings
    are not represented, and the result is no substitute for tractography. It is a
    plausible, spatially coherent orientation for a phantom, not anatomy.
    """
    image = np.asarray(anatomy_image, dtype=float)
    if image.ndim != 3:
        raise ValueError(f"anatomy_image must be 3D, got shape {image.shape}")
    mask = np.asarray(mask)
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape}")
    mask = mask.astype(bool)
    for name, value in (
        ("smoothness_voxels", smoothness_voxels),
        ("gradient_sigma_voxels", gradient_sigma_voxels),
    ):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be positive (voxels), got {value!r}")
    grad = []
    for axis in range(3):
        order = [0, 0, 0]
        order[axis] = 1
        grad.append(ndimage.gaussian_filter(image, gradient_sigma_voxels, order=order) * mask)
    structure = np.empty(image.shape + (3, 3))
    for i in range(3):
        for j in range(i, 3):
            smooth = ndimage.gaussian_filter(grad[i] * grad[j], smoothness_voxels)
            structure[..., i, j] = smooth
            structure[..., j, i] = smooth
    _, vectors = np.linalg.eigh(structure)
    return _sign_normalise(vectors[..., :, 0])


# --------------------------------------------------------------------------------------
# Signals and maps
# --------------------------------------------------------------------------------------


def _check_tensors(tensors):
    tensors = np.asarray(tensors, dtype=float)
    if tensors.ndim < 2 or tensors.shape[-2:] != (3, 3):
        raise ValueError(f"tensors must have shape (..., 3, 3), got {tensors.shape}")
    if not np.all(np.isfinite(tensors)):
        raise ValueError("tensors contain non-finite values")
    return tensors


def synthesize_dwi(tensors, s0, bvals, bvecs):
    """Noise-free single-tensor diffusion-weighted signal.

    Parameters
    ----------
    tensors : array_like of shape (X, Y, Z, 3, 3)
        Diffusion tensors in mm^2/s.
    s0 : float or array_like of shape (X, Y, Z)
        Non-diffusion-weighted signal (arbitrary units), e.g. from `b0_image`.
    bvals : array_like of shape (M,)
        b-values in s/mm^2 (non-negative).
    bvecs : array_like of shape (M, 3)
        Gradient directions; unit norm where ``bvals > 0`` (ignored where ``bvals == 0``).

    Returns
    -------
    dwi : ndarray of shape (X, Y, Z, M)
        ``S = S0 exp(-b g^T D g)``, float64.
    """
    tensors = _check_tensors(tensors)
    bvals = np.asarray(bvals, dtype=float)
    bvecs = np.asarray(bvecs, dtype=float)
    if bvals.ndim != 1 or bvecs.shape != (bvals.size, 3):
        raise ValueError(
            f"bvals must have shape (M,) and bvecs (M, 3), got {bvals.shape} and {bvecs.shape}"
        )
    if not np.all(np.isfinite(bvals)) or bvals.min(initial=0) < 0:
        raise ValueError("bvals must be finite and non-negative (s/mm^2)")
    weighted = bvals > 0
    norms = np.linalg.norm(bvecs[weighted], axis=1)
    if np.any(np.abs(norms - 1) > 1e-3):
        raise ValueError(f"bvecs of diffusion-weighted volumes must be unit, got norms {norms}")
    s0 = np.broadcast_to(np.asarray(s0, dtype=float), tensors.shape[:-2])
    dwi = np.empty(tensors.shape[:-2] + (bvals.size,))
    for m, (b, g) in enumerate(zip(bvals, bvecs)):
        if b == 0:
            dwi[..., m] = s0
        else:
            adc = np.einsum("...ij,i,j->...", tensors, g, g)
            dwi[..., m] = s0 * np.exp(-b * adc)
    return dwi


def dti_maps(tensors):
    """Scalar and directional DTI maps from a tensor field.

    Parameters
    ----------
    tensors : array_like of shape (..., 3, 3)
        Symmetric diffusion tensors in mm^2/s, e.g. (X, Y, Z, 3, 3).

    Returns
    -------
    maps : dict
        ``fa`` (dimensionless, 0 where all eigenvalues are 0), ``md`` (mean eigenvalue),
        ``ad`` (largest eigenvalue), ``rd`` (mean of the two smaller eigenvalues), all in
        mm^2/s except FA and of shape (...,) e.g. (X, Y, Z); ``v1`` the unit eigenvector
        of the largest eigenvalue, shape (..., 3), sign-normalised so that its
        largest-magnitude component is positive.
    """
    tensors = _check_tensors(tensors)
    evals, evecs = np.linalg.eigh(tensors)  # ascending
    l3, l2, l1 = evals[..., 0], evals[..., 1], evals[..., 2]
    md = evals.mean(axis=-1)
    numerator = np.sqrt(((evals - md[..., None]) ** 2).sum(axis=-1))
    denominator = np.sqrt((evals**2).sum(axis=-1))
    fa = np.sqrt(1.5) * numerator / np.where(denominator > 0, denominator, 1.0)
    fa = np.where(denominator > 0, fa, 0.0)
    return {
        "fa": fa,
        "md": md,
        "ad": l1,
        "rd": 0.5 * (l2 + l3),
        "v1": _sign_normalise(evecs[..., :, 2]),
    }


def b0_image(
    fractions,
    t1w_like,
    *,
    te_ms=90.0,
    t2_ms=T2_MS,
    proton_density=PROTON_DENSITY,
    nonbrain_t2_ms=50.0,
    nonbrain_proton_density=0.7,
    bias=None,
):
    """b=0 image with T2-weighted contrast (CSF bright, WM darker than GM).

    Parameters
    ----------
    fractions : array_like of shape (X, Y, Z, 3)
        CSF, GM, WM volume fractions (order ``anatomy.TISSUES``).
    t1w_like : array_like of shape (X, Y, Z)
        Anatomical image whose non-zero voxels outside the brain mark head tissue (air is
        0, as in the Colin 27 working anatomy); only used for the non-brain part.
    te_ms : float, optional
        Echo time in ms (HCP diffusion: 89.5 ms).
    t2_ms : sequence of 3 float, optional
        T2 in ms of CSF, GM, WM; default `T2_MS` (3 T literature values).
    proton_density : sequence of 3 float, optional
        Relative proton density of CSF, GM, WM; default `PROTON_DENSITY`.
    nonbrain_t2_ms, nonbrain_proton_density : float, optional
        T2 (ms) and proton density of non-brain head tissue, modelled as muscle (T2 about
        50 ms at 3 T, Stanisz et al. 2005); scalp fat is assumed suppressed.
    bias : array_like of shape (X, Y, Z), optional
        Positive multiplicative receive (bias) field; None means uniform 1.

    Returns
    -------
    b0 : ndarray of shape (X, Y, Z)
        ``bias * [sum_t f_t PD_t exp(-TE/T2_t) + h (1 - sum_t f_t) PD_h exp(-TE/T2_h)]``,
        dimensionless (pure CSF is about 0.96 with the defaults, GM 0.33, WM 0.19).
        ``h`` is the head-tissue fraction: ``t1w_like`` divided by the median of its
        positive non-brain values, clipped to [0, 1].

    Notes
    -----
    Long-TR spin-echo model: T1 saturation is neglected (HCP TR is 5.5 s; CSF T1 of about
    4 s at 3 T would lower CSF by about a quarter, leaving it the brightest tissue).
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 4 or fractions.shape[-1] != 3:
        raise ValueError(f"fractions must have shape (X, Y, Z, 3), got {fractions.shape}")
    t1w_like = np.asarray(t1w_like, dtype=float)
    if t1w_like.shape != fractions.shape[:3]:
        raise ValueError(
            f"t1w_like shape {t1w_like.shape} does not match grid shape {fractions.shape[:3]}"
        )
    t2 = np.asarray(t2_ms, dtype=float)
    pd = np.asarray(proton_density, dtype=float)
    if t2.shape != (3,) or np.any(t2 <= 0):
        raise ValueError(f"t2_ms must hold 3 positive values, got {t2_ms!r}")
    if pd.shape != (3,) or np.any(pd < 0):
        raise ValueError(f"proton_density must hold 3 non-negative values, got {proton_density!r}")
    if not np.isfinite(te_ms) or te_ms < 0:
        raise ValueError(f"te_ms must be non-negative, got {te_ms!r}")
    if nonbrain_t2_ms <= 0 or nonbrain_proton_density < 0:
        raise ValueError(
            f"nonbrain_t2_ms must be positive and nonbrain_proton_density non-negative, got "
            f"{nonbrain_t2_ms!r} and {nonbrain_proton_density!r}"
        )
    brain = fractions.sum(axis=-1)
    signal = fractions @ (pd * np.exp(-te_ms / t2))
    outside = (brain <= 0) & (t1w_like > 0)
    if outside.any():
        head = np.clip(t1w_like / np.median(t1w_like[outside]), 0.0, 1.0)
        signal += (
            head
            * np.clip(1.0 - brain, 0.0, 1.0)
            * nonbrain_proton_density
            * np.exp(-te_ms / nonbrain_t2_ms)
        )
    if bias is not None:
        bias = np.asarray(bias, dtype=float)
        if bias.shape != signal.shape:
            raise ValueError(f"bias shape {bias.shape} does not match grid shape {signal.shape}")
        if not np.all(np.isfinite(bias)) or bias.min() <= 0:
            raise ValueError("bias must be finite and positive")
        signal = signal * bias
    return signal
