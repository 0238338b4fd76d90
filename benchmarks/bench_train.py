"""Training benchmarks: ResNet-20 on digits with the defaults, and our loop vs a bare PyTorch loop.

    python benchmarks/bench_train.py                      # both parts
    python benchmarks/bench_train.py --seeds 0 1 2        # accuracy over three seeds
    python benchmarks/bench_train.py --skip-accuracy      # throughput only

Part 1 trains ResNet-20 (width 1) on digits with `ckatlas.train`'s defaults
(16x16, 15 epochs, batch 128, SGD 0.9, lr 0.1 cosine, wd 5e-4) and prints the
wall time and the test accuracy (445 test images).

Part 2 compares training throughput on the CPU: `ckatlas.train.train` against a
bare loop (randperm, index, forward, cross-entropy, backward, SGD step) on the
same model, batch size, data and thread count. Rounds alternate between the two
so that load from other processes hits both alike; the figures are medians over
epochs. "loop" counts the batches only; "end to end" is the whole `train()`
call (data loading, per-epoch test evaluation, checkpoints, final files).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ckatlas.data import load_dataset
from ckatlas.models import create_model
from ckatlas.train import TrainConfig, train


def accuracy_part(seeds: list[int], arch: str) -> None:
    print(f"== {arch} (width 1) on digits, default settings, {torch.get_num_threads()} threads ==")
    print(f"{'seed':>4} {'wall s':>8} {'train s':>8} {'test acc':>9}")
    accuracies, walls = [], []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            result = train(TrainConfig(arch=arch, seed=seed), Path(tmp) / "run", quiet=True, device="cpu")
            wall = time.perf_counter() - started
        final = result.metrics["final"]
        accuracies.append(final["test_accuracy"])
        walls.append(wall)
        print(f"{seed:>4} {wall:>8.1f} {final['train_seconds']:>8.1f} {final['test_accuracy']:>9.4f}")
    if len(seeds) > 1:
        print(f"mean test accuracy {statistics.mean(accuracies):.4f} +- {statistics.stdev(accuracies):.4f}, "
              f"wall {statistics.mean(walls):.1f} s (max {max(walls):.1f} s)")


def bare_epochs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int,
                seed: int) -> list[float]:
    """The plainest training loop; returns images/s per epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    rates = []
    model.train()
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rates.append(len(x) / (time.perf_counter() - started))
    return rates


def throughput_part(arch: str, epochs: int, rounds: int, batch_size: int) -> None:
    data = load_dataset("digits")
    n = len(data.y_train)
    print(f"\n== training throughput, {arch} (width 1) on digits 16x16, batch {batch_size}, CPU, "
          f"{torch.get_num_threads()} threads, {rounds} rounds x {epochs} epochs ==")
    ours_loop, ours_e2e, bare = [], [], []
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            config = TrainConfig(arch=arch, epochs=epochs, batch_size=batch_size, seed=r)
            started = time.perf_counter()
            result = train(config, Path(tmp) / "run", quiet=True, device="cpu")
            ours_e2e.append(epochs * n / (time.perf_counter() - started))
            ours_loop += [e["images_per_second"] for e in result.metrics["epochs"]]
        model = create_model(arch, width=1, num_classes=10, in_channels=1, generator=torch.Generator().manual_seed(r))
        bare += bare_epochs(model, data.x_train, data.y_train, epochs, batch_size, seed=r)
    loop, e2e, ref = statistics.median(ours_loop), statistics.median(ours_e2e), statistics.median(bare)
    print(f"{'':<28}{'images/s':>10}{'vs bare':>9}")
    print(f"{'bare PyTorch loop':<28}{ref:>10.0f}{1.0:>9.2f}")
    print(f"{'ckatlas train, loop':<28}{loop:>10.0f}{loop / ref:>9.2f}")
    print(f"{'ckatlas train, end to end':<28}{e2e:>10.0f}{e2e / ref:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if not args.skip_accuracy:
        accuracy_part(args.seeds, args.arch)
    if not args.skip_throughput:
        throughput_part(args.arch, args.epochs, args.rounds, args.batch_size)


if __name__ == "__main__":
    main()
