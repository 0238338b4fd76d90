"""CKA heatmaps of a ResNet: cost over plain forward passes, torch_cka, accuracy, peak memory.

On ResNet-56 (width 1), 2,048 random inputs 3x32x32, batch 256, one pass, the same
consecutive batches everywhere:
  * time: the plain forward passes; `heatmap(layers="blocks")`; `heatmap(layers="all")`;
    and a straightforward version of "all" (hooks keep the activations, then
    `gram_linear` per layer and `MinibatchCKA.update_grams`); ratios to the forward passes,
    in wall-clock time and in CPU time of the process (with --threads 1 the CPU time is
    the figure to trust on a shared machine: other jobs delay a process but do not add to it);
  * torch_cka (PyPI `torch-cka`) on the block layers (it recomputes a Gram per layer
    pair, so "all" layers would take hours): time, and speed-up of ours, batch by batch;
  * accuracy: max |difference| to a float64 reference (a float64 copy of the model, a
    float64 Gram per layer with `gram_linear`, `MinibatchCKA`), for ours and torch_cka;
  * peak memory (ru_maxrss of a fresh process) of an all-layer heatmap of ResNet-38
    (width 10) on one batch of 256, next to the plain forward pass.

    python benchmarks/bench_heatmap.py                 # everything (tens of minutes on 2 cores)
    python benchmarks/bench_heatmap.py --quick         # small smoke version (a minute or two)
    python benchmarks/bench_heatmap.py --skip torch_cka memory --repeats 5
    python benchmarks/bench_heatmap.py --default-allocator   # glibc's malloc left as it is

The allocator is settled first (`ckatlas.runtime.cpu.settle_allocator`, as the `ckatlas` command
does): with glibc's default the forward passes themselves run up to 1.8x slower (every batch
faults its activations' pages in again) and their speed depends on what ran before.

torch_cka is for this benchmark only: pip install -c constraints.txt torch-cka
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import platform
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from ckatlas import heatmap
from ckatlas.capture import inference
from ckatlas.cka import MinibatchCKA, gram_linear
from ckatlas.runtime.cpu import settle_allocator
from ckatlas.models import create_model
from ckatlas.runtime.seeding import make_generator

FULL = dict(arch="resnet56", width=1.0, n=2048, batch=256, mem_arch="resnet38", mem_width=10.0, mem_batch=256)
QUICK = dict(arch="resnet20", width=0.5, n=512, batch=128, mem_arch="resnet20", mem_width=2.0, mem_batch=128)


def _inputs(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=make_generator(0))


def _calibrate(model: torch.nn.Module) -> None:
    """Running statistics of every BatchNorm from 1,024 other random inputs (a cumulative average)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for b in torch.randn(1024, 3, 32, 32, generator=make_generator(1)).split(256):
            model(b)
    model.eval()


def _forward(model: torch.nn.Module, x: torch.Tensor, batch: int) -> None:
    with inference(model):
        for b in x.split(batch):
            model(b)


def _straightforward_all(model: torch.nn.Module, x: torch.Tensor, batch: int) -> np.ndarray:
    """Hooks keep every activation; then a Gram per layer and one all-pairs update per batch."""
    names = model.layer_names("all")
    acts: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)) for n in names
    ]
    acc = MinibatchCKA(len(names))
    try:
        with inference(model):
            for b in x.split(batch):
                model(b)
                acc.update_grams(torch.stack([gram_linear(acts.pop(n)) for n in names]))
    finally:
        for h in handles:
            h.remove()
    return acc.compute().numpy()


def _reference(model: torch.nn.Module, x: torch.Tensor, batch: int, layers: list[str]) -> np.ndarray:
    """Float64 model, float64 Grams (`gram_linear`) per layer, MinibatchCKA."""
    model64 = copy.deepcopy(model).double()
    grams: dict[str, torch.Tensor] = {}
    handles = [
        model64.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: grams.__setitem__(n, gram_linear(o)))
        for n in layers
    ]
    acc = MinibatchCKA(len(layers))
    with inference(model64):
        for b in x.double().split(batch):
            model64(b)
            acc.update_grams([grams.pop(n) for n in layers])
    for h in handles:
        h.remove()
    return acc.compute().numpy()


def _torch_cka(model: torch.nn.Module, x: torch.Tensor, batch: int, layers: list[str]) -> np.ndarray:
    from torch.utils.data import DataLoader, TensorDataset
    from torch_cka import CKA

    copy_a, copy_b = copy.deepcopy(model), copy.deepcopy(model)  # torch_cka leaves its hooks on
    loader = DataLoader(TensorDataset(x), batch_size=batch, shuffle=False)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        warnings.simplefilter("ignore")
        cka = CKA(copy_a, copy_b, "a", "b", model1_layers=layers, model2_layers=layers, device="cpu")
        cka.compare(loader)
    out = cka.export()
    assert out["model1_layers"] == layers, "torch_cka ordered the layers differently"
    return out["CKA"].numpy()


