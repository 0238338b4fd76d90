"""Every figure readable for 1 to 30 models: no two labels overlap, every label on the canvas,
no squashed panel. Judged on the drawn figures with matplotlib's own text extents
(tests/layout.py), for the report of experiments of several sizes and for the public
figure functions.

The experiments of several sizes are one small real experiment (every analysis of the
report, all layers) whose summary.json is rewritten to list 1 to 30 models in a depth x
width grid, each pointing at the real result files of one of its four models: the report
draws exactly what it would draw for that many trained models.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from layout import layout_problems
from matplotlib.figure import Figure

from ckatlas.analysis.dynamics import BlockDynamics
from ckatlas.cli import main
from ckatlas.heatmap import CKAResult
from ckatlas.hf.removal import LayerRemoval
from ckatlas.models.registry import create_model
from ckatlas.report.dynamics_figures import dynamics_figure
from ckatlas.heatmap.figures import plot_heatmap, plot_heatmap_grid
from ckatlas.report.html import render_report
from ckatlas.report.removal_figures import removal_figure

EXPERIMENT = """
name = "layout"
description = "every report section on four tiny ResNets, all layers"
[dataset]
name = "digits"
[[grid]]
depths = [8, 14]
widths = [0.5]
seeds = [0, 1]
[train]
epochs = 2
[cka]
num_examples = 128
batch_size = 64
layers = "all"
[analyses.pca]
[analyses.probes]
c_grid = [1.0]
max_features = 64
[analyses.prune]
[analyses.cross_seed]
[analyses.origins]
[analyses.dynamics]
examples = 64
[analyses.errors]
population_a = { depth = 14, width = 0.5 }
population_b = { depth = 8, width = 0.5 }
num_permutations = 200
"""

DEPTHS = [8, 14, 20, 26, 32]
WIDTHS = [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The small real experiment: two depths, two seeds, every analysis the report draws."""
    root = tmp_path_factory.mktemp("layout")
    (root / "layout.toml").write_text(EXPERIMENT, encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["run", str(root / "layout.toml"), "--out", str(root / "src"), "--threads", "1", "--quiet"]) == 0
    return root / "src"


def _copy(entry: dict) -> dict:
    return json.loads(json.dumps(entry))


def scaled(source: Path, out: Path, depths: int, widths: int, seeds: int) -> Path:
    """`source` with a summary.json listing depths x widths x seeds models (result files shared)."""
    summary = json.loads((source / "summary.json").read_text(encoding="utf-8"))
    shutil.copytree(source, out)
    models, groups, cross = [], [], []
    for d in DEPTHS[:depths]:
        for w in WIDTHS[:widths]:
            runs = []
            for seed in range(seeds):
                model = _copy(summary["models"][len(models) % len(summary["models"])])
                model.update(name=f"resnet{d}-w{w:g}-f0.0625-s{seed}", arch=f"resnet{d}", depth=d, width=w,
                             seed=seed, fraction=0.0625)
                models.append(model)
                runs.append(model["name"])
            group = _copy(summary["groups"][len(groups) % len(summary["groups"])])
            group.update(name=f"resnet{d}-w{w:g}-f0.0625", arch=f"resnet{d}", depth=d, width=w, runs=runs,
                         fraction=0.0625, stability=group["stability"] if seeds > 1 else None)
            groups.append(group)
            if seeds > 1:
                pair = summary["cross_seed"][len(cross) % len(summary["cross_seed"])]
                cross.append({"a": runs[0], "b": runs[1], "path": pair["path"]})

    def table(key: str) -> list[list[float]]:
        by_cell = {(g["depth"], g["width"]): g[key] for g in groups}
        return [[by_cell[d, w] for w in WIDTHS[:widths]] for d in DEPTHS[:depths]]

    summary["grid"] = [{"family": "resnet", "residual": True, "fraction": 0.0625, "depths": DEPTHS[:depths],
                        "widths": WIDTHS[:widths], "block_fraction": table("block_fraction_mean"),
                        "block_strength": table("block_strength_mean"), "test_accuracy": table("test_accuracy_mean")}]
    summary.update(models=models, groups=groups, cross_seed=cross)
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return out


# -- the checker itself can fail ---------------------------------------------------------------------------
def test_the_checker_sees_overlapping_outside_and_squashed() -> None:
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.set_title("a title long enough to run off the canvas on both sides of a small figure")
    ax.set_xlabel("layer")
    ax.text(0.5, 0.5, "here", transform=ax.transAxes)
    ax.text(0.51, 0.5, "here too", transform=ax.transAxes)
    problems = layout_problems(fig)
    assert any("reaches outside the canvas" in p for p in problems)
    assert any("'here' overlaps 'here too'" in p for p in problems)
    thin = Figure(figsize=(8, 1.0), layout="constrained")
    thin.subplots().plot([0, 1])
    assert any("is squashed" in p for p in layout_problems(thin))
    clear = Figure(figsize=(4, 3), layout="constrained")
    clear.subplots().set_xlabel("layer")
    assert layout_problems(clear) == []


