"""The report's headline: block fraction, block strength and accuracy over the depth x width grid, and what
they show.

The paper's central finding is that block structure grows as networks get wider
and deeper (relative to the data). `trend_sentences` states, from the numbers
alone, whether the block strength of an experiment's grid (the share of layers in
blocks weighted by how much each block stands out: continuous, unlike the fraction)
does so: along each row (growing width at one depth) and each column (growing depth
at one width); `statistic_sentences` tests it over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ckatlas.analysis.trend import PERMUTATIONS, trend_test
from ckatlas.report._page import ReportData, Section, esc, fmt, para, slice_title, table_html, report_section
from ckatlas.io.summary import ExperimentSummary, GridTable, ModelEntry


def _direction(values: Sequence[float]) -> str:
    """"grows" (never falls, ends higher), "falls", "flat" or "mixed"."""
    steps = [round(b - a, 9) for a, b in zip(values, values[1:])]  # rounded: float noise of means is no change
    if all(s == 0 for s in steps):
        return "flat"
    if all(s >= 0 for s in steps):
        return "grows"
    if all(s <= 0 for s in steps):
        return "falls"
    return "mixed"


def _where(along: str, keys: Sequence[str]) -> str:
    """"depth 8" or "depths 14 and 20"."""
    if len(keys) == 1:
        return f"{along} {keys[0]}"
    return f"{along}s {', '.join(keys[:-1])} and {keys[-1]}"


def _axis_sentence(axis: str, along: str, lines: list[tuple[str, list[float]]], what: str) -> str | None:
    """One sentence on how the block fraction changes along `axis` in each line of the grid.

    `lines` holds, for each row (or column) of the grid, its key (e.g. the depth) and its
    block fractions in order of growing `axis`.
    """
    lines = [(key, values) for key, values in lines if len(values) >= 2]
    if not lines:
        return None
    growing = [key for key, v in lines if _direction(v) == "grows"]
    other = [key for key, v in lines if _direction(v) != "grows"]
    shown = "; ".join(f"{along} {key}: " + " → ".join(f"{x:.2f}" for x in v) for key, v in lines)
    if not other:
        where = f"every {along}" if len(lines) > 1 else _where(along, growing)
        return f"{what} grows with {axis} at {where} ({shown})."
    if not growing:
        return f"{what} does not grow with {axis} at any {along} ({shown})."
    return f"{what} grows with {axis} at {_where(along, growing)}, but not at {_where(along, other)} ({shown})."


def trend_sentences(
    depths: Sequence[int], widths: Sequence[float], block_fraction: Sequence[Sequence[float | None]],
    what: str = "Block fraction",
) -> list[str]:
    """Sentences saying whether a block statistic grows with width (at each depth) and with depth (at each width).

    Args:
        depths, widths: the grid's rows and columns.
        block_fraction: `[i][j]` the statistic's mean at `depths[i]`, `widths[j]`; None where
            the grid has no model.
        what: the statistic's name, to start a sentence ("Block fraction", "Block strength").

    Returns:
        A verdict on the paper's finding, then one sentence per axis that varies (a line
        of the grid "grows" when its block fraction never falls and ends higher).
    """
    rows = [(str(d), [v for v in block_fraction[i] if v is not None]) for i, d in enumerate(depths)]
    cols = [(f"{w:g}", [block_fraction[i][j] for i in range(len(depths)) if block_fraction[i][j] is not None])
            for j, w in enumerate(widths)]
    sentences = [s for s in (_axis_sentence("width", "depth", rows, what), _axis_sentence("depth", "width", cols, what))
                 if s]
    if not sentences:
        return ["The grid has a single model size, so no trend with width or depth can be read from it."]
    lines = [v for _, v in rows + cols if len(v) >= 2]
    growing = sum(_direction(v) == "grows" for v in lines)
    if growing == len(lines):
        verdict = "The paper's central finding holds here: block structure grows with width and with depth."
        if len(widths) < 2 or len(depths) < 2:
            axis = "depth" if len(widths) < 2 else "width"
            verdict = ("The paper's central finding holds along the one axis this grid varies: block structure grows "
                       f"with {axis}.")
    elif growing == 0:
        verdict = "The paper's central finding does not show here: block structure does not grow across this grid."
    else:
        verdict = (f"The paper's central finding holds only in part here: {what.lower()} grows along {growing} of the "
                   f"{len(lines)} rows and columns of the grid.")
    return [verdict, *sentences]


def statistic_name(models: Sequence[ModelEntry]) -> str:
    """The block statistic the headline tests: "block_area" (as the claims), or in summaries of earlier
    releases, which lack it, "block_strength" or "block_fraction"."""
    for key in ("block_area", "block_strength"):
        if all(getattr(m, key) is not None for m in models):
            return key
    return "block_fraction"


def statistic_sentences(models: Sequence[ModelEntry], alpha: float = 0.05) -> list[str]:
    """The verdict over seeds: a one-sided rank-trend permutation test of block area (`statistic_name`)
    with width (within each depth) and with depth (within each width), `ckatlas.analysis.trend`.

    Args:
        models: one grid slice's models (summary.json entries: depth, width, block_area).
        alpha: significance level.

    Returns:
        One sentence per factor that the slice varies, saying plainly whether the trend is
        significant.
    """
    out = []
    key = statistic_name(models)
    what = key.replace("_", " ")
    for factor, stratum in (("width", "depth"), ("depth", "width")):
        if len({getattr(m, factor) for m in models}) < 2:
            continue
        test = trend_test([getattr(m, key) for m in models], [getattr(m, factor) for m in models],
                          [getattr(m, stratum) for m in models], num_permutations=PERMUTATIONS)
        if not any(s["rho"] is not None for s in test.strata):
            out.append(f"Over seeds, {what} does not vary with {factor} at any {stratum}: no trend.")
            continue
        words = test.verdict(alpha)
        verdict = {
            "holds": f"the paper's claim holds at {alpha:g}: block structure grows with {factor}",
            "contradicted": f"the paper's claim is contradicted at {alpha:g}: block structure falls with {factor}",
            "not established": f"not established at {alpha:g}: this grid shows no significant trend with {factor} "
                               f"either way",
        }[words]
        ci = "" if test.interval is None else f" (95% CI {test.interval[0]:+.2f} to {test.interval[1]:+.2f} over seeds)"
        out.append(f"Over seeds ({test.num_models} models), {what} against {factor} within each {stratum}: "
                   f"mean Spearman rho {test.statistic:+.2f}{ci}, one-sided permutation p = {test.p_value:.3g} "
                   f"(the other way {test.p_opposite:.3g}), {verdict}.")
    return out


_VERDICT_WORDS = {
    "holds": "the paper's claim holds at {alpha:g}: block structure grows with {factor}",
    "contradicted": "the paper's claim is contradicted at {alpha:g}: block structure falls with {factor}",
    "not established": "not established at {alpha:g}: no significant trend with {factor} either way",
    "untested": "untested",
}


def claim_sentences(claims: dict[str, dict[str, Any]], alpha: float = 0.05) -> list[str]:
    """The width and depth claims as the experiment's ``claims`` step decided them (claims.json), in the words
    of `statistic_sentences`, with how they fare under the three named definitions: the report and the
    terminal render the one result that ``ckatlas claims`` prints."""
    out = []
    for factor in ("width", "depth"):
        claim = claims.get(factor)
        if claim is None or claim.get("value") is None:
            continue
        tested = claim.get("details", {}).get("tested", {})
        what = str(tested.get("statistic", "block_area")).replace("_", " ")
        strata = " x ".join(tested.get("strata", [])) or "slice"
        ci = "" if not claim.get("interval") else (
            f" (95% CI {claim['interval'][0]:+.2f} to {claim['interval'][1]:+.2f} over seeds)")
        against = "" if claim.get("p_opposite") is None else f" (the other way {claim['p_opposite']:.3g})"
        words = _VERDICT_WORDS.get(claim.get("verdict") or "untested", "untested").format(alpha=alpha, factor=factor)
        agreement = claim.get("details", {}).get("agreement")
        named = f" Under the three named definitions of block structure it {agreement}." if agreement else ""
        out.append(f"Over seeds ({claim['n']} models), {what} against {factor} within each {strata}: mean Spearman "
                   f"rho {claim['value']:+.2f}{ci}, one-sided permutation p = {claim['p_value']:.3g}{against}, "
                   f"{words}.{named}")
    return out


def _spread_sentence(data: ReportData, models: list[ModelEntry]) -> str | None:
    names = {m.name for m in models}
    stds = [(g.block_fraction_std, len(g.runs)) for g in data.groups.values()
            if g.block_fraction_std is not None and names.intersection(g.runs)]
    if not stds:
        return "Each cell holds one seed, so the seed-to-seed spread of the block fraction is unknown."
    worst, seeds = max(stds)
    return (f"Across seeds the block fraction varies by up to {worst:.2f} (standard deviation, {seeds} seeds); "
            "differences smaller than that are within seed-to-seed noise.")


def _cell(data: ReportData, table: GridTable, depth: int, width: float) -> str:
    models = data.cell(table, depth, width)
    if not models:
        return "<td class=\"empty\">–</td>"
    group = data.group_of(models[0].name)
    n = len(models)
    bf = group.block_fraction_mean if group else models[0].block_fraction
    acc = group.test_accuracy_mean if group else models[0].test_accuracy
    bf_std = group.block_fraction_std if group else None
    acc_std = group.test_accuracy_std if group else None
    strength = group.block_strength_mean if group else models[0].block_strength
    area = group.block_area_mean if group else models[0].block_area
    area_std = group.block_area_std if group else None
    accuracy = f"{100 * acc:.1f}" + (f" ± {100 * acc_std:.1f}" if acc_std is not None else "") + "%"
    attrs = (f'data-depth="{depth}" data-width="{width:g}" data-block-fraction="{bf!r}" '
             f'data-block-area="{area!r}" data-test-accuracy="{acc!r}" data-seeds="{n}"')
    fraction = f"fraction {fmt(bf)}" + (f" ± {bf_std:.2f}" if bf_std is not None else "")
    if area is not None:  # the statistic the trend tests use, large; the others small
        large = f'<span class="bf" title="block area: what the trend tests test">area {fmt(area)}' + (
            f" ± {area_std:.2f}" if area_std is not None else "") + "</span>"
        small = f'<span class="strength">{fraction}</span>'
    else:  # a summary of an earlier release: block fraction was the statistic
        large, small = f'<span class="bf">{fraction}</span>', ""
    return (f'<td class="cell" {attrs}>{large}{small}'
            + (f'<span class="strength">strength {fmt(strength)}</span>' if strength is not None else "")
            + f'<span class="acc">acc {accuracy}</span><span class="n">n = {n}</span></td>')


@report_section(10, "untrained")  # the untrained baseline: in the claims the headline renders
def headline_section(data: ReportData) -> Section | None:
    """The depth x width table of block fraction and accuracy, and the finding in sentences."""
    tables = data.summary.grid
    if not tables:
        return None
    parts = [f'<p class="finding">{esc(s)}</p>' for s in claim_sentences(data.claims)]  # claims.json, when there
    for table in tables:
        sub = slice_title(table, tables)
        if sub:
            parts.append(f"<h3>{esc(sub[0].upper() + sub[1:])}</h3>")
        header = ["depth \\ width", *[f"{w:g}×" for w in table.widths]]
        rows = [[f"<th>{esc(d)}</th>", *[_cell(data, table, d, w) for w in table.widths]] for d in table.depths]
        parts.append(table_html(header, rows, cls="headline"))
        statistics = [] if data.claims else statistic_sentences(data.slice_models(table))
        sentences = _trend_sentences(table)
        parts += [f'<p class="finding">{esc(s)}</p>' for s in statistics]
        parts += [para(s) for s in sentences[1:]]
        spread = _spread_sentence(data, data.slice_models(table))
        if spread:
            parts.append(para(spread))
    parts.append(para(
        "The large number of each cell is block area, the statistic the trend tests over seeds test (mean ± "
        "standard deviation over the cell's seeds); block fraction and block strength are shown beside it. "
        "Block fraction: the share of a model's analysed layers that lie inside a block, on the model's "
        f"within-model CKA heatmap (a block by the {data.detector.describe()}); mean ± "
        "standard deviation over the n seeds of each cell. Block strength: the same share with each block weighted "
        "by its score (how much it stands out: 1 for identical layers, 0 for none). Block area: the block fraction "
        "averaged over the detector's min_score from 0.05 to 1, free of that threshold, the statistic the trend "
        "tests use. Test accuracy: the same models on the full test split."
    ))
    return Section("headline", "Headline: block structure across the grid", "".join(parts))


def headline_text(summary: ExperimentSummary, claims: dict[str, dict[str, Any]] | None = None) -> str:
    """The headline as plain text for a terminal: each grid's block fraction table and the sentences; with
    the experiment's `claims` (claims.json by key), the width and depth verdicts are theirs."""
    lines = []
    for table in summary.grid:
        widths = table.widths
        lines.append("block fraction (mean over seeds), depth x width:")
        lines.append("depth " + "".join(f"{f'{w:g}x':>8}" for w in widths))
        for depth, row in zip(table.depths, table.block_fraction):
            lines.append(f"{depth:>5} " + "".join(f"{fmt(v):>8}" for v in row))
        models = summary.slice_models(table)
        for name, rows in (("block strength", table.block_strength), ("block area", table.block_area)):
            if rows is not None:
                lines.append(f"{name} (mean over seeds), depth x width:")
                for depth, row in zip(table.depths, rows):
                    lines.append(f"{depth:>5} " + "".join(f"{fmt(v):>8}" for v in row))
        if not claims:
            lines += statistic_sentences(models)
        lines += _trend_sentences(table)[1:]
    return "\n".join(lines + (claim_sentences(claims) if claims else []))


def _trend_sentences(table: GridTable) -> list[str]:
    """`trend_sentences` of a grid table's block area (block strength or fraction in summaries of earlier
    releases)."""
    if table.block_area is not None:
        return trend_sentences(table.depths, table.widths, table.block_area, "Block area")
    if table.block_strength is not None:
        return trend_sentences(table.depths, table.widths, table.block_strength, "Block strength")
    return trend_sentences(table.depths, table.widths, table.block_fraction)


__all__ = ["claim_sentences", "headline_section", "headline_text", "statistic_name", "statistic_sentences",
           "trend_sentences"]
