"""Tidy metrics table -> per-method summary (mean, sd, n) and Markdown tables.

The tidy metrics table has one row per value and the columns of :data:`COLUMNS`:

``dataset``
    Data set name (e.g. ``synthetic``).
``subject``
    Subject label, a string (``"01"`` stays ``"01"``).
``data_type``
    ``t1w_rep``, ``memprage``, ...
``reference``
    What the metrics are measured against: ``ground truth`` for synthetic data, otherwise
    the best the data offer (e.g. ``mean of all 3 runs (not a ground truth)``).
``method``
    ``noisy``, ``average``, ``n2a``, ``n2n``, ``bm4d``, ``aonlm``, ``supervised``, ...
``iteration``
    A string. ``"final"`` for every method's final result; N2A's per-iteration results also
    appear as ``"1"``, ``"2"``, ..., so its final result is there twice (under its number and
    under ``"final"``).
``region``
    Name of the mask the metric was computed in (e.g. ``brain``).
``metric``
    ``psnr``, ``ssim``, ``mae``, ``nrmse``, ``sharpness`` (see :mod:`noise2average.metrics`)
    and, for diffusion data, ``fa_mae``, ``md_mae``, ``ad_mae``, ``rd_mae``, ``v1_angle``
    (see :mod:`noise2average.dti_metrics`). A DWI data type typically has region ``brain``
    rows with image and DTI metrics and region ``wm`` rows with DTI metrics only.
``value``
    The metric value, float.
"""

from __future__ import annotations

import math
from os import PathLike

import numpy as np
import pandas as pd

from noise2average.dti_metrics import DTI_METRIC_NAMES
from noise2average.metrics import METRIC_BETTER, METRIC_NAMES

__all__ = [
    "COLUMNS",
    "GROUP_COLUMNS",
    "METHOD_ORDER",
    "METRIC_ORDER",
    "FINAL",
    "validate_metrics",
    "metrics_rows",
    "read_metrics",
    "order_methods",
    "summarize",
    "summary_markdown",
]

#: Columns of the tidy metrics table, in order.
COLUMNS = ("dataset", "subject", "data_type", "reference", "method", "iteration", "region",
           "metric", "value")
#: Columns that identify one summary row (everything but subject and value).
GROUP_COLUMNS = ("dataset", "data_type", "reference", "method", "iteration", "region", "metric")
#: Display order of the methods; methods not listed come after them, sorted by name.
METHOD_ORDER = ("noisy", "average", "n2a", "n2n", "bm4d", "aonlm", "supervised")
#: Display order of the metrics: image metrics, then DTI metrics; others follow, sorted.
METRIC_ORDER = (*METRIC_NAMES, *DTI_METRIC_NAMES)
#: Iteration label of every method's final result.
FINAL = "final"

_KEY_COLUMNS = COLUMNS[:-1]
_STRING_COLUMNS = COLUMNS[:-1]
# Format spec of each metric's mean in Markdown tables ("e": scientific notation, for the
# diffusivity MAEs of ~1e-5 mm^2/s that fixed decimals would show as 0.0000); other
# metrics get _DEFAULT_FORMAT.
_FORMATS = {
    "psnr": ".2f",
    "ssim": ".4f",
    "mae": ".4f",
    "nrmse": ".4f",
    "sharpness": ".3f",
    "fa_mae": ".4f",
    "md_mae": ".2e",
    "ad_mae": ".2e",
    "rd_mae": ".2e",
    "v1_angle": ".2f",
}
_DEFAULT_FORMAT = ".4g"


