"""Figures of the benchmark: image and DTI panels, metric distributions, N2A against iteration.

Every plotting function builds and returns a :class:`matplotlib.figure.Figure` without
pyplot (no global figure registry, no screen; works under any backend, e.g. Agg), and
:func:`save_figure` writes it as PNG and PDF. Metrics tables are the tidy tables of
:mod:`noise2average.summary`; methods are shown in :data:`~noise2average.summary.METHOD_ORDER`
(unknown methods after, sorted).

Image display convention: an axial slice ``volume[:, :, z]`` of an ``(X, Y, Z)`` volume is
shown with axis 0 (X, left-right) horizontal and axis 1 (Y) vertical, origin at the lower left.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from noise2average.dti_metrics import DTI_METRIC_NAMES
from noise2average.metrics import METRIC_NAMES
from noise2average.summary import FINAL, METHOD_ORDER, order_methods, validate_metrics

__all__ = [
    "METRIC_LABELS",
    "plot_image_panel",
    "plot_dti_panel",
    "plot_metric_distributions",
    "plot_iterations",
    "save_figure",
]

#: Axis labels of the metrics.
METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "mae": "MAE (fraction of data range)",
    "nrmse": "NRMSE",
    "sharpness": "GM/WM boundary sharpness",
    "fa_mae": "FA MAE",
    "md_mae": "MD MAE (mm²/s)",
    "ad_mae": "AD MAE (mm²/s)",
    "rd_mae": "RD MAE (mm²/s)",
    "v1_angle": "V1 angular error (°)",
}

#: Default display order of the metrics: image metrics, then DTI metrics.
_METRIC_ORDER = tuple(METRIC_NAMES) + tuple(DTI_METRIC_NAMES)

_REFERENCE_LABEL = "reference"


def _method_colours(methods):
    """A fixed colour per method (its position in METHOD_ORDER), the same in every figure."""
    colours = {m: f"C{i}" for i, m in enumerate(METHOD_ORDER)}
    unknown = [m for m in methods if m not in colours]
    colours.update({m: f"C{(len(METHOD_ORDER) + i) % 10}" for i, m in enumerate(unknown)})
    return colours


# --- image panel ------------------------------------------------------------------------


def _default_slice(mask):
    slices = np.flatnonzero(mask.any(axis=(0, 1)))
    return int((slices[0] + slices[-1]) // 2)


def _default_inset(mask_slice):
    """A square box at the lateral (low X) edge of the mask, at mid Y: cortex and some WM."""
    xs = np.flatnonzero(mask_slice.any(axis=1))
    ys = np.flatnonzero(mask_slice.any(axis=0))
    width, height = xs[-1] - xs[0] + 1, ys[-1] - ys[0] + 1
    side = int(min(max(4, round(0.3 * min(width, height))), min(mask_slice.shape)))
    y_centre = (ys[0] + ys[-1]) // 2
    x0 = int(min(xs[0], mask_slice.shape[0] - side))
    y0 = int(np.clip(y_centre - side // 2, 0, mask_slice.shape[1] - side))
    return (x0, x0 + side, y0, y0 + side)


def _check_inset(inset, shape):
    try:
        x0, x1, y0, y1 = (int(v) for v in inset)
    except (TypeError, ValueError):
        raise ValueError(
            f"inset must be (x_start, x_stop, y_start, y_stop) voxel indices, got {inset!r}"
        ) from None
    if not (0 <= x0 < x1 <= shape[0] and 0 <= y0 < y1 <= shape[1]):
        raise ValueError(
            f"inset {inset!r} is empty or outside the slice of shape {shape} "
            "(expected 0 <= x_start < x_stop <= X and 0 <= y_start < y_stop <= Y)"
        )
    return x0, x1, y0, y1


def _show_axial(ax, data, **imshow_kwargs):
    """Show an (X, Y) or (X, Y, 3) RGB slice in the module's convention; return the AxesImage."""
    # imshow puts axis 0 vertically: swap so that X runs horizontally (RGB axis stays last)
    image = ax.imshow(np.swapaxes(data, 0, 1), origin="lower", interpolation="nearest",
                      **imshow_kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def _show_slice(ax, data, *, inset, **imshow_kwargs):
    """Show a 2D (X, Y) slice with its zoomed inset; return the AxesImage."""
    image = _show_axial(ax, data, **imshow_kwargs)
    x0, x1, y0, y1 = inset
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                           edgecolor="gold", linewidth=1.0))
    zoom = ax.inset_axes([0.6, 0.0, 0.4, 0.4])
    zoom.imshow(data[x0:x1, y0:y1].T, origin="lower", interpolation="nearest",
                extent=(x0 - 0.5, x1 - 0.5, y0 - 0.5, y1 - 0.5), **imshow_kwargs)
    zoom.set_xticks([])
    zoom.set_yticks([])
    for spine in zoom.spines.values():
        spine.set_edgecolor("gold")
    return image


