"""Report sections on the analyses that explain and test the block structure: first principal
components, linear probes, block deletion, and the errors of two model populations.

Each section reads saved results (`PCAResult`, `ProbeResult`, `PruneResult`,
`ErrorComparison`) and returns a `Section`, or None when the experiment did not ask for
that analysis. The few numbers quoted in captions are means over those saved results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ckatlas.analysis import BlockResult, ErrorComparison, PCAResult, ProbeResult, PruneResult
from ckatlas.report._page import (
    report_section,
    ReportData,
    Section,
    esc,
    figure_html,
    grid_figure,
    index_ticks,
    para,
    seeds_phrase,
    shade_layers,
    slice_title,
    table_html,
)
from ckatlas.io.summary import ModelEntry
from ckatlas.report.analysis_figures import plot_pc_heatmaps, plot_pc_variance, plot_probe_accuracy, plot_pruning
from ckatlas.report.error_figures import plot_class_differences, plot_example_scatter
from ckatlas.heatmap.figures import plot_heatmap


def _block_names(data: ReportData, model: ModelEntry, notes: list[str]) -> list[list[str]]:
    """The layer names of each of a model's blocks (none when its block result is missing)."""
    blocks = data.load(BlockResult.load, model.path("blocks"), notes)
    return [] if blocks is None else [blocks.block_layers(b) for b in blocks.blocks]


def _grid_figures(data: ReportData, draw: Any, alt: str, caption: Any) -> list[str]:
    """One depth x width figure per grid table (only the fullest legend kept), each with
    `caption(models_shown, table_title)`."""
    tables = data.summary.grid
    parts = []
    for table in tables:
        drawn = grid_figure(data, table, draw)
        if drawn is not None:
            fig, shown = drawn
            legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
            fullest = max(legends, key=lambda legend: len(legend.legend_handles), default=None)
            for legend in legends:
                if legend is not fullest:
                    legend.remove()
            parts.append(figure_html(fig, alt, caption(shown, slice_title(table, tables))))
    return parts


# -- principal components ---------------------------------------------------------------------------
def _pc_numbers(result: PCAResult, blocks: list[list[str]]) -> str:
    """Where the first PC dominates (in-block vs other layers) and what removing it does to the largest block."""
    inside = np.array([any(name in b for b in blocks) for name in result.layers])
    if not inside.any():
        return "This model has no block."
    ve = result.variance_explained
    text = f"PC1 explains {np.nanmean(ve[inside]):.0%} of an in-block layer's variance on average"
    if (~inside).any():
        text += f" and {np.nanmean(ve[~inside]):.0%} of another layer's"
    largest = [result.layers.index(n) for n in max(blocks, key=len) if n in result.layers]
    off = ~np.eye(len(largest), dtype=bool)
    sub = np.ix_(largest, largest)
    return (text + f". In its largest block the mean CKA is {np.nanmean(result.cka[sub][off]):.2f}; with every "
            f"layer's first PC removed it is {np.nanmean(result.cka_without_pc1[sub][off]):.2f}, and the first PCs' "
            f"similarity is {np.nanmean(result.pc_similarity[sub][off]):.2f}.")


@report_section(50, "pca")
def pca_section(data: ReportData) -> Section | None:
    """Variance explained by each layer's first PC, and the PC-similarity and CKA-without-PC1 maps."""
    if not any(m.has("pca") for m in data.models):
        return None
    notes: list[str] = []
    n_examples: list[int] = []

    def draw(ax: Axes, model: ModelEntry) -> str | None:
        result = data.load(PCAResult.load, model.path("pca"), notes)
        if result is None:
            return None
        n_examples.append(result.n)
        plot_pc_variance(result, ax)
        shade_layers(ax, result.layers, _block_names(data, model, notes))
        index_ticks(ax, len(result.layers))
        return ""

    def caption(shown: list[ModelEntry], sub: str) -> str:
        return (f"Fraction of each layer's variance explained by its first principal component, on {n_examples[0]} "
                f"test examples; one model per cell ({seeds_phrase(shown)}); in-block layers shaded"
                + (f"; {sub}" if sub else "") + ".")

    parts = _grid_figures(data, draw, "variance explained by the first principal component", caption)
    candidates = [m for m in data.models if m.has("pca")]
    chosen = max(candidates, key=lambda m: (m.block_fraction, m.depth, m.width, -m.seed))
    result = data.load(PCAResult.load, chosen.path("pca"), notes)
    if result is not None:
        fig = Figure(figsize=(13, 4), layout="constrained")
        axes = fig.subplots(1, 3)
        plot_heatmap(result.cka, axes[0], title="CKA", colorbar=False)
        plot_pc_heatmaps(result, axes[1:])
        numbers = _pc_numbers(result, _block_names(data, chosen, notes))
        parts.append(figure_html(fig, f"first-PC maps of {chosen.name}", (
            f"{chosen.name} (the model with the largest block fraction, {chosen.block_fraction:.2f}), on "
            f"{result.n} test examples: CKA; squared cosine similarity of the layers' first principal components; "
            f"CKA with each layer's first principal component removed. {numbers}")))
    text = para("The paper explains the block structure by a dominant first principal component shared by the layers "
                "of a block: their CKA is then the similarity of that component, and the block fades when it is "
                "removed.")
    return Section("pca", "First principal components", text + "".join(parts), notes)


