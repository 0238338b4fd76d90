"""How long would each `paper-*` preset take on this GPU? One training epoch of each preset's
largest model on synthetic data of its dataset's shape, timed, and the preset's GPU hours
estimated from it (part of benchmarks/device_check.sh; issue 22 §5).

    python benchmarks/bench_gpu_presets.py                     # CUDA; every paper-* preset
    python benchmarks/bench_gpu_presets.py --device cpu --examples 256 --presets paper-depth   # a smoke run

For each preset: its runs' forward FLOPs (`ckatlas.experiment.cost`), the run whose training
epoch costs most, one epoch of it with the preset's recipe (bfloat16 autocast and
channels_last on CUDA, as `ckatlas train` does) on random images of the dataset's size
(`--examples` of them, default the preset's training set), and the sustained FLOP/s that
epoch reached. The preset's hours = its FLOPs / that rate: a lower bound, since the smaller
models of a preset use a GPU less well than its largest.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from ckatlas.data import ImageData
from ckatlas.runtime.devices import resolve_device
from ckatlas.experiment import load_config, list_presets
from ckatlas.experiment.cost import DATASET_SIZES, estimate_cost, forward_flops
from ckatlas.models import create_model
from ckatlas.train import fit


def _largest(config):
    """(run, its forward FLOPs, training examples) of the run whose training epoch costs most."""
    num_train, _, side, channels = DATASET_SIZES[config.dataset.name]
    side = config.dataset.resize or side
    best = None
    for run in config.runs:
        model = create_model(run.model_name, width=run.width, in_channels=channels, device="meta")
        flops = forward_flops(model, (channels, side, side))
        examples = int(num_train * run.fraction)
        if best is None or flops * examples > best[1] * best[2]:
            best = (run, flops, examples)
    return best, (channels, side)


def _synthetic(dataset: str, examples: int, channels: int, side: int, classes: int, device: torch.device) -> ImageData:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(examples, channels, side, side, generator=gen)
    y = torch.randint(0, classes, (examples,), generator=gen)
    return ImageData(dataset, x, y, x[:64], y[:64], tuple(str(c) for c in range(classes)),
                     (0.0,) * channels, (1.0,) * channels).to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--presets", nargs="+", default=[p for p in list_presets() if p.startswith("paper-")])
    parser.add_argument("--examples", type=int, help="images per timed epoch (default: the preset's training set)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"{'preset':<20} {'largest run':<28} {'epoch s':>8} {'TFLOP/s':>8} {'preset FLOPs':>13} {'hours':>10}")
    for preset in args.presets:
        config = load_config(preset)
        (run, flops, examples), (channels, side) = _largest(config)
        examples = min(examples, args.examples or examples)
        settings = replace(config.train_config(run), epochs=1, eval_every=0, keep="final").resolved()
        classes = 100 if config.dataset.name == "cifar100" else 10
        data = _synthetic(config.dataset.name, examples, channels, side, classes, device)
        model = create_model(run.model_name, width=run.width, num_classes=classes, in_channels=channels).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fit(model, data, settings, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        rate = 3 * flops * examples / seconds  # forward + backward
        total = estimate_cost(config).total_flops
        print(f"{preset:<20} {run.name:<28} {seconds:8.1f} {rate / 1e12:8.2f} {total:13.2e} {total / rate / 3600:10.1f}")


if __name__ == "__main__":
    main()
