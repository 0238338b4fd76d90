"""The regime's positive control drawn as its statistics judge it: every model's heatmap, trained and untrained.

One row per architecture (depth x width), one column per seed, trained heatmaps on the left and
the same networks at initialisation on the right, all on one colour scale (CKA 0 to 1). Each
panel's title gives the three definitions' statistics: the paper's threshold-rule block fraction
(CKA >= 0.9), the contrast rule's block area (the experiment's blocks, outlined) and the mean
off-diagonal CKA.

    python scripts/regime/control_figure.py /work/regime-control --png docs/reproduction/regime-control.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ckatlas.analysis.blocks import BlockDetector
from ckatlas.experiment.claim_kinds import PAPER_DETECTOR, mean_off_diagonal
from ckatlas.heatmap import CKAResult
from ckatlas.report import outline_blocks
from ckatlas.io.summary import ExperimentSummary

def statistics(matrix: np.ndarray, detector: BlockDetector) -> tuple[float, float, float]:
    """(threshold-rule block fraction, contrast block area, mean off-diagonal CKA) of one heatmap: what the
    claims' three definitions read (`ckatlas.experiment.claim_kinds`)."""
    return PAPER_DETECTOR.find(matrix).block_fraction, detector.find(matrix).block_area, mean_off_diagonal(matrix)


def draw(root: Path, png: Path) -> list[str]:
    """Draw the figure; returns one line of numbers per model (trained, then untrained)."""
    summary = ExperimentSummary.load(root / "summary.json")
    detector = BlockDetector.from_saved(summary.blocks_table or None)
    archs = sorted({(m.depth, m.width) for m in summary.models})
    seeds = sorted({m.seed for m in summary.models})
    fig = Figure(figsize=(1.9 * 2 * len(seeds) + 1, 2.3 * len(archs)), layout="constrained")
    axes = fig.subplots(len(archs), 2 * len(seeds), squeeze=False)
    lines = []
    for row, (depth, width) in enumerate(archs):
        for col, seed in enumerate(seeds):
            model = next(m for m in summary.models if (m.depth, m.width, m.seed) == (depth, width, seed))
            for offset, kind in ((0, "cka"), (len(seeds), "untrained")):
                matrix = CKAResult.load(root / model.paths[kind]).matrix
                fraction, area, mean = statistics(matrix, detector)
                ax = axes[row, col + offset]
                image = ax.imshow(matrix, vmin=0, vmax=1, cmap="magma", origin="lower", interpolation="nearest")
                outline_blocks(ax, detector.find(matrix))
                state = "trained" if kind == "cka" else "untrained"
                ax.set_title(f"R{depth} w{width:g} s{seed} {state}\nfrac {fraction:.2f} area {area:.2f}\n"
                             f"mean {mean:.2f}", fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
                lines.append(f"{model.name} {state}: paper fraction {fraction:.3f}, stands-out area {area:.3f}, "
                             f"mean off-diagonal {mean:.3f}")
    fig.colorbar(image, ax=axes, shrink=0.6, label="CKA")
    fig.suptitle("Regime control: trained (left) and untrained (right), one colour scale", fontsize=10)
    fig.savefig(png, dpi=80)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path, help="the finished control experiment")
    parser.add_argument("--png", type=Path, required=True, help="where the figure goes")
    args = parser.parse_args()
    print("\n".join(draw(args.experiment, args.png)))


if __name__ == "__main__":
    main()