def validate_metrics(metrics, *, source="metrics table"):
    """Check a tidy metrics table and return a normalised copy.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Table with (at least) the columns of :data:`COLUMNS`; extra columns are dropped.
    source : str, optional
        Name used in error messages (e.g. the file the table came from).

    Returns
    -------
    pandas.DataFrame
        The columns of :data:`COLUMNS` in order, the label columns as str, ``value`` as
        float64, a fresh index.

    Raises
    ------
    ValueError
        On missing columns, missing labels, non-numeric values, or duplicated rows (the same
        dataset, subject, data_type, method, iteration, region and metric twice).
    """
    if not isinstance(metrics, pd.DataFrame):
        raise ValueError(f"{source}: expected a pandas DataFrame, got {type(metrics).__name__}")
    missing = [c for c in COLUMNS if c not in metrics.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; expected columns {list(COLUMNS)}"
        )
    table = metrics.loc[:, list(COLUMNS)].copy()
    for column in _STRING_COLUMNS:
        if table[column].isna().any():
            raise ValueError(f"{source}: column {column!r} has missing values")
        table[column] = table[column].astype(str)
    try:
        table["value"] = pd.to_numeric(table["value"], errors="raise").astype(np.float64)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: column 'value' is not numeric ({err})") from None
    duplicated = table.duplicated(list(_KEY_COLUMNS), keep=False)
    if duplicated.any():
        first = table.loc[duplicated, list(_KEY_COLUMNS)].iloc[0].to_dict()
        raise ValueError(
            f"{source}: {int(duplicated.sum())} duplicated rows, e.g. {first}"
        )
    return table.reset_index(drop=True)


def metrics_rows(values, *, dataset, subject, data_type, reference, method, iteration=FINAL,
                 region="brain"):
    """Tidy rows for one volume's metrics.

    Parameters
    ----------
    values : mapping of str to float
        Metric name -> value, e.g. the output of
        :func:`noise2average.metrics.image_metrics`.
    dataset, subject, data_type, method : str
        Labels of the volume.
    reference : str
        What the metrics were measured against (``"ground truth"``, or a description of a
        real dataset's reference).
    iteration : str or int, optional
        ``"final"`` for a method's final result, or the N2A iteration number.
    region : str, optional
        Name of the mask the metrics were computed in.

    Returns
    -------
    pandas.DataFrame
        One row per metric, columns :data:`COLUMNS`.
    """
    if not values:
        raise ValueError("values is empty: no metric to tabulate")
    rows = [
        (dataset, subject, data_type, reference, method, iteration, region, name, value)
        for name, value in values.items()
    ]
    return validate_metrics(pd.DataFrame(rows, columns=list(COLUMNS)))


