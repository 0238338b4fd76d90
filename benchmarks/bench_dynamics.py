"""What recording the block structure through training costs (`train(..., dynamics=...)`).

Trains one model with the default recording (the heatmap over every layer on the first
256 test images at epochs 0, 1, 2, 4, 8, ... and the last) and prints the training time
beside the recording time, both measured in the same run (metrics.json: each epoch's
`seconds`; dynamics.npz: each record's `seconds`).

    python benchmarks/bench_dynamics.py                                   # ResNet-20 on Fashion-MNIST 1/16, 16x16, 15 epochs
    python benchmarks/bench_dynamics.py --arch resnet8 --dataset digits --epochs 15 --fraction 0.5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ckatlas.analysis.dynamics import BlockDynamics, DynamicsSettings, default_epochs
from ckatlas.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--fraction", type=float, default=0.0625)
    parser.add_argument("--resize", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    config = TrainConfig(arch=args.arch, width=args.width, dataset=args.dataset, fraction=args.fraction,
                         resize=args.resize, epochs=args.epochs, eval_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(config, Path(tmp) / "run", quiet=True, dynamics=DynamicsSettings())
        wall = time.perf_counter() - start
        epochs = json.loads((Path(tmp) / "run" / "metrics.json").read_text())["epochs"]
        record = BlockDynamics.load(Path(tmp) / "run" / "dynamics.npz")
    training = sum(e["seconds"] for e in epochs)
    recording = sum(record.metadata["seconds"])
    rest = wall - training - recording  # data loading, the final test pass
    print(f"{args.arch} width {args.width:g} on {args.dataset} ({args.fraction:g}, {args.resize}px), {args.epochs} epochs; "
          f"recorded epochs {list(default_epochs(args.epochs))}")
    print(f"  training (sum of epochs)        {training:8.1f} s")
    print(f"  recording ({len(record.epochs)} records)          {recording:8.1f} s   {recording / training:6.1%} of training")
    print(f"  rest (data, final test)         {rest:8.1f} s")


if __name__ == "__main__":
    main()
