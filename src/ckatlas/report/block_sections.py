"""Report sections on the CKA maps and their block structure: the heatmap grid, the block
table, block stability across seeds and cross-seed heatmaps.

Each section reads saved results (`CKAResult`, `BlockResult`, `BlockStability`) and
returns a `Section`, or None when the experiment has nothing for it.
"""

from __future__ import annotations


import numpy as np
from matplotlib.axes import Axes

from ckatlas.analysis import BlockResult, BlockStability, average_heatmaps
from ckatlas.heatmap import CKAResult
from ckatlas.report._page import (
    report_section,
    ReportData,
    Section,
    esc,
    figure_html,
    fmt,
    grid_figure,
    para,
    panel_rows,
    pct,
    seeds_phrase,
    slice_title,
    table_html,
)
from ckatlas.heatmap.figures import measure_label
from ckatlas.io.summary import CrossSeedPair, ModelEntry
from ckatlas.report.analysis_figures import plot_averaged_heatmap
from ckatlas.report.block_figures import label_scores, outline_blocks, plot_block_frequency
from ckatlas.heatmap.figures import plot_heatmap


def _cka_phrase(cka: CKAResult) -> str:
    passes = f", {cka.passes} passes" if cka.passes > 1 else ""
    measure = "" if cka.measure == "cka" else f"; each cell the {measure_label(cka)}, not CKA"
    return f"{cka.n} test examples in {cka.num_batches} minibatches{passes}{measure}"


@report_section(20, "blocks")
def heatmap_grid_section(data: ReportData) -> Section | None:
    """Each model's within-model CKA heatmap, depth x width, with its blocks outlined."""
    notes: list[str] = []
    parts = []
    tables = data.summary.grid
    first: list[CKAResult] = []
    drawn_on: list[tuple[Axes, CKAResult]] = []

    def draw(ax: Axes, model: ModelEntry) -> str | None:
        cka = data.load(CKAResult.load, model.path("cka"), notes)
        if cka is None:
            return None
        first.append(cka)
        drawn_on.append((ax, cka))
        plot_heatmap(cka, ax, colorbar=False, title="")
        blocks = data.load(BlockResult.load, model.path("blocks"), notes)
        if blocks is None:
            return "blocks missing"
        outline_blocks(ax, blocks, original_rows=True, color="cyan")
        label_scores(ax, blocks, original_rows=True)  # the caption promises each block's score
        return f"block fraction {blocks.block_fraction:.2f}"

    for table in tables:
        drawn_on.clear()
        drawn = grid_figure(data, table, draw, panel=(3.3, 3.0))
        if drawn is None:
            continue
        fig, shown = drawn
        image = next(ax.images[0] for ax in fig.axes if ax.images)
        plain = first[0].measure == "cka"
        fig.colorbar(image, ax=fig.axes, label="CKA" if plain else measure_label(first[0]), shrink=0.8)
        sub = slice_title(table, tables)
        what = "Linear CKA" if plain else measure_label(first[0])
        caption = (
            f"{what} between every pair of analysed layers of each model (input at the lower left), on "
            f"{_cka_phrase(first[0])}; one model per cell ({seeds_phrase(shown)}); stage boundaries as thin white "
            f"lines; blocks ({data.detector.describe()}) outlined in cyan, each with its score; point at a cell for its layer pair and "
            "value" + (f"; {sub}" if sub else "") + "."
        )
        hover = [(ax, cka) for ax, cka in drawn_on if ax.images]
        parts.append(figure_html(fig, "within-model CKA heatmaps, depth by width", caption, hover=hover))
    if not parts:
        return Section("heatmaps", "Within-model CKA heatmaps", "", notes or ["no heatmaps"])
    return Section("heatmaps", "Within-model CKA heatmaps", "".join(parts), notes)


def _block_cell(result: BlockResult) -> str:
    if not result.blocks:
        return "<em>none</em>"
    lines = []
    for b in result.blocks:
        names = result.block_layers(b)
        lines.append(f"{b.start}–{b.end}: {esc(names[0])} … {esc(names[-1])} "
                     f"<span class=\"dim\">({b.size} layers, score {b.score:.2f}, mean CKA {b.mean_cka:.2f})</span>")
    return "<br>".join(lines)


@report_section(30, "blocks")
def block_table_section(data: ReportData) -> Section | None:
    """One row per model: its blocks as layer ranges, their sizes and mean CKA, its block fraction."""
    notes: list[str] = []
    rows = []
    for m in sorted(data.models, key=lambda m: (m.family != "resnet", not m.residual, -m.fraction,
                                               m.depth, m.width, m.seed)):
        result = data.load(BlockResult.load, m.path("blocks"), notes)
        blocks = _block_cell(result) if result is not None else "<em>missing</em>"
        rows.append([esc(m.name), esc(m.depth), f"{m.width:g}", esc(m.seed), pct(m.test_accuracy),
                     esc(len(m.layers or [])), blocks, fmt(m.block_fraction),
                     fmt(result.block_strength if result is not None else None),
                     fmt(m.block_area)])
    if not rows:
        return None
    header = ["model", "depth", "width", "seed", "test acc", "layers", "blocks (analysed layer indices)",
              "block fraction", "block strength", "block area"]
    text = para(
        f"A block, by the {data.detector.describe()}. Its score is 1 for a run of identical layers and 0 for one no "
        "more alike inside than across its borders; block strength is the share of layers in a block weighted by "
        "the score, block area the block fraction averaged over min_score from 0.05 to 1 (free of that threshold; "
        "the statistic of the trend claims). Layer indices count the analysed layers from the input (0)."
    )
    return Section("blocks", "Blocks of every model", text + table_html(header, rows, cls="blocks"), notes)


