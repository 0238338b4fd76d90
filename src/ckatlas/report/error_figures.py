"""Figures of the error comparison: per-example scatters and per-class differences.

Figures are made without pyplot (no global state, no window); when no `ax` is given a new
`matplotlib.figure.Figure` is made. Save with ``ax.figure.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ckatlas.analysis.error_compare import ErrorComparison
from ckatlas.errors import UserInputError


def _count_scatter(ax: Axes, x: np.ndarray, y: np.ndarray, color: str) -> None:
    # Per-example accuracies take few distinct values (k / M): one dot per value pair, its area growing with
    # the square root of the number of examples there (so that a pair of a few examples stays visible beside
    # thousands on the diagonal), and with a few pairs (small populations) each count written beside its dot.
    pairs, counts = np.unique(np.stack([x, y], axis=1), axis=0, return_counts=True)
    ax.scatter(pairs[:, 0], pairs[:, 1], s=20 + 400 * np.sqrt(counts / counts.max()), color=color, alpha=0.6,
               linewidths=0)
    if len(pairs) <= 36:
        for (px, py), c in zip(pairs, counts):
            ax.annotate(str(c), (px, py), fontsize=7, ha="center", va="center")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_box_aspect(1)


def plot_example_scatter(comparison: ErrorComparison, axes: Sequence[Axes] | None = None) -> Sequence[Axes]:
    """Per-example accuracy of A against B, beside it the control (A's two halves), and the paired
    differences of both (per example, A - B against half 1 - half 2, counts on a log scale): the
    comparison the test makes, readable at any population size.

    Args:
        comparison: the result of `compare_populations`.
        axes: three axes to draw on (a new 1 x 3 figure when None).

    Returns:
        The three axes.
    """
    if axes is None:
        axes = Figure(figsize=(13, 4.5), layout="constrained").subplots(1, 3)
    ex = comparison.examples
    a, b = comparison.name_a, comparison.name_b
    _count_scatter(axes[0], ex.accuracy_a, ex.accuracy_b, "tab:blue")
    axes[0].set_xlabel(f"per-example accuracy, {a}")
    axes[0].set_ylabel(f"per-example accuracy, {b}")
    axes[0].set_title(f"{a} vs {b}\nD = {ex.statistic:.3g}, permutation p = {ex.p_value:.3g}", fontsize=10)
    _count_scatter(axes[1], ex.control_1, ex.control_2, "tab:grey")
    axes[1].set_xlabel(f"{a}, half 1 ({_models(len(ex.control_models_1))})")
    axes[1].set_ylabel(f"{a}, half 2 ({_models(len(ex.control_models_2))})")
    axes[1].set_title(f"control: two halves of {a}\nD = {ex.control_statistic:.3g}", fontsize=10)
    _differences(axes[2], np.asarray(ex.accuracy_a) - np.asarray(ex.accuracy_b),
                 np.asarray(ex.control_1) - np.asarray(ex.control_2), f"{a} - {b}", f"{a}: half 1 - half 2")
    return axes


def _differences(ax: Axes, pair: np.ndarray, control: np.ndarray, label: str, control_label: str) -> None:
    """Histograms of the per-example differences of the comparison and of the control, side by side."""
    edges = np.linspace(-1.0, 1.0, 22)
    width = (edges[1] - edges[0]) * 0.42
    centres = (edges[:-1] + edges[1:]) / 2
    for values, shift, color, name in ((pair, -width / 2, "tab:blue", label), (control, width / 2, "tab:grey",
                                                                                  control_label)):
        counts, _ = np.histogram(np.clip(values, -1.0, 1.0), bins=edges)
        ax.bar(centres + shift, counts, width=width, color=color, alpha=0.8, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("per-example accuracy difference")
    ax.set_ylabel("examples (log scale)")
    ax.set_title("per-example differences\n(spread wider than the control's: different errors)", fontsize=10)
    ax.legend(fontsize=8)


def _models(n: int) -> str:
    return f"{n} model" if n == 1 else f"{n} models"


def plot_class_differences(
    comparison: ErrorComparison, ax: Axes | None = None, *, level: str = "classes", top: int | None = 40
) -> Axes:
    """Bar chart of accuracy difference (A - B) per class or group; significant ones marked.

    Args:
        comparison: the result of `compare_populations`.
        ax: axes to draw on (a new figure when None).
        level: "classes" or "groups".
        top: show only the `top` largest absolute differences (None: all), in class order.
    """
    table = comparison.classes if level == "classes" else comparison.groups
    if table is None:
        raise UserInputError("this comparison has no class groups (compare_populations(..., class_groups=...))")
    diff = table.difference
    shown = np.arange(len(diff))
    if top is not None and len(diff) > top:
        shown = np.sort(np.argsort(-np.nan_to_num(np.abs(diff), nan=-1.0))[:top])
    if ax is None:
        ax = Figure(figsize=(max(4.0, 0.25 * len(shown) + 1.5), 3.5), layout="constrained").subplots()
    colors = ["tab:red" if table.significant[k] else "tab:grey" for k in shown]
    ax.bar(np.arange(len(shown)), diff[shown], color=colors)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(shown)), [table.names[k] for k in shown], rotation=90, fontsize=7)
    ax.set_ylabel(f"accuracy {comparison.name_a} - {comparison.name_b}")
    hits = int(table.significant.sum())
    ax.set_title(
        f"{hits} of {len(diff)} {level} differ (red)\nWelch t-test, Holm-Sidak, alpha {comparison.alpha:g}",
        fontsize=9,
    )
    return ax


__all__ = ["plot_class_differences", "plot_example_scatter"]
