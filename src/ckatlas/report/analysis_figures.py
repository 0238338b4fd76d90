"""Figures of the principal-component, probe, pruning and cross-model analyses.

Figures are made without pyplot (no global state, no window); when no `ax` is given
a new `matplotlib.figure.Figure` is made. Save with ``ax.figure.savefig(path)``.
Functions that draw side-by-side panels take and return a pair of axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ckatlas.analysis.across import AveragedCKA
from ckatlas.analysis.pca import PCAResult, PCScatter
from ckatlas.analysis.probes import ProbeResult
from ckatlas.analysis.prune import PruneResult
from ckatlas.errors import UserInputError
from ckatlas.heatmap.figures import plot_heatmap

_MAX_NAMED_TICKS = 30


def _pair(axes: Sequence[Axes] | None, width: float = 10.0) -> tuple[Axes, Axes]:
    if axes is None:
        fig = Figure(figsize=(width, 4.2), layout="constrained")
        left, right = fig.subplots(1, 2)
        return left, right
    axes = list(np.ravel(axes))
    if len(axes) != 2:
        raise UserInputError(f"this figure draws two panels: pass two axes, got {len(axes)}")
    return axes[0], axes[1]


def _layer_axis(ax: Axes, names: Sequence[str]) -> None:
    ax.set_xlim(-0.5, len(names) - 0.5)
    if len(names) <= _MAX_NAMED_TICKS:
        ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=6)
    else:
        ax.set_xlabel("layer")


# -- principal components ------------------------------------------------------------------------
def plot_pc_variance(result: PCAResult, ax: Axes | None = None) -> Axes:
    """Fraction of each layer's variance explained by its first principal component."""
    if ax is None:
        ax = Figure(figsize=(6, 3), layout="constrained").subplots()
    ax.plot(np.arange(len(result.layers)), result.variance_explained, marker="o", markersize=3)
    ax.set_ylim(0, 1)
    ax.set_ylabel("variance explained by PC1")
    _layer_axis(ax, result.layers)
    ax.set_title(f"first principal component ({result.n} examples)")
    return ax


def plot_pc_heatmaps(result: PCAResult, axes: Sequence[Axes] | None = None) -> tuple[Axes, Axes]:
    """Side by side: squared cosine of the layers' first PCs, and CKA with the first PC removed."""
    left, right = _pair(axes)
    plot_heatmap(result.pc_similarity, left, title="similarity of first PCs", colorbar=False)
    plot_heatmap(result.cka_without_pc1, right, title="CKA without the first PC", colorbar=False)
    left.figure.colorbar(left.images[0], ax=[left, right], label="cos$^2$ / CKA", shrink=0.9)
    return left, right


def plot_pc_scatter(
    scatter: PCScatter, ax: Axes | None = None, *, class_names: Sequence[str] | None = None, size: float = 6.0
) -> Axes:
    """The examples on the first two principal components of one layer, coloured by class."""
    if ax is None:
        ax = Figure(figsize=(5, 4.5), layout="constrained").subplots()
    x, y = scatter.coords[:, 0], scatter.coords[:, 1]
    if scatter.labels is None:
        ax.scatter(x, y, s=size, alpha=0.7)
    else:
        classes = np.unique(scatter.labels)
        cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for k, cls in enumerate(classes):
            keep = scatter.labels == cls
            name = class_names[int(cls)] if class_names is not None else str(cls)
            ax.scatter(x[keep], y[keep], s=size, alpha=0.7, color=cmap(k % cmap.N), label=name)
        if len(classes) <= 20:
            ax.legend(fontsize=6, markerscale=2, loc="best", frameon=False)
    v1, v2 = scatter.variance_ratio
    ax.set_xlabel(f"PC1 ({100 * v1:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * v2:.1f}% of variance)")
    ax.set_title(scatter.layer)
    return ax


# -- probes ------------------------------------------------------------------------------------------
_PROBE_STYLE = {
    "pre-residual": ("o", "tab:blue"),
    "post-residual": ("s", "tab:orange"),
    "block output": ("D", "tab:green"),
    "layer": ("^", "tab:gray"),
}


def plot_probe_accuracy(result: ProbeResult, ax: Axes | None = None) -> Axes:
    """Test accuracy of the linear probe of each layer, pre- and post-residual layers marked apart."""
    if ax is None:
        ax = Figure(figsize=(6, 3.2), layout="constrained").subplots()
    index = np.arange(len(result.layers))
    ax.plot(index, result.test_accuracy, color="lightgray", linewidth=1, zorder=1)
    kinds = np.array(result.kinds)
    for kind, (marker, color) in _PROBE_STYLE.items():
        keep = kinds == kind
        if keep.any():
            ax.plot(index[keep], result.test_accuracy[keep], marker, color=color, label=kind, markersize=5, zorder=2)
    ax.axhline(result.majority_accuracy, color="black", linestyle=":", linewidth=1, label="majority class")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("probe test accuracy")
    _layer_axis(ax, result.layers)
    ax.legend(fontsize=7, frameon=False)
    return ax


# -- pruning -----------------------------------------------------------------------------------------
def plot_pruning(result: PruneResult, ax: Axes | None = None) -> Axes:
    """Test accuracy against blocks deleted from the end of each stage; deletions inside a block ringed."""
    if ax is None:
        ax = Figure(figsize=(5.5, 3.5), layout="constrained").subplots()
    ax.axhline(result.unpruned_accuracy, color="black", linestyle="--", linewidth=1, label="unpruned")
    marked = False
    for k, stage in enumerate(result.stages):
        removed, accuracy = result.curve(stage)
        color = colormaps["tab10"](k % 10)
        ax.plot(removed, accuracy, marker="o", markersize=4, color=color, label=f"stage {stage}")
        steps = [s for s in result.steps if s.stage == stage and s.in_block]
        if steps:
            ax.plot([s.num_removed for s in steps], [s.accuracy for s in steps], "o", markersize=10,
                    markerfacecolor="none", markeredgecolor="red", label=None if marked else "inside a block")
            marked = True
    ax.set_xlabel("blocks deleted from the end of the stage")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.xaxis.get_major_locator().set_params(integer=True)
    title = "block deletion" + (f", {result.finetune_epochs} fine-tuning epoch(s)" if result.finetune_epochs else "")
    ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    return ax


# -- across models -----------------------------------------------------------------------------------
def plot_averaged_heatmap(result: AveragedCKA, axes: Sequence[Axes] | None = None) -> tuple[Axes, Axes]:
    """Side by side: the mean CKA over the pairs of models, and its standard deviation per cell."""
    left, right = _pair(axes)
    plot_heatmap(result, left, title=f"mean over {result.num_pairs} pairs")
    std = np.ma.masked_invalid(result.std)
    top = float(std.max()) if std.count() else 1.0
    image = right.imshow(std, origin="lower", cmap=colormaps["viridis"].with_extremes(bad="lightgrey"), vmin=0.0,
                         vmax=max(top, 1e-6), interpolation="nearest", aspect="auto")
    right.figure.colorbar(image, ax=right, label="std of CKA")
    right.set_title("spread across pairs")
    right.set_xlabel(left.get_xlabel())
    right.set_ylabel(left.get_ylabel())
    return left, right


__all__ = [
    "plot_averaged_heatmap",
    "plot_pc_heatmaps",
    "plot_pc_scatter",
    "plot_pc_variance",
    "plot_probe_accuracy",
    "plot_pruning",
]
