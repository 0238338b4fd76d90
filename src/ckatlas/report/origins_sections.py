"""The report's section on where blocks come from (`ckatlas.analysis.origins`): each block's score on the
heatmap, without its dominant examples, without as many random ones and with normalised activations, and
the dominant examples themselves."""

from __future__ import annotations


import numpy as np
from matplotlib.figure import Figure

from ckatlas.analysis.origins import BlockOrigins
from ckatlas.report._page import ReportData, Section, esc, figure_html, fmt, para, table_html, report_section
from ckatlas.io.summary import ModelEntry

#: Models whose dominant examples are drawn (the rest are in the table).
MAX_DRAWN = 6


def _image(picture: np.ndarray) -> np.ndarray:
    """An input as an image: (C, H, W) to (H, W) or (H, W, 3), each scaled to [0, 1]."""
    x = np.asarray(picture, dtype=np.float64)
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-12)
    if x.ndim == 3:
        return x[0] if x.shape[0] == 1 else np.moveaxis(x[:3], 0, -1)
    return x


def dominant_figure(found: list[tuple[ModelEntry, BlockOrigins]]) -> Figure | None:
    """One row per block (of up to `MAX_DRAWN` models): its most dominant inputs, most first."""
    rows = [(m, o, b) for m, o in found for b in range(len(o.blocks)) if o.images.ndim >= 4][:MAX_DRAWN]
    if not rows:
        return None
    shown = max(o.images.shape[1] for _, o, _ in rows)
    fig = Figure(figsize=(1.0 * shown + 2.6, 1.1 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), shown, squeeze=False)
    for row, (model, origins, b) in zip(axes, rows):
        start, end = origins.blocks[b]
        for k, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if k < origins.images.shape[1]:
                ax.imshow(_image(origins.images[b, k]), cmap="gray")
                ax.set_xlabel(f"#{int(origins.dominant[b, k])}", fontsize=6)
            else:
                ax.set_axis_off()
        row[0].set_ylabel(f"{model.name}\nlayers {start}-{end}", fontsize=6.5, rotation=0, ha="right",
                          va="center")
    return fig


@report_section(100, "origins")
def origins_section(data: ReportData) -> Section | None:
    """Each traced block's scores and its dominant examples."""
    if not any(m.has("origins") for m in data.models):
        return None
    notes: list[str] = []
    found = []
    for model in data.models:
        result = data.load(BlockOrigins.load, model.path("origins"), notes)
        if result is not None and result.blocks:
            found.append((model, result))
    rows = []
    for model, origins in found:
        scores, share = origins.scores(), origins.dominant_share()
        for b, (start, end) in enumerate(origins.blocks):
            rows.append([esc(model.name), f"{start}–{end}", f"{share[b]:.0%}", fmt(scores["cka"][b]),
                         fmt(scores["cka_without"][b]), fmt(scores["cka_random"][b]), fmt(scores["cka_normalised"][b])])
    text = para(
        "Nguyen, Raghu & Kornblith (2022) trace block structure to a few dominant examples with very large "
        "activations along the block's first principal component. For each block: the share of its first PC that "
        "its most dominant examples carry, and its contrast score on the heatmap, on the heatmap without those "
        "examples, without as many random examples (the control), and with each example's activations scaled to "
        "unit length. A block the dominant examples carry falls without them, more than without random ones."
    )
    if not rows:
        return Section("origins", "Where the blocks come from", text + para("No traced model has a block."), notes)
    header = ["model", "block (layers)", "PC1 share of the dominant", "score", "without dominant",
              "without random", "normalised"]
    body = text + table_html(header, rows)
    fig = dominant_figure(found)
    if fig is not None:
        body += figure_html(fig, "the most dominant examples of each block",
                            "The inputs that dominate each block's first principal component, most dominant first "
                            "(their index in the test examples below each).")
    return Section("origins", "Where the blocks come from", body, notes)


__all__ = ["dominant_figure", "origins_section"]
