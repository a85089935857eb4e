"""Image-quality metrics of a denoised volume against the ground truth.

Every metric compares an ``image`` with a ``reference`` (the noise-free ground truth), both
float volumes of shape ``(X, Y, Z)``, inside a bool ``mask`` of the same shape. Only voxels
inside the mask enter any metric: values outside it are never read (SSIM's local statistics
are computed with a mask-normalised window, see below).

Definitions
-----------
Let ``x`` be the image, ``r`` the reference and ``M`` the set of the ``n`` voxels inside the
mask.

data range ``L``
    ``max(r[M]) - min(r[M])``, in image intensity units, unless given explicitly. The same
    ``L`` is used by PSNR, SSIM and MAE (:func:`image_metrics` computes it once).
PSNR (dB)
    ``10 * log10(L**2 / MSE)`` with ``MSE = mean((x - r)[M]**2)``; ``inf`` when ``x == r`` on
    ``M``. Higher is better.
SSIM (dimensionless, at most 1)
    The local structural similarity of Wang et al. (2004, IEEE TIP 13:600) in 3D:
    ``((2 mu_x mu_r + C1) (2 s_xr + C2)) / ((mu_x**2 + mu_r**2 + C1) (s_x**2 + s_r**2 + C2))``
    with ``C1 = (0.01 L)**2`` and ``C2 = (0.03 L)**2``, averaged over ``M``. The local means,
    variances and covariance ``mu, s**2, s_xr`` are weighted with an isotropic Gaussian window
    of standard deviation ``sigma`` voxels (truncated at 3.5 sigma, as in scikit-image)
    restricted to the mask and renormalised: ``mu_x = G * (m x) / G * m`` (``m`` the mask
    indicator), population (biased) moments. Identical images give exactly 1. Higher is better.
MAE (fraction of ``L``)
    ``mean(|x - r|[M]) / L``: relative to the data range so that it is comparable across data
    sets and intensity scalings. Lower is better.
NRMSE (dimensionless)
    ``||(x - r)[M]||_2 / ||r[M]||_2``. Lower is better.
Grey/white boundary sharpness (dimensionless)
    Boundary voxels are grey-matter voxels (label 2) with a white-matter 6-neighbour (label 3)
    and white-matter voxels with a grey-matter 6-neighbour. With ``g_x`` and ``g_r`` the
    gradients of image and reference (Gaussian derivative of scale ``sigma`` voxels) and
    ``u = g_r / |g_r|`` the unit normal of the reference edge, the sharpness is
    ``mean(g_x . u) / mean(|g_r|)`` over the boundary voxels: the edge contrast per voxel
    across the boundary relative to that of the truth. 1 = as sharp as the truth, < 1 blurred,
    > 1 over-sharpened (or contrast amplified). The projection is linear in the image, so
    zero-mean noise averages out of it: noise alone keeps the sharpness near 1 (unlike a
    gradient magnitude, which noise inflates). It is in absolute intensity units, so a global
    intensity scaling of the image scales it too. Closest to 1 is best.

Series
------
:func:`series_metrics` compares diffusion series of shape ``(X, Y, Z, M)`` (``M`` volumes,
b0s and DWIs) inside one 3D mask. The series is one image: ``L`` is the data range of the
reference over the mask across all ``M`` volumes (the b0s usually set it), PSNR, MAE and
NRMSE pool the ``M * n`` masked voxels (e.g. ``MSE`` is their mean squared error), and SSIM,
whose windows are spatial, is the mean over volumes of the 3D SSIM above with that common
``L``. A per-volume ``L`` would rate the dim high-b volumes on their own small range and
make the numbers incomparable between volumes.

The direction of "better" for each metric, the image metrics here and the DTI metrics of
:mod:`noise2average.dti_metrics` (:data:`~noise2average.dti_metrics.DTI_METRIC_NAMES`), is
in :data:`METRIC_BETTER`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._validation import check_shapes
from .dti_metrics import DTI_METRIC_NAMES

__all__ = [
    "METRIC_NAMES",
    "METRIC_BETTER",
    "SERIES_METRIC_NAMES",
    "default_data_range",
    "psnr",
    "ssim",
    "mae",
    "nrmse",
    "boundary_sharpness",
    "image_metrics",
    "series_metrics",
]

#: Metric names, in the order they are reported.
METRIC_NAMES = ("psnr", "ssim", "mae", "nrmse", "sharpness")

#: Metric names of :func:`series_metrics`, in the order they are reported.
SERIES_METRIC_NAMES = ("psnr", "ssim", "mae", "nrmse")

#: Which value of each metric is best: "higher", "lower" or "closest_to_1"; the image
#: metrics of :data:`METRIC_NAMES`, then the DTI map errors of
#: :data:`~noise2average.dti_metrics.DTI_METRIC_NAMES` (all "lower").
METRIC_BETTER = {
    "psnr": "higher",
    "ssim": "higher",
    "mae": "lower",
    "nrmse": "lower",
    "sharpness": "closest_to_1",
    **{name: "lower" for name in DTI_METRIC_NAMES},
}

_K1 = 0.01
_K2 = 0.03
_SSIM_TRUNCATE = 3.5
_GM = 2
_WM = 3


def _check_inputs(image, reference, mask):
    """Validate (X, Y, Z) image, reference and mask; return float64, float64, bool arrays."""
    image = np.asarray(image)
    reference = np.asarray(reference)
    mask = np.asarray(mask)
    if reference.ndim != 3:
        raise ValueError(f"reference must be 3D (X, Y, Z), got shape {reference.shape}")
    check_shapes(reference, image=image, mask=mask)
    mask = _as_bool_mask(mask)
    image = image.astype(np.float64)
    reference = reference.astype(np.float64)
    for name, arr in (("image", image), ("reference", reference)):
        if not np.all(np.isfinite(arr[mask])):
            raise ValueError(f"{name} has non-finite values inside the mask")
    return image, reference, mask


def _as_bool_mask(mask):
    """A bool (or 0/1) mask array as bool, with at least one True voxel."""
    if mask.dtype != bool:
        values = np.unique(mask)
        if not np.all(np.isin(values, (0, 1))):
            raise ValueError(
                f"mask must be bool (or 0/1), got values {values[:5].tolist()} "
                f"of dtype {mask.dtype}"
            )
        mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("mask is empty: no voxel to compute a metric on")
    return mask


def _check_series(image, reference, mask):
    """Validate (X, Y, Z, M) image and reference and (X, Y, Z) mask; return arrays, bool mask.

    The series are not converted to float64 as a whole (a full DWI series is large): only
    their masked voxels and single volumes are, by the 3D metrics.
    """
    image = np.asarray(image)
    reference = np.asarray(reference)
    mask = np.asarray(mask)
    if reference.ndim != 4:
        raise ValueError(f"reference must be 4D (X, Y, Z, M), got shape {reference.shape}")
    check_shapes(reference, image=image)
    if reference.shape[3] == 0:
        raise ValueError(f"reference has no volumes (shape {reference.shape})")
    if mask.shape != reference.shape[:3]:
        raise ValueError(
            f"mask shape {mask.shape} does not match the first three axes (X, Y, Z) of "
            f"reference shape {reference.shape}"
        )
    return image, reference, _as_bool_mask(mask)


def _resolve_data_range(reference, mask, data_range):
    if data_range is None:
        data_range = default_data_range(reference, mask)
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be finite and > 0, got {data_range}")
    return data_range


def default_data_range(reference, mask):
    """Data range of the reference inside the mask.

    Parameters
    ----------
    reference : ndarray, shape (X, Y, Z)
        Ground-truth volume, float, in image intensity units.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels to consider.

    Returns
    -------
    float
        ``max(reference[mask]) - min(reference[mask])``, in intensity units.

    Raises
    ------
    ValueError
        If the mask is empty or the reference is constant inside it (range 0).
    """
    reference = np.asarray(reference, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != reference.shape:
        raise ValueError(
            f"mask shape {mask.shape} does not match reference shape {reference.shape}"
        )
    if not mask.any():
        raise ValueError("mask is empty: no voxel to compute a data range on")
    values = reference[mask]
    data_range = float(values.max() - values.min())
    if not data_range > 0:
        raise ValueError(
            f"reference is constant inside the mask (data range {data_range}); "
            "pass data_range explicitly"
        )
    return data_range


def psnr(image, reference, mask, *, data_range=None):
    """Peak signal-to-noise ratio inside a mask.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        Volume to evaluate, float, intensity units.
    reference : ndarray, shape (X, Y, Z)
        Ground truth, same units.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels to evaluate.
    data_range : float, optional
        Peak value ``L`` in intensity units. None: ``max - min`` of the reference inside the
        mask (:func:`default_data_range`).

    Returns
    -------
    float
        ``10 log10(L^2 / MSE)`` in dB; ``inf`` if image equals reference inside the mask.
    """
    image, reference, mask = _check_inputs(image, reference, mask)
    data_range = _resolve_data_range(reference, mask, data_range)
    mse = float(np.mean((image[mask] - reference[mask]) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def mae(image, reference, mask, *, data_range=None):
    """Mean absolute error inside a mask, relative to the data range.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        Volume to evaluate, float, intensity units.
    reference : ndarray, shape (X, Y, Z)
        Ground truth, same units.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels to evaluate.
    data_range : float, optional
        Intensity range ``L`` the error is divided by. None: ``max - min`` of the reference
        inside the mask.

    Returns
    -------
    float
        ``mean(|image - reference|) / L`` over the mask (dimensionless).
    """
    image, reference, mask = _check_inputs(image, reference, mask)
    data_range = _resolve_data_range(reference, mask, data_range)
    return float(np.mean(np.abs(image[mask] - reference[mask])) / data_range)


def nrmse(image, reference, mask):
    """Normalised root-mean-square error inside a mask.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        Volume to evaluate, float, intensity units.
    reference : ndarray, shape (X, Y, Z)
        Ground truth, same units.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels to evaluate.

    Returns
    -------
    float
        ``||image - reference||_2 / ||reference||_2`` over the mask (dimensionless).

    Raises
    ------
    ValueError
        If the reference is zero everywhere inside the mask.
    """
    image, reference, mask = _check_inputs(image, reference, mask)
    norm = float(np.linalg.norm(reference[mask]))
    if norm == 0:
        raise ValueError("reference is zero everywhere inside the mask: NRMSE undefined")
    return float(np.linalg.norm(image[mask] - reference[mask]) / norm)


def ssim(image, reference, mask, *, data_range=None, sigma=1.5):
    """Mean 3D structural similarity inside a mask (Gaussian window).

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        Volume to evaluate, float, intensity units.
    reference : ndarray, shape (X, Y, Z)
        Ground truth, same units.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels to evaluate; the local window is restricted to it (values outside are never
        used).
    data_range : float, optional
        ``L`` of the stabilising constants ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``. None:
        ``max - min`` of the reference inside the mask.
    sigma : float, optional
        Standard deviation of the isotropic Gaussian window, in voxels (truncated at 3.5
        sigma).

    Returns
    -------
    float
        Local SSIM averaged over the mask (dimensionless, at most 1; 1 for identical images).
    """
    image, reference, mask = _check_inputs(image, reference, mask)
    data_range = _resolve_data_range(reference, mask, data_range)
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be finite and > 0 (voxels), got {sigma}")
    ssim_map = _ssim_map(image, reference, mask, data_range, sigma)
    return float(np.mean(ssim_map[mask]))


def _ssim_map(image, reference, mask, data_range, sigma):
    """Local SSIM at every voxel of the mask (other voxels undefined)."""
    weight = mask.astype(np.float64)

    def smooth(arr):
        return ndimage.gaussian_filter(
            arr, sigma, mode="constant", cval=0.0, truncate=_SSIM_TRUNCATE
        )

    norm = smooth(weight)
    # Every mask voxel has itself in its window, so norm > 0 there; guard the rest.
    norm = np.where(mask, norm, 1.0)
    x = np.where(mask, image, 0.0)
    r = np.where(mask, reference, 0.0)

    mu_x = smooth(x) / norm
    mu_r = smooth(r) / norm
    var_x = smooth(x * x) / norm - mu_x**2
    var_r = smooth(r * r) / norm - mu_r**2
    cov = smooth(x * r) / norm - mu_x * mu_r

    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_r + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_r**2 + c1) * (var_x + var_r + c2)
    return numerator / denominator


def _boundary(dseg):
    """GM voxels with a WM 6-neighbour and WM voxels with a GM 6-neighbour."""
    structure = ndimage.generate_binary_structure(3, 1)
    gm = dseg == _GM
    wm = dseg == _WM
    return (gm & ndimage.binary_dilation(wm, structure)) | (
        wm & ndimage.binary_dilation(gm, structure)
    )


def _gradient(volume, sigma):
    """Gaussian-derivative gradient, shape (3, X, Y, Z), intensity units per voxel."""
    orders = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    return np.stack(
        [ndimage.gaussian_filter(volume, sigma, order=o, mode="nearest") for o in orders]
    )


def boundary_sharpness(image, reference, dseg, *, sigma=1.0):
    """Sharpness of the grey/white matter boundary relative to the ground truth.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        Volume to evaluate, float, intensity units.
    reference : ndarray, shape (X, Y, Z)
        Ground truth, same units.
    dseg : ndarray of int, shape (X, Y, Z)
        Tissue labels: 0 background, 1 CSF, 2 grey matter, 3 white matter.
    sigma : float, optional
        Scale of the Gaussian derivative used for both gradients, in voxels. A plain central
        difference would rate a slightly blurred discrete step sharper than the step itself;
        a derivative of scale >= 0.5 voxel makes the measure decrease monotonically with blur.

    Returns
    -------
    float
        ``mean(grad(image) . u) / mean(|grad(reference)|)`` over the boundary voxels, with
        ``u`` the unit normal of the reference gradient (dimensionless). 1: as sharp as the
        truth; < 1: blurred; > 1: over-sharpened. Zero-mean noise averages out of the
        projection, so noise alone leaves it near 1.

    Raises
    ------
    ValueError
        On shape mismatch, non-integer labels, or when grey and white matter never touch.
    """
    image = np.asarray(image)
    reference = np.asarray(reference)
    dseg = np.asarray(dseg)
    if reference.ndim != 3:
        raise ValueError(f"reference must be 3D (X, Y, Z), got shape {reference.shape}")
    check_shapes(reference, image=image, dseg=dseg)
    if not np.issubdtype(dseg.dtype, np.integer):
        if not (np.all(np.isfinite(dseg)) and np.all(dseg == np.round(dseg))):
            raise ValueError(f"dseg must hold integer labels, got dtype {dseg.dtype}")
        dseg = dseg.astype(np.int64)
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be finite and > 0 (voxels), got {sigma}")

    boundary = _boundary(dseg)
    if not boundary.any():
        raise ValueError(
            "dseg has no grey/white matter boundary (no voxel of label 2 next to label 3)"
        )
    image = image.astype(np.float64)
    reference = reference.astype(np.float64)
    for name, arr in (("image", image), ("reference", reference)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} has non-finite values")

    g_ref = _gradient(reference, sigma)[:, boundary]
    g_img = _gradient(image, sigma)[:, boundary]
    magnitude = np.linalg.norm(g_ref, axis=0)
    # Boundary voxels where the truth has no edge carry no normal; leave them out.
    keep = magnitude > 1e-12 * max(float(magnitude.max()), np.finfo(float).tiny)
    if not keep.any():
        raise ValueError("reference has no intensity gradient at the grey/white boundary")
    normal = g_ref[:, keep] / magnitude[keep]
    projection = np.sum(g_img[:, keep] * normal, axis=0)
    return float(np.mean(projection) / np.mean(magnitude[keep]))


def image_metrics(image, reference, mask, dseg, *, data_range=None, ssim_sigma=1.5,
                  sharpness_sigma=1.0):
    """All metrics of one volume against the ground truth.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z)
        Volume to evaluate, float, intensity units.
    reference : ndarray, shape (X, Y, Z)
        Ground truth, same units.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels for PSNR, SSIM, MAE and NRMSE.
    dseg : ndarray of int, shape (X, Y, Z), or None
        Tissue labels (0 background, 1 CSF, 2 GM, 3 WM) for the boundary sharpness; None
        (real data without a segmentation) leaves the sharpness out.
    data_range : float, optional
        Shared by PSNR, SSIM and MAE. None: ``max - min`` of the reference inside the mask,
        computed once.
    ssim_sigma : float, optional
        SSIM Gaussian window, in voxels.
    sharpness_sigma : float, optional
        Gradient scale of the boundary sharpness, in voxels.

    Returns
    -------
    dict of str to float
        Keys ``psnr`` (dB), ``ssim``, ``mae`` (fraction of the data range), ``nrmse`` and
        (with ``dseg``) ``sharpness``, in the order of :data:`METRIC_NAMES`.
    """
    image, reference, mask = _check_inputs(image, reference, mask)
    data_range = _resolve_data_range(reference, mask, data_range)
    values = {
        "psnr": psnr(image, reference, mask, data_range=data_range),
        "ssim": ssim(image, reference, mask, data_range=data_range, sigma=ssim_sigma),
        "mae": mae(image, reference, mask, data_range=data_range),
        "nrmse": nrmse(image, reference, mask),
    }
    if dseg is not None:
        values["sharpness"] = boundary_sharpness(image, reference, dseg, sigma=sharpness_sigma)
    return values


def series_metrics(image, reference, mask, *, data_range=None, ssim_sigma=1.5):
    """Image metrics of a series of volumes (e.g. a DWI series) against the ground truth.

    Parameters
    ----------
    image : ndarray, shape (X, Y, Z, M)
        Series to evaluate, ``M`` volumes (b0s and DWIs), intensity units.
    reference : ndarray, shape (X, Y, Z, M)
        Ground-truth series, same units.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels to evaluate, the same in every volume.
    data_range : float, optional
        ``L`` shared by PSNR, SSIM and MAE. None: ``max - min`` of the reference inside the
        mask across all volumes.
    ssim_sigma : float, optional
        SSIM Gaussian window, in voxels (within each volume).

    Returns
    -------
    dict of str to float
        Keys ``psnr`` (dB), ``mae`` (fraction of ``L``) and ``nrmse`` over the ``M * n``
        masked voxels of the series pooled, and ``ssim``, the mean over volumes of the 3D
        SSIM with the common ``L``; in the order of :data:`SERIES_METRIC_NAMES`.

    Raises
    ------
    ValueError
        If the series are not 4D of equal shape, the mask does not match their first three
        axes or is empty, or any 3D metric rejects its input.
    """
    image, reference, mask = _check_series(image, reference, mask)
    # The masked voxels of every volume as one (n, M, 1) block with a full mask: the 3D
    # metrics of that block pool the series, and its data range is the series' data range.
    pooled_image, pooled_reference, everywhere = _check_inputs(
        image[mask][..., np.newaxis],
        reference[mask][..., np.newaxis],
        np.ones((np.count_nonzero(mask), reference.shape[3], 1), dtype=bool),
    )
    data_range = _resolve_data_range(pooled_reference, everywhere, data_range)
    volume_ssims = [
        ssim(image[..., k], reference[..., k], mask, data_range=data_range, sigma=ssim_sigma)
        for k in range(reference.shape[3])
    ]
    return {
        "psnr": psnr(pooled_image, pooled_reference, everywhere, data_range=data_range),
        "ssim": float(np.mean(volume_ssims)),
        "mae": mae(pooled_image, pooled_reference, everywhere, data_range=data_range),
        "nrmse": nrmse(pooled_image, pooled_reference, everywhere),
    }
