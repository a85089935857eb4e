import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from noise2average.figures import (  # noqa: E402
    METRIC_LABELS,
    plot_dti_panel,
    plot_image_panel,
    plot_iterations,
    plot_metric_distributions,
    save_figure,
)
from noise2average.dti_metrics import DTI_METRIC_NAMES  # noqa: E402
from noise2average.summary import COLUMNS  # noqa: E402

METHODS = ["supervised", "noisy", "n2a", "bm4d", "average"]  # deliberately out of order
ORDERED = ["noisy", "average", "n2a", "bm4d", "supervised"]


def _volumes(shape=(24, 28, 8), seed=0):
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    ellipse = ((x - 12) / 10) ** 2 + ((y - 14) / 12) ** 2 <= 1
    mask = np.repeat(ellipse[:, :, None], shape[2], axis=2)
    mask[:, :, :2] = False
    reference = np.where(mask, 1.0 + 0.5 * np.sin(x / 3.0)[:, :, None], 0.0)
    images = {
        "noisy": reference + 0.1 * rng.normal(size=shape),
        "average": reference + 0.05 * rng.normal(size=shape),
        "n2a": reference + 0.02 * rng.normal(size=shape),
    }
    return images, reference, mask


IMAGE_METRICS = ("psnr", "ssim", "mae", "nrmse", "sharpness")


