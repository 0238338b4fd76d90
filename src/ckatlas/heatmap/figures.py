"""CKA heatmaps in the paper's style: layers from input to output on both axes,
origin lower left, colour scale fixed to 0..1.

Figures are made without pyplot (no global state, no window); when no `ax` is given
a new `matplotlib.figure.Figure` is made, sized for the layer names and laid out so
that every label lies inside it. Save with ``ax.figure.savefig(path)``.

Layer labels (`layer_ticks`): up to `MAX_NAMED_LAYERS` layers, every layer's name,
in a font sized to the rows; beyond, the name of each group of layers (a stage of a
ResNet, a transformer block) at its middle, groups too narrow for a label left
unlabelled. Groups (`layer_groups`): the dotted name up to its first number
(``stage2.3.add`` -> ``stage2``); where one group would hold most layers (the
``encoder.layer`` of a transformer) the name up to and including the number
(``encoder.layer.3``). Group boundaries are drawn as thin lines.
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
MAX_NAMED_LAYERS = 48  # more layers than this are labelled by group
_MIN_FONT, _MAX_FONT = 4.0, 8.0  # points


def _matrix(result: Any) -> np.ndarray:
    matrix = np.asarray(getattr(result, "matrix", result), dtype=float)
    if matrix.ndim != 2:
        raise UserInputError(f"a heatmap needs a 2-D CKA matrix (or a CKAResult), got shape {matrix.shape}")
    return matrix


def _default_title(result: Any) -> str | None:
    if not hasattr(result, "model_a"):
        return None
    return result.model_a if result.is_square else f"{result.model_a} vs {result.model_b}"


def layer_groups(names: Sequence[str]) -> list[tuple[str, int, int]]:
    """(group name, first index, last index) of consecutive layers of one stage or block (module docstring)."""
    def runs(keys: list[str]) -> list[tuple[str, int, int]]:
        out: list[tuple[str, int, int]] = []
        for i, key in enumerate(keys):
            if out and out[-1][0] == key:
                out[-1] = (key, out[-1][1], i)
            else:
                out.append((key, i, i))
        return out

    names = [str(n) for n in names]
    stages = runs([_group_key(n, inclusive=False) for n in names])
    if names and max(hi - lo + 1 for _, lo, hi in stages) > 0.6 * len(names):
        blocks = runs([_group_key(n, inclusive=True) for n in names])
        if len(blocks) > len(stages):
            return blocks
    return stages


def _group_key(name: str, inclusive: bool) -> str:
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1] if inclusive else parts[:i]) or part
    return parts[0]


def _usable_groups(names: Sequence[str]) -> list[tuple[str, int, int]] | None:
    """Groups worth marking: at least two, most of them more than one layer."""
    groups = layer_groups(names)
    return groups if 2 <= len(groups) <= len(names) / 2 else None


def _group_names(names: Sequence[str]) -> list[str]:
    out = [""] * len(names)
    for g, lo, hi in layer_groups(names):
        out[lo : hi + 1] = [g] * (hi - lo + 1)
    return out


def _label_axis(ax: Axes, axis: str, names: Sequence[str], inches: float) -> None:
    """Every layer's name, or group names for many layers (module docstring)."""
    rotation = 90
    # the names themselves take room from the panel (about 0.6 em per character): the font that fits
    # every name in what is left, or group names when that font would be too small to read
    longest = max((len(str(n)) for n in names), default=0)
    fitting = 0.8 * 72.0 * inches / max(len(names), 1) / (1.0 + 0.8 * 0.6 * longest / max(len(names), 1))
    if len(names) <= MAX_NAMED_LAYERS and fitting >= _MIN_FONT:
        positions, labels = np.arange(len(names)), list(names)
        size = min(fitting, _MAX_FONT)
    else:
        rotation = 0
        size, per_layer = _MAX_FONT, inches / len(names)  # inches of axis per layer
        # a group is labelled where its span holds its label: the text's length along x, its height along y
        extent = (lambda g: 0.6 * len(g)) if axis == "x" else (lambda g: 1.3)
        wide = [(g, lo, hi) for g, lo, hi in _usable_groups(names) or []
                if (hi - lo + 1) * per_layer >= extent(g) * size / 72.0]
        positions = np.array([(lo + hi) / 2 for _, lo, hi in wide])
        labels = [g for g, _, _ in wide]
    if axis == "x":
        ax.set_xticks(positions, labels, rotation=rotation, fontsize=size)
    else:
        ax.set_yticks(positions, labels, fontsize=size)


def _mark_groups(ax: Axes, axis: str, names: Sequence[str]) -> None:
    groups = _usable_groups(names)
    if groups is None:
        return
    line = ax.axvline if axis == "x" else ax.axhline
    for _, lo, _ in groups[1:]:
        line(lo - 0.5, color="white", linewidth=0.6, alpha=0.7)


def _figure_size(result: Any, colorbar: bool, names: bool) -> tuple[float, float]:
    """Inches: a square-ish heatmap panel plus room for the longest label and the colour bar."""
    rows = len(getattr(result, "layers_a", [])) or _matrix(result).shape[0]
    side = 4.5 if not names else float(np.clip(0.12 * min(rows, MAX_NAMED_LAYERS) + 1.5, 4.5, 7.5))
    label = 0.0
    if names:
        shown = [n if len(layers) <= MAX_NAMED_LAYERS else g
                 for layers in (result.layers_a, result.layers_b)
                 for n, g in zip(layers, _group_names(layers))]
        longest = max((len(str(n)) for n in shown), default=0)
        label = min(3.0, 0.06 * longest)  # about 0.06 in per character at 7-8 pt
    return side + label + (1.0 if colorbar else 0.2), side + label + 0.6


