"""Training throughput by precision, memory layout, compilation and threads, beside the machine's peak.

    python benchmarks/bench_train_modes.py                   # ResNet-8/14/20 x widths 0.5-4 and the ViTs
    python benchmarks/bench_train_modes.py --quick           # ResNet-20 at widths 1 and 4 only
    python benchmarks/bench_train_modes.py --compile         # also torch.compile (minutes of compiling)
    python benchmarks/bench_train_modes.py --device cuda     # on a GPU (device_check.sh runs this)

One training step is what `ckatlas.train` does: forward under the mode's autocast, cross-entropy,
backward, SGD (momentum 0.9, weight decay) step, on a batch of 128 random 16x16 single-channel
images (the fashion-study's shape) with random labels, the model in training mode. Each model
and mode gets warm-up steps, then timed steps; modes alternate within a model so that load from
elsewhere hits each alike. All figures of one table come from one run: compare them with each
other, not with another run's.

The first table is the machine: the GFLOP/s of a large matrix product in float32 and in
bfloat16. Then, per model, images/s in each mode, the ratio to float32, and the training FLOP/s
(forward and backward FLOPs of a step, counted by `torch.utils.flop_counter`, over the step's
time) as a share of the float32 matmul peak.

Modes: `fp32` (today's CPU default), `bf16` (torch.autocast bfloat16), `cl` (channels_last
weights and images), `bf16+cl`, and with --compile `compile` and `compile+bf16` (torch.compile
of the model, default backend), each on one thread (`/1t`: what each worker of an experiment
with --jobs = cores uses) and on all of torch's threads (`/Nt`). Narrow models (convolutions
under 16 channels) train on one thread only (`ckatlas.runtime.cpu`: oneDNN is unsafe for them on more).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ckatlas.runtime.cpu import is_narrow
from ckatlas.models import create_model

BATCH = 128


def matmul_gflops(dtype: torch.dtype, device: torch.device, size: int = 2048, reps: int = 6) -> float:
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(2):
        a @ b
    sync(device)
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * size**3 * reps / (time.perf_counter() - started) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def models(quick: bool) -> list[tuple[str, float]]:
    if quick:
        return [("resnet20", 1.0), ("resnet20", 4.0)]
    resnets = [(f"resnet{d}", w) for d in (8, 14, 20) for w in (0.5, 1.0, 2.0, 4.0)]
    vits = [(f"vit{d}", w) for d in (2, 4, 8) for w in (0.5, 1.0, 2.0)]  # the vit-study preset's grid
    return resnets + vits


class Step:
    """One model in one mode: a training step callable, its images/s samples."""

    def __init__(self, arch: str, width: float, mode: str, device: torch.device) -> None:
        self.mode, self.device = mode, device
        model = create_model(arch, width=width, num_classes=10, in_channels=1,
                             generator=torch.Generator().manual_seed(0)).to(device)
        self.channels_last = "cl" in mode.split("/")[0].split("+")
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model) if "compile" in mode else model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        gen = torch.Generator().manual_seed(1)
        self.x = torch.rand(BATCH, 1, 16, 16, generator=gen).to(device)
        if self.channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 10, (BATCH,), generator=gen).to(device)
        self.bf16 = "bf16" in mode
        self.threads = int(mode.rsplit("/", 1)[1].rstrip("t"))
        self.rates: list[float] = []

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self) -> None:
        self.model.train()
        with self.autocast():
            loss = F.cross_entropy(self.model(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def timed(self, steps: int) -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            sync(self.device)
            started = time.perf_counter()
            for _ in range(steps):
                self.step()
            sync(self.device)
            self.rates.append(steps * BATCH / (time.perf_counter() - started))
        finally:
            torch.set_num_threads(before)

    def flops(self) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            self.step()
        return counter.get_total_flops()


def run_model(arch: str, width: float, modes: list[str], device: torch.device, rounds: int, steps: int,
              warmup: int) -> tuple[dict[str, float], int]:
    probe = create_model(arch, width=width, num_classes=10, in_channels=1)
    if device.type == "cpu" and is_narrow(probe):
        modes = [m for m in modes if m.endswith("/1t")]
    runs = {m: Step(arch, width, m, device) for m in modes}
    for run in runs.values():
        run.timed(warmup)
        run.rates.clear()
    for _ in range(rounds):
        for run in runs.values():  # modes alternate within a round
            run.timed(steps)
    flops = runs[modes[0]].flops()
    return {m: statistics.median(r.rates) for m, r in runs.items()}, flops


def table(rows: list[tuple[str, dict[str, float], int]], modes: list[str], peak: float,
          out: Callable[[str], None] = print) -> None:
    """Markdown: images/s and the ratio to fp32 on one thread per mode; GFLOP per image; fp32's share of peak."""
    out("| model | " + " | ".join(modes) + " | best | GFLOP/img | fp32/1t % of peak |")
    out("|---|" + "---:|" * (len(modes) + 3))
    for name, rates, flops in rows:
        base = rates[modes[0]]
        cells = " | ".join(f"{rates[m]:.0f} ({rates[m] / base:.2f}x)" if m in rates else "-" for m in modes)
        best = max(rates, key=rates.get)
        per_image = flops / BATCH / 1e9
        share = 100 * base * per_image / peak
        out(f"| {name} | {cells} | {best} {rates[best] / base:.2f}x | {per_image:.3f} | {share:.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ResNet-20 at widths 1 and 4 only")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and mode")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    kinds = ["fp32", "bf16", "cl", "bf16+cl"] + (["compile", "compile+bf16"] if args.compile else [])
    counts = [1] if device.type == "cuda" or torch.get_num_threads() == 1 else [1, torch.get_num_threads()]
    modes = [f"{k}/{t}t" for t in counts for k in kinds]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"== {name}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, 16x16x1 ==")
    peak32 = matmul_gflops(torch.float32, device)
    peak16 = matmul_gflops(torch.bfloat16, device)
    print(f"matmul 2048^3: float32 {peak32:.0f} GFLOP/s, bfloat16 {peak16:.0f} GFLOP/s ({peak16 / peak32:.2f}x)\n")
    rows = []
    for arch, width in models(args.quick):
        rates, flops = run_model(arch, width, modes, device, args.rounds, args.steps, args.warmup)
        rows.append((f"{arch} w{width:g}", rates, flops))
        print(f"{arch} w{width:g}: " + ", ".join(f"{m} {r:.0f}" for m, r in rates.items()), flush=True)
    print("\nimages/s (ratio to fp32 on one thread); GFLOP per image of a training step (forward and "
          "backward); fp32/1t's FLOP/s as a share of the float32 matmul peak (all threads)\n")
    table(rows, modes, peak32)


if __name__ == "__main__":
    main()