# -- probes -------------------------------------------------------------------------------------------
@report_section(60, "probes")
def probes_section(data: ReportData) -> Section | None:
    """Linear-probe accuracy of each layer, in-block layers shaded."""
    if not any(m.has("probes") for m in data.models):
        return None
    notes: list[str] = []
    info: list[ProbeResult] = []

    def draw(ax: Axes, model: ModelEntry) -> str | None:
        result = data.load(ProbeResult.load, model.path("probes"), notes)
        if result is None:
            return None
        info.append(result)
        plot_probe_accuracy(result, ax)
        shade_layers(ax, result.layers, _block_names(data, model, notes))
        index_ticks(ax, len(result.layers))
        return ""

    def caption(shown: list[ModelEntry], sub: str) -> str:
        r = info[0]
        return (f"Test accuracy ({r.num_test} examples) of a linear probe (logistic regression, penalty chosen on "
                f"{r.num_val} of the {r.num_train} training examples) on each layer's pooled features; one model per "
                f"cell ({seeds_phrase(shown)}); in-block layers shaded; dotted: the majority class"
                + (f"; {sub}" if sub else "") + ".")

    parts = _grid_figures(data, draw, "linear probe accuracy per layer", caption)
    text = para("The paper finds that probe accuracy barely changes across the layers of a block: the block "
                "preserves and propagates its input's representation rather than refining it.")
    return Section("probes", "Linear probes", text + "".join(parts), notes)


# -- pruning ------------------------------------------------------------------------------------------
def _deletion_effects(results: list[PruneResult]) -> str | None:
    """Mean accuracy change of one more deleted residual block, inside the block structure and outside it."""
    changes: dict[bool, list[float]] = {True: [], False: []}
    for result in results:
        for stage in result.stages:
            previous = result.unpruned_accuracy
            for step in (s for s in result.steps if s.stage == stage):
                if step.in_block is not None:
                    changes[bool(step.in_block)].append(step.accuracy - previous)
                previous = step.accuracy
    parts = [f"{100 * np.mean(v):+.1f} points {label} ({len(v)} deletions)"
             for label, v in ((("inside a block"), changes[True]), ("outside blocks", changes[False])) if v]
    if not parts:
        return None
    return (f"Across the {len(results)} pruned models, deleting one more residual block changed test accuracy by "
            + " and ".join(parts) + " on average.")


@report_section(70, "prune")
def prune_section(data: ReportData) -> Section | None:
    """Test accuracy as residual blocks are deleted from the end of each stage, in-block deletions marked."""
    if not any(m.has("prune") for m in data.models):
        return None
    notes: list[str] = []
    info: list[PruneResult] = []

    def draw(ax: Axes, model: ModelEntry) -> str | None:
        result = data.load(PruneResult.load, model.path("prune"), notes)
        if result is None:
            return None
        info.append(result)
        plot_pruning(result, ax)
        ax.set_title("")
        ax.set_xlabel("blocks deleted")
        return ""

    def caption(shown: list[ModelEntry], sub: str) -> str:
        r = info[0]
        tuned = "no fine-tuning"
        if r.finetune_epochs:
            tuned = f"{r.finetune_epochs} fine-tuning epoch(s) after each deletion"
        return (f"Test accuracy ({r.num_test} examples) after deleting residual blocks from the end of each stage "
                f"({tuned}); one model per cell ({seeds_phrase(shown)}); red rings: the deleted block lies inside the "
                "block structure; dashed: unpruned" + (f"; {sub}" if sub else "") + ".")

    parts = _grid_figures(data, draw, "accuracy after block deletion", caption)
    every = [r for m in data.models if m.has("prune")
             for r in [data.load(PruneResult.load, m.path("prune"), notes)] if r is not None]
    effects = _deletion_effects(every)
    text = para("The paper finds that deleting blocks inside the block structure costs little accuracy, while "
                "deleting blocks outside it costs more." + (f" {effects}" if effects else ""))
    return Section("prune", "Block deletion", text + "".join(parts), notes)


