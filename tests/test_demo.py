"""`ckatlas demo --out DIR`, the README's first command, end to end: the full demo grid on digits,
every analysis, summary.json and the report with its depth x width table of block fraction, strength and area.

The demo does not promise the paper's finding: whether block structure grows with width and
with depth on digits is decided by a trend test over seeds (REPRODUCTION.md: with the contrast
rule neither holds on seeds 0-2 or 100-102). What it promises is to say which, with the
statistic: the printed headline carries the permutation test of the summary's own block
areas, and says "not significant" when the trend is not.
"""

from __future__ import annotations

import json
import re

import pytest

from ckatlas.analysis.trend import trend_test
from ckatlas.cli import main
from ckatlas.experiment import load_config
from ckatlas.experiment.claims import evaluate_claims

pytestmark = pytest.mark.slow


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    # One thread: torch 2.13's oneDNN CPU convolutions can corrupt the heap with two.
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
                              "train_accuracy", "block_fraction", "block_strength", "block_area", "peak_score",
                              "blocks"}
        assert 0.0 <= model["block_strength"] <= model["block_fraction"] <= 1.0
        assert 0.0 <= model["block_area"] <= 1.0
        assert model["test_accuracy"] > 0.5  # trained: chance is 0.1 on ten digits

    table = summary["grid"][0]
    models = summary["models"]
    claims = {c.key: c for c in evaluate_claims(out, compare_with=None).claims}
    for factor, stratum in (("width", "depth"), ("depth", "width")):
        test = trend_test([m["block_area"] for m in models], [m[factor] for m in models],
                          [m[stratum] for m in models])
        sentence = next(line for line in printed.splitlines() if f"block area against {factor}" in line)
        assert f"mean Spearman rho {test.statistic:+.2f}" in sentence
        assert f"one-sided permutation p = {test.p_value:.3g} (the other way {test.p_opposite:.3g})" in sentence
        words = {"holds": "claim holds", "contradicted": "claim is contradicted", "not established": "not established"}
        assert words[test.verdict(0.05)] in sentence, sentence
        assert claims[factor].verdict == test.verdict(0.05)  # one vocabulary in the headline and the claims
        # one statistic, one p-value: `ckatlas claims` says what the headline says
        assert (claims[factor].value, claims[factor].p_value) == (test.statistic, test.p_value)

    page = report.read_text(encoding="utf-8")
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
