"""`ckatlas demo --out DIR`, the README's first command, end to end: the full demo grid on digits,
every analysis, summary.json and the report with its depth x width table of block fraction.

Whether the block fraction grows with width and depth is the science the report states from
the numbers; it is recorded by benchmarks/bench_demo.py and the README, not asserted here.
"""

from __future__ import annotations

import json
import re

import pytest

from ckatlas.cli import main
from ckatlas.experiment import load_config

pytestmark = pytest.mark.slow


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    # One thread: torch 2.13's oneDNN CPU convolutions can corrupt the heap with two (/work/notes/onednn_crash.md).
    assert main(["demo", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    report = out / "report" / "index.html"
    assert f"report: {report}" in printed
    assert "block fraction" in printed

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    config = load_config("demo")
    assert len(summary["models"]) == len(config.runs)
    widest = max(r.width for r in config.runs)
    assert all(len(g["runs"]) >= 2 for g in summary["groups"] if g["width"] == widest)
    for model in summary["models"]:
        assert set(model) >= {"name", "arch", "depth", "width", "residual", "seed", "fraction", "test_accuracy",
                              "block_fraction", "blocks"}
        assert 0.0 <= model["block_fraction"] <= 1.0
        assert model["test_accuracy"] > 0.5  # trained: chance is 0.1 on ten digits

    page = report.read_text(encoding="utf-8")
    table = summary["grid"][0]
    cells = re.findall(r'<td class="cell" data-depth="(\d+)" data-width="([\d.]+)" data-block-fraction="([^"]+)"', page)
    assert len(cells) == len(table["depths"]) * len(table["widths"])
    for depth, width, fraction in cells:
        i, j = table["depths"].index(int(depth)), table["widths"].index(float(width))
        assert float(fraction) == table["block_fraction"][i][j]
    for anchor in ("headline", "heatmaps", "blocks", "stability", "pca", "prune", "cross-seed", "errors"):
        assert f'<section id="{anchor}">' in page

    # Running it again finds everything done and computes nothing.
    assert main(["demo", "--out", str(out), "--threads", "1", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {report}"
