"""How the demo's finding depends on the block detector's setting: block strength grids from saved heatmaps.

Reads a finished experiment directory (`ckatlas demo --out DIR`, or any grid), finds the
blocks of every model's within-model CKA heatmap (cka/<run>.npz) again at several values
of the detector's main setting (the contrast rule's ``min_score``; with ``--method
threshold``, the threshold rule's ``threshold``), with the experiment's other detector
settings, and prints for each value the depth x width grid of block strength (block fraction
for the threshold rule; mean over seeds) and the report's verdict on whether it grows with
width and with depth. It trains nothing and takes seconds.

    ckatlas demo --out demo-out && python benchmarks/demo_thresholds.py demo-out
    python benchmarks/demo_thresholds.py demo-out --method threshold --values 0.9 0.95 0.97
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ckatlas.experiment.claims import SWEEPS, experiment_detector
from ckatlas.heatmap import CKAResult
from ckatlas.report.headline import trend_sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", type=Path, help="a finished experiment directory")
    parser.add_argument("--method", choices=sorted(SWEEPS), default="contrast")
    parser.add_argument("--values", type=float, nargs="+", help="values of the setting (default: the claims' sweep)")
    args = parser.parse_args()

    summary = json.loads((args.experiment / "summary.json").read_text(encoding="utf-8"))
    detector = experiment_detector(args.experiment).replace(method=args.method)
    knob, default_values = SWEEPS[args.method]
    statistic = "block_strength" if args.method == "contrast" else "block_fraction"
    models = [m for m in summary["models"] if m["residual"]]
    depths = sorted({m["depth"] for m in models})
    widths = sorted({m["width"] for m in models})
    heatmaps = {m["name"]: CKAResult.load(args.experiment / m["paths"]["cka"]) for m in models}
    print(f"{args.experiment}: {len(models)} models; detector {detector.to_dict()} but {knob}")
    for value in args.values or default_values:
        cells: dict[tuple[int, float], list[float]] = defaultdict(list)
        for m in models:
            found = detector.replace(**{knob: value}).find(heatmaps[m["name"]])
            cells[(m["depth"], m["width"])].append(getattr(found, statistic))
        grid = [[float(np.mean(cells[(d, w)])) if cells[(d, w)] else None for w in widths] for d in depths]
        print(f"\n{knob} {value:g}: {statistic.replace('_', ' ')}, mean over seeds (depth x width {widths})")
        for d, row in zip(depths, grid):
            print(f"{d:>5} " + "".join(f"{v:8.2f}" if v is not None else "       -" for v in row))
        print("  " + trend_sentences(depths, widths, grid, statistic.replace("_", " ").capitalize())[0])


if __name__ == "__main__":
    main()
