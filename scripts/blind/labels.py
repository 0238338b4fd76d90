"""The block detector against a blind reader (REPRODUCTION.md, "Block area, a third seed set").

1. `draw`: an experiment's final all-layer heatmaps of the chosen depths, in a grid, with nothing
   but each model's name (no outline, no score; with --own-range each on its own range, so that
   its overall brightness cannot be read), to be labelled by eye before anything else is
   looked at: 0 = no square stands out, 1 = faint, 2 = a plain square; one "RUN LABEL" line each.
2. `compare`: those labels against the detector at its defaults (a block found or not) and the
   Spearman correlation of the label with block area, block strength, the threshold rule's block
   fraction and the heatmap's mean CKA (its brightness).

    python scripts/blind/labels.py draw out/fdyn-200 --depths 20,14 --out labels.png
    python scripts/blind/labels.py draw out/data-300 --depths 14 --own-range --out labels-own.png
    python scripts/blind/labels.py compare out/fdyn-200 docs/reproduction/data/labels-200.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from ckatlas.analysis import BlockDetector, find_threshold_blocks
from ckatlas.heatmap import CKAResult
from ckatlas.report import plot_heatmap
from ckatlas.io.summary import read_summary


def draw(root: Path, depths: list[int], out: Path, columns: int = 6, own_range: bool = False) -> int:
    files = []  # from summary.json, not from run names (which leave "-f" out at fraction 1.0)
    for model in read_summary(root).models:
        path = model.path("cka")
        if path is not None and model.depth in depths and (root / path).is_file():
            files.append((depths.index(model.depth), model.width, model.seed, root / path))
    files.sort()
    if not files:
        raise SystemExit(f"labels.py: {root} holds no heatmap of depth {', '.join(map(str, depths))}")
    rows = -(-len(files) // columns)
    fig = Figure(figsize=(2.0 * columns, 2.05 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (_, _, _, path) in zip(axes, files):
        plot_heatmap(CKAResult.load(path).matrix, ax, colorbar=False, title=path.stem,
                     value_range="own" if own_range else (0.0, 1.0))
        ax.title.set_fontsize(6)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_xlabel(""), ax.set_ylabel("")
    for ax in axes[len(files):]:
        ax.set_axis_off()
    fig.savefig(out, dpi=100)
    return len(files)


def compare(root: Path, labels_file: Path) -> None:
    labels = {}
    for line in labels_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, value = line.split()
            labels[name] = int(value)
    rows = []
    for name, label in labels.items():
        matrix = CKAResult.load(root / "cka" / f"{name}.npz").matrix
        found = BlockDetector().find(matrix)
        brightness = float(np.nanmean(matrix[~np.eye(len(matrix), dtype=bool)]))
        rows.append((label, found.block_area, found.block_strength, find_threshold_blocks(matrix).block_fraction,
                     brightness))
    table = np.array(rows)
    for name, column in (("block area", 1), ("block strength", 2), ("threshold rule's block fraction", 3),
                         ("mean CKA (brightness)", 4)):
        rho, p = spearmanr(table[:, 0], table[:, column])
        print(f"Spearman(label, {name}) = {rho:+.2f} (p {p:.2g}, n {len(table)})")
    for value in (0, 1, 2):
        these = table[table[:, 0] == value]
        print(f"label {value}: {len(these)} heatmaps, the detector finds a block in {int((these[:, 2] > 0).sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("draw")
    d.add_argument("root", type=Path)
    d.add_argument("--depths", default="20,14")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--own-range", action="store_true",
                   help="each heatmap on its own off-diagonal range (its brightness hidden), not CKA's 0..1")
    c = sub.add_parser("compare")
    c.add_argument("root", type=Path)
    c.add_argument("labels", type=Path)
    args = parser.parse_args()
    if args.command == "draw":
        count = draw(args.root, [int(x) for x in args.depths.split(",")], args.out, own_range=args.own_range)
        print(f"drew {count} heatmaps into {args.out}")
    else:
        compare(args.root, args.labels)


if __name__ == "__main__":
    main()
