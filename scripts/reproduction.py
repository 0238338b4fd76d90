"""Tables and small figures for REPRODUCTION.md from finished experiment directories.

For each experiment: its claims (`ckatlas.experiment.claims`) as a markdown table, its
depth x width table(s) of block fraction and accuracy (mean ± sd over seeds), a figure
of block fraction against width per depth (every seed a dot), and its heatmap grid
(all layers, blocks outlined, one seed per cell). Figures go to --figures as PNGs,
markdown to stdout.

    python scripts/reproduction.py out/fashion=fashion-choose out/fashion-100=fashion-confirm \\
        --figures docs/reproduction > /tmp/tables.md
    python scripts/reproduction.py /work/fashion-1100=choosing /work/fashion-1200=confirming --saved \\
        --figures docs/reproduction > /tmp/tables.md    # the study: its own claims.json, replication column
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ckatlas.analysis import BlockResult
from ckatlas.experiment.claims import ClaimsResult, evaluate_claims
from ckatlas.heatmap import CKAResult
from ckatlas.report import outline_blocks, plot_heatmap

DPI = 70


def verdict_cell(verdict: str | None, value: float | None, p: float | None, n: int, note: str = "",
                 interval: list[float] | None = None) -> str:
    """A verdict in the one vocabulary (holds / contradicted / not established / untested) with its effect,
    95% interval, p-value and n."""
    if verdict in (None, "untested"):
        return f"untested ({note.split(';')[0]})" if note else "untested"
    words = verdict if verdict == "holds" else f"**{verdict}**"
    ci = f", 95% CI {interval[0]:+.2f} to {interval[1]:+.2f}" if interval else ""
    return f"{words} ({value:+.3f}{ci}, p {p:.3g}, n {n})"


def compare_verdict(other: dict) -> str | None:
    """The verdict of the second detector kept beside a claim (claims of earlier releases recorded only `holds`)."""
    if other["holds"] is None:
        return None
    return other.get("verdict") or ("holds" if other["holds"] else "not established")


def summary_table(results: dict[str, ClaimsResult]) -> str:
    """One row per claim, one column per experiment: the verdict, the statistic and its p-value, with the
    threshold rule's verdict beside it (where the claim rests on blocks)."""
    labels = list(results)
    first = next(iter(results.values()))
    lines = ["| claim | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for claim in first.claims:
        cells = []
        for label in labels:
            c = results[label][claim.key]
            cell = verdict_cell(c.verdict, c.value, c.p_value, c.n, c.note, c.interval)
            other = c.details.get("compare")
            if other is not None:
                cell += "; threshold rule: " + verdict_cell(compare_verdict(other), other["value"], other["p_value"],
                                                            other["n"], interval=other.get("interval"))
            cells.append(cell)
        lines.append(f"| {claim.key}: {claim.statement} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _effect(entry: dict) -> str:
    """One definition's word with its effect, interval and the p-value that decided it (plan section 2)."""
    ci = f", 95% CI {entry['interval'][0]:+.2f} to {entry['interval'][1]:+.2f}" if entry.get("interval") else ""
    verdict = entry["verdict"]
    p = entry["p_opposite"] if verdict == "contradicted" else entry["p_value"]
    side = " the other way" if verdict == "contradicted" else ""
    words = verdict if verdict == "holds" else f"**{verdict}**"
    return f"{words} ({entry['value']:+.2f}{ci}, p {p:.3g}{side})"


def definitions_table(results: dict[str, ClaimsResult]) -> str:
    """Each trend claim under each named definition (plan section 1), raw and trained minus untrained, one column
    pair per experiment; with two experiments (choosing, then confirming) the last column says whether the
    confirming word is the choosing one's (plan section 2: it replicates), raw and minus untrained. Empty when no claim was decided by definitions."""
    labels = list(results)
    head = "| claim | definition | " + " | ".join(f"{label} raw | {label} minus untrained" for label in labels)
    lines = [head + (" | replicates |" if len(labels) == 2 else " |"),
             "|---|---|" + "---|---|" * len(labels) + ("---|" if len(labels) == 2 else "")]
    first = next(iter(results.values()))
    for claim in first.claims:
        named = [results[label][claim.key].details.get("definitions") or {} for label in labels]
        for name in named[0]:
            cells, words = [], []
            for defs in named:
                entry = defs.get(name) or {}
                minus = entry.get("minus_untrained") or {}
                cells += [_effect(entry) if entry else "–", _effect(minus) if minus else "–"]
                words.append((entry.get("verdict"), minus.get("verdict")))
            row = f"| {claim.key} | {name} | " + " | ".join(cells)
            if len(labels) == 2:
                same = ["yes" if a and a == b else "no" if a and b else "–" for a, b in zip(*words)]
                row += f" | raw {same[0]}, minus untrained {same[1]}"
            lines.append(row + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def claims_table(root: Path, permutations: int, result: ClaimsResult | None = None) -> str:
    result = result or evaluate_claims(root, num_permutations=permutations)
    lines = ["| claim | statistic | value (95% CI) | p (one-sided) | p (other way) | n | verdict |",
             "|---|---|---:|---:|---:|---:|---|"]
    for c in result.claims:
        if c.holds is None:
            lines.append(f"| {c.key} | {c.statistic} | – | – | – | – | untested: {c.note} |")
            continue
        words = c.verdict if c.verdict == "holds" else f"**{c.verdict}**"
        against = "–" if c.p_opposite is None else f"{c.p_opposite:.3g}"
        lines.append(f"| {c.key} | {c.statistic} | {c.effect()} | {c.p_value:.3g} | {against} | {c.n} | {words} |")
    sweeps, knob = [], "setting"
    for key in ("width", "depth", "data"):
        claim = result[key]
        for row in claim.details.get("sweep", []):
            knob = next(k for k in ("min_score", "threshold") if k in row)
            rho = "– (no slice varies)" if row["rho"] != row["rho"] else f"{row['rho']:+.2f}"
            sweeps.append(f"| {key} | {row['on']} | {row[knob]} | {rho} | {row['p_value']:.3g} | "
                          f"{row.get('mean_block_strength', float('nan')):.2f} | {row['mean_block_fraction']:.2f} |")
    if sweeps:
        lines += ["", f"Sweep of {knob} (the detector re-run on the saved heatmaps):", "",
                  f"| claim | rows | {knob} | mean rho | p | mean block strength | mean block fraction |",
                  "|---|---|---:|---:|---:|---:|---:|", *sweeps]
    extra = []
    for c in result.claims:
        details = {k: v for k, v in c.details.items() if k not in ("sweep", "strata", "compare") and v is not None}
        if details and c.holds is not None:
            extra.append(f"- {c.key}: " + ", ".join(f"{k} = {_short(v)}" for k, v in details.items()))
    return "\n".join(lines + ([""] + extra if extra else []))


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list) and len(value) > 6:
        return f"[{len(value)} items]"
    return str(value)


def with_block_area(root: Path, summary: dict) -> dict:
    """The summary with every model's block area (summaries of earlier releases lack it: found again from
    the saved heatmap by the experiment's own detector)."""
    for m in summary["models"]:
        if m.get("block_area") is None:
            detector = BlockResult.load(root / m["paths"]["blocks"]).detector
            m["block_area"] = detector.find(CKAResult.load(root / m["paths"]["cka"])).block_area
    return summary


def grid_tables(summary: dict) -> str:
    out = []
    for table in summary["grid"]:
        models = [m for m in summary["models"] if (m["residual"], m["fraction"], m.get("family", "resnet"))
                  == (table["residual"], table["fraction"], table.get("family", "resnet"))]
        out.append(f"Training fraction {table['fraction']:g}: block area (mean ± sd over seeds) / block strength / "
                   "block fraction / test accuracy / clean training accuracy")
        out.append("")
        out.append("| depth \\ width | " + " | ".join(f"{w:g}" for w in table["widths"]) + " |")
        out.append("|---|" + "---:|" * len(table["widths"]))
        for depth in table["depths"]:
            cells = []
            for width in table["widths"]:
                cell = [m for m in models if (m["depth"], m["width"]) == (depth, width)]
                if not cell:
                    cells.append("–")
                    continue
                strength = np.array([m.get("block_strength", np.nan) for m in cell])
                area = np.array([m["block_area"] for m in cell])
                bf = np.array([m["block_fraction"] for m in cell])
                acc = np.array([m["test_accuracy"] for m in cell])
                fit = [m.get("train_accuracy") for m in cell]
                fitted = f"{100 * np.mean(fit):.1f}%" if None not in fit else "–"
                sd = f" ± {area.std(ddof=1):.2f}" if len(cell) > 1 else ""
                cells.append(f"{area.mean():.2f}{sd} / {strength.mean():.2f} / {bf.mean():.2f} / "
                             f"{100 * acc.mean():.1f}% / {fitted} "
                             f"(n={len(cell)})")
            out.append(f"| {depth} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def trend_figure(summary: dict, path: Path, title: str) -> None:
    table = max(summary["grid"], key=lambda t: len(t["depths"]) * len(t["widths"]))
    models = [m for m in summary["models"] if (m["residual"], m["fraction"]) == (table["residual"], table["fraction"])]
    fig = Figure(figsize=(4.2, 3.0), layout="constrained")
    ax = fig.subplots()
    widths = table["widths"]
    for k, depth in enumerate(table["depths"]):
        colour = f"C{k}"
        means = []
        for j, width in enumerate(widths):
            vals = [m["block_area"] for m in models
                    if (m["depth"], m["width"]) == (depth, width)]
            ax.scatter(np.full(len(vals), j) + 0.06 * (k - 1), vals, s=10, color=colour, alpha=0.6)
            means.append(np.mean(vals) if vals else np.nan)
        name = f"ViT-{depth}" if table.get("family") == "vit" else f"ResNet-{depth}"
        ax.plot(range(len(widths)), means, color=colour, label=name)
    ax.set_xticks(range(len(widths)), [f"{w:g}" for w in widths])
    ax.set_xlabel("width")
    ax.set_ylabel("block area")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=DPI * 1.5)


def heatmap_figures(root: Path, summary: dict, stem: Path) -> list[Path]:
    """One heatmap grid per depth x width table (per training fraction): `stem`.png for the
    largest table, `stem`-f<fraction>.png for the others (the data line's ends)."""
    largest = max(summary["grid"], key=lambda t: len(t["depths"]) * len(t["widths"]))
    paths = []
    for table in summary["grid"]:
        suffix = "" if table is largest else f"-f{table['fraction']:g}"
        path = stem.with_name(stem.name + suffix + ".png")
        heatmap_figure(root, summary, path, table)
        paths.append(path)
    return paths


def heatmap_figure(root: Path, summary: dict, path: Path, table: dict | None = None) -> None:
    table = table or max(summary["grid"], key=lambda t: len(t["depths"]) * len(t["widths"]))
    depths, widths = table["depths"], table["widths"]
    fig = Figure(figsize=(1.9 * len(widths) + 0.6, 1.8 * len(depths)), layout="constrained")
    axes = fig.subplots(len(depths), len(widths), squeeze=False)
    for i, depth in enumerate(depths):
        for j, width in enumerate(widths):
            ax = axes[len(depths) - 1 - i][j]
            cell = sorted((m for m in summary["models"] if (m["depth"], m["width"], m["fraction"], m["residual"])
                           == (depth, width, table["fraction"], table["residual"])), key=lambda m: m["seed"])
            if not cell:
                ax.set_axis_off()
                continue
            model = cell[0]
            cka = CKAResult.load(root / model["paths"]["cka"])
            plot_heatmap(cka, ax, colorbar=False, title=f"d{depth} w{width:g}: {model['block_fraction']:.2f} / "
                                                        f"{model.get('block_strength', float('nan')):.2f}")
            outline_blocks(ax, BlockResult.load(root / model["paths"]["blocks"]), original_rows=True, color="cyan")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.title.set_fontsize(7)
    fig.savefig(path, dpi=DPI)


def seeds_figure(root: Path, summary: dict, path: Path, seeds: int = 3) -> None:
    """Every seed (up to `seeds`) of each cell of the two deepest rows of the largest table: whether
    the blocks follow the picture from seed to seed (title: block strength and peak score)."""
    table = max(summary["grid"], key=lambda t: len(t["depths"]) * len(t["widths"]))
    cells = [(d, w) for d in sorted(table["depths"])[-2:][::-1] for w in table["widths"]]
    fig = Figure(figsize=(2.1 * seeds, 2.15 * len(cells)), layout="constrained")
    axes = fig.subplots(len(cells), seeds, squeeze=False)
    for row, (depth, width) in zip(axes, cells):
        found = sorted((m for m in summary["models"] if (m["depth"], m["width"], m["fraction"], m["residual"])
                        == (depth, width, table["fraction"], table["residual"])), key=lambda m: m["seed"])
        for ax, model in zip(row, found[:seeds] + [None] * (seeds - len(found[:seeds]))):
            if model is None:
                ax.set_axis_off()
                continue
            plot_heatmap(CKAResult.load(root / model["paths"]["cka"]), ax, colorbar=False, title="")
            outline_blocks(ax, BlockResult.load(root / model["paths"]["blocks"]), original_rows=True, color="cyan")
            ax.set_title(f"d{depth} w{width:g} s{model['seed']}\nstrength {model.get('block_strength', 0):.2f}, "
                         f"area {model['block_area']:.2f}, peak {model.get('peak_score') or 0:.2f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("")
            ax.set_ylabel("")
    fig.savefig(path, dpi=DPI)


def dynamics_table(root: Path, summary: dict, figure: Path | None = None) -> str:
    """Per architecture, mean block fraction (and mean first-PC variance) over seeds at each recorded epoch;
    with `figure`, block fraction against epoch per architecture as a PNG."""
    from ckatlas.analysis.dynamics import BlockDynamics

    rows: dict[tuple, list[BlockDynamics]] = {}
    for m in summary["models"]:
        if "dynamics" in m["paths"]:
            rows.setdefault((m["depth"], m["width"]), []).append(BlockDynamics.load(root / m["paths"]["dynamics"]))
    if not rows:
        return ""
    epochs = [int(e) for e in next(iter(rows.values()))[0].epochs]
    lines = ["Block fraction / block strength through training (mean over seeds; in brackets the mean first-PC "
             "variance share):", "",
             "| depth, width | " + " | ".join(f"epoch {e}" for e in epochs) + " |", "|---|" + "---:|" * len(epochs)]
    for (depth, width), records in sorted(rows.items()):
        cells = []
        for k in range(len(epochs)):
            bf = np.mean([r.block_fraction[k] for r in records])
            st = np.mean([r.block_strength[k] for r in records])
            pc = np.mean([r.mean_variance_explained()[k] for r in records])
            cells.append(f"{bf:.2f} / {st:.2f} ({pc:.2f})")
        lines.append(f"| {depth}, {width:g} | " + " | ".join(cells) + " |")
    from scipy.stats import wilcoxon

    from ckatlas.analysis import find_threshold_blocks

    fitted = {m["name"] for m in summary["models"] if "dynamics" in m["paths"] and (m.get("train_accuracy") or 0) >= 0.99}
    named = [(m["name"], BlockDynamics.load(root / m["paths"]["dynamics"])) for m in summary["models"]
             if "dynamics" in m["paths"]]
    for label, subset in (("every model", named), ("the models that fit (clean training accuracy >= 99%)",
                                                   [(n, r) for n, r in named if n in fitted])):
        for stat in ("block_fraction", "block_strength", "block_area"):
            change = np.array([getattr(r, stat)[-1] - getattr(r, stat)[0] for _, r in subset])
            if not len(change):
                continue
            p_value = wilcoxon(change).pvalue if np.any(change != 0) else 1.0
            lines += ["", f"{stat.replace('_', ' ').capitalize()}, last recorded epoch minus initialisation, {label}: "
                          f"mean {change.mean():+.2f}, {int((change < 0).sum())} lower and {int((change > 0).sum())} "
                          f"higher of {len(change)}, Wilcoxon signed-rank p = {p_value:.2g} (two-sided)."]
    ends = [r for _, r in named if r.block_strength[-1] > 0]
    if ends:
        first = [int(r.epochs[np.flatnonzero(r.block_strength >= r.block_strength[-1] / 2)[0]]) for r in ends]
        lines += ["", f"Of the {len(ends)} models that end with a block, the epoch at which the block strength first "
                      f"reaches half its final value: median {np.median(first):g} (range {min(first)}-{max(first)}); "
                      f"{sum(r.block_strength[0] > 0 for r in ends)} of them already had a block at initialisation."]

    lines += ["", "The same records with the threshold rule of earlier releases (CKA >= 0.9), for comparison:", "",
              "| depth, width | " + " | ".join(f"epoch {e}" for e in epochs) + " |", "|---|" + "---:|" * len(epochs)]
    for (depth, width), records in sorted(rows.items()):
        cells = [f"{np.mean([find_threshold_blocks(r.cka[k]).block_fraction for r in records]):.2f}"
                 for k in range(len(epochs))]
        lines.append(f"| {depth}, {width:g} | " + " | ".join(cells) + " |")
    if figure is not None:
        fig = Figure(figsize=(8.4, 3.2), layout="constrained")
        axes = fig.subplots(1, 2)
        depths = sorted({d for d, _ in rows})
        widths = sorted({w for _, w in rows})
        for ax, stat in zip(axes, ("block_fraction", "block_area")):
            for (depth, width), records in sorted(rows.items()):
                mean = np.mean([getattr(r, stat) for r in records], axis=0)
                ax.plot(epochs, mean, ["-", "--", ":"][widths.index(width) % 3], color=f"C{depths.index(depth)}",
                        marker="o", markersize=3, label=f"depth {depth}, width {width:g}")
            ax.set_xlabel("epoch (0: initialisation)")
            ax.set_ylabel(f"{stat.replace('_', ' ')} (mean over seeds)")
            ax.set_ylim(-0.03, 1.03)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=6, fontsize=6,
                   handlelength=3)
        fig.savefig(figure, dpi=DPI * 1.5)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", help="DIR=LABEL pairs")
    parser.add_argument("--figures", required=True, help="folder for the PNGs")
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--saved", action="store_true",
                        help="render each experiment's own claims.json (as the experiment decided them) instead of "
                             "deciding them again")
    args = parser.parse_args()
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    results = {}
    for item in args.experiments:
        folder, label = item.split("=", 1)
        results[label] = (ClaimsResult.load(Path(folder) / "claims.json") if args.saved
                          else evaluate_claims(Path(folder), num_permutations=args.permutations))
    print("### Summary\n")
    print(summary_table(results) + "\n")
    definitions = definitions_table(results)
    if definitions:
        print("### The trend claims under each definition\n")
        print(definitions + "\n")
    for item in args.experiments:
        folder, label = item.split("=", 1)
        root = Path(folder)
        summary = with_block_area(root, json.loads((root / "summary.json").read_text()))
        print(f"### {label} ({root})\n")
        print(grid_tables(summary))
        print(claims_table(root, args.permutations, results[label]))
        dynamics = dynamics_table(root, summary, figures / f"{label}-dynamics.png")
        if dynamics:
            print(dynamics)
            print(f"![{label}: block fraction through training]({figures / f'{label}-dynamics.png'})\n")
        trend_figure(summary, figures / f"{label}-trend.png", label)
        drawn = heatmap_figures(root, summary, figures / f"{label}-heatmaps")
        seeds_figure(root, summary, figures / f"{label}-seeds.png")
        print(f"\n![{label}: block area by width]({figures / f'{label}-trend.png'})")
        print(f"![{label}: every seed of the deepest rows]({figures / f'{label}-seeds.png'})")
        for path in drawn:
            print(f"![{label}: heatmaps]({path})")
        print()
        timings = summary.get("timings") or {}
        if timings:
            print("Stage times (s, summed over steps): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + "\n")


if __name__ == "__main__":
    main()
