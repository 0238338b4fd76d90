"""The experiment report: one self-contained HTML file, figures embedded, written from disk.

    from ckatlas.report.html import write_report
    write_report("out/demo")            # -> out/demo/report/index.html

The report reads an experiment directory (`ckatlas.experiment`) through its
summary.json and the results it lists; it computes nothing but a few means of
saved numbers. Sections whose results were not computed are left out (and named);
a result file that is missing or unreadable is noted in its section. The page has
no scripts and no external references: figures are inline base64 PNGs and the
style sheet is inline, so the file can be mailed or opened offline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ckatlas._version import __version__
from ckatlas.errors import UserInputError
from ckatlas.io.files import atomic_write_text
from ckatlas.report import (  # noqa: F401  (each registers its sections with `report_section` when imported)
    analysis_sections,
    block_sections,
    dynamics_sections,
    headline,
    origins_sections,
)
from ckatlas.report._page import FIGURE_HOOK, HOVER_SCRIPT, ReportData, Section, drawn_tables, esc, para, section_builders, table_html

REPORT_FILE = "report/index.html"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d1d1f;
       max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; line-height: 1.45; background: #fff; }
h1 { font-size: 1.7em; margin-bottom: 0.1em; }
h2 { font-size: 1.3em; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 2.2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
p { max-width: 60em; }
.sub { color: #555; margin-top: 0; }
.meta { color: #444; font-size: 0.92em; }
.meta td { padding: 1px 14px 1px 0; border: none; }
nav { font-size: 0.92em; margin: 1em 0; }
nav a { margin-right: 1.1em; color: #0b57d0; text-decoration: none; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
thead th { background: #f3f4f6; }
table.headline td.cell { text-align: center; min-width: 8.5em; }
table.headline th { text-align: center; vertical-align: middle; }
table.headline span { display: block; }
table.headline .bf { font-size: 1.25em; font-weight: 600; }
table.headline .acc, table.headline .n, table.headline .strength, .dim { color: #666; font-size: 0.85em; }
.finding { font-weight: 600; font-size: 1.05em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.88em; color: #444; max-width: 60em; margin-top: 4px; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.row figure { flex: 0 1 auto; max-width: 560px; }
.note { background: #fff8e1; border-left: 4px solid #f2b600; padding: 6px 10px; font-size: 0.9em; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 0.85em; }
code { background: #f3f4f6; padding: 1px 4px; border-radius: 3px; }
.tip { position: absolute; display: none; background: #111; color: #fff; padding: 3px 6px; border-radius: 3px;
       font-size: 12px; pointer-events: none; white-space: nowrap; z-index: 10; }
footer { margin-top: 3em; border-top: 1px solid #ddd; padding-top: 1em; font-size: 0.9em; color: #444; }
"""


def render_report(experiment_dir: str | os.PathLike,
                  on_figure: Callable[[str, Figure], None] | None = None) -> str:
    """The HTML text of an experiment's report.

    Args:
        experiment_dir: a finished experiment directory (it holds summary.json).
        on_figure: called with (alt text, matplotlib figure) for every figure the page embeds, in
            page order, before it is encoded (to check or save the figures; the page is unchanged).

    Raises:
        UserInputError: `experiment_dir` is no finished experiment (no summary.json).
    """
    data = ReportData(experiment_dir)
    token = FIGURE_HOOK.set(on_figure)
    try:
        sections = [s for s in (build(data) for build in section_builders()) if s is not None]
        sections += registered_sections(data)
    finally:
        FIGURE_HOOK.reset(token)
    body = "".join(_section_html(s) for s in sections)
    toc = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    name = data.summary.name
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ckatlas report: {esc(name)}</title><style>{_CSS}</style></head><body>"
        f"{_header(data)}<nav>{toc}</nav>{_not_computed(data)}{body}{_footer(data)}"
        f"<script>{HOVER_SCRIPT}</script></body></html>\n"
    )


