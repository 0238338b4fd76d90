"""The regime, measured (issue 32 section 2): how the heatmap's floor, the three named statistics and clean
training and test accuracy move with training length and recipe.

    python scripts/regime/measure.py --out docs/reproduction/regime --runs /work/regime/runs   # train what is missing
    python scripts/regime/measure.py --out out/regime --table-only    # only what is finished
    python scripts/regime/measure.py --out out/regime --png docs/reproduction/regime.png

Grid: ResNet-14 and -20 at widths 1 and 4, seeds 700 and 701 (never used before), on 1/64 of
Fashion-MNIST at 16x16 (940 images; batch 128, 8 steps per epoch), for 30, 100 and 300 epochs
(about 240, 800 and 2,400 SGD steps) under two recipes:
- "today": the fashion-study's (lr 0.03, no augmentation, weight decay 5e-4, cosine per step);
- "augmented": ckatlas's defaults with the paper's augmentation (pad-and-crop and flips, lr 0.1);
- "paper": the paper's recipe as a whole (`recipe = "paper"`: lr 0.01, cosine per epoch, weight decay
  2e-4 on kernels, [0, 1] pixels, reflect pad-and-crop and flips, the paper-style ResNet, BatchNorm
  momentum 0.01, the best epoch on a held-out 10% of the training images), at its 300 epochs only.
Runs are trained cheapest first, so that an interrupted session leaves a usable table; each
finished run's numbers (OUT/RUN.json) and heatmap (OUT/RUN.npy, 40-200 kB) are written once and read
back from there, so OUT can be committed and the study resumed on another machine (the runs
themselves, under --runs, are not needed once measured).

Per run: clean training accuracy, test accuracy, and from the all-layer heatmap on 2,048 test images
its off-diagonal minimum and mean, the paper's statistic (threshold rule's block fraction at 0.9),
the contrast rule's block area, the first-half and second-half lag profile (mean CKA at distance d
from the diagonal, d / layers in (0, 0.5] and (0.5, 1]: flat over a square, falling along a band).
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings
from pathlib import Path

import numpy as np

from ckatlas import heatmap
from ckatlas.analysis import BlockDetector
from ckatlas.data.subsets import validation_split
from ckatlas.train import TrainConfig, load_run, train

RECIPES = {
    "today": dict(lr=0.03, augment=False),
    "augmented": dict(lr=0.1, augment=True),
    "paper": dict(recipe="paper"),  # TrainConfig.from_recipe("paper"): the official code's recipe as a whole
}
#: The paper's recipe is its 300 epochs (its cosine is stepped per epoch over them); the others at every length.
RECIPE_EPOCHS = {"paper": (300,)}
SETTING = dict(dataset="fashion-mnist", fraction=1 / 64, resize=16, eval_every=0)
DEPTHS, WIDTHS, SEEDS, EPOCHS = (14, 20), (1.0, 4.0), (700, 701), (30, 100, 300)


def runs() -> list[tuple[str, int, float, int, int]]:
    """Every (recipe, depth, width, seed, epochs), cheapest first (epochs x depth x width^2)."""
    grid = [(r, d, w, s, e) for r in RECIPES for d in DEPTHS for w in WIDTHS for s in SEEDS
            for e in RECIPE_EPOCHS.get(r, EPOCHS)]
    return sorted(grid, key=lambda g: (g[4] * g[1] * g[2] ** 2, g[0], g[3]))


def name(recipe: str, depth: int, width: float, seed: int, epochs: int) -> str:
    return f"{recipe}-r{depth}-w{width:g}-e{epochs}-s{seed}"


def lag_profile(matrix: np.ndarray) -> np.ndarray:
    """Mean off-diagonal CKA at each distance 1..L-1 from the diagonal."""
    n = len(matrix)
    return np.array([np.nanmean(np.diagonal(matrix, k)) for k in range(1, n)])


def fitted_on(config: TrainConfig) -> int:
    """How many training images the run takes its SGD steps on (less the held-out split of "best-val")."""
    labels = config.load_data().y_train
    if config.keep != "best-val":
        return len(labels)
    return len(validation_split(labels, config.val_fraction, config.subset_seed)[0])


def measure(out: Path, runs_dir: Path, recipe: str, depth: int, width: float, seed: int, epochs: int) -> dict:
    record = out / f"{name(recipe, depth, width, seed, epochs)}.json"
    if record.is_file():
        return json.loads(record.read_text())
    settings = dict(RECIPES[recipe])
    config = TrainConfig.from_recipe(settings.pop("recipe", "ckatlas"), arch=f"resnet{depth}", width=width, seed=seed,
                                     epochs=epochs, **SETTING, **settings)
    run_dir = runs_dir / name(recipe, depth, width, seed, epochs)
    result = train(config, run_dir, resume=True, quiet=True)
    final = result.metrics["final"]
    run = load_run(run_dir)
    x = config.load_data().x_test[:2048]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cka = heatmap(run.model, x, layers="all", batch_size=256, shuffle=False).matrix
        off = cka[~np.eye(len(cka), dtype=bool)]
        lags = lag_profile(cka)
        half = len(lags) // 2
        row = {
            "recipe": recipe, "depth": depth, "width": width, "seed": seed, "epochs": epochs,
            "steps": epochs * -(-fitted_on(config) // config.batch_size),
            "train_accuracy": final["train_accuracy"], "test_accuracy": final["test_accuracy"],
            "train_seconds": final["train_seconds"], "precision": run.info["environment"].get("precision"),
            "min_cka": float(np.nanmin(off)), "mean_cka": float(np.nanmean(off)),
            "paper_fraction": BlockDetector(method="threshold", threshold=0.9).find(cka).block_fraction,
            "block_area": BlockDetector().find(cka).block_area,
            "lag_near": float(np.nanmean(lags[:half])), "lag_far": float(np.nanmean(lags[half:])),
        }
    np.save(out / f"{name(recipe, depth, width, seed, epochs)}.npy", cka.astype(np.float32))
    record.write_text(json.dumps(row))
    return row


def table(rows: list[dict]) -> str:
    keys = ("train_accuracy", "test_accuracy", "min_cka", "mean_cka", "paper_fraction", "block_area", "lag_near",
            "lag_far", "train_seconds")
    lines = ["| recipe | model | epochs (steps) | seeds | clean train acc | test acc | min CKA | mean CKA | "
             "paper fraction (0.9) | block area | lag near | lag far | train s |",
             "|---|---|---:|---:|" + "---:|" * len(keys)]
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["recipe"], r["depth"], r["width"], r["epochs"]), []).append(r)
    for (recipe, depth, width, epochs), group in sorted(cells.items()):
        means = " | ".join(f"{statistics.mean(g[k] for g in group):.3f}" if k != "train_seconds" else
                           f"{statistics.mean(g[k] for g in group):.0f}" for k in keys)
        lines.append(f"| {recipe} | ResNet-{depth} w{width:g} | {epochs} ({group[0]['steps']}) | {len(group)} | {means} |")
    return "\n".join(lines)


def draw(out: Path, rows: list[dict], png: Path) -> None:
    from matplotlib.figure import Figure

    from ckatlas.report import plot_heatmap

    seed = SEEDS[0]
    panels = [(r, d, w, e) for r in RECIPES for d in DEPTHS for w in WIDTHS for e in RECIPE_EPOCHS.get(r, EPOCHS)
              if (out / f"{name(r, d, w, seed, e)}.npy").is_file()]
    cols = len(EPOCHS)
    rows_n = -(-len(panels) // cols)
    fig = Figure(figsize=(2.3 * cols, 2.3 * rows_n), layout="constrained")
    axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
    for ax, (r, d, w, e) in zip(axes, panels):
        plot_heatmap(np.load(out / f"{name(r, d, w, seed, e)}.npy"), ax, colorbar=False,
                     title=f"{r} R{d} w{w:g} {e} ep")
        ax.title.set_fontsize(7)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_xlabel(""), ax.set_ylabel("")
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(f"seed {seed}, all layers, one colour scale (0..1)", fontsize=8)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where each run's numbers and heatmap go")
    parser.add_argument("--runs", type=Path, help="where the runs are trained (default OUT/runs)")
    parser.add_argument("--table-only", action="store_true", help="tabulate what is finished, train nothing")
    parser.add_argument("--png", type=Path, help="draw seed 700's heatmaps, one row per recipe x model")
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES),
                        help="train only these recipes' missing cells (the table shows every finished cell)")
    parser.add_argument("--epochs", nargs="+", type=int, choices=EPOCHS, default=list(EPOCHS),
                        help="train only the missing cells of these lengths")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in runs():
        path = args.out / f"{name(*spec)}.json"
        if args.table_only or spec[0] not in args.recipes or spec[4] not in args.epochs:
            if path.is_file():
                rows.append(json.loads(path.read_text()))
            continue
        rows.append(measure(args.out, args.runs or args.out / "runs", *spec))
        print(f"done {name(*spec)}", flush=True)
    print(table(rows))
    if args.png:
        draw(args.out, rows, args.png)


if __name__ == "__main__":
    main()
