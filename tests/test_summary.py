import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from noise2average.dti_metrics import DTI_METRIC_NAMES
from noise2average.metrics import METRIC_NAMES
from noise2average.summary import (
    COLUMNS,
    METRIC_ORDER,
    metrics_rows,
    order_methods,
    read_metrics,
    summarize,
    summary_markdown,
    validate_metrics,
)


def _table(values=None):
    """Two subjects, two methods (+ N2A iterations), psnr and sharpness, one data type."""
    values = values or {
        # (subject, method, iteration, metric): value
        ("01", "n2a", "final", "psnr"): 30.0,
        ("02", "n2a", "final", "psnr"): 32.0,
        ("01", "n2a", "1", "psnr"): 28.0,
        ("02", "n2a", "1", "psnr"): 29.0,
        ("01", "n2a", "2", "psnr"): 30.0,
        ("02", "n2a", "2", "psnr"): 32.0,
        ("01", "noisy", "final", "psnr"): 20.0,
        ("02", "noisy", "final", "psnr"): 22.0,
        ("01", "n2a", "final", "sharpness"): 0.9,
        ("02", "n2a", "final", "sharpness"): 0.8,
        ("01", "noisy", "final", "sharpness"): 1.0,
        ("02", "noisy", "final", "sharpness"): 1.02,
    }
    rows = [
        ("synthetic", s, "t1w_rep", "ground truth", m, i, "brain", k, v) for (s, m, i, k), v in values.items()
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_summarize_final_mean_sd_n():
    summary = summarize(_table())
    assert set(summary["iteration"]) == {"final"}
    row = summary[(summary["method"] == "n2a") & (summary["metric"] == "psnr")].iloc[0]
    assert_allclose([row["mean"], row["sd"]], [31.0, np.sqrt(2.0)], rtol=1e-12)
    assert row["n"] == 2
    # methods in the fixed order, metrics in METRIC_NAMES order
    assert list(summary["method"]) == ["noisy", "noisy", "n2a", "n2a"]
    assert list(summary["metric"]) == ["psnr", "sharpness"] * 2


def test_summarize_all_iterations_and_single_subject_sd():
    summary = summarize(_table(), iteration=None)
    n2a_psnr = summary[(summary["method"] == "n2a") & (summary["metric"] == "psnr")]
    assert list(n2a_psnr["iteration"]) == ["1", "2", "final"]
    assert_allclose(n2a_psnr["mean"], [28.5, 31.0, 31.0])
    one = summarize(_table()[lambda t: t["subject"] == "01"])
    assert one["n"].eq(1).all() and one["sd"].isna().all()


def test_summarize_errors():
    with pytest.raises(ValueError, match="iteration '7'"):
        summarize(_table(), iteration="7")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['region'\]"):
        summarize(_table().drop(columns="region"))
    duplicated = pd.concat([_table(), _table().iloc[:1]])
    with pytest.raises(ValueError, match="duplicated"):
        summarize(duplicated)


def test_summary_markdown_layout_and_bold():
    table = _table()
    n2a_final = table.query("method == 'n2a' and iteration == 'final'")
    # psnr 25 / 27, sharpness -4.1 / -4.2 (far from 1)
    extra = n2a_final.assign(method="mystery", value=n2a_final["value"] - 5.0)
    # psnr 30.1 / 32.1 (best), sharpness 1.0 / 0.9 (mean 0.95, closest to 1)
    average = n2a_final.assign(method="average", value=n2a_final["value"] + 0.1)
    text = summary_markdown(summarize(pd.concat([table, extra, average])))
    lines = text.strip().splitlines()
    assert lines[0] == "### t1w_rep"
    assert lines[2] == "Reference: ground truth."
    del lines[1:3]
    assert lines[2] == "| method | psnr | sharpness |"
    assert lines[3] == "|---|---:|---:|"
    body = lines[4:]
    assert [line.split("|")[1].strip() for line in body] == [
        "noisy", "average", "n2a", "mystery"]
    # higher psnr is better: average (31.1); closest-to-1 sharpness among the denoisers:
    # average 0.95 (n2a 0.85); noisy (1.01) does not compete by default
    assert "| average | **31.10 ± 1.41** | **0.950 ± 0.071** |" in body
    assert "| n2a | 31.00 ± 1.41 | 0.850 ± 0.071 |" in body
    assert "| noisy | 21.00 ± 1.41 | 1.010 ± 0.014 |" in body
    with_noisy = summary_markdown(summarize(table), exclude_from_best=())
    assert "| noisy | 21.00 ± 1.41 | **1.010 ± 0.014** |" in with_noisy
    assert "tabulate" not in summary_markdown.__module__


def test_summary_markdown_lower_is_better_and_one_table_per_data_type():
    values = {("01", m, "final", "mae"): v for m, v in (("n2n", 0.02), ("bm4d", 0.01))}
    a = _table(values)
    b = a.assign(data_type="memprage", value=a["value"][::-1].to_numpy())
    text = summary_markdown(summarize(pd.concat([a, b])))
    assert text.count("### ") == 2 and "### memprage" in text and "### t1w_rep" in text
    t1w = text.split("### t1w_rep")[1]
    assert "| bm4d | **0.0100 ± n/a** |" in t1w
    assert "| n2n | 0.0200 ± n/a |" in t1w
    memprage = text.split("### memprage")[1].split("###")[0]
    assert "| n2n | **0.0100 ± n/a** |" in memprage


def test_summary_markdown_errors():
    with pytest.raises(ValueError, match="summary is empty"):
        summary_markdown(summarize(_table()).iloc[:0])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['sd'\]"):
        summary_markdown(summarize(_table()).drop(columns="sd"))


def test_order_methods_unknown_after_known():
    assert order_methods(["zeta", "supervised", "alpha", "noisy", "n2a"]) == [
        "noisy", "n2a", "supervised", "alpha", "zeta"]


def test_metrics_rows_and_read_metrics_roundtrip(tmp_path):
    a = metrics_rows({"psnr": 30.0, "ssim": 0.9}, dataset="synthetic", subject="01",
                     data_type="t1w_rep", reference="ground truth", method="n2a", iteration=2)
    b = metrics_rows({"psnr": 31.0, "ssim": 0.91}, dataset="synthetic", subject="01",
                     data_type="t1w_rep", reference="ground truth", method="n2a")
    assert list(a.columns) == list(COLUMNS)
    assert set(a["iteration"]) == {"2"} and set(b["iteration"]) == {"final"}
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    a.to_csv(paths[0], index=False)
    b.to_csv(paths[1], index=False)
    table = read_metrics(paths)
    assert len(table) == 4
    assert set(table["subject"]) == {"01"}  # not converted to the integer 1
    assert table["value"].dtype == np.float64
    assert len(read_metrics(str(paths[0]))) == 2


def test_read_metrics_names_bad_file(tmp_path):
    good = tmp_path / "good.csv"
    _table().to_csv(good, index=False)
    missing = tmp_path / "missing_column.csv"
    _table().drop(columns="metric").to_csv(missing, index=False)
    with pytest.raises(ValueError, match=r"missing_column\.csv: missing column\(s\) \['metric'\]"):
        read_metrics([good, missing])
    text = tmp_path / "text_value.csv"
    _table().assign(value="high").to_csv(text, index=False)
    with pytest.raises(ValueError, match=r"text_value\.csv: column 'value' is not numeric"):
        read_metrics([text])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: file is empty"):
        read_metrics([empty])
    with pytest.raises(ValueError, match="paths is empty"):
        read_metrics([])
    with pytest.raises(ValueError, match="duplicated"):
        read_metrics([good, good])


def test_validate_metrics_drops_extra_columns_and_rejects_missing_labels():
    table = _table().assign(extra=1)
    assert list(validate_metrics(table).columns) == list(COLUMNS)
    table.loc[0, "method"] = None
    with pytest.raises(ValueError, match="column 'method' has missing values"):
        validate_metrics(table)


def _mixed_table():
    """T1w (brain: psnr) and DWI (brain: psnr + DTI, wm: DTI only) rows, two subjects.

    Metrics are listed out of order on purpose.
    """
    values = {
        # (data_type, region, method, metric): (subject 01, subject 02)
        ("t1w_rep", "brain", "noisy", "psnr"): (20.0, 22.0),
        ("t1w_rep", "brain", "n2a", "psnr"): (30.0, 32.0),
        ("dwi", "brain", "noisy", "v1_angle"): (20.0, 22.0),
        ("dwi", "brain", "n2a", "v1_angle"): (10.0, 12.0),
        ("dwi", "brain", "mppca", "v1_angle"): (11.0, 13.0),
        ("dwi", "brain", "noisy", "md_mae"): (4.0e-05, 4.4e-05),
        ("dwi", "brain", "n2a", "md_mae"): (2.0e-05, 2.2e-05),
        ("dwi", "brain", "mppca", "md_mae"): (1.0e-05, 1.2e-05),
        ("dwi", "brain", "noisy", "fa_mae"): (0.081, 0.083),
        ("dwi", "brain", "n2a", "fa_mae"): (0.031, 0.033),
        ("dwi", "brain", "mppca", "fa_mae"): (0.041, 0.043),
        ("dwi", "brain", "noisy", "psnr"): (25.0, 27.0),
        ("dwi", "brain", "n2a", "psnr"): (35.0, 37.0),  # mppca: no psnr
        # mean 9.9996e-05 prints as 1.00e-04, so the sd (2.83e-06) gets no decimal
        ("dwi", "wm", "noisy", "rd_mae"): (9.7996e-05, 10.1996e-05),
        ("dwi", "wm", "n2a", "rd_mae"): (5.0e-05, 5.0e-05),
        ("dwi", "wm", "noisy", "fa_mae"): (0.1, 0.1),
        ("dwi", "wm", "n2a", "fa_mae"): (0.05, 0.07),
    }
    rows = [
        ("synthetic", subject, data_type, "ground truth", method, "final", region, metric, value)
        for (data_type, region, method, metric), pair in values.items()
        for subject, value in zip(("01", "02"), pair)
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_metric_order_is_image_then_dti():
    assert METRIC_ORDER == METRIC_NAMES + DTI_METRIC_NAMES


def test_summarize_orders_dti_metrics_after_image_metrics():
    summary = summarize(_mixed_table())
    brain = summary.query("data_type == 'dwi' and region == 'brain' and method == 'n2a'")
    assert list(brain["metric"]) == ["psnr", "fa_mae", "md_mae", "v1_angle"]
    wm = summary.query("data_type == 'dwi' and region == 'wm' and method == 'n2a'")
    assert list(wm["metric"]) == ["fa_mae", "rd_mae"]


def test_summary_markdown_mixed_t1w_and_dwi():
    text = summary_markdown(summarize(_mixed_table()))
    sections = {
        part.split("\n", 1)[0]: part.split("\n", 1)[1].strip().splitlines()
        for part in text.split("### ")[1:]
    }
    assert all(lines[0] == "Reference: ground truth." for lines in sections.values())
    sections = {heading: lines[2:] for heading, lines in sections.items()}
    # one table per data type and region; the T1w heading gets no region qualifier
    assert list(sections) == ["dwi (region brain)", "dwi (region wm)", "t1w_rep"]
    assert sections["t1w_rep"][0] == "| method | psnr |"

    brain = sections["dwi (region brain)"]
    assert brain[0] == "| method | psnr | fa_mae | md_mae | v1_angle |"
    assert brain[1] == "|---|---:|---:|---:|---:|"
    # fa_mae 4 decimals, md_mae 3 significant digits with the sd to the same precision,
    # v1_angle 2 decimals; bold = lowest error among the denoisers (noisy does not compete);
    # mppca has no psnr: blank cell
    assert brain[2:] == [
        "| noisy | 26.00 ± 1.41 | 0.0820 ± 0.0014 | 4.20e-05 ± 2.8e-06 | 21.00 ± 1.41 |",
        "| n2a | **36.00 ± 1.41** | **0.0320 ± 0.0014** | 2.10e-05 ± 1.4e-06 "
        "| **11.00 ± 1.41** |",
        "| mppca |  | 0.0420 ± 0.0014 | **1.10e-05 ± 1.4e-06** | 12.00 ± 1.41 |",
    ]

    wm = sections["dwi (region wm)"]
    assert wm[0] == "| method | fa_mae | rd_mae |"
    assert wm[2:] == [
        "| noisy | 0.1000 ± 0.0000 | 1.00e-04 ± 3e-06 |",
        "| n2a | **0.0600 ± 0.0141** | **5.00e-05 ± 0.00e+00** |",
    ]
