"""Does each block found with CKA survive under another measure? (issue 22; REPRODUCTION.md)

Given two finished experiments over the same runs, one with CKA heatmaps and one with another
measure's (`[cka] measure`, e.g. scripts/measures/fashion-procrustes.toml), both with the same
detector: for every block of the CKA heatmaps, its best overlap (Jaccard index of the two layer
sets) with a block of the other measure's heatmap of the same model. The rule, fixed before the
runs: a block survives when that overlap is at least 0.5. Printed per architecture, with each
measure's mean block fraction and strength, and their rank correlation over the models.

    python scripts/measures/survival.py out/fashion-dynamics out/fashion-procrustes
    python scripts/measures/survival.py out/fashion-dynamics out/fashion-procrustes --min-score 0.4

`--min-score` finds the other measure's blocks again at another min_score (a sweep for the
reader, not the rule fixed in advance); the peak score of each model's heatmap (the contrast of
its most standing-out run, found as a block or not) is compared between the measures too.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ckatlas.analysis import BlockDetector, BlockResult
from ckatlas.heatmap import CKAResult

SURVIVES = 0.5


def _jaccard(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def _spans(result: BlockResult) -> list[tuple[int, int]]:
    """Blocks as (first, last) rows of the heatmap (the layers' own indices, whatever rows were analysed)."""
    rows = result.layer_indices
    return [(rows[b.start], rows[b.end]) for b in result.blocks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cka", type=Path, help="the experiment with CKA heatmaps")
    parser.add_argument("other", type=Path, help="the same runs with another measure's heatmaps")
    parser.add_argument("--min-score", type=float, help="find the other measure's blocks again at this min_score")
    args = parser.parse_args()
    refind = None if args.min_score is None else BlockDetector().replace(min_score=args.min_score)
    summaries = [json.loads((root / "summary.json").read_text()) for root in (args.cka, args.other)]
    measure = summaries[1]["config"]["cka"].get("measure", "cka")
    other = {m["name"]: m for m in summaries[1]["models"]}
    cells: dict[tuple, list] = defaultdict(list)
    pairs = []
    for model in summaries[0]["models"]:
        if model["name"] not in other:
            continue
        mine = BlockResult.load(args.cka / model["paths"]["blocks"])
        theirs = BlockResult.load(args.other / other[model["name"]]["paths"]["blocks"])
        if refind is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                theirs = refind.find(CKAResult.load(args.other / other[model["name"]]["paths"]["cka"]))
        overlaps = [max([_jaccard(a, b) for b in _spans(theirs)], default=0.0) for a in _spans(mine)]
        found = {**other[model["name"]], "block_fraction": theirs.block_fraction, "block_strength": theirs.block_strength}
        cells[(model["depth"], model["width"])].append((model, found, overlaps))
        pairs.append((model["peak_score"], theirs.peak_score, model["block_fraction"], theirs.block_fraction))
    print(f"CKA blocks against {measure} blocks (a block survives when its best Jaccard overlap >= {SURVIVES}):\n")
    print(f"| depth, width | CKA blocks | survive | mean best overlap | fraction CKA / {measure} | "
          f"strength CKA / {measure} |")
    print("|---|---:|---:|---:|---:|---:|")
    total = kept = 0
    for (depth, width), rows in sorted(cells.items()):
        overlaps = [o for _, _, found in rows for o in found]
        n, k = len(overlaps), sum(o >= SURVIVES for o in overlaps)
        total, kept = total + n, kept + k
        frac = [np.mean([r[i]["block_fraction"] for r in rows]) for i in (0, 1)]
        strength = [np.mean([r[i]["block_strength"] for r in rows]) for i in (0, 1)]
        best = f"{np.mean(overlaps):.2f}" if overlaps else "-"
        print(f"| {depth}, {width:g} | {n} | {k} | {best} | {frac[0]:.2f} / {frac[1]:.2f} | "
              f"{strength[0]:.2f} / {strength[1]:.2f} |")
    values = np.array(pairs, dtype=float)
    rho = spearmanr(values[:, 0], values[:, 1]).statistic
    setting = "its defaults" if refind is None else f"min_score {args.min_score:g}"
    print(f"\n{kept} of {total} CKA blocks survive under {measure} ({len(pairs)} models; {measure} blocks by the "
          f"detector at {setting}). Peak score, mean over the models: CKA {np.nanmean(values[:, 0]):.2f}, {measure} "
          f"{np.nanmean(values[:, 1]):.2f}; rank correlation over the models {rho:+.2f}.")


if __name__ == "__main__":
    main()