def plot_image_panel(images, reference, mask, *, title, slice_index=None, inset=None,
                     window_percentiles=(0.5, 99.5)):
    """Axial slices of several denoised volumes, the reference, and their error maps.

    Parameters
    ----------
    images : mapping of str to ndarray, shape (X, Y, Z)
        Method name -> volume (float, intensity units), in display order (a dict keeps its
        insertion order).
    reference : ndarray, shape (X, Y, Z)
        Reference (the ground truth, or a real dataset's best estimate), same units.
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask: picks the default slice and inset, the intensity window and the voxels
        of the error maps.
    title : str
        Figure title (the slice index is appended).
    slice_index : int, optional
        Axial slice (index along Z). None: the middle of the mask's extent along Z.
    inset : tuple of 4 int, optional
        Zoom box ``(x_start, x_stop, y_start, y_stop)`` in voxel indices of the slice (stop
        exclusive). None: a square of 30% of the mask's in-plane extent at its lateral (low X)
        edge, at mid Y, i.e. over the cortex.
    window_percentiles : tuple of 2 float, optional
        Percentiles of the reference inside the mask that give the grey-scale window shared
        by all images, in percent.

    Returns
    -------
    matplotlib.figure.Figure
        Top row: reference then one image per method, common intensity window, each with a
        zoomed inset (box outlined in gold). Bottom row, under each method:
        ``|image - reference|`` inside the mask on a common colour scale (0 to the largest
        99th percentile over methods) with one colorbar. Axes: ``2 * len(images) + 2``
        (insets are children of their image axes).
    """
    if not isinstance(images, Mapping) or len(images) == 0:
        raise ValueError("images must be a non-empty mapping of method name -> volume")
    reference = np.asarray(reference, dtype=np.float64)
    mask = np.asarray(mask)
    if reference.ndim != 3:
        raise ValueError(f"reference must be 3D (X, Y, Z), got shape {reference.shape}")
    if mask.shape != reference.shape:
        raise ValueError(
            f"mask shape {mask.shape} does not match reference shape {reference.shape}"
        )
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("mask is empty")
    volumes = {}
    for method, volume in images.items():
        volume = np.asarray(volume, dtype=np.float64)
        if volume.shape != reference.shape:
            raise ValueError(
                f"image {method!r} has shape {volume.shape}, reference {reference.shape}"
            )
        volumes[str(method)] = volume
    if slice_index is None:
        slice_index = _default_slice(mask)
    if not (isinstance(slice_index, (int, np.integer))
            and 0 <= slice_index < reference.shape[2]):
        raise ValueError(
            f"slice_index must be an int in [0, {reference.shape[2]}), got {slice_index!r}"
        )
    slice_index = int(slice_index)
    mask_slice = mask[:, :, slice_index]
    if not mask_slice.any():
        raise ValueError(f"mask is empty in slice_index {slice_index}")
    if inset is None:
        inset = _default_inset(mask_slice)
    inset = _check_inset(inset, mask_slice.shape)

    vmin, vmax = np.percentile(reference[mask], window_percentiles)
    if not vmax > vmin:
        vmax = vmin + 1.0
    errors = {m: np.abs(v - reference) for m, v in volumes.items()}
    error_max = max(float(np.nanpercentile(e[mask], 99)) for e in errors.values())
    if not error_max > 0:  # every image equals the reference
        error_max = 1e-6 * (vmax - vmin)

    n = len(volumes)
    fig = Figure(figsize=(2.4 * (n + 1) + 1.0, 5.2), layout="constrained")
    grid = fig.add_gridspec(2, n + 1)
    grey = {"cmap": "gray", "vmin": vmin, "vmax": vmax}
    error_cmap = colormaps["inferno"].with_extremes(bad="black")  # outside the mask
    ax = fig.add_subplot(grid[0, 0])
    _show_slice(ax, reference[:, :, slice_index], inset=inset, **grey)
    ax.set_title(_REFERENCE_LABEL)
    error_axes = []
    error_image = None
    for column, (method, volume) in enumerate(volumes.items(), start=1):
        ax = fig.add_subplot(grid[0, column])
        _show_slice(ax, volume[:, :, slice_index], inset=inset, **grey)
        ax.set_title(method)
        ax = fig.add_subplot(grid[1, column])
        error = np.ma.masked_where(~mask_slice, errors[method][:, :, slice_index])
        error_image = _show_slice(ax, error, inset=inset, cmap=error_cmap, vmin=0.0,
                                  vmax=error_max)
        ax.set_title(f"|{method} - reference|", fontsize="small")
        error_axes.append(ax)
    colorbar = fig.colorbar(error_image, ax=error_axes, shrink=0.9)
    colorbar.set_label("absolute error (intensity units)")
    fig.suptitle(f"{title} (axial slice z = {slice_index})")
    return fig


