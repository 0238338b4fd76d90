"""What an experiment costs to run: floating-point operations, and GPU hours at a stated rate.

`estimate_cost(config)` counts each model's forward multiply-adds on one example (forward
hooks on its convolutions and linear layers, one pass on an image of the dataset's size)
and multiplies out: training = 3 x forward (forward and backward) x training examples x
epochs, plus one forward over the validation split per epoch when the best epoch is kept;
CKA = forward x test examples x passes per heatmap (the Gram products are small next to
the convolutions at these widths). A FLOP is a multiply or an add (2 per multiply-add).

GPU hours assume `GPU_FLOPS` sustained: small CIFAR ResNets use a large GPU poorly (an
A100 trains a ResNet-56 epoch in about 10 s with bfloat16, i.e. ~4 TFLOP/s of its ~300),
so this is an order-of-magnitude figure for planning, not a promise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ckatlas.experiment.config import ExperimentConfig

GPU_FLOPS = 5e12  # sustained FLOP/s assumed for one GPU (module docstring)
CPU_FLOPS = 1e11  # sustained FLOP/s of a 2-core CPU in this project's measurements

#: (training examples, test examples, image side, channels) of the datasets whose size is known.
DATASET_SIZES: dict[str, tuple[int, int, int, int]] = {
    "digits": (1352, 445, 16, 1),
    "fashion-mnist": (60000, 10000, 28, 1),
    "mnist": (60000, 10000, 28, 1),
    "kmnist": (60000, 10000, 28, 1),
    "cifar10": (50000, 10000, 32, 3),
    "cifar100": (50000, 10000, 32, 3),
}


def forward_flops(model: nn.Module, image_shape: tuple[int, int, int]) -> float:
    """FLOPs of one forward pass on one example: 2 x the multiply-adds of its convs and linear layers."""
    macs = 0

    def count(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs += output[0].numel() * kernel
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        device = next(model.parameters()).device  # the meta device: shapes only, no arithmetic
        with torch.inference_mode():
            model.eval()(torch.zeros(1, *image_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return 2.0 * macs


@dataclass
class CostEstimate:
    """FLOPs of an experiment and the time they take at the assumed rates."""

    train_flops: float
    cka_flops: float
    runs: int
    heatmaps: int

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.cka_flops

    @property
    def gpu_hours(self) -> float:
        return self.total_flops / GPU_FLOPS / 3600

    @property
    def cpu_hours(self) -> float:
        return self.total_flops / CPU_FLOPS / 3600

    def line(self) -> str:
        """"~12 GPU-hours (3.1e17 FLOPs; 15 runs)"."""
        hours = self.gpu_hours
        shown = f"{hours:.2g}" if hours < 10 else f"{hours:,.0f}"
        return f"~{shown} GPU-hours at {GPU_FLOPS / 1e12:g} TFLOP/s ({self.total_flops:.1e} FLOPs, {self.runs} runs)"


def estimate_cost(config: ExperimentConfig) -> CostEstimate | None:
    """The cost of `config` (module docstring); None for a dataset of unknown size (folder, npz)."""
    from ckatlas.experiment.plan import cross_seed_pairs
    from ckatlas.models import create_model

    size = DATASET_SIZES.get(config.dataset.name)
    if size is None:
        return None
    num_train, num_test, side, channels = size
    side = config.dataset.resize or side
    per_model: dict[tuple[str, float], float] = {}
    train = cka = 0.0
    for run in config.runs:
        key = (run.model_name, run.width)
        if key not in per_model:
            model = create_model(run.model_name, width=run.width, in_channels=channels, device="meta")
            per_model[key] = forward_flops(model, (channels, side, side))
        settings = config.train_config(run).resolved()
        examples = num_train * run.fraction
        val = settings.val_fraction * examples if settings.keep == "best-val" else 0.0
        train += settings.epochs * (3 * (examples - val) + val) * per_model[key]
        test = min(num_test, config.cka.num_examples or num_test)
        cka += test * config.cka.passes * per_model[key]
    for a, b in cross_seed_pairs(config):
        cka += min(num_test, config.cka.num_examples or num_test) * config.cka.passes * 2 * per_model[
            (a.model_name, a.width)]
    return CostEstimate(train, cka, len(config.runs), len(config.runs) + len(cross_seed_pairs(config)))


__all__ = ["CPU_FLOPS", "CostEstimate", "DATASET_SIZES", "GPU_FLOPS", "estimate_cost", "forward_flops"]