@report_section(40, "blocks")
def stability_section(data: ReportData) -> Section | None:
    """How much the blocks of a group's seeds agree (for groups with several seeds)."""
    groups = [g for g in data.groups.values() if g.stability]
    if not groups:
        return None
    notes: list[str] = []
    found = [(g, r) for g in groups for r in [data.load(BlockStability.load, g.stability, notes)] if r is not None]
    if not found:
        return Section("stability", "Block stability across seeds", "", notes)
    rows = []
    for g, result in found:
        largest = [f"{b.start}–{b.end}" if b is not None else "none" for b in result.largest_blocks]
        fractions = result.block_fractions
        rows.append([esc(g.name), esc(len(result.results)), f"{fractions.mean():.2f} ± {fractions.std(ddof=1):.2f}",
                     fmt(result.mean_jaccard), esc(", ".join(largest))])
    fig, axes = panel_rows(len(found), (3.6, 2.5), columns=3, extra_width=0.0)
    for ax, (g, result) in zip(axes, found):
        plot_block_frequency(result, ax)
        ax.set_title(f"{g.name}\n{len(result.results)} seeds, mean Jaccard {result.mean_jaccard:.2f}", fontsize=9)
    seeds = sorted({len(r.results) for _, r in found})
    figure = figure_html(fig, "share of seeds with each layer in a block", (
        f"Share of the seeds ({' or '.join(map(str, seeds))} per architecture) in which each analysed layer lies "
        "inside a block."))
    header = ["group", "seeds", "block fraction (mean ± std)", "mean Jaccard of in-block layers",
              "largest block per seed"]
    text = para("Jaccard: overlap of the sets of in-block layers of two seeds (1: the same layers), averaged over "
                "pairs.")
    return Section("stability", "Block stability across seeds", text + table_html(header, rows) + figure, notes)


def _corresponding_layers(matrix: np.ndarray, blocks: BlockResult | None) -> str:
    """Mean CKA of each layer with the same layer of the other seed, inside and outside the first seed's blocks."""
    diagonal = np.diag(matrix)
    if blocks is None or not blocks.blocks:
        return f"{np.nanmean(diagonal):.2f} (no blocks)"
    inside = np.zeros(len(diagonal), dtype=bool)
    inside[np.asarray(blocks.layer_indices)[blocks.in_block]] = True
    parts = [f"{label} {np.nanmean(diagonal[mask]):.2f}" for label, mask in (("in-block layers", inside),
                                                                           ("other layers", ~inside)) if mask.any()]
    return ", ".join(parts)


@report_section(80, "cross_seed")
def cross_seed_section(data: ReportData) -> Section | None:
    """CKA between two models that differ only in their seed, averaged over the pairs of each group."""
    pairs = data.summary.cross_seed
    if not pairs:
        return None
    notes: list[str] = []
    by_group: dict[str, list[tuple[CrossSeedPair, CKAResult]]] = {}
    for pair in pairs:
        result = data.load(CKAResult.load, pair.path, notes)
        group = data.group_of(pair.a)
        if result is not None:
            by_group.setdefault(group.name if group else pair.a, []).append((pair, result))
    if not by_group:
        return Section("cross-seed", "Cross-seed CKA", "", notes)
    fig, axes = panel_rows(len(by_group), (3.0, 3.1))
    numbers, spread = [], []
    for ax, (name, found) in zip(axes, by_group.items()):
        averaged = average_heatmaps([r for _, r in found])
        plot_heatmap(averaged.matrix, ax, colorbar=False)
        first, second = data.model(found[0][0].a), data.model(found[0][0].b)
        if len(found) > 1:
            ax.set_title(f"{name}\nmean of {len(found)} pairs", fontsize=9)
            spread.append(averaged)
        else:
            seeds = f"seeds {first.seed} vs {second.seed}" if first and second else "two seeds"
            ax.set_title(f"{name}\n{seeds}", fontsize=9)
        ax.set_ylabel("layer, first seed")
        ax.set_xlabel("layer, second seed")
        blocks = data.load(BlockResult.load, first.path("blocks"), notes) if first else None
        numbers.append(f"{name} {_corresponding_layers(averaged.matrix, blocks)}")
    fig.colorbar(axes[0].images[0], ax=axes, label=measure_label(found[0][1]), shrink=0.85)
    counts = sorted({len(found) for found in by_group.values()})
    caption = (f"Linear CKA between the layers of two models of one architecture that differ only in their random seed "
               f"({' or '.join(map(str, counts))} pair{'s' if counts[-1] > 1 else ''} each, {_cka_phrase(by_group[next(iter(by_group))][0][1])}). "
               "Same layer across seeds, mean CKA: " + "; ".join(numbers) + ".")
    body = figure_html(fig, "cross-seed CKA heatmaps", caption)
    for averaged in spread:
        left, _ = plot_averaged_heatmap(averaged)
        body += figure_html(left.figure, "cross-seed CKA spread", (
            f"Mean and standard deviation per cell over the {averaged.num_pairs} cross-seed pairs of one "
            "architecture."))
    text = para("The paper finds that the block structure is unique to each model: layers inside a block resemble the "
                "same layers of another seed less than the layers outside blocks do.")
    return Section("cross-seed", "Cross-seed CKA", text + body, notes)


__all__ = ["block_table_section", "cross_seed_section", "heatmap_grid_section", "stability_section"]
