"""The figure of a layer-removal result (`ckatlas.hf.LayerRemoval`)."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ckatlas.report.block_figures import outline_spans
from ckatlas.heatmap.figures import plot_heatmap

_LABELS = {"cka": "CKA (blocks)", "angular": "angular distance (Gromov et al.)",
           "block_influence": "Block Influence (ShortGPT)"}


def _plain_log_ticks(axis, values) -> None:
    """Ticks of a log axis as plain numbers (515, not 5.15x10^2), few enough not to touch:
    evenly spread values over less than a decade, else 1, 2 and 5 times the powers of ten."""
    finite = [v for v in values if np.isfinite(v) and v > 0]
    narrow = bool(finite) and max(finite) < 10 * min(finite)
    axis.set_major_locator(MaxNLocator(nbins=5) if narrow else LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def removal_figure(result) -> Figure:  # result: ckatlas.hf.LayerRemoval
    """Left: CKA between the layer stack's boundaries, blocks outlined. Middle: each layer's
    Block Influence and the CKA of its input with its output. Right: the held-out metric
    after n layers removed, one line per criterion (when measured)."""
    fig = Figure(figsize=(14, 4), layout="constrained")
    ax_map, ax_layer, ax_curve = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1, 1.2]})
    plot_heatmap(result.cka, ax_map, title="CKA between layer boundaries", groups=False)
    outline_spans(ax_map, result.blocks, color="cyan", linewidth=1.2)
    ax_map.set_xlabel("boundary (0: input of layer 0)")
    ax_map.set_ylabel("boundary")
    count = len(result.layers)
    ax_layer.plot(range(count), result.block_influence, marker="o", label="Block Influence (1 - cos)")
    ax_layer.plot(range(count), [result.cka[i, i + 1] for i in range(count)], marker="s", label="CKA(input, output)")
    ax_layer.set_xlabel("layer")
    ax_layer.set_ylim(-0.03, 1.03)
    ax_layer.legend(fontsize=7)
    ax_layer.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_layer.set_title("per layer")
    if result.curves:
        drawn: list[tuple[str, np.ndarray]] = []
        markers, styles = ("o", "s", "^", "D"), ("-", "--", ":", "-.")
        for k, (name, curve) in enumerate(result.curves.items()):
            values = np.exp(curve) if result.metric == "loss" else np.asarray(curve)
            same = [other for other, seen in drawn if len(seen) == len(values) and np.allclose(seen, values)]
            label = _LABELS.get(name, name) + (f" (= {', '.join(_LABELS.get(o, o) for o in same)})" if same else "")
            # each criterion its own marker and line style, so that equal curves show as overlapping, not one
            ax_curve.plot(range(len(curve)), values, marker=markers[k % 4], linestyle=styles[k % 4],
                          markersize=7 - 1.5 * len(same), markerfacecolor="none" if same else None, label=label)
            drawn.append((name, values))
        if result.metric == "loss":
            ax_curve.set_yscale("log")
            _plain_log_ticks(ax_curve.yaxis, [v for c in result.curves.values() for v in np.exp(c)])
            ax_curve.set_ylabel("held-out perplexity")
            base = math.exp(next(iter(result.curves.values()))[0])
            ax_curve.axhline(base, color="grey", linewidth=0.8, linestyle=":")
            healing = getattr(result, "healing", None)
            if healing:
                ax_curve.plot([healing["n"]], [math.exp(healing["loss_after"])], marker="*", markersize=12,
                              color="black", linestyle="none",
                              label=f"{_LABELS.get(healing['criterion'], healing['criterion'])}, healed "
                                    f"({healing['steps']} steps)")
        else:
            ax_curve.set_ylabel("held-out accuracy")
        ax_curve.set_xlabel("layers removed")
        ax_curve.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_curve.legend(fontsize=7)
        ax_curve.set_title("removal curves")
    else:
        ax_curve.set_axis_off()
    return fig


__all__ = ["removal_figure"]
