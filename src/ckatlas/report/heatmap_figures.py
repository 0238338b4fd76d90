"""CKA heatmaps in the paper's style: layer index from input to output on both axes,
origin lower left, colour scale fixed to 0..1.

Figures are made without pyplot (no global state, no window); when no `ax` is given
a new `matplotlib.figure.Figure` is made. Save with ``ax.figure.savefig(path)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ckatlas.errors import UserInputError

CMAP = "magma"
_MAX_TICKS = 40  # more layer names than this are thinned out


def _matrix(result: Any) -> np.ndarray:
    matrix = np.asarray(getattr(result, "matrix", result), dtype=float)
    if matrix.ndim != 2:
        raise UserInputError(f"a heatmap needs a 2-D CKA matrix (or a CKAResult), got shape {matrix.shape}")
    return matrix


def _default_title(result: Any) -> str | None:
    if not hasattr(result, "model_a"):
        return None
    return result.model_a if result.is_square else f"{result.model_a} vs {result.model_b}"


def _name_ticks(ax: Axes, axis: str, names: Sequence[str]) -> None:
    step = max(1, math.ceil(len(names) / _MAX_TICKS))
    positions = np.arange(0, len(names), step)
    labels = [names[i] for i in positions]
    if axis == "x":
        ax.set_xticks(positions, labels, rotation=90, fontsize=6)
    else:
        ax.set_yticks(positions, labels, fontsize=6)


def plot_heatmap(
    result: Any,
    ax: Axes | None = None,
    *,
    layer_ticks: bool = False,
    title: str | None = None,
    colorbar: bool = True,
) -> Axes:
    """Draw one CKA heatmap: model A's layers up the y axis, model B's along the x axis.

    Args:
        result: a `CKAResult` or an (La, Lb) array.
        ax: axes to draw on (a new figure when None).
        layer_ticks: label the ticks with layer names (a `CKAResult` only) instead
            of layer indices.
        title: axes title (default: the model name(s) of a `CKAResult`).
        colorbar: add a colour bar (CKA, 0..1).

    Returns:
        The axes. NaN cells (layers with zero variance) are grey.
    """
    matrix = _matrix(result)
    if ax is None:
        ax = Figure(figsize=(5, 4.5) if colorbar else (4.2, 4)).subplots()
    cmap = colormaps[CMAP].with_extremes(bad="lightgrey")
    image = ax.imshow(
        np.ma.masked_invalid(matrix),
        origin="lower",
        cmap=cmap,
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
        aspect="auto",
    )
    square = getattr(result, "is_square", False)
    name_a = getattr(result, "model_a", None)
    name_b = getattr(result, "model_b", None)
    ax.set_ylabel("layer" if square or name_a is None else f"layer of {name_a}")
    ax.set_xlabel("layer" if square or name_b is None else f"layer of {name_b}")
    if layer_ticks and hasattr(result, "layers_a"):
        _name_ticks(ax, "y", result.layers_a)
        _name_ticks(ax, "x", result.layers_b)
    title = title if title is not None else _default_title(result)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label="CKA")
    return ax


def plot_heatmap_grid(
    results: Sequence[Any] | Mapping[str, Any],
    nrows: int | None = None,
    ncols: int | None = None,
    *,
    titles: Sequence[str] | None = None,
    layer_ticks: bool = False,
    panel_size: float = 2.6,
) -> Figure:
    """Many heatmaps side by side with one shared colour bar (e.g. a depth x width grid).

    Args:
        results: `CKAResult`s or arrays, row by row; or {title: result}.
        nrows, ncols: grid shape (default: as square as possible); a missing one
            is worked out from the other.
        titles: one title per panel (default: the keys of a mapping, or the model names).
        layer_ticks: label ticks with layer names.
        panel_size: inches per panel.

    Returns:
        The figure.
    """
    if isinstance(results, Mapping):
        titles = list(results) if titles is None else titles
        results = list(results.values())
    results = list(results)
    k = len(results)
    if k == 0:
        raise UserInputError("plot_heatmap_grid needs at least one heatmap")
    if titles is not None and len(titles) != k:
        raise UserInputError(f"{len(titles)} titles for {k} heatmaps: give one title per heatmap")
    if nrows is None and ncols is None:
        ncols = math.ceil(math.sqrt(k))
    if nrows is None:
        nrows = math.ceil(k / ncols)
    elif ncols is None:
        ncols = math.ceil(k / nrows)
    if nrows * ncols < k:
        raise UserInputError(f"a {nrows} x {ncols} grid has room for {nrows * ncols} heatmaps, not {k}")
    fig = Figure(figsize=(panel_size * ncols + 0.8, panel_size * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        if i >= k:
            ax.set_axis_off()
            continue
        title = None if titles is None else titles[i]
        plot_heatmap(results[i], ax, layer_ticks=layer_ticks, title=title, colorbar=False)
    image = axes[0].images[0]
    fig.colorbar(image, ax=list(axes), label="CKA", shrink=0.8)
    return fig


__all__ = ["plot_heatmap", "plot_heatmap_grid"]
