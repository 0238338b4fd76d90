"""One model on all cores, or one model per core? Training throughput of the two ways to use a CPU.

    python benchmarks/bench_jobs.py                       # ResNet-8/14/20 at widths 1, 2, 4
    python benchmarks/bench_jobs.py --models resnet20:4   # one model

An experiment can train its models one at a time with every core (`ckatlas run --jobs 1`), or
one per core at a time with one thread each (`--jobs N`, the default on N cores). Which gives
more images per second depends on the model: narrow models gain nothing from a second thread
(and train on one by `ckatlas.runtime.cpu`), wide ones gain 1.6-1.9x (BENCHMARKS.md), but N single-
thread processes also compete for the memory bus and the shared cache, which the one-process
figures of `bench_train_modes.py` cannot show.

Per model, in the CPU's default training mode (bfloat16 autocast with channels_last where the
CPU has native bfloat16; the `--mode` option picks another), rounds alternate:
- `1 x Nt`: one process, N threads, images/s;
- `N x 1t`: N processes at once, one thread each, started together (a barrier), the sum of
  their images/s over the same number of steps each.
The medians over rounds, side by side, and their ratio: above 1, one model per core wins.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_modes import BATCH, Step  # noqa: E402

from ckatlas.runtime.cpu import available_cores, is_narrow  # noqa: E402
from ckatlas.models import create_model  # noqa: E402


def _worker(arch: str, width: float, mode: str, threads: int, steps: int, warmup: int,
            barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    torch.set_num_threads(threads)
    run = Step(arch, width, f"{mode}/{threads}t", torch.device("cpu"))
    for _ in range(warmup):
        run.step()
    barrier.wait()
    started = time.perf_counter()
    for _ in range(steps):
        run.step()
    out.put(steps * BATCH / (time.perf_counter() - started))


def concurrent_rate(arch: str, width: float, mode: str, processes: int, threads: int, steps: int,
                    warmup: int) -> float:
    """Summed images/s of `processes` processes of `threads` threads each, training at once."""
    spawn = multiprocessing.get_context("spawn")
    barrier, out = spawn.Barrier(processes), spawn.Queue()
    procs = [spawn.Process(target=_worker, args=(arch, width, mode, threads, steps, warmup, barrier, out))
             for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def default_mode() -> str:
    from ckatlas.train.predict import resolve_precision

    probe = create_model("resnet20", width=4.0, num_classes=10, in_channels=1)
    return "bf16+cl" if resolve_precision("auto", torch.device("cpu"), probe) == "bfloat16" else "fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[f"resnet{d}:{w}" for d in (8, 14, 20) for w in (1, 2, 4)],
                        help="ARCH:WIDTH pairs")
    parser.add_argument("--mode", default=None, help="fp32, bf16, cl or bf16+cl (default: the CPU's default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per process and round")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    cores = available_cores()
    mode = args.mode or default_mode()
    print(f"== CPU, {cores} cores, torch {torch.__version__}, mode {mode}, batch {BATCH}, 16x16x1 ==")
    print(f"| model | 1 x {cores}t, img/s | {cores} x 1t, img/s (sum) | {cores} x 1t over 1 x {cores}t |")
    print("|---|---:|---:|---:|")
    for spec in args.models:
        arch, width = spec.split(":")
        narrow = is_narrow(create_model(arch, width=float(width), num_classes=10, in_channels=1))
        one, many = [], []
        for _ in range(args.rounds):  # alternate, so that load from elsewhere hits both alike
            one.append(concurrent_rate(arch, float(width), mode, 1, 1 if narrow else cores, args.steps,
                                       args.warmup))
            many.append(concurrent_rate(arch, float(width), mode, cores, 1, args.steps, args.warmup))
        a, b = statistics.median(one), statistics.median(many)
        note = " (narrow: 1 thread)" if narrow else ""
        print(f"| {arch} w{width}{note} | {a:.0f} | {b:.0f} | {b / a:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
