"""Pieces the report is built from: the experiment's results as read from disk, and HTML fragments.

`ReportData` opens an experiment directory through its summary.json and loads the
results it lists; a missing or unreadable file is noted (and its part of the report
skipped), never an error. The HTML helpers escape every piece of text they are
given; figures become inline base64 PNGs, so the page needs no other file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ckatlas.analysis.blocks import BlockDetector
from ckatlas.errors import UserInputError
from ckatlas.io.files import read_json
from ckatlas.io.rundir import RunDir
from ckatlas.io.summary import ExperimentSummary, GridTable, GroupEntry, ModelEntry, read_summary
DPI = 100  # figures are embedded: enough for a screen, small enough to mail the file

T = TypeVar("T")


_SECTIONS: list[tuple[int, Callable[[ReportData], Section | None], tuple[str, ...]]] = []


def report_section(order: int, *tables: str) -> Callable[[Callable[[ReportData], Section | None]], Callable[..., Any]]:
    """Register a section of the report: `order` places it on the page (lower first); `tables` are
    the ``[analyses]`` tables it draws (an enabled analysis that no section names gets the
    report's generic section instead). Sections register when their module is imported."""

    def register(build: Callable[[ReportData], Section | None]) -> Callable[[ReportData], Section | None]:
        _SECTIONS.append((order, build, tables))
        return build

    return register


def unregister_section(build: Callable[[ReportData], Section | None]) -> None:
    """Remove a section registered with `report_section` (KeyError: it is not registered)."""
    kept = [entry for entry in _SECTIONS if entry[1] is not build]
    if len(kept) == len(_SECTIONS):
        raise KeyError(f"no report section {getattr(build, '__name__', build)!r} is registered")
    _SECTIONS[:] = kept


def section_builders() -> list[Callable[[ReportData], Section | None]]:
    """The registered sections, in page order."""
    return [build for _, build, _ in sorted(_SECTIONS, key=lambda entry: entry[0])]


def drawn_tables() -> set[str]:
    """The ``[analyses]`` tables that a registered section draws."""
    return {table for _, _, tables in _SECTIONS for table in tables}


@dataclass
class Section:
    """One section of the report.

    Attributes:
        anchor: the section's id (for the table of contents).
        title: its heading (plain text).
        body: its HTML (already escaped).
        notes: plain-text notes on what is missing from it.
    """

    anchor: str
    title: str
    body: str
    notes: list[str] = field(default_factory=list)


class ReportData:
    """An experiment directory as the report sees it: summary.json and the results it lists.

    Args:
        root: the experiment directory.

    Raises:
        UserInputError: `root` is no folder, holds no summary.json (no experiment, or
            an unfinished one), or its summary.json is unreadable.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.summary: ExperimentSummary = read_summary(self.root)
        self.models: list[ModelEntry] = list(self.summary.models)
        self.groups: dict[str, GroupEntry] = {g.name: g for g in self.summary.groups}
        self._cache: dict[tuple[str, str], tuple[Any, str | None]] = {}

    @property
    def analyses(self) -> dict[str, dict[str, Any]]:
        """Every analysis the experiment could have run, by table name: its step kind, description
        and whether it runs by default (summary.json's "available"; empty in older summaries)."""
        return dict(self.summary.available or {})

    @property
    def enabled(self) -> list[str]:
        """The analyses ([analyses] tables) this experiment ran."""
        return list(self.summary.enabled)

    @property
    def claims(self) -> dict[str, dict[str, Any]]:
        """The experiment's claims as its ``claims`` step decided them (claims.json: the one verdict engine),
        by key; empty for an experiment from before the step or an unreadable file."""
        path = self.root / "claims.json"
        if not path.is_file():
            return {}
        try:
            data = read_json(path, "the experiment's claims (claims.json)")
            return {c["key"]: c for c in data["claims"]}
        except (UserInputError, KeyError, TypeError):
            return {}

    @property
    def detector(self) -> BlockDetector:
        """The block detector the experiment used (`[analyses.blocks]` without its rows)."""
        return BlockDetector.from_saved(self.summary.blocks_table or None, "[analyses.blocks] of summary.json")

    def load(self, loader: Callable[[Path], T], relative: str | None, notes: list[str]) -> T | None:
        """`loader(root / relative)`, or None (with a line in `notes`) when the file is missing or unreadable."""
        if relative is None:
            return None
        key = (getattr(loader, "__qualname__", repr(loader)), relative)
        if key not in self._cache:
            path = self.root / relative
            value: T | None = None
            problem = None
            if not path.exists():
                problem = f"{relative} is missing"
            else:
                try:
                    value = loader(path)
                except (UserInputError, OSError, ValueError, KeyError, TypeError) as exc:
                    problem = f"{relative} could not be read ({exc})"
            self._cache[key] = (value, problem)
        value, problem = self._cache[key]
        if problem is not None and problem not in notes:
            notes.append(problem)
        return value

    def slice_models(self, table: GridTable) -> list[ModelEntry]:
        """The models of one depth x width table of the grid (one family, residual setting and data fraction)."""
        return self.summary.slice_models(table)

    def cell(self, table: GridTable, depth: int, width: float) -> list[ModelEntry]:
        """The models (all seeds, lowest first) at one cell of a depth x width table."""
        return self.summary.cell(table, depth, width)

    def model(self, name: str) -> ModelEntry | None:
        """The summary entry of one model, by run name."""
        return self.summary.model(name)

    def group_of(self, run: str) -> GroupEntry | None:
        """The group (one architecture, all its seeds) that a run belongs to."""
        return self.summary.group_of(run)

    def environment(self) -> dict[str, Any]:
        """Versions and device of the first training run (from its config.json); empty when unreadable."""
        if not self.models:
            return {}
        notes: list[str] = []
        info = self.load(_read_info, self.models[0].path("run"), notes)
        return dict(info.get("environment", {})) if isinstance(info, dict) else {}


def _read_info(run_dir: Path) -> dict[str, Any]:
    return RunDir(run_dir).read_info()


def slice_title(table: GridTable, tables: Sequence[GridTable]) -> str:
    """How one depth x width table differs from the others ("" when it is the only one)."""
    if len(tables) < 2:
        return ""
    parts = []
    if len({t.family for t in tables}) > 1:
        parts.append("vision transformers" if table.family == "vit" else "ResNets")
    if len({t.residual for t in tables}) > 1:
        parts.append("with residual connections" if table.residual else "without residual connections")
    if len({t.fraction for t in tables}) > 1:
        parts.append(f"{table.fraction:g} of the training data")
    return ", ".join(parts)


def seeds_phrase(models: Sequence[ModelEntry]) -> str:
    """"seed 0" or "seeds 0, 1" for the models shown."""
    seeds = sorted({m.seed for m in models})
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def grid_figure(
    data: ReportData,
    table: GridTable,
    draw: Callable[[Axes, ModelEntry], str | None],
    *,
    panel: tuple[float, float] = (2.6, 2.4),
) -> tuple[Figure, list[ModelEntry]] | None:
    """Panels laid out as the paper's figures: depths down the rows, widths along the columns.

    Each panel shows the lowest seed of its cell. `draw(ax, model)` draws one model and
    returns the end of its title, or None when that model's result is missing (the
    panel is then left blank).

    Returns:
        The figure and the models drawn, or None when nothing could be drawn.
    """
    depths, widths = table.depths, table.widths
    fig = Figure(figsize=(panel[0] * len(widths) + 0.8, panel[1] * len(depths)), layout="constrained")
    axes = fig.subplots(len(depths), len(widths), squeeze=False)
    shown = []
    for i, depth in enumerate(depths):
        for j, width in enumerate(widths):
            ax = axes[i][j]
            models = data.cell(table, depth, width)
            title = draw(ax, models[0]) if models else None
            if title is None:
                ax.clear()
                ax.set_axis_off()
                ax.text(0.5, 0.5, "no result" if models else "not in the grid", ha="center", va="center",
                        transform=ax.transAxes, color="grey")
                continue
            shown.append(models[0])
            ax.set_title(f"depth {depth}, width {width:g}×" + (f"\n{title}" if title else ""), fontsize=9)
            if j > 0:
                ax.set_ylabel("")
            if i < len(depths) - 1:
                ax.set_xlabel("")
    return (fig, shown) if shown else None


def panel_rows(count: int, panel: tuple[float, float], *, columns: int = 4,
               extra_width: float = 0.8) -> tuple[Figure, list[Axes]]:
    """A figure of `count` panels of `panel` inches (width, height), in rows of at most `columns`.

    One row of many panels squeezes their titles and labels into each other; rows of a few
    keep every panel readable however many models there are. `extra_width` adds room (inches)
    for a colorbar. Places left over in the last row are removed.
    """
    cols = max(1, min(columns, count))
    rows = -(-count // cols)
    fig = Figure(figsize=(panel[0] * cols + extra_width, panel[1] * rows), layout="constrained")
    axes = list(np.ravel(fig.subplots(rows, cols, squeeze=False)))
    for ax in axes[count:]:
        ax.remove()
    return fig, axes[:count]


def shade_layers(ax: Axes, layers: Sequence[str], inside: Sequence[Sequence[str]], color: str = "tab:orange") -> None:
    """Shade, on a plot over `layers` (x = layer index), the span of each named run of layers (e.g. a block)."""
    index = {name: k for k, name in enumerate(layers)}
    for names in inside:
        found = [index[n] for n in names if n in index]
        if found:
            ax.axvspan(min(found) - 0.5, max(found) + 0.5, color=color, alpha=0.15, linewidth=0)


def index_ticks(ax: Axes, count: int) -> None:
    """Number the layers along x (for small panels, where names do not fit)."""
    positions = list(range(0, count, max(1, count // 8)))
    ax.set_xticks(positions, [str(p) for p in positions], rotation=0, fontsize=8)
    ax.set_xlabel("layer")


# -- HTML fragments ------------------------------------------------------------------------------
def esc(value: Any) -> str:
    """Text escaped for HTML (quotes included)."""
    return html.escape(str(value), quote=True)


#: Called with (alt text, figure) for every figure a report embeds, before it is encoded (`render_report`'s
#: ``on_figure``); None: nothing is called.
FIGURE_HOOK: ContextVar[Callable[[str, Figure], None] | None] = ContextVar("ckatlas_report_figure_hook", default=None)


def figure_html(fig: Figure, alt: str, caption: str, *, hover: Sequence[tuple[Axes, Any]] = ()) -> str:
    """A figure as an inline PNG with its caption (both plain text).

    `hover`: (axes, CKA result) pairs of heatmaps drawn with `imshow` (one cell per layer
    pair, origin lower left); the page then shows each cell's layer pair and value under
    the mouse (`HOVER_SCRIPT`). Such a figure is saved whole (no tight cropping), so that
    the axes' pixel positions are known.
    """
    hook = FIGURE_HOOK.get()
    if hook is not None:
        hook(alt, fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches=None if hover else "tight", pil_kwargs={"optimize": True})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    attr = f' data-hover="{esc(json.dumps(_hover_panels(fig, hover)))}"' if hover else ""
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}"{attr}>'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _hover_panels(fig: Figure, hover: Sequence[tuple[Axes, Any]]) -> list[dict[str, Any]]:
    """Per heatmap: its axes as fractions of the image (top-left origin), names and values (3 decimals)."""
    width, height = fig.get_size_inches() * DPI
    panels = []
    for ax, result in hover:
        box = ax.get_window_extent()  # display pixels at the figure's dpi, origin lower left
        scale = DPI / fig.dpi
        x0, x1 = box.x0 * scale / width, box.x1 * scale / width
        y0, y1 = 1 - box.y1 * scale / height, 1 - box.y0 * scale / height
        matrix = np.round(np.asarray(result.matrix, dtype=float), 3)
        panels.append({
            "model": getattr(result, "model_a", ""),
            "box": [round(v, 5) for v in (x0, y0, x1, y1)],
            "rows": list(result.layers_a),
            "cols": list(result.layers_b),
            "values": [[None if not np.isfinite(v) else float(v) for v in row] for row in matrix],
        })
    return panels


#: The page's script: a tooltip with the layer pair and CKA of the heatmap cell under the mouse.
HOVER_SCRIPT = """
(function () {
  var tip = document.createElement("div"); tip.className = "tip"; document.body.appendChild(tip);
  document.querySelectorAll("img[data-hover]").forEach(function (img) {
    var panels = JSON.parse(img.getAttribute("data-hover"));
    img.addEventListener("mousemove", function (e) {
      var r = img.getBoundingClientRect(), fx = (e.clientX - r.left) / r.width, fy = (e.clientY - r.top) / r.height;
      for (var k = 0; k < panels.length; k++) {
        var p = panels[k], b = p.box;
        if (fx < b[0] || fx >= b[2] || fy < b[1] || fy >= b[3]) continue;
        var col = Math.floor((fx - b[0]) / (b[2] - b[0]) * p.cols.length);
        var row = Math.floor((b[3] - fy) / (b[3] - b[1]) * p.rows.length);  /* origin lower left */
        var v = p.values[row][col];
        tip.textContent = p.rows[row] + " \u00d7 " + p.cols[col] + ": " + (v === null ? "n/a" : v.toFixed(3));
        tip.style.left = (e.pageX + 12) + "px"; tip.style.top = (e.pageY + 12) + "px"; tip.style.display = "block";
        return;
      }
      tip.style.display = "none";
    });
    img.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  });
})();
"""


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    """A table; header cells are plain text, row cells HTML (escape them first)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(c if c.startswith(("<td", "<th")) else f"<td>{c}</td>" for c in row) + "</tr>"
                   for row in rows)
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def para(text: str) -> str:
    """A paragraph of plain text."""
    return f"<p>{esc(text)}</p>"


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table ("–" for a missing one)."""
    return "–" if value is None else f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    """A fraction as a percentage ("–" for a missing one)."""
    return "–" if value is None else f"{100 * value:.1f}%"


__all__ = [
    "DPI",
    "HOVER_SCRIPT",
    "ReportData",
    "Section",
    "esc",
    "figure_html",
    "fmt",
    "grid_figure",
    "index_ticks",
    "para",
    "pct",
    "seeds_phrase",
    "shade_layers",
    "slice_title",
    "table_html",
]