# -- errors -------------------------------------------------------------------------------------------
def _number(value: float, spec: str) -> str:
    return f"{value:{spec}}" if np.isfinite(value) else "–"


def _population(name: str, accuracy: np.ndarray) -> str:
    spread = f" ± {100 * accuracy.std(ddof=1):.1f}" if len(accuracy) > 1 else ""
    return f"{name} ({len(accuracy)} models, test accuracy {100 * accuracy.mean():.1f}{spread}%)"


@report_section(110, "errors")
def errors_section(data: ReportData) -> Section | None:
    """Per-example and per-class comparison of two populations of models, with their tests."""
    relative = data.summary.errors
    if not relative:
        return None
    notes: list[str] = []
    result = data.load(ErrorComparison.load, relative, notes)
    if result is None:
        return Section("errors", "Errors of wide and deep models", "", notes)
    ex, a, b = result.examples, result.name_a, result.name_b
    n = len(ex.accuracy_a)
    kind = f"all {ex.num_permutations} assignments" if ex.exact else f"{ex.num_permutations} random assignments"
    verdict = "differ more than" if ex.p_value < result.alpha else "do not differ detectably more than"
    lines = [
        f"Populations: {_population(a, result.model_accuracy_a)} and {_population(b, result.model_accuracy_b)}, on "
        f"{n} test examples.",
        f"Example level: D = mean over examples of (accuracy of {a} − accuracy of {b})² = {ex.statistic:.4f}; "
        f"the control, two halves of {a}, gives {ex.control_statistic:.4f}; under the null, {ex.null_mean:.4f} ± "
        f"{ex.null_std:.4f}. Test: {ex.test} ({kind}): p = {ex.p_value:.3g}, so the two populations {verdict} models "
        f"of one kind (alpha {result.alpha:g}).",
    ]
    if ex.min_p_value >= result.alpha:
        lines.append(f"With {len(result.model_accuracy_a)} + {len(result.model_accuracy_b)} models the smallest "
                     f"attainable p-value is {ex.min_p_value:.3g}, not below alpha: add seeds to be able to detect "
                     "a difference.")
    body = "".join(para(line) for line in lines)
    axes = plot_example_scatter(result)
    body += figure_html(axes[0].figure, "per-example accuracy scatter", (
        f"Per-example test accuracy (share of a population's models right on an example; dot area: number of "
        f"examples) of {a} against {b} (left, p = {ex.p_value:.3g}) and, as a control, of two disjoint halves of {a} "
        f"(right); {n} test examples."))
    classes = result.classes
    hits = int(classes.significant.sum())
    body += para(f"Class level: {classes.test}, alpha {result.alpha:g}: {hits} of {len(classes.names)} classes differ.")
    ax = plot_class_differences(result)
    body += figure_html(ax.figure, "accuracy difference per class", (
        f"Accuracy of {a} minus {b} on each class (mean over models); red: significant after Holm-Sidak correction."))
    header = ["class", "test examples", f"acc {a}", f"acc {b}", "difference", "t", "p", "p (Holm-Sidak)", "significant"]
    rows = [[esc(r["name"]), esc(r["n"]), f"{r['acc_a']:.3f}", f"{r['acc_b']:.3f}", f"{r['diff']:+.3f}",
             _number(r["t"], ".2f"), _number(r["p"], ".3g"), _number(r["p_holm_sidak"], ".3g"),
             "yes" if r["significant"] else ""]
            for r in classes.rows()]
    body += table_html(header, rows, cls="classes")
    if any(not np.isfinite(r["t"]) for r in classes.rows()):
        body += para("–: the t-test is undefined for that class (no spread across the models to test, or no test "
                     "examples).")
    return Section("errors", "Errors of wide and deep models", body, notes)


__all__ = ["errors_section", "pca_section", "probes_section", "prune_section"]
