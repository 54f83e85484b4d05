"""Figures of a predicted slide: robust per-panel scales, titles, H&E background, Pearson bars, scatter."""

from __future__ import annotations

import numpy as np
import pytest

from stgen import plot
from stgen.cli import main


@pytest.fixture()
def predicted():
    from stgen.data.simulate import SimulationConfig, simulate

    a = simulate(SimulationConfig(n_slides=1, n_spots=80, n_genes=4, feature_dim=4, seed=3))[0]
    truth = np.log1p(np.asarray(a.X, dtype=np.float64))
    rng = np.random.default_rng(0)
    # a damped prediction (a tenth of the measured range) with noise, as a weak model produces
    a.layers["stgen_mean"] = (truth.mean(0) + 0.1 * (truth - truth.mean(0)) + rng.normal(0, 0.02, truth.shape)
                              ).astype(np.float32)
    a.layers["stgen_std"] = np.full_like(a.layers["stgen_mean"], 0.1)
    return a


def _limits(fig):
    return [tuple(ax.collections[0].get_clim()) for ax in fig.axes if ax.get_title()]  # map axes, not colour bars


def test_each_map_gets_its_own_robust_scale_and_a_telling_title(predicted):
    slide = plot.predicted_slide(predicted)
    gene = slide.genes[1]
    fig = plot.maps_figure(slide, [gene])
    measured, pred, _ = _limits(fig)
    j = slide.genes.index(gene)
    assert measured == pytest.approx(tuple(np.quantile(slide.measured[:, j], plot.ROBUST_QUANTILES)))
    assert pred == pytest.approx(tuple(np.quantile(slide.predicted[:, j], plot.ROBUST_QUANTILES)))
    assert (pred[1] - pred[0]) < 0.5 * (measured[1] - measured[0])  # the damped prediction is not drawn flat
    r = np.corrcoef(slide.measured[:, j], slide.predicted[:, j])[0, 1]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert f"{gene} predicted (log1p), r = {r:.2f}" in titles[1] and slide.slide in titles[1]
    shared = plot.maps_figure(slide, [gene], scale="shared")
    m2, p2, _ = _limits(shared)
    assert m2 == p2
    with pytest.raises(ValueError, match="scale must be"):
        plot.maps_figure(slide, [gene], scale="linear")


def test_spots_are_drawn_on_the_he_image_when_the_slide_has_one(predicted):
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    xy = np.asarray(predicted.obsm["spatial"])
    scale = 50.0 / float(xy.max())
    predicted.uns["spatial"] = {"lib": {"images": {"hires": image},
                                        "scalefactors": {"tissue_hires_scalef": scale, "spot_diameter_fullres": 40.0}}}
    slide = plot.predicted_slide(predicted)
    assert slide.image is image or np.array_equal(slide.image, image)
    assert slide.image_scale == scale and slide.spot_diameter == 40.0
    fig = plot.maps_figure(slide, [slide.genes[0]])
    ax = fig.axes[0]
    assert len(ax.images) == 1 and ax.images[0].get_array().shape[:2] == (60, 80)
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets, xy * scale)  # spots placed in image pixels
    del predicted.uns["spatial"]
    assert len(plot.maps_figure(plot.predicted_slide(predicted), [slide.genes[0]]).axes[0].images) == 0


def test_pearson_bars_and_scatter_show_the_per_gene_correlation(predicted, tmp_path):
    slide = plot.predicted_slide(predicted)
    r = slide.pearson()
    expected = [np.corrcoef(slide.measured[:, j], slide.predicted[:, j])[0, 1] for j in range(len(slide.genes))]
    np.testing.assert_allclose(r, expected)
    fig = plot.pearson_figure(slide)
    bars = fig.axes[0].patches
    assert sorted((b.get_width() for b in bars), reverse=True) == pytest.approx(sorted(expected, reverse=True))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [slide.genes[j] for j in np.argsort(expected)[::-1]]
    sc = plot.scatter_figure(slide, slide.genes[:2])
    x, y = sc.axes[0].collections[0].get_offsets().T
    np.testing.assert_allclose(x, slide.measured[:, 0])
    np.testing.assert_allclose(y, slide.predicted[:, 0], rtol=1e-6)
    assert f"r = {expected[0]:.2f}" in sc.axes[0].get_title()


def test_plot_command_kinds_and_errors(predicted, tmp_path):
    src = tmp_path / "pred.h5ad"
    predicted.write_h5ad(src)
    for kind, extra in (("maps", ["--genes", "gene000"]), ("pearson", []), ("scatter", ["--genes", "gene001"])):
        out = tmp_path / f"{kind}.png"
        assert main(["plot", str(src), "--kind", kind, *extra, "-o", str(out)]) == 0
        assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(src), "--kind", "pearson", "-o", str(tmp_path / "pearson.png")]) == 2  # exists
    assert main(["plot", str(src), "--kind", "scatter", "-o", str(tmp_path / "s.png")]) == 2  # needs --genes
    assert main(["plot", str(src), "--genes", "gene000", "--key", "nope", "-o", str(tmp_path / "n.png")]) == 2
    unmeasured = predicted.copy()
    unmeasured.X = np.zeros_like(np.asarray(unmeasured.X))
    unmeasured.write_h5ad(tmp_path / "new.h5ad")
    assert main(["plot", str(tmp_path / "new.h5ad"), "--kind", "pearson", "-o", str(tmp_path / "p.png")]) == 2
    assert main(["plot", str(tmp_path / "new.h5ad"), "--genes", "gene000", "-o", str(tmp_path / "m.png")]) == 0
    assert not list(tmp_path.glob("*.tmp.png"))
    for name in ("s.png", "n.png", "p.png"):
        assert not (tmp_path / name).exists()


def test_measured_expression_follows_the_target_recorded_with_the_prediction(predicted):
    """A log1p_cp10k model is compared with measured counts per 10k, and the figures say so."""
    from stgen.preprocess import target_matrix

    counts = np.asarray(predicted.X, dtype=np.float64)
    plain = plot.predicted_slide(predicted)
    assert np.allclose(plain.measured, np.log1p(counts)) and plain.unit == "log1p"
    predicted.uns["stgen"] = {**predicted.uns.get("stgen", {}), "target": "log1p_cp10k"}
    slide = plot.predicted_slide(predicted)
    expected = target_matrix(predicted, slide.genes, "log1p_cp10k")
    assert np.allclose(slide.measured, expected, atol=1e-5)
    assert not np.allclose(slide.measured, plain.measured)
    gene = slide.genes[0]
    titles = [ax.get_title() for ax in plot.maps_figure(slide, [gene]).axes if ax.get_title()]
    assert titles[0].startswith(f"{gene} measured (log1p cp10k)")
    scatter = plot.scatter_figure(slide, [gene]).axes[0]
    assert scatter.get_xlabel() == "measured log1p cp10k"
    predicted.uns["stgen"]["target"] = "sqrt"
    with pytest.raises(ValueError, match="unknown target 'sqrt'"):
        plot.predicted_slide(predicted)