def write_report(experiment_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write an experiment's report as one self-contained HTML file (atomically).

    Args:
        experiment_dir: a finished experiment directory (it holds summary.json).
        out: where to write (default: ``experiment_dir/report/index.html``).

    Returns:
        The path written.

    Raises:
        UserInputError: `experiment_dir` is no finished experiment, or `out` is a folder.
    """
    path = Path(out).expanduser() if out is not None else Path(experiment_dir).expanduser() / REPORT_FILE
    if path.is_dir():
        raise UserInputError(
            f"{path} is a folder; expected the name of the HTML file to write (e.g. {path / 'report.html'})"
        )
    atomic_write_text(path, render_report(experiment_dir))
    return path


def _section_html(section: Section) -> str:
    notes = "".join(f'<p class="note">Not shown: {esc(n)}.</p>' for n in section.notes)
    return f'<section id="{esc(section.anchor)}"><h2>{esc(section.title)}</h2>{notes}{section.body}</section>'


def _header(data: ReportData) -> str:
    summary, env = data.summary, data.environment()
    dataset = summary.dataset
    seeds = sorted({m.seed for m in data.models})
    date = dt.datetime.fromtimestamp((data.root / "summary.json").stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    shape = "×".join(str(s) for s in dataset.get("image_shape", []))
    rows = [
        ("dataset", f"{dataset.get('name', '?')}: {dataset.get('num_train', '?')} training and "
                    f"{dataset.get('num_test', '?')} test images ({shape}), {dataset.get('num_classes', '?')} classes"),
        ("models", f"{len(data.models)} ({len(data.groups)} architectures; seeds {', '.join(map(str, seeds))})"),
        ("computed", f"{date}, on {env.get('device', '?')}"),
        ("versions", f"ckatlas {env.get('ckatlas', '?')}, torch {env.get('torch', '?')}, python "
                     f"{env.get('python', '?')} (report by ckatlas {__version__})"),
    ]
    meta = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    description = summary.description or ""
    return (f"<h1>{esc(summary.name)}</h1>"
            + (f'<p class="sub">{esc(description)}</p>' if description else "")
            + f'<table class="meta">{meta}</table>')


def registered_sections(data: ReportData) -> list[Section]:
    """A generic section for each registered analysis without one of its own: each model's result
    file and the plain values at its top level (JSON results)."""
    sections = []
    for table, kind in data.analyses.items():
        if table in drawn_tables() or table not in data.enabled:
            continue
        rows = []
        for model in data.models:
            path = model.path(kind["kind"])
            if path is None:
                continue
            values = data.load(_plain_values, path, [])
            shown = "; ".join(f"{k} = {v}" for k, v in (values or {}).items()) or "–"
            rows.append([esc(model.name), f"<code>{esc(path)}</code>", esc(shown)])
        description = kind.get("description") or table
        text = para(f"{description} ([analyses.{table}]), one result per model.")
        body = text + (table_html(["model", "result", "values"], rows) if rows else para("No results."))
        sections.append(Section(f"analysis-{table}", description, body))
    return sections


def _plain_values(path: Path) -> dict[str, Any]:
    """The scalar top-level values of a JSON result (format tag left out); {} for other files."""
    if path.suffix != ".json":
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        return {}
    plain = {k: v for k, v in data.items() if k != "format" and isinstance(v, (str, int, float, bool))}
    return {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in list(plain.items())[:8]}


def _not_computed(data: ReportData) -> str:
    missing = [kind.get("description") or table for table, kind in data.analyses.items()
               if not kind.get("default_on") and table not in data.enabled]
    if not missing:
        return ""
    return para("Not computed in this experiment: " + ", ".join(missing)
                + " (turn them on with [analyses.<name>] tables in the experiment's TOML file).")


def _footer(data: ReportData) -> str:
    timings = data.summary.timings
    parts = []
    if timings:
        labels = {"total": "all steps, summed (steps run side by side each count)",
                  "wall": "wall clock (while any step ran)"}
        rows = [[esc(labels.get(k, k)), f"{v:.1f}"] for k, v in timings.items()]
        parts.append("<h3>Time spent</h3>" + table_html(["step", "seconds"], rows))
    toml = data.root / "experiment.toml"
    parts.append(
        "<h3>Reproduce</h3>"
        + para("The experiment's whole configuration is experiment.toml in its directory (below). From that directory:")
        + "<pre>ckatlas run experiment.toml --out rerun      # train, map and analyse again\n"
        + "ckatlas report .                           # write this report again from the saved results</pre>"
    )
    if toml.is_file():
        parts.append(f"<details><summary>experiment.toml</summary><pre>{esc(toml.read_text(encoding='utf-8'))}</pre>"
                     "</details>")
    return "<footer>" + "".join(parts) + "<p>Written by ckatlas, after Nguyen, Raghu &amp; Kornblith, <em>Do wide and "\
        "deep networks learn the same things?</em> (ICLR 2021).</p></footer>"


__all__ = ["REPORT_FILE", "render_report", "write_report"]
