"""The figure of a run's block structure through training (`ckatlas.analysis.dynamics`)."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ckatlas.analysis.dynamics import BlockDynamics
from ckatlas.io.files import atomic_open
from ckatlas.report.block_figures import outline_spans
from ckatlas.heatmap.figures import plot_heatmap


PER_ROW = 8  # heatmaps per row of the strip


def dynamics_figure(record: BlockDynamics) -> Figure:
    """Left: block fraction and mean first-PC variance against epoch. Right: the heatmap of
    each recorded epoch, its blocks outlined (small multiples, in epoch order, rows of `PER_ROW`)."""
    count = len(record.epochs)
    cols = min(count, PER_ROW)
    rows = -(-count // cols)
    fig = Figure(figsize=(3.6 + 1.6 * cols, 0.4 + 2.0 * rows if rows > 1 else 2.4), layout="constrained")
    grid = fig.add_gridspec(rows, cols + 2, width_ratios=[2.2, 0.2] + [1.0] * cols)
    ax = fig.add_subplot(grid[:, 0])
    ax.plot(record.epochs, record.block_fraction, marker="o", label="block fraction")
    ax.plot(record.epochs, record.mean_variance_explained(), marker="s", label="mean PC1 variance")
    ax.set_xlabel("epoch")
    if count == 1:  # one point: an integer locator would find no integer in the padding around it
        ax.set_xticks(record.epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7)
    for k in range(count):
        sub = fig.add_subplot(grid[k // cols, k % cols + 2])
        plot_heatmap(record.cka[k], sub, colorbar=False, groups=False, layer_ticks=False,
                     title=f"epoch {int(record.epochs[k])}")
        outline_spans(sub, record.blocks[k], color="cyan", linewidth=1.0)
        sub.set_xticks([])
        sub.set_yticks([])
        sub.set_xlabel("")
        sub.set_ylabel("")
        sub.title.set_fontsize(8)
    return fig


def plot_dynamics(record: BlockDynamics, path: str | os.PathLike) -> Path:
    """Write `dynamics_figure(record)` as a PNG, atomically."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        dynamics_figure(record).savefig(fh, format="png", dpi=100)
    return path


__all__ = ["dynamics_figure", "plot_dynamics"]