# --- DTI panel --------------------------------------------------------------------------

#: Maps that :func:`plot_dti_panel` needs, with their dimensions beyond (X, Y, Z).
_DTI_PANEL_MAPS = {"fa": (), "md": (), "color_fa": (3,)}

#: Upper end of the colour scale of ``|FA - FA_ref|`` (dimensionless).
_FA_ERROR_MAX = 0.3

#: Upper end of the colour scale of ``|MD - MD_ref|``, in 10^-3 mm^2/s (brain MD ~ 0.7).
_MD_ERROR_MAX = 0.3


def _largest_slice(mask):
    """Index of the axial slice (along Z) with the most mask voxels (the first if tied)."""
    return int(np.argmax(mask.sum(axis=(0, 1))))


def _check_dti_maps(maps, label, shape=None):
    """float64 copies of the panel's maps of one method, validated; ``label`` names it."""
    if not isinstance(maps, Mapping):
        raise ValueError(f"maps of {label} must be a mapping of map name -> array, "
                         f"got {type(maps).__name__}")
    missing = [name for name in _DTI_PANEL_MAPS if name not in maps]
    if missing:
        raise ValueError(f"maps of {label} lack {missing}; need {list(_DTI_PANEL_MAPS)}")
    checked = {}
    for name, extra in _DTI_PANEL_MAPS.items():
        values = np.asarray(maps[name], dtype=np.float64)
        expected = None if shape is None else tuple(shape) + extra
        if (values.ndim != 3 + len(extra) or values.shape[3:] != extra
                or (expected is not None and values.shape != expected)):
            want = expected if expected is not None else "(X, Y, Z" + ", 3" * len(extra) + ")"
            raise ValueError(f"map {name!r} of {label} has shape {values.shape}, "
                             f"expected {want}")
        if shape is None:
            shape = values.shape[:3]
        # degenerate fits can leave NaN/inf; show them as 0 rather than hide the voxel
        checked[name] = np.nan_to_num(values)
    return checked