def test_the_old_cross_seed_row_fails_the_checker() -> None:
    """Nine cross-seed panels in one row, as the report drew them: the layout this test file guards against."""
    fig = Figure(figsize=(11.8, 3.4), layout="constrained")
    for k, ax in enumerate(np.ravel(fig.subplots(1, 9, squeeze=False))):
        plot_heatmap(np.eye(30), ax, colorbar=False)
        ax.set_title(f"resnet{8 + 6 * k}-w1-f0.0625: seeds 0 vs 1", fontsize=9)
        ax.set_xlabel("layer, second seed")
    assert any("overlaps" in p for p in layout_problems(fig))


# -- the report, for experiments of several sizes ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("depths, widths, seeds", [
    (1, 1, 1),  # 1 model
    (2, 2, 1),  # 4
    (3, 3, 1),  # 9
    (1, 9, 2),  # 9 architectures of 2 seeds in one row: nine cross-seed panels (the demo's grid)
    (5, 3, 2),  # 30
])
def test_every_report_figure_is_readable(source, tmp_path, depths, widths, seeds) -> None:
    experiment = scaled(source, tmp_path / "exp", depths, widths, seeds)
    report_figures: list[tuple[str, Figure]] = []
    render_report(experiment, on_figure=lambda alt, fig: report_figures.append((alt, fig)))
    alts = [alt for alt, _ in report_figures]
    expected = ["within-model CKA heatmaps", "variance explained by the first principal component",
                "first-PC maps of", "linear probe accuracy per layer", "accuracy after block deletion",
                "the most dominant examples of each block", "per-example accuracy scatter",
                "accuracy difference per class", "block fraction and first-PC variance against epoch",
                "block structure of"]
    if seeds > 1:
        expected += ["cross-seed CKA heatmaps", "share of seeds with each layer in a block"]
    assert all(any(alt.startswith(kind) for alt in alts) for kind in expected), alts
    problems = [f"{alt}: {p}" for alt, fig in report_figures for p in layout_problems(fig)]
    assert not problems, "\n".join(problems[:20])


# -- the public figure functions -------------------------------------------------------------------------------
def _result(names: list[str], model_a: str, model_b: str | None = None) -> CKAResult:
    size = len(names)
    return CKAResult(np.eye(size), names, names, np.zeros((size, size)), 128, 2, 1, model_a, model_b or model_a,
                     model_b is None)


@pytest.mark.parametrize("count", [1, 4, 9, 30])
def test_heatmap_grids_are_readable(count: int) -> None:
    names = create_model("resnet14", num_classes=10).layer_names("all")
    results = [_result(names, f"resnet14-w{k}-f0.0625-s0", None if k % 2 else f"resnet14-w{k}-f0.0625-s1")
               for k in range(count)]
    for ticks in (False, True):
        problems = layout_problems(plot_heatmap_grid(results, layer_ticks=ticks))
        assert not problems, problems[:10]


@pytest.mark.parametrize("arch, kind", [("resnet8", "blocks"), ("resnet20", "all"), ("resnet56", "all"),
                                        ("vit4", "all")])
def test_a_heatmap_of_any_size_is_readable(arch: str, kind: str) -> None:
    names = create_model(arch, num_classes=10).layer_names(kind)
    for result in (_result(names, arch), _result(names, f"{arch}-w1-f0.0625-s0", f"{arch}-w4-f0.0625-s1")):
        for ticks in (False, True):
            problems = layout_problems(plot_heatmap(result, layer_ticks=ticks).figure)
            assert not problems, problems[:10]


@pytest.mark.parametrize("epochs", [1, 4, 9, 30])
def test_a_dynamics_strip_is_readable(epochs: int) -> None:
    size = 20
    record = BlockDynamics(np.arange(epochs), [f"stage1.{k}" for k in range(size)], np.tile(np.eye(size), (epochs, 1, 1)),
                           np.full((epochs, size), 0.5), np.linspace(0.2, 0.8, epochs), [[[0, 3]]] * epochs)
    problems = layout_problems(dynamics_figure(record))
    assert not problems, problems[:10]


@pytest.mark.parametrize("layers", [3, 12, 80])
@pytest.mark.parametrize("low, high", [(512.0, 530.0), (30.0, 400.0), (12.0, 9000.0)])
def test_a_layer_removal_figure_is_readable(layers: int, low: float, high: float) -> None:
    rng = np.random.default_rng(layers)
    criteria = ("cka", "angular", "block_influence")
    result = LayerRemoval([f"model.layers.{k}" for k in range(layers)], np.eye(layers + 1),
                          np.zeros((layers + 1, layers + 1)), rng.random(layers), [[0, 2]],
                          {c: [list(range(n)) for n in range(1, layers)] for c in criteria},
                          curves={c: list(np.log(np.geomspace(low, high, layers))) for c in criteria}, metric="loss")
    fig = removal_figure(result)
    problems = layout_problems(fig)
    assert not problems, problems[:10]
    curve = next(ax for ax in fig.axes if ax.get_ylabel() == "held-out perplexity")
    shown = [t.get_text() for t in curve.get_yticklabels() if t.get_text()]
    assert shown and all(math.isfinite(float(text)) for text in shown), shown  # plain numbers, no 10^k
