"""Every claim of finished experiments decided again by two block detectors side by side, from the saved
heatmaps and analyses (REPRODUCTION.md, "The border rule"): the detector that found the saved blocks (a
border judged with 10% of the layers beyond it) and today's default (15%).

    python scripts/redecide.py out/fdyn=fitted-0 out/fdyn-200=fitted-200 --permutations 10000 > redecide.md

Per experiment: each claim's verdict under both detectors (`evaluate_claims` with the detector given, so
every model's blocks are found again on its saved heatmap; no sweep), and, where the runs recorded their
training (`dynamics.npz`), block area at the last recorded epoch minus at initialisation with a two-sided
Wilcoxon signed-rank test over the models.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from ckatlas.analysis import BlockDetector
from ckatlas.analysis.dynamics import BlockDynamics
from ckatlas.experiment.claims import evaluate_claims
sys.path.insert(0, str(Path(__file__).resolve().parent))  # its neighbour, from any working directory
from reproduction import verdict_cell  # noqa: E402  (scripts/reproduction.py: the same cells as its tables)

DETECTORS = {"border 10%": BlockDetector(border_fraction=0.1),
             "border 15% (the default)": BlockDetector()}


def verdict(claim) -> str:
    return verdict_cell(claim.verdict, claim.value, claim.p_value, claim.n, interval=claim.interval)


def training_change(root: Path, detector: BlockDetector) -> str:
    records = sorted(root.glob("runs/*/dynamics.npz"))
    if not records:
        return "untested (no dynamics records)"
    changes = []
    for path in records:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            record = BlockDynamics.load(path).redetect(detector)
        changes.append(float(record.block_area[-1] - record.block_area[0]))
    changes = np.array(changes)
    p = wilcoxon(changes).pvalue if np.any(changes != 0) else 1.0
    return (f"{changes.mean():+.3f} (p {p:.2g}; {int((changes < 0).sum())} lower, {int((changes > 0).sum())} higher, "
            f"n {len(changes)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", help="DIR=LABEL pairs")
    parser.add_argument("--permutations", type=int, default=10_000)
    args = parser.parse_args()
    for pair in args.experiments:
        folder, label = pair.split("=", 1)
        root = Path(folder)
        results = {name: evaluate_claims(root, num_permutations=args.permutations, detector=d, compare_with=None,
                                         sweep=()) for name, d in DETECTORS.items()}
        names = list(results)
        print(f"### {label} ({json.loads((root / 'summary.json').read_text())['name']})\n")
        print("| claim | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for claim in results[names[0]].claims:
            cells = [verdict(results[n][claim.key]) for n in names]
            print(f"| {claim.key} | " + " | ".join(cells) + " |")
        print("| training change of block area (last - init) | "
              + " | ".join(training_change(root, d) for d in DETECTORS.values()) + " |\n", flush=True)


if __name__ == "__main__":
    main()
