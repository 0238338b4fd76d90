"""The positive control of the instrument (issue 32 section 3): trained ResNets with a block known by
construction, found or not by each definition of block structure.

Two constructions (`ckatlas.analysis.controls`): **silenced**, the residual branches of consecutive
blocks zeroed so that their outputs are identical (the known run: the output before them and theirs);
**planted**, a dominant direction (share 0.8 of the variance) added to the outputs of consecutive
blocks and taken out before the next module, so that the network computes what it did and only the
run's representations change.

    python scripts/controls/silenced.py --out out/controls                  # train (resumable), map, draw
    python scripts/controls/silenced.py --out out/controls --seed 900 --png docs/gallery/positive-control.png

Trains each model of the list on the fashion-study's setting (Fashion-MNIST 1/64, 16x16, 30 epochs,
lr 0.03, no augmentation; fresh seed 900 by default), maps its block outputs on 2,048 test images as
trained and silenced (`ckatlas.analysis.controls.silenced_control`), prints each definition's outcome
(markdown) and draws one row per model: the heatmap as it is, then planted, each with the blocks of
the paper's definition (threshold 0.9, blue) and of the contrast rule (red), the known run in green.
An untrained network of each architecture is checked too (no training: the control must not need it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ckatlas.analysis.controls import planted_control, silenced_control
from ckatlas.models import create_model
from ckatlas.report import plot_heatmap
from ckatlas.report.block_figures import outline_blocks, outline_spans
from ckatlas.train import TrainConfig, load_run, train

SETTING = dict(dataset="fashion-mnist", fraction=1 / 64, resize=16, epochs=30, lr=0.03, augment=False, eval_every=0)
# (depth, width, blocks to silence, blocks to plant in): runs of 3 block outputs in ResNet-20, of 6 in ResNet-56
MODELS = [(20, 1.0, ["stage2.1", "stage2.2"], ["stage2.0", "stage2.1", "stage2.2"]),
          (20, 4.0, ["stage2.1", "stage2.2"], ["stage2.0", "stage2.1", "stage2.2"]),
          (56, 1.0, [f"stage2.{i}" for i in range(3, 8)], [f"stage2.{i}" for i in range(2, 8)])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where the runs are trained (resumable)")
    parser.add_argument("--seed", type=int, default=900)
    parser.add_argument("--png", type=Path, help="draw the gallery panel into this PNG")
    parser.add_argument("--examples", type=int, default=2048)
    args = parser.parse_args()
    rows, report = [], {}
    print("| model (control) | definition | as trained: blocks | with the known block: blocks | exact | new elsewhere | verdict |")
    print("|---|---|---|---|---|---|---|")
    for depth, width, silence, plant in MODELS:
        config = TrainConfig(arch=f"resnet{depth}", width=width, seed=args.seed, **SETTING)
        run_dir = args.out / f"r{depth}-w{width:g}-s{args.seed}"
        train(config, run_dir, resume=True, quiet=True)
        run = load_run(run_dir)
        x = config.load_data().x_test[: args.examples]
        untrained = create_model(f"resnet{depth}", width=width, num_classes=10, in_channels=1,
                                 style=config.model_style, generator=torch.Generator().manual_seed(args.seed))
        for name, model in ((f"ResNet-{depth} w{width:g}", run.model), (f"ResNet-{depth} w{width:g} untrained", untrained)):
            for kind in ("silenced", "planted"):
                result = (silenced_control(model, x, silence) if kind == "silenced" else
                          planted_control(model, x, plant, share=0.8))
                label = f"{name} ({kind})"
                if kind == "planted":
                    rows.append((label, result))
                report[label] = result.to_dict()
                print_outcomes(label, result)
    (args.out / "controls.json").write_text(json.dumps(report, indent=1))
    if args.png:
        draw(rows, args.png)
        print(f"wrote {args.png}", file=sys.stderr)


def print_outcomes(label: str, result) -> None:
    for o in result.outcomes:
        print(f"| {label} | {o.definition} | {o.found_before} | {o.found} | {o.exact} | {o.new_elsewhere} | "
              f"{'passes' if o.passes else '**fails**'} |", flush=True)
    print(f"| {label} | definition-free | mean CKA in run {result.mean_inside_before:.3f}, elsewhere "
          f"{result.mean_outside_before:.3f} | in run {result.mean_inside_after:.3f}, elsewhere "
          f"{result.mean_outside_after:.3f} | | | |", flush=True)


def draw(rows: list, png: Path) -> None:
    fig = Figure(figsize=(6.4, 3.0 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (label, result), (left, right) in zip(rows, axes):
        run = (result.after.layers_a.index(result.true_layers[0]), result.after.layers_a.index(result.true_layers[-1]))
        paper, contrast = (result.results[name] for name in result.results)
        for ax, cka, which, title in ((left, result.before, 0, "as it is"), (right, result.after, 1, "planted")):
            plot_heatmap(cka, ax, colorbar=False, title=f"{label}: {title}")
            outline_spans(ax, [run], color="limegreen", linewidth=3.0)
            outline_blocks(ax, paper[which], color="blue")
            outline_blocks(ax, contrast[which], color="red")
            ax.title.set_fontsize(8)
    fig.suptitle("planted block (share 0.8): green the known run, blue the paper's rule (0.9), red the contrast rule",
                 fontsize=8)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)


if __name__ == "__main__":
    main()