def _timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall-clock seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def _memory_child(spec: dict) -> None:
    model = create_model(spec["arch"], width=spec["width"])
    x = _inputs(spec["batch"])
    t0 = time.perf_counter()
    if spec["mode"] == "forward":
        _forward(model, x, spec["batch"])
    else:
        heatmap(model, x, layers="all", batch_size=spec["batch"], shuffle=False, progress=False)
    seconds = time.perf_counter() - t0
    print(json.dumps({"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}))


def _memory(spec: dict, default_allocator: bool) -> dict:
    flags = ["--default-allocator"] if default_allocator else []
    out = subprocess.run(
        [sys.executable, __file__, *flags, "--memory-child", json.dumps(spec)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model and data (smoke test)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (interleaved; best is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--calibrated", action="store_true",
        help="BatchNorm running statistics from 1,024 other random inputs, as training leaves them "
        "(default: the initial ones, under which deep layers' means dwarf their spread)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["straightforward", "accuracy", "torch_cka", "memory"])
    parser.add_argument(
        "--default-allocator", action="store_true",
        help="leave glibc's malloc as it is (default: ckatlas.runtime.cpu.settle_allocator(), as the ckatlas command does)",
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settled = not args.default_allocator and settle_allocator()
    if args.memory_child:
        _memory_child(json.loads(args.memory_child))
        return
    cfg = QUICK if args.quick else FULL
    model = create_model(cfg["arch"], width=cfg["width"], generator=make_generator(0))
    if args.calibrated:
        _calibrate(model)
    x, batch = _inputs(cfg["n"]), cfg["batch"]
    blocks, all_layers = model.layer_names("blocks"), model.layer_names("all")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'settled' if settled else 'default'} allocator")
    print(f"{cfg['arch']} width {cfg['width']}{' (calibrated BatchNorm statistics)' if args.calibrated else ''}: "
          f"{len(blocks)} block layers, {len(all_layers)} layers in 'all'; "
          f"{cfg['n']} inputs 3x32x32, batch {batch}, one pass\n")

    runs = {
        "forward passes": lambda: _forward(model, x, batch),
        "heatmap blocks": lambda: heatmap(model, x, layers="blocks", batch_size=batch, shuffle=False, progress=False),
        "heatmap all": lambda: heatmap(model, x, layers="all", batch_size=batch, shuffle=False, progress=False),
    }
    if "straightforward" not in args.skip:
        runs["straightforward all"] = lambda: _straightforward_all(model, x, batch)
    _forward(model, x[:batch], batch)  # warm-up
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    values: dict[str, object] = {}
    for _ in range(args.repeats):
        for key, fn in runs.items():
            w, c, values[key] = _timed(fn)
            wall[key].append(w)
            cpu[key].append(c)
    base_wall, base_cpu = min(wall["forward passes"]), min(cpu["forward passes"])
    # The machine's speed drifts between runs: the ratio within each repeat (runs a few seconds
    # apart) is steadier than best over best; its median over the repeats is the figure to quote.
    paired = {k: float(np.median(np.array(wall[k]) / np.array(wall["forward passes"]))) for k in runs}
    print(f"{'':24s} {'best s':>8s} {'median s':>9s} {'x forward':>10s} {'paired x':>9s} {'CPU s':>8s} {'x forward':>10s}")
    for key in runs:
        print(f"{key:24s} {min(wall[key]):8.2f} {float(np.median(wall[key])):9.2f} {min(wall[key]) / base_wall:10.2f}"
              f" {paired[key]:9.2f} {min(cpu[key]):8.2f} {min(cpu[key]) / base_cpu:10.2f}")
    print("(x forward: best over best; paired x: median over repeats of the ratio within a repeat)")

    if "accuracy" not in args.skip:
        print("\naccuracy: max |CKA - float64 reference|")
        ref_blocks = _reference(model, x, batch, blocks)
        ref_all = _reference(model, x, batch, all_layers)
        print(f"  ours, blocks             {np.abs(values['heatmap blocks'].matrix - ref_blocks).max():.2e}")
        print(f"  ours, all                {np.abs(values['heatmap all'].matrix - ref_all).max():.2e}")
        if "straightforward all" in values:
            print(f"  straightforward, all     {np.abs(values['straightforward all'] - ref_all).max():.2e}")
    if "torch_cka" not in args.skip:
        w, c, theirs = _timed(lambda: _torch_cka(model, x, batch, blocks))
        ours_w, ours_c = min(wall["heatmap blocks"]), min(cpu["heatmap blocks"])
        print(f"\ntorch_cka {getattr(__import__('torch_cka'), '__version__', '')} on the {len(blocks)} block layers: "
              f"{w:.1f} s ({c:.1f} CPU s), ours {ours_w:.2f} s ({ours_c:.2f} CPU s): "
              f"{w / ours_w:.0f}x faster ({c / ours_c:.0f}x in CPU time)")
        if "accuracy" not in args.skip:
            print(f"  torch_cka max |CKA - float64 reference|  {np.abs(theirs - ref_blocks).max():.2e}")
    if "memory" not in args.skip:
        spec = dict(arch=cfg["mem_arch"], width=cfg["mem_width"], batch=cfg["mem_batch"])
        fwd = _memory({**spec, "mode": "forward"}, args.default_allocator)
        cka = _memory({**spec, "mode": "heatmap"}, args.default_allocator)
        print(f"\npeak memory (ru_maxrss, fresh process), {spec['arch']} width {spec['width']}, one batch of {spec['batch']}:")
        print(f"  forward pass            {fwd['maxrss_mib']:8.0f} MiB  ({fwd['seconds']:.1f} s)")
        print(f"  heatmap, all layers     {cka['maxrss_mib']:8.0f} MiB  ({cka['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