def _dti_maps(shape=(20, 22, 6), seed=0):
    """Tensor maps of a reference and two methods; the mask is largest in slice 1."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    mask = np.zeros(shape, dtype=bool)
    for z, radius in enumerate((0, 9, 6, 5, 4, 0)):
        mask[:, :, z] = ((x - 10) ** 2 + (y - 11) ** 2 <= radius**2) & (radius > 0)

    def maps(fa_noise, md_offset):
        fa = np.clip(0.4 + fa_noise * rng.normal(size=shape), 0, 1) * mask
        v1 = np.zeros(shape + (3,))
        v1[..., 0] = 1.0  # left-right fibres: red colour FA
        return {"fa": fa.astype(np.float32),
                "md": np.where(mask, 0.7e-3 + md_offset, 0.0).astype(np.float32),
                "v1": v1.astype(np.float32),
                "color_fa": (np.abs(v1) * fa[..., None]).astype(np.float32)}

    reference = maps(0.0, 0.0)
    methods = {"noisy": maps(0.1, 0.1e-3), "n2a": maps(0.02, 0.02e-3)}
    return methods, reference, mask


def _metrics_table(seed=1, data_types=("t1w_rep", "memprage"), metric_names=IMAGE_METRICS):
    rng = np.random.default_rng(seed)
    rows = []
    for data_type in data_types:
        for subject in ("01", "02", "03"):
            for method in METHODS:
                iterations = ["final", "1", "2", "3"] if method == "n2a" else ["final"]
                for iteration in iterations:
                    for metric in metric_names:
                        rows.append(("synthetic", subject, data_type, "ground truth", method, iteration,
                                     "brain", metric, rng.uniform(0.5, 1.0)))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _tick_labels(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


def test_image_panel_layout(tmp_path):
    images, reference, mask = _volumes()
    fig = plot_image_panel(images, reference, mask, title="t1w_rep sub-01")
    assert isinstance(fig, Figure)
    # 1 reference + 3 images, 3 error maps, 1 colorbar
    assert len(fig.axes) == 2 * len(images) + 2
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["reference", "noisy"]
    assert {"average", "n2a", "|n2a - reference|"} <= set(titles)
    assert "z = 4" in fig.get_suptitle()  # middle of mask slices 2..7
    # every image axes carries a zoomed inset
    assert all(len(ax.child_axes) == 1 for ax in fig.axes[:-1])
    # common grey window and common error scale
    grey = [ax.images[0].get_clim() for ax in fig.axes if ax.get_title() in
            ("reference", "noisy", "average", "n2a")]
    assert len(set(grey)) == 1
    errors = [ax.images[0].get_clim() for ax in fig.axes if ax.get_title().startswith("|")]
    assert len(set(errors)) == 1 and errors[0][0] == 0.0
    save_figure(fig, tmp_path / "panel.png", tmp_path / "sub" / "panel.pdf")
    assert (tmp_path / "panel.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "sub" / "panel.pdf").read_bytes()[:4] == b"%PDF"


def test_image_panel_options_and_errors():
    images, reference, mask = _volumes()
    fig = plot_image_panel(images, reference, mask, title="x", slice_index=6,
                           inset=(2, 10, 5, 13))
    assert "z = 6" in fig.get_suptitle()
    with pytest.raises(ValueError, match="'n2a' has shape"):
        plot_image_panel({**images, "n2a": reference[:-1]}, reference, mask, title="x")
    with pytest.raises(ValueError, match="slice_index"):
        plot_image_panel(images, reference, mask, title="x", slice_index=8)
    with pytest.raises(ValueError, match="mask is empty in slice_index 0"):
        plot_image_panel(images, reference, mask, title="x", slice_index=0)
    with pytest.raises(ValueError, match="inset"):
        plot_image_panel(images, reference, mask, title="x", inset=(5, 5, 0, 4))
    with pytest.raises(ValueError, match="non-empty mapping"):
        plot_image_panel({}, reference, mask, title="x")
    with pytest.raises(ValueError, match="mask is empty"):
        plot_image_panel(images, reference, np.zeros_like(mask), title="x")


def test_dti_panel_layout():
    methods, reference, mask = _dti_maps()
    fig = plot_dti_panel(methods, reference, mask, title="dwi sub-01")
    assert isinstance(fig, Figure)
    # 3 rows x (reference + 2 methods) + 2 colorbars
    assert len(fig.axes) == 3 * (len(methods) + 1) + 2
    # colour FA of all 3 columns, FA and MD errors of the 2 methods
    assert sum(len(ax.images) for ax in fig.axes) == 3 + 2 * len(methods)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["reference", "noisy", "n2a"]
    assert "z = 1" in fig.get_suptitle()  # the slice with the most mask voxels
    blank = [ax for ax in fig.axes if not ax.axison]
    assert len(blank) == 2 and all(not ax.images for ax in blank)
    colour = fig.axes[1].images[0].get_array()
    assert colour.shape == (22, 20, 3)  # (Y, X, RGB): X horizontal as in the image panel
    assert colour.min() >= 0.0 and colour.max() <= 1.0
    assert np.all(colour[0, 0] == 0.0)  # outside the mask: black
    errors = [ax.images[0] for ax in fig.axes if ax.axison and ax.images
              and ax.images[0].get_cmap().name.startswith("inferno")]
    assert len(errors) == 2 * len(methods)
    assert {im.get_clim() for im in errors} == {(0.0, 0.3)}
    # MD error of the noisy method is 0.1e-3 mm^2/s everywhere in the mask -> shown as 0.1
    md_noisy = errors[2].get_array()
    assert md_noisy.mask[0, 0]
    np.testing.assert_allclose(md_noisy.compressed(), 0.1, rtol=1e-3)
    labels = [ax.get_ylabel() for ax in fig.axes if not ax.images and ax.axison]
    assert labels == ["|FA error|", "|MD error| (10^-3 mm^2/s)"]


def test_dti_panel_errors():
    methods, reference, mask = _dti_maps()
    fig = plot_dti_panel(methods, reference, mask, title="x", slice_index=3)
    assert "z = 3" in fig.get_suptitle()
    misshapen = {**methods, "n2a": {**methods["n2a"], "md": reference["md"][:-1]}}
    with pytest.raises(ValueError, match="map 'md' of method 'n2a' has shape"):
        plot_dti_panel(misshapen, reference, mask, title="x")
    flat_colour = {**methods, "noisy": {**methods["noisy"], "color_fa": reference["fa"]}}
    with pytest.raises(ValueError, match="map 'color_fa' of method 'noisy'"):
        plot_dti_panel(flat_colour, reference, mask, title="x")
    no_md = {"noisy": {k: v for k, v in methods["noisy"].items() if k != "md"}}
    with pytest.raises(ValueError, match=r"method 'noisy' lack \['md'\]"):
        plot_dti_panel(no_md, reference, mask, title="x")
    with pytest.raises(ValueError, match="non-empty mapping"):
        plot_dti_panel({}, reference, mask, title="x")
    with pytest.raises(ValueError, match="mask shape"):
        plot_dti_panel(methods, reference, mask[:-1], title="x")
    with pytest.raises(ValueError, match="mask is empty in slice_index 0"):
        plot_dti_panel(methods, reference, mask, title="x", slice_index=0)
    with pytest.raises(ValueError, match="slice_index"):
        plot_dti_panel(methods, reference, mask, title="x", slice_index=6)


def test_metric_distributions_layout(tmp_path):
    fig = plot_metric_distributions(_metrics_table(), data_type="memprage")
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes] == ["psnr", "ssim", "mae", "nrmse",
                                                   "sharpness"]
    for ax in fig.axes:
        assert _tick_labels(ax) == ORDERED
        # one strip point per subject and method
        assert sum(len(c.get_offsets()) for c in ax.collections) == 3 * len(METHODS)
    save_figure(fig, tmp_path / "d.png", tmp_path / "d.pdf")
    assert (tmp_path / "d.png").stat().st_size > 0
    assert (tmp_path / "d.pdf").stat().st_size > 0


def test_metric_distributions_subset_of_metrics():
    table = _metrics_table()
    table = table[table["metric"].isin(["ssim", "psnr"])]
    fig = plot_metric_distributions(table, data_type="t1w_rep")
    assert [ax.get_title() for ax in fig.axes] == ["psnr", "ssim"]


def test_metric_figures_select_metrics():
    table = pd.concat([_metrics_table(),
                       _metrics_table(data_types=("dwi",),
                                      metric_names=IMAGE_METRICS + DTI_METRIC_NAMES)])
    for plot in (plot_metric_distributions, plot_iterations):
        # default: image metrics then DTI metrics; T1w tables unchanged
        fig = plot(table, data_type="dwi")
        assert [ax.get_title() for ax in fig.axes[:10]] == list(IMAGE_METRICS +
                                                                 DTI_METRIC_NAMES)
        assert [ax.get_ylabel() for ax in fig.axes[5:10]] == [
            METRIC_LABELS[m] for m in DTI_METRIC_NAMES]
        fig = plot(table, data_type="dwi", metric_names=["v1_angle", "psnr", "fa_mae"])
        assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [
            "v1_angle", "psnr", "fa_mae"]
        # metrics absent for this data type are skipped
        fig = plot(table, data_type="t1w_rep", metric_names=("fa_mae", "ssim"))
        assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["ssim"]
        with pytest.raises(ValueError, match=r"none of the metrics \['fa_mae'\].*"
                                             r"available: \['psnr', 'ssim'"):
            plot(table, data_type="t1w_rep", metric_names=["fa_mae"])
        with pytest.raises(ValueError, match="sequence of metric names"):
            plot(table, data_type="dwi", metric_names="psnr")


def test_iterations_layout(tmp_path):
    fig = plot_iterations(_metrics_table(), data_type="t1w_rep")
    assert len(fig.axes) == 5
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["n2a (mean ± sd)", "noisy", "average", "bm4d", "supervised"]
    for ax in fig.axes:
        assert [int(t) for t in ax.get_xticks()] == [1, 2, 3]
        assert len(ax.get_lines()) >= 4  # n2a curve + 4 reference lines
    save_figure(fig, tmp_path / "i.png", tmp_path / "i.pdf")
    assert (tmp_path / "i.png").stat().st_size > 0
    assert (tmp_path / "i.pdf").stat().st_size > 0


def test_metric_figures_bad_input():
    table = _metrics_table()
    for plot in (plot_metric_distributions, plot_iterations):
        with pytest.raises(ValueError, match=r"missing column\(s\) \['metric'\]"):
            plot(table.drop(columns="metric"), data_type="t1w_rep")
        with pytest.raises(ValueError, match="no metrics rows for data_type 'dwi'"):
            plot(table, data_type="dwi")
        with pytest.raises(ValueError, match="metrics table is empty"):
            plot(table.iloc[:0], data_type="t1w_rep")
        two_regions = pd.concat([table, table.assign(region="wm")])
        with pytest.raises(ValueError, match=r"several regions \['brain', 'wm'\]"):
            plot(two_regions, data_type="t1w_rep")
        plot(two_regions, data_type="t1w_rep", region="wm")
    with pytest.raises(ValueError, match="no per-iteration rows for method 'n2a'"):
        plot_iterations(table[table["iteration"] == "final"], data_type="t1w_rep")


def test_save_figure_rejects_non_figure(tmp_path):
    with pytest.raises(ValueError, match="matplotlib Figure"):
        save_figure("figure", tmp_path / "a.png", tmp_path / "a.pdf")
