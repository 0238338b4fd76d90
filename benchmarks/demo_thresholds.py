"""How the demo's finding depends on the block threshold: block fraction grids from saved heatmaps.

Reads a finished experiment directory (`ckatlas demo --out DIR`, or any grid), finds the
blocks of every model's within-model CKA heatmap (cka/<run>.npz) again at several
thresholds, with the experiment's other block settings, and prints for each threshold
the depth x width grid of block fraction (mean over seeds) and the report's verdict on
whether it grows with width and with depth. This is how the demo's threshold (0.97)
was chosen; it trains nothing and takes seconds.

    ckatlas demo --out demo-out && python benchmarks/demo_thresholds.py demo-out
    python benchmarks/demo_thresholds.py demo-out --thresholds 0.9 0.95 0.97
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ckatlas.analysis import find_blocks
from ckatlas.experiment import load_config
from ckatlas.heatmap import CKAResult
from ckatlas.report.headline import trend_sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", type=Path, help="a finished experiment directory")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.98])
    args = parser.parse_args()

    summary = json.loads((args.experiment / "summary.json").read_text(encoding="utf-8"))
    settings = dataclasses.asdict(load_config(args.experiment / "experiment.toml").analyses.blocks)
    models = [m for m in summary["models"] if m["residual"]]
    depths = sorted({m["depth"] for m in models})
    widths = sorted({m["width"] for m in models})
    matrices = {m["name"]: CKAResult.load(args.experiment / "cka" / f"{m['name']}.npz").matrix for m in models}
    print(f"{args.experiment}: {len(models)} models; block settings {settings} but the threshold")
    for threshold in args.thresholds:
        cells: dict[tuple[int, float], list[float]] = defaultdict(list)
        for m in models:
            found = find_blocks(matrices[m["name"]], **{**settings, "threshold": threshold})
            cells[(m["depth"], m["width"])].append(found.block_fraction)
        grid = [[float(np.mean(cells[(d, w)])) if cells[(d, w)] else None for w in widths] for d in depths]
        print(f"\nthreshold {threshold:g}: block fraction, mean over seeds (depth x width {widths})")
        for d, row in zip(depths, grid):
            print(f"{d:>5} " + "".join(f"{v:8.2f}" if v is not None else "       -" for v in row))
        print("  " + trend_sentences(depths, widths, grid)[0])


if __name__ == "__main__":
    main()
