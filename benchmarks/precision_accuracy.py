"""Does bfloat16 training change the science? The fashion-study's recipe in float32 and in bfloat16.

    python benchmarks/precision_accuracy.py --out out/precision              # ResNet-20, widths 1 and 4, seeds 0 1
    python benchmarks/precision_accuracy.py --out out/precision --depths 14 --widths 1 --seeds 5

Trains each model of the grid twice, with `precision="float32"` and `precision="bfloat16"`, on the
fashion-study's setting (Fashion-MNIST, 1/64 of the training set, 16x16, 30 epochs, lr 0.03, no
augmentation, evaluation at the end only), one run after the other (resumable: a finished run is
read back, an interrupted one finished). Prints, per model and precision, the training seconds,
images/s, clean training accuracy and test accuracy; then, per precision, the mean over seeds and
the seed-to-seed spread, and the speed-up of bfloat16. The criterion (issue 31): bfloat16's clean
training and test accuracy within float32's seed-to-seed spread.

Also the heatmap: each model's all-layer linear CKA heatmap on 512 test images, and the largest
difference between the float32 and bfloat16 models of one seed, beside the largest difference
between two float32 seeds (what changing the seed alone does).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from ckatlas import heatmap
from ckatlas.train import TrainConfig, load_run, train

SETTING = dict(dataset="fashion-mnist", fraction=1 / 64, resize=16, epochs=30, lr=0.03, augment=False, eval_every=0)


def run(out: Path, depth: int, width: float, seed: int, precision: str) -> dict:
    config = TrainConfig(arch=f"resnet{depth}", width=width, seed=seed, precision=precision, **SETTING)
    run_dir = out / f"r{depth}-w{width:g}-s{seed}-{precision}"
    result = train(config, run_dir, resume=True, quiet=True)
    final = result.metrics["final"]
    loaded = load_run(run_dir)
    x = loaded.config.load_data().x_test[:512]
    cka = heatmap(loaded.model, x, layers="all", batch_size=256, shuffle=False).matrix
    rate = sum(e["images_per_second"] * e["seconds"] for e in result.metrics["epochs"]) / final["train_seconds"]
    return {"model": f"resnet{depth} w{width:g}", "seed": seed, "precision": precision,
            "seconds": final["train_seconds"], "rate": rate, "train": final["train_accuracy"],
            "test": final["test_accuracy"], "cka": cka}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--depths", type=int, nargs="+", default=[20])
    parser.add_argument("--widths", type=float, nargs="+", default=[4.0, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    rows = []
    print("| model | seed | precision | train s | images/s | clean train acc | test acc |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for depth in args.depths:
        for width in args.widths:
            for seed in args.seeds:
                for precision in ("float32", "bfloat16"):
                    r = run(args.out, depth, width, seed, precision)
                    rows.append(r)
                    print(f"| {r['model']} | {seed} | {precision} | {r['seconds']:.0f} | {r['rate']:.0f} | "
                          f"{r['train']:.4f} | {r['test']:.4f} |", flush=True)
    print("\n| model | precision | train s (mean) | clean train acc, mean (range) | test acc, mean (range) | "
          "max CKA diff to float32, same seed | max CKA diff between float32 seeds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model in dict.fromkeys(r["model"] for r in rows):
        f32 = [r for r in rows if r["model"] == model and r["precision"] == "float32"]
        seeds_diff = max((np.nanmax(np.abs(a["cka"] - b["cka"])) for a in f32 for b in f32 if a["seed"] < b["seed"]),
                         default=float("nan"))
        for precision in ("float32", "bfloat16"):
            mine = [r for r in rows if r["model"] == model and r["precision"] == precision]
            same = [np.nanmax(np.abs(r["cka"] - next(f["cka"] for f in f32 if f["seed"] == r["seed"])))
                    for r in mine] if precision == "bfloat16" else [0.0]

            def span(key: str, group: list = mine) -> str:
                vals = [r[key] for r in group]
                return f"{statistics.mean(vals):.4f} ({min(vals):.4f}-{max(vals):.4f})"

            print(f"| {model} | {precision} | {statistics.mean(r['seconds'] for r in mine):.0f} | {span('train')} | "
                  f"{span('test')} | {max(same):.3f} | {seeds_diff:.3f} |")
        speed = statistics.mean(r["seconds"] for r in f32) / statistics.mean(
            r["seconds"] for r in rows if r["model"] == model and r["precision"] == "bfloat16")
        print(f"| {model} | bfloat16 speed-up | {speed:.2f}x | | | | |")
    print(f"\n(torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