def read_metrics(paths):
    """Concatenate per-job metrics CSV files into one tidy table.

    Parameters
    ----------
    paths : str, path-like, or sequence of them
        CSV files with the columns of :data:`COLUMNS` (header row required).

    Returns
    -------
    pandas.DataFrame
        All rows, columns :data:`COLUMNS`, labels as str (``"01"`` is kept), ``value`` float.

    Raises
    ------
    ValueError
        If no path is given, or a file lacks columns or has non-numeric values (the message
        names the file), or the concatenated table has duplicated rows.
    """
    if isinstance(paths, (str, PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("paths is empty: no metrics file to read")
    tables = []
    for path in paths:
        try:
            table = pd.read_csv(
                path,
                dtype={c: str for c in _STRING_COLUMNS},
                keep_default_na=False,
                na_values={"value": ["", "nan", "NaN", "NA"]},
            )
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path}: file is empty (no header row)") from None
        tables.append(validate_metrics(table, source=str(path)))
    return validate_metrics(pd.concat(tables, ignore_index=True),
                            source=f"{len(paths)} metrics files")


def order_methods(methods, *, order=METHOD_ORDER):
    """Methods in display order: those of ``order`` first, then the others sorted.

    Parameters
    ----------
    methods : iterable of str
        Method names (duplicates are removed).
    order : sequence of str, optional
        Preferred order.

    Returns
    -------
    list of str
    """
    methods = list(dict.fromkeys(str(m) for m in methods))
    known = [m for m in order if m in methods]
    return known + sorted(m for m in methods if m not in order)


def _iteration_order(labels):
    """Iteration labels sorted: numbers ascending, then "final", then any others."""
    labels = list(dict.fromkeys(labels))
    numbers = sorted((x for x in labels if x.isdigit()), key=int)
    others = sorted(x for x in labels if not x.isdigit() and x != FINAL)
    return numbers + ([FINAL] if FINAL in labels else []) + others


def _sort_key(column):
    if column.name == "method":
        order = order_methods(column)
    elif column.name == "metric":
        order = order_methods(column, order=METRIC_ORDER)
    elif column.name == "iteration":
        order = _iteration_order(column)
    else:
        return column
    return pd.Categorical(column, categories=order, ordered=True)


def summarize(metrics, *, iteration=FINAL):
    """Mean, standard deviation and count over subjects.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Tidy metrics table (:data:`COLUMNS`).
    iteration : str or None, optional
        Keep only rows with this iteration label (default ``"final"``: every method's final
        result). None keeps all iterations.

    Returns
    -------
    pandas.DataFrame
        One row per (dataset, data_type, method, iteration, region, metric) with columns
        ``mean``, ``sd`` (sample standard deviation, ddof = 1; NaN when n = 1) and ``n``
        (number of subjects), rows sorted with methods in :data:`METHOD_ORDER` and metrics in
        :data:`METRIC_ORDER` (image metrics, then DTI metrics).

    Raises
    ------
    ValueError
        If the table is invalid (see :func:`validate_metrics`) or no row has the iteration.
    """
    table = validate_metrics(metrics)
    if iteration is not None:
        available = sorted(table["iteration"].unique())
        table = table[table["iteration"] == str(iteration)]
        if table.empty:
            raise ValueError(
                f"no metrics rows with iteration {iteration!r}; available: {available}"
            )
    if table.empty:
        raise ValueError("metrics table is empty")
    grouped = table.groupby(list(GROUP_COLUMNS), sort=False)["value"]
    summary = grouped.agg(mean="mean", sd="std", n="count").reset_index()
    summary["n"] = summary["n"].astype(int)
    summary = summary.sort_values(list(GROUP_COLUMNS), key=_sort_key, kind="stable")
    return summary.reset_index(drop=True)


def _format(value, spec):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:{spec}}"


def _sd_format(mean, sd, spec):
    """Format spec of the sd: the mean's, or in scientific notation its absolute precision.

    Fixed decimals already give mean and sd the same last decimal place; with ``"e"`` the sd
    gets as many digits as reach the mean's last digit (at least one): 4.21e-05 ± 3.1e-06.
    """
    if not spec.endswith("e") or not (math.isfinite(mean) and mean != 0):
        return spec
    if not (math.isfinite(sd) and sd > 0):
        return spec
    mean_digits = int(spec[1:-1])
    # The exponent after rounding: 9.996e-05 prints as 1.00e-04.
    last_place = int(f"{mean:{spec}}".split("e")[1]) - mean_digits
    return f".{max(math.floor(math.log10(sd)) - last_place, 0)}e"


def _format_cell(mean, sd, metric):
    """``mean ± sd`` of one metric in its display format."""
    spec = _FORMATS.get(metric, _DEFAULT_FORMAT)
    return f"{_format(mean, spec)} ± {_format(sd, _sd_format(mean, sd, spec))}"


def _best_methods(means, better):
    """Methods whose mean is best (ties included); means is a Series indexed by method."""
    means = means.dropna()
    if means.empty or better is None:
        return set()
    if better == "higher":
        score = means
    elif better == "lower":
        score = -means
    elif better == "closest_to_1":
        score = -(means - 1.0).abs()
    else:
        raise ValueError(f"unknown direction {better!r}")
    return set(score.index[score == score.max()])


