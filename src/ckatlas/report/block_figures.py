"""Figures of the block structure: outlines on a CKA heatmap, and stability across models.

Figures are made without pyplot (no global state, no window); when no `ax` is given a new
`matplotlib.figure.Figure` is made. Save with ``ax.figure.savefig(path)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ckatlas.analysis.blocks import BlockResult
from ckatlas.analysis.stability import BlockStability
from ckatlas.heatmap.figures import plot_heatmap


def outline_blocks(ax: Axes, result: BlockResult, *, original_rows: bool = False, color: str = "red") -> Axes:
    """Draw a square around each block on a heatmap already drawn on `ax`.

    Args:
        ax: axes holding a heatmap drawn with `imshow` (one cell per layer).
        result: the blocks.
        original_rows: place the squares by the rows of the full input matrix instead of
            the analysed layers (when the heatmap shows all layers but the blocks were
            found on a subset).
        color: outline colour.
    """
    spans = [(b.start, b.end) for b in result.blocks]
    if original_rows:
        spans = [(result.layer_indices[lo], result.layer_indices[hi]) for lo, hi in spans]
    return outline_spans(ax, spans, color=color)


def outline_spans(ax: Axes, spans: Any, *, color: str = "red", linewidth: float = 1.5) -> Axes:
    """Draw a square around each (first, last) row span (inclusive) on a heatmap drawn on `ax`."""
    for lo, hi in spans:
        ax.add_patch(
            Rectangle((lo - 0.5, lo - 0.5), hi - lo + 1, hi - lo + 1, fill=False, edgecolor=color, linewidth=linewidth)
        )
    return ax


def label_scores(ax: Axes, result: BlockResult, *, original_rows: bool = False, color: str = "cyan") -> Axes:
    """Write each block's contrast score at its top left corner (as `outline_blocks` places the squares)."""
    for b in result.blocks:
        if np.isfinite(b.score):
            start, end = (result.layer_indices[b.start], result.layer_indices[b.end]) if original_rows else (b.start, b.end)
            ax.text(start - 0.5, end + 0.5, f"{b.score:.2f}", color=color, fontsize=7, va="bottom", ha="left")
    return ax


def plot_blocks(cka_matrix: Any, result: BlockResult, ax: Axes | None = None, *, title: str | None = None) -> Axes:
    """Heatmap of the analysed layers' CKA with the blocks outlined.

    Args:
        cka_matrix: the matrix the blocks were found in (array or object with ``.matrix``).
        result: the blocks found in it.
        ax: axes to draw on (a new figure when None).
        title: axes title (default: block count and block_fraction).
    """
    matrix = np.asarray(getattr(cka_matrix, "matrix", cka_matrix), dtype=float)
    rows = np.asarray(result.layer_indices)
    ax = plot_heatmap(matrix[np.ix_(rows, rows)], ax)
    outline_blocks(ax, result, color="cyan")
    label_scores(ax, result)
    ax.set_title(title or f"{len(result.blocks)} block(s), block fraction {result.block_fraction:.2f}, "
                          f"strength {result.block_strength:.2f}")
    return ax


def plot_block_frequency(stability: BlockStability, ax: Axes | None = None) -> Axes:
    """Bar chart: share of models (e.g. seeds) in which each layer lies inside a block."""
    if ax is None:
        ax = Figure(figsize=(6, 2.5)).subplots()
    freq = stability.layer_frequency
    ax.bar(np.arange(len(freq)), freq, width=1.0, color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.5, len(freq) - 0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("share of models in a block")
    ax.set_title(f"{len(stability.results)} models, mean Jaccard {stability.mean_jaccard:.2f}")
    return ax


__all__ = ["outline_blocks", "outline_spans", "plot_block_frequency", "plot_blocks"]
