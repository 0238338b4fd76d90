"""Is a matplotlib figure readable? Checked on the drawn figure with matplotlib's own text extents.

`layout_problems(fig)` draws the figure and lists, in words, every pair of drawn text labels
whose boxes overlap, every label that reaches outside the canvas, and every panel that is
squashed (too thin, or a heatmap far from square). Only what the renderer really drew is
judged: tick labels outside the view, axes turned off and empty strings draw nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

SLACK = 1.0  # pixels two boxes may share (antialiased edges), at the figure's dpi
MIN_SIDE = 0.6  # inches: the shortest side a panel may have
MAX_ASPECT = 5.0  # the longest side of a panel over its shortest
MAX_IMAGE_ASPECT = 1.6  # the same for a panel showing an image (a heatmap is square)


@contextlib.contextmanager
def _drawn_texts() -> Iterator[list[Text]]:
    """Record each Text the renderer draws (a Text with no string or not visible draws nothing)."""
    drawn: list[Text] = []
    original = Text.draw

    def draw(self: Text, renderer) -> None:  # type: ignore[no-untyped-def]
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        original(self, renderer)

    Text.draw = draw  # type: ignore[method-assign]
    try:
        yield drawn
    finally:
        Text.draw = original  # type: ignore[method-assign]


def _name(text: Text) -> str:
    return repr(text.get_text()[:40])


def _is_colorbar(ax: Axes) -> bool:
    return ax.get_label() == "<colorbar>"


def layout_problems(fig: Figure) -> list[str]:
    """What a reader could not read in `fig`, in words; [] when every label is clear."""
    canvas = FigureCanvasAgg(fig) if fig.canvas is None or not hasattr(fig.canvas, "get_renderer") else fig.canvas
    with _drawn_texts() as texts:
        canvas.draw()
    renderer = canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    problems = []
    boxes = np.array([t.get_window_extent(renderer).extents for t in texts]).reshape(-1, 4)
    for t, (x0, y0, x1, y1) in zip(texts, boxes):
        if x0 < -SLACK or y0 < -SLACK or x1 > width + SLACK or y1 > height + SLACK:
            problems.append(f"{_name(t)} reaches outside the canvas ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f} "
                            f"of {width:.0f} x {height:.0f} px)")
    overlap_x = np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    overlap_y = np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    clash = np.triu((overlap_x > SLACK) & (overlap_y > SLACK), k=1)
    for i, j in zip(*np.nonzero(clash)):
        problems.append(f"{_name(texts[i])} overlaps {_name(texts[j])}")
    for ax in fig.axes:
        if _is_colorbar(ax) or not ax.get_visible():
            continue
        box = ax.get_window_extent(renderer)
        short, long = sorted((box.width / fig.dpi, box.height / fig.dpi))
        limit = MAX_IMAGE_ASPECT if ax.images else MAX_ASPECT
        if short < MIN_SIDE or long > limit * short:
            problems.append(f"panel {ax.get_title()[:40]!r} is squashed ({box.width / fig.dpi:.2f} x "
                            f"{box.height / fig.dpi:.2f} in)")
    return problems