def summary_markdown(summary, *, method_order=METHOD_ORDER, metric_order=METRIC_ORDER,
                     exclude_from_best=("noisy",)):
    """Markdown tables of a summary, one per data type.

    Parameters
    ----------
    summary : pandas.DataFrame
        Output of :func:`summarize`.
    method_order : sequence of str, optional
        Row order; methods not listed follow, sorted by name.
    metric_order : sequence of str, optional
        Column order; metrics not listed follow, sorted by name.
    exclude_from_best : sequence of str, optional
        Methods shown but not competing for the bold "best" mark (by default the noisy input,
        which is not a denoiser and whose boundary sharpness is ~1 by construction).

    Returns
    -------
    str
        For each data type (and, where that data type's rows hold several, dataset, region
        and iteration) a ``###`` heading, a line naming the reference, and a table: rows =
        methods, columns = the metrics of those rows, cells ``mean ± sd`` (``n/a`` for the sd of a single subject; empty where a
        method lacks the metric). Fixed decimals per metric, except the diffusivity MAEs
        (``md_mae``, ``ad_mae``, ``rd_mae``, mm^2/s) in scientific notation with 3
        significant digits; the sd is shown to the precision of the mean. The best mean per
        metric is bold: highest for psnr and ssim, lowest for mae, nrmse and the DTI metrics,
        closest to 1 for sharpness (see :data:`~noise2average.metrics.METRIC_BETTER`);
        unknown metrics get no bold.
    """
    required = (*GROUP_COLUMNS, "mean", "sd", "n")
    if not isinstance(summary, pd.DataFrame):
        raise ValueError(f"summary: expected a pandas DataFrame, got {type(summary).__name__}")
    missing = [c for c in required if c not in summary.columns]
    if missing:
        raise ValueError(f"summary: missing column(s) {missing}; expected {list(required)}")
    if summary.empty:
        raise ValueError("summary is empty: nothing to tabulate")
    summary = summary.copy()
    for column in GROUP_COLUMNS:
        summary[column] = summary[column].astype(str)

    data_types = list(dict.fromkeys(summary["data_type"]))
    sections = []
    for data_type in data_types:
        part = summary[summary["data_type"] == data_type]
        # Per data type, so that a DWI "wm" region does not add "(region brain)" to T1w.
        qualifiers = [c for c in ("dataset", "region", "iteration") if part[c].nunique() > 1]
        if qualifiers:
            groups = part.groupby(qualifiers, sort=True)
        else:
            groups = [((), part)]
        for key, block in groups:
            key = key if isinstance(key, tuple) else (key,)
            heading = f"### {data_type}"
            if qualifiers:
                heading += " (" + ", ".join(f"{q} {k}" for q, k in zip(qualifiers, key)) + ")"
            references = ", ".join(dict.fromkeys(block["reference"]))
            heading += f"\n\nReference: {references}."
            sections.append(heading + "\n\n" + _markdown_table(
                block, method_order, metric_order, exclude_from_best))
    return "\n\n".join(sections) + "\n"


def _markdown_table(block, method_order, metric_order, exclude_from_best):
    methods = order_methods(block["method"], order=method_order)
    metrics = order_methods(block["metric"], order=metric_order)
    if block.duplicated(["method", "metric"]).any():
        raise ValueError(
            f"summary has several rows per method and metric for data type "
            f"{block['data_type'].iloc[0]!r}"
        )
    mean = block.pivot(index="method", columns="metric", values="mean")
    sd = block.pivot(index="method", columns="metric", values="sd")
    lines = [
        "| method | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    best = {
        metric: _best_methods(
            mean.loc[[m for m in methods if m not in exclude_from_best], metric],
            METRIC_BETTER.get(metric),
        )
        for metric in metrics
    }
    for method in methods:
        cells = []
        for metric in metrics:
            m = mean.at[method, metric] if method in mean.index else np.nan
            if pd.isna(m):
                cells.append("")
                continue
            cell = _format_cell(float(m), float(sd.at[method, metric]), metric)
            if method in best[metric]:
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
