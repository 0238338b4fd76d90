"""The report's section on block structure through training ([analyses.dynamics]).

A timeline (block fraction and mean first-PC variance against epoch, one line per
architecture, the mean over its seeds), a table of the same numbers, and the strip of
heatmaps of the model whose block structure ends largest.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ckatlas.analysis.dynamics import BlockDynamics
from ckatlas.report._page import ReportData, Section, esc, fmt, figure_html, para, table_html, report_section
from ckatlas.io.summary import ModelEntry
from ckatlas.report.dynamics_figures import dynamics_figure


def _architecture(model: ModelEntry) -> tuple[Any, ...]:
    return (model.depth, model.width, model.residual, model.fraction, model.family)


def _label(model: ModelEntry, several_kinds: bool) -> str:
    text = f"{'ViT ' if model.family == 'vit' else ''}depth {model.depth}, width {model.width:g}"
    if several_kinds:
        text += ("" if model.residual else ", no skips") + ("" if model.fraction == 1 else f", {model.fraction:g} data")
    return text


@report_section(90, "dynamics")
def dynamics_section(data: ReportData) -> Section | None:
    """Block fraction and first-PC variance through training, per architecture (mean over seeds)."""
    models = [m for m in data.models if m.has("dynamics")]
    if not models:
        return None
    notes: list[str] = []
    records = {m.name: data.load(BlockDynamics.load, m.path("dynamics"), notes) for m in models}
    by_arch: dict[tuple[Any, ...], list[tuple[ModelEntry, BlockDynamics]]] = defaultdict(list)
    for m in models:
        if records[m.name] is not None:
            by_arch[_architecture(m)].append((m, records[m.name]))
    if not by_arch:
        return Section("dynamics", "Block structure through training", para("No readable record."), notes)
    several = len({(a[2], a[3], a[4]) for a in by_arch}) > 1
    depths = sorted({a[0] for a in by_arch})
    widths = sorted({a[1] for a in by_arch})
    cmap, styles, markers = colormaps["viridis"], ["-", "--", ":", "-."], ["o", "s", "^", "D", "v", "P"]
    columns = 4  # legend entries per row, under the panels: a legend inside a panel hides the lines
    fig = Figure(figsize=(10, 3.4 + 0.19 * -(-len(by_arch) // columns)), layout="constrained")
    ax_bf, ax_pc = fig.subplots(1, 2)
    rows, epochs_all = [], sorted({int(e) for _, r in (x for v in by_arch.values() for x in v) for e in r.epochs})
    for arch in sorted(by_arch):
        members = by_arch[arch]
        common = sorted(set.intersection(*(set(int(e) for e in r.epochs) for _, r in members)))
        fraction = np.array([[r.block_fraction[list(r.epochs).index(e)] for e in common] for _, r in members])
        pc1 = np.array([[r.mean_variance_explained()[list(r.epochs).index(e)] for e in common] for _, r in members])
        colour = cmap(depths.index(arch[0]) / max(len(depths) - 1, 1) * 0.85)
        style = styles[widths.index(arch[1]) % len(styles)]
        marker = markers[widths.index(arch[1]) % len(markers)]
        label = _label(members[0][0], several)
        ax_bf.plot(common, fraction.mean(0), style, color=colour, marker=marker, markersize=3, label=label)
        ax_pc.plot(common, np.nanmean(pc1, 0), style, color=colour, marker=marker, markersize=3)
        values = dict(zip(common, fraction.mean(0)))
        rows.append([esc(label), str(len(members))] + [fmt(values.get(e)) if e in values else "–" for e in epochs_all]
                    + [fmt(float(np.nanmean(pc1[:, 0]))), fmt(float(np.nanmean(pc1[:, -1])))])
    for ax, what in ((ax_bf, "block fraction"), (ax_pc, "mean first-PC variance share")):
        ax.set_xlabel("epoch (0: initialisation)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(what)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(columns, len(by_arch)), fontsize=7, handlelength=3.5,
               frameon=False)
    first = next(iter(by_arch.values()))[0][1]
    examples = first.metadata.get("examples", "?")
    parts = [figure_html(fig, "block fraction and first-PC variance against epoch", (
        f"Left: share of layers inside a block; right: the mean over layers of each layer's first-PC share of its "
        f"variance; at each recorded epoch, on {examples} test images; one line per architecture (mean over its "
        f"seeds); colour: depth, line style and marker: width."))]
    parts.append(table_html(
        ["architecture", "seeds"] + [f"epoch {e}" for e in epochs_all] + ["PC1 at first record", "PC1 at last"], rows))

    chosen, record = max(((m, r) for v in by_arch.values() for m, r in v),
                         key=lambda mr: (mr[1].block_fraction[-1], mr[0].depth, mr[0].width, -mr[0].seed))
    parts.append(figure_html(dynamics_figure(record), f"block structure of {chosen.name} through training", (
        f"{chosen.name}, the model whose block fraction ends largest ({record.block_fraction[-1]:.2f}): its "
        f"heatmap at each recorded epoch, blocks outlined; left, its block fraction and mean first-PC variance.")))
    text = para("The paper leaves open how the block structure arises during training. Each run recorded, while it "
                "trained, the heatmap of its layers on a fixed set of test images at the epochs below (the block "
                "detector of [analyses.blocks]); epoch 0 is the network at initialisation.")
    return Section("dynamics", "Block structure through training", text + "".join(parts), notes)


__all__ = ["dynamics_section"]