def plot_heatmap(
    result: Any,
    ax: Axes | None = None,
    *,
    layer_ticks: bool | None = None,
    title: str | None = None,
    colorbar: bool = True,
    groups: bool = True,
    value_range: tuple[float, float] | str = (0.0, 1.0),
) -> Axes:
    """Draw one CKA heatmap: model A's layers up the y axis, model B's along the x axis.

    Args:
        result: a `CKAResult` or an (La, Lb) array.
        ax: axes to draw on (a new figure when None).
        layer_ticks: label the ticks with layer names (a `CKAResult` only; all of
            them up to `MAX_NAMED_LAYERS` layers, else group names) instead of layer
            indices. None: names when this call makes the figure, indices on a given `ax`.
        title: axes title (default: the model name(s) of a `CKAResult`).
        colorbar: add a colour bar (CKA, 0..1).
        groups: mark the boundaries of stages or blocks found in the layer names.
        value_range: the values the colour scale spans: (low, high), by default the measure's
            0..1 (heatmaps comparable with one another), or "own": this heatmap's lowest to highest
            finite value off the diagonal, which shows what stands out in a heatmap whose values
            all lie in a narrow band (a bright one reads as uniform on 0..1).

    Returns:
        The axes. NaN cells (layers with zero variance) are grey.
    """
    matrix = _matrix(result)
    vmin, vmax = colour_range(matrix, value_range)
    has_names = hasattr(result, "layers_a") and hasattr(result, "layers_b")
    if layer_ticks is None:
        layer_ticks = ax is None and has_names
    layer_ticks = bool(layer_ticks) and has_names
    if ax is None:
        ax = Figure(figsize=_figure_size(result, colorbar, layer_ticks), layout="constrained").subplots()
    cmap = colormaps[CMAP].with_extremes(bad="lightgrey")
    image = ax.imshow(
        np.ma.masked_invalid(matrix),
        origin="lower",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        aspect="auto",
    )
    square = getattr(result, "is_square", False)
    name_a = getattr(result, "model_a", None)
    name_b = getattr(result, "model_b", None)
    ax.set_ylabel("layer" if square or name_a is None else f"layer of {name_a}")
    ax.set_xlabel("layer" if square or name_b is None else f"layer of {name_b}")
    if layer_ticks:
        height = ax.get_position().height * ax.figure.get_figheight()
        width = ax.get_position().width * ax.figure.get_figwidth()
        _label_axis(ax, "y", result.layers_a, height)
        _label_axis(ax, "x", result.layers_b, width)
    if groups and has_names:
        _mark_groups(ax, "y", result.layers_a)
        _mark_groups(ax, "x", result.layers_b)
    title = title if title is not None else _default_title(result)
    if title:
        ax.set_title(title)
    if colorbar:
        own = " (this heatmap's range)" if isinstance(value_range, str) else ""
        ax.figure.colorbar(image, ax=ax, label=measure_label(result) + own, shrink=0.9)
    return ax


def colour_range(matrix: np.ndarray, value_range: tuple[float, float] | str) -> tuple[float, float]:
    """(vmin, vmax) of `plot_heatmap`'s `value_range`: a pair as given, or "own" (the off-diagonal
    finite values' lowest and highest; 0..1 when there are none or they are all equal)."""
    if isinstance(value_range, str):
        if value_range != "own":
            raise UserInputError(f"value_range must be (low, high) or 'own', got {value_range!r}")
        cells = np.asarray(matrix, dtype=float)  # 2-D (`_matrix`)
        square = cells.shape[0] == cells.shape[1]  # a model against itself: its diagonal of 1s left out
        off = cells[~np.eye(*cells.shape, dtype=bool)] if square else cells.ravel()
        off = off[np.isfinite(off)]
        if off.size == 0 or off.min() == off.max():
            return 0.0, 1.0
        return float(off.min()), float(off.max())
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise UserInputError(f"value_range must be (low, high) or 'own', got {value_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise UserInputError(f"value_range must be two finite numbers with low < high, got {value_range!r}")
    return low, high


def measure_label(result: Any) -> str:
    """What a heatmap's colours mean: its measure's label (`ckatlas.cka.measures`)."""
    from ckatlas.cka.measures import MEASURES

    measure = getattr(result, "metadata", {}).get("measure", "cka")
    return MEASURES[measure].label if measure in MEASURES else str(measure)


def figure_png(ax: Axes, dpi: int = 150) -> bytes:
    """The figure holding `ax`, as PNG bytes (for notebooks: `CKAResult._repr_png_`)."""
    import io

    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


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
        title = _default_title(results[i]) if titles is None else titles[i]
        plot_heatmap(results[i], ax, layer_ticks=layer_ticks, title=(title or "").replace(" vs ", "\nvs "),
                     colorbar=False)
        ax.title.set_fontsize(9)
    image = axes[0].images[0]
    labels = {measure_label(r) for r in results}
    fig.colorbar(image, ax=list(axes), label=labels.pop() if len(labels) == 1 else "similarity", shrink=0.8)
    return fig


__all__ = ["MAX_NAMED_LAYERS", "colour_range", "figure_png", "layer_groups", "plot_heatmap", "plot_heatmap_grid"]