def plot_dti_panel(maps, reference_maps, mask, *, title, slice_index=None):
    """Axial colour-FA maps of several methods beside the reference, and their FA/MD errors.

    Parameters
    ----------
    maps : mapping of str to mapping of str to ndarray
        Method name -> tensor maps of :func:`noise2average.dti_metrics.fit_tensor`, in
        display order. Each needs ``"fa"`` (X, Y, Z; dimensionless), ``"md"`` (X, Y, Z;
        mm^2/s) and ``"color_fa"`` (X, Y, Z, 3); other keys are ignored.
    reference_maps : mapping of str to ndarray
        The same maps of the noise-free reference.
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask: picks the default slice; colour FA is black and errors are not shown
        outside it.
    title : str
        Figure title (the slice index is appended).
    slice_index : int, optional
        Axial slice (index along Z). None: the slice with the most mask voxels.

    Returns
    -------
    matplotlib.figure.Figure
        Columns: reference, then one per method. Row 1: colour FA (RGB clipped to [0, 1]).
        Row 2: ``|FA - FA_ref|`` on a fixed 0-0.3 scale; row 3: ``|MD - MD_ref|`` in
        10^-3 mm^2/s on a fixed 0-0.3 scale, each row with one colorbar; the reference cell
        of both error rows is blank (axis off). Fixed scales make panels of different
        subjects and data sets comparable. Axes: ``3 * (len(maps) + 1) + 2`` (2 colorbars).

    Raises
    ------
    ValueError
        If ``maps`` is empty, a map is missing or misshapen (the message names the method
        and the map), the mask does not match the maps or is empty (in the slice), or
        ``slice_index`` is out of range.
    """
    if not isinstance(maps, Mapping) or len(maps) == 0:
        raise ValueError("maps must be a non-empty mapping of method name -> tensor maps")
    reference = _check_dti_maps(reference_maps, "the reference")
    shape = reference["fa"].shape
    methods = {str(m): _check_dti_maps(v, f"method {str(m)!r}", shape)
               for m, v in maps.items()}
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} does not match the maps' shape {shape}")
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("mask is empty")
    if slice_index is None:
        slice_index = _largest_slice(mask)
    if not (isinstance(slice_index, (int, np.integer)) and 0 <= slice_index < shape[2]):
        raise ValueError(f"slice_index must be an int in [0, {shape[2]}), got {slice_index!r}")
    slice_index = int(slice_index)
    mask_slice = mask[:, :, slice_index]
    if not mask_slice.any():
        raise ValueError(f"mask is empty in slice_index {slice_index}")

    def colour_fa(m):
        rgb = np.clip(m["color_fa"][:, :, slice_index], 0.0, 1.0)
        return np.where(mask_slice[:, :, None], rgb, 0.0)

    def error(m, name, scale):
        diff = scale * np.abs(m[name][:, :, slice_index] - reference[name][:, :, slice_index])
        return np.ma.masked_where(~mask_slice, diff)

    n = len(methods)
    fig = Figure(figsize=(2.4 * (n + 1) + 1.2, 7.4), layout="constrained")
    grid = fig.add_gridspec(3, n + 1)
    error_cmap = colormaps["inferno"].with_extremes(bad="black")  # outside the mask
    # a list, not a dict: a method may itself be called "reference"
    for column, (label, column_maps) in enumerate([(_REFERENCE_LABEL, reference),
                                                   *methods.items()]):
        ax = fig.add_subplot(grid[0, column])
        _show_axial(ax, colour_fa(column_maps))
        ax.set_title(label)
    rows = (("fa", 1.0, _FA_ERROR_MAX, "|FA error|"),
            # MD ~ 1e-3 mm^2/s: rescale so the colorbar ticks read 0.1, 0.2, ...
            ("md", 1e3, _MD_ERROR_MAX, "|MD error| (10^-3 mm^2/s)"))
    for row, (name, scale, vmax, label) in enumerate(rows, start=1):
        fig.add_subplot(grid[row, 0]).set_axis_off()
        axes = []
        for column, method_maps in enumerate(methods.values(), start=1):
            ax = fig.add_subplot(grid[row, column])
            image = _show_axial(ax, error(method_maps, name, scale), cmap=error_cmap,
                                vmin=0.0, vmax=vmax)
            axes.append(ax)
        fig.colorbar(image, ax=axes, shrink=0.9).set_label(label)
    fig.suptitle(f"{title} (axial slice z = {slice_index})")
    return fig


# --- metrics tables ---------------------------------------------------------------------


def _select(metrics, *, data_type, dataset, region):
    """Validated rows of one data type (and one dataset and region)."""
    table = validate_metrics(metrics)
    if table.empty:
        raise ValueError("metrics table is empty")
    available = sorted(table["data_type"].unique())
    table = table[table["data_type"] == str(data_type)]
    if table.empty:
        raise ValueError(
            f"no metrics rows for data_type {data_type!r}; available: {available}"
        )
    for column, wanted in (("dataset", dataset), ("region", region)):
        values = sorted(table[column].unique())
        if wanted is None:
            if len(values) > 1:
                raise ValueError(
                    f"metrics for data_type {data_type!r} hold several {column}s {values}; "
                    f"pass {column}=..."
                )
        else:
            table = table[table[column] == str(wanted)]
            if table.empty:
                raise ValueError(
                    f"no metrics rows for {column} {wanted!r} and data_type {data_type!r}; "
                    f"available: {values}"
                )
    return table


def _metrics_to_show(present, metric_names, *, data_type, region):
    """Metrics to plot: ``metric_names`` (in its order) that are present, or all present.

    ``present`` are the metric names of the selected rows; None for ``metric_names`` shows
    them all, image metrics then DTI metrics (then unknown ones, sorted).
    """
    available = order_methods(present, order=_METRIC_ORDER)
    if metric_names is None:
        return available
    # a bare string would otherwise be read as a sequence of one-letter metric names
    if isinstance(metric_names, str):
        raise ValueError(f"metric_names must be a sequence of metric names, "
                         f"got the string {metric_names!r}")
    wanted = list(dict.fromkeys(str(m) for m in metric_names))
    shown = [m for m in wanted if m in available]
    if not shown:
        where = f"data_type {data_type!r}" + ("" if region is None else f", region {region!r}")
        raise ValueError(f"none of the metrics {wanted} is in the rows for {where}; "
                         f"available: {available}")
    return shown


def _metric_grid(fig, metrics):
    """One axes per metric, up to 3 per row."""
    n = len(metrics)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    grid = fig.add_gridspec(nrows, ncols)
    return [fig.add_subplot(grid[i // ncols, i % ncols]) for i in range(n)]


def _figure_size(n_metrics, width_per_axes):
    ncols = min(n_metrics, 3)
    nrows = math.ceil(n_metrics / ncols)
    return (width_per_axes * ncols + 0.5, 3.4 * nrows + 0.6)


def plot_metric_distributions(metrics, *, data_type, dataset=None, region=None, seed=0,
                              metric_names=None):
    """Per-subject metric values of every method: box plot plus jittered points.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy metrics table (:data:`noise2average.summary.COLUMNS`); only the ``"final"``
        iteration is shown.
    data_type : str
        Data type to show.
    dataset, region : str, optional
        Which dataset / region to show; None requires the table (for this data type) to hold
        only one.
    seed : int, optional
        Seed of the horizontal jitter of the points.
    metric_names : sequence of str, optional
        Metrics to show, in this order; those absent from the selected rows are skipped.
        None: every metric of the rows, in :data:`~noise2average.metrics.METRIC_NAMES` then
        :data:`~noise2average.dti_metrics.DTI_METRIC_NAMES` order.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per metric (up to 3 per row), titled with the metric name, x tick labels =
        methods in the fixed order, one point per subject; a dotted line at 1 for the
        sharpness (the reference).

    Raises
    ------
    ValueError
        If the table is invalid, the selection is empty or ambiguous, or none of
        ``metric_names`` is present (the message lists the available metrics).
    """
    table = _select(metrics, data_type=data_type, dataset=dataset, region=region)
    table = table[table["iteration"] == FINAL]
    if table.empty:
        raise ValueError(f"no metrics rows with iteration {FINAL!r} for data_type {data_type!r}")
    rng = np.random.default_rng(seed)
    methods = order_methods(table["method"], order=METHOD_ORDER)
    metric_names = _metrics_to_show(table["metric"], metric_names, data_type=data_type,
                                    region=region)
    fig = Figure(figsize=_figure_size(len(metric_names), max(3.2, 0.55 * len(methods) + 1)),
                 layout="constrained")
    axes = _metric_grid(fig, metric_names)
    positions = np.arange(1, len(methods) + 1)
    colours = _method_colours(methods)
    for ax, metric in zip(axes, metric_names):
        rows = table[table["metric"] == metric]
        data = []
        for method in methods:
            values = rows.loc[rows["method"] == method, "value"].to_numpy()
            data.append(values[np.isfinite(values)])
        filled = [i for i, d in enumerate(data) if d.size]
        if filled:
            ax.boxplot([data[i] for i in filled], positions=positions[filled], widths=0.6,
                       showfliers=False, medianprops={"color": "black"})
        for i, values in enumerate(data):
            jitter = rng.uniform(-0.15, 0.15, size=values.size)
            ax.scatter(positions[i] + jitter, values, s=14, color=colours[methods[i]], alpha=0.8,
                       zorder=3, edgecolors="none")
        if metric == "sharpness":
            ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(positions, methods, rotation=45, ha="right")
        ax.set_xlim(0.4, len(methods) + 0.6)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(metric)
    n_subjects = table["subject"].nunique()
    fig.suptitle(f"{data_type}: metrics per subject (n = {n_subjects})")
    return fig


def plot_iterations(metrics, *, data_type, dataset=None, region=None, method="n2a",
                    metric_names=None):
    """Metrics of N2A against its iteration, with the other methods as reference lines.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy metrics table with the iterative method's rows under iterations ``"1"``,
        ``"2"``, ... and every other method under ``"final"``.
    data_type : str
        Data type to show.
    dataset, region : str, optional
        Which dataset / region to show; None requires the table (for this data type) to hold
        only one.
    method : str, optional
        The iterative method.
    metric_names : sequence of str, optional
        Metrics to show, in this order; those without per-iteration rows are skipped.
        None: every metric of the iterative method, in
        :data:`~noise2average.metrics.METRIC_NAMES` then
        :data:`~noise2average.dti_metrics.DTI_METRIC_NAMES` order.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per metric: the method's mean ± sd over subjects against the iteration
        number, and each other method's mean (final result) as a dashed horizontal line. One
        figure legend names all lines. Axes are titled with the metric name.

    Raises
    ------
    ValueError
        If the table is invalid, the selection is empty or ambiguous, the method has no
        integer-labelled iteration rows, or none of ``metric_names`` is present (the message
        lists the available metrics).
    """
    table = _select(metrics, data_type=data_type, dataset=dataset, region=region)
    iterative = table[(table["method"] == method) & (table["iteration"] != FINAL)]
    if iterative.empty:
        raise ValueError(
            f"no per-iteration rows for method {method!r} and data_type {data_type!r}"
        )
    bad = sorted(i for i in iterative["iteration"].unique() if not i.isdigit())
    if bad:
        raise ValueError(f"iteration labels of {method!r} must be integers or "
                         f"{FINAL!r}, got {bad}")
    iterative = iterative.assign(number=iterative["iteration"].astype(int))
    others = table[(table["method"] != method) & (table["iteration"] == FINAL)]
    metric_names = _metrics_to_show(iterative["metric"], metric_names, data_type=data_type,
                                    region=region)
    other_methods = order_methods(others["method"], order=METHOD_ORDER)
    iterations = sorted(iterative["number"].unique())
    colours = _method_colours(other_methods)

    fig = Figure(figsize=_figure_size(len(metric_names), 3.4), layout="constrained")
    axes = _metric_grid(fig, metric_names)
    handles = {}
    for ax, metric in zip(axes, metric_names):
        rows = iterative[iterative["metric"] == metric]
        stats = rows.groupby("number")["value"].agg(["mean", "std"]).sort_index()
        line = ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0.0),
                           marker="o", color="black", capsize=3, zorder=3)
        handles.setdefault(f"{method} (mean ± sd)", line)
        reference = others[others["metric"] == metric]
        for other in other_methods:
            values = reference.loc[reference["method"] == other, "value"]
            values = values[np.isfinite(values)]
            if values.empty:
                continue
            line = ax.axhline(values.mean(), color=colours[other], linestyle="--",
                              linewidth=1.2)
            handles.setdefault(other, line)
        ax.set_xticks(iterations)
        ax.set_xlabel(f"{method} iteration")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(metric)
    labels = list(handles)
    fig.legend([handles[k] for k in labels], labels, loc="outside lower center",
               ncols=min(len(labels), 7), frameon=False)
    fig.suptitle(f"{data_type}: {method} against iteration (others: final result)")
    return fig


def save_figure(fig, png_path, pdf_path, *, dpi=150):
    """Write a figure as PNG and PDF.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        Figure to save.
    png_path, pdf_path : str or path-like
        Output files (parent folders are created); the formats are PNG and PDF whatever the
        suffixes.
    dpi : float, optional
        Resolution of the PNG (and of rasterised PDF content), dots per inch.
    """
    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    for path, fmt in ((png_path, "png"), (pdf_path, "pdf")):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format=fmt, dpi=dpi)
