"""Devices, precision and predictions: where a model runs and its logits on a set of images."""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from ckatlas.data import (
    standard_layout,
)
from ckatlas.runtime.devices import resolve_device
from ckatlas.errors import UserInputError
from ckatlas.train.config import PRECISIONS


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic natively (AVX-512 BF16 or AMX: the flags of /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:  # not Linux
        pass
    return False


def mostly_convolutions(model: nn.Module) -> bool:
    """Whether most of `model`'s weights are convolution kernels (a ResNet, not a transformer)."""
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd))
    return conv > sum(p.numel() for p in model.parameters()) / 2


def resolve_precision(precision: str, device: torch.device, model: nn.Module | None = None) -> str:
    """The precision a run trains in: "float32" or "bfloat16" (autocast; bfloat16 needs no loss scaling).

    "auto" is bfloat16 where the device computes it natively: a CUDA device that supports it; on a
    CPU with AVX-512 BF16 or AMX, a model whose weights are mostly convolutions (oneDNN's bfloat16
    convolutions, with channels_last, train the study's ResNets 1.35-2.1x faster on one thread; the
    small ViTs' linear layers gain at most 1.3x and lose up to 0.78x at width 1/2: BENCHMARKS.md).
    Elsewhere float32. An explicit choice is kept (bfloat16 on a device without it is emulated:
    correct, but slower)."""
    if precision not in PRECISIONS:
        raise UserInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu" and cpu_has_bf16() and (model is None or mostly_convolutions(model)):
        return "bfloat16"
    return "float32"


def autocast_for(device: torch.device, precision: str = "float32") -> contextlib.AbstractContextManager:
    """The autocast that training in `precision` (resolved) runs its forward pass under."""
    if precision == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last_for(device: torch.device, precision: str) -> bool:
    """Whether training lays images and convolution weights out channels_last: on CUDA, and on the CPU in
    bfloat16 (oneDNN's bfloat16 convolutions are fastest so: 1.1-1.3x over NCHW bfloat16 on ResNets here,
    `benchmarks/bench_train_modes.py`); float32 on the CPU keeps NCHW, as every release before."""
    return device.type == "cuda" or (device.type == "cpu" and precision == "bfloat16")


def memory_format_for(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def device_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Images in the layout training uses (`channels_last_for`): channels_last, or plain NCHW."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else standard_layout(x)


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, batch_size: int = 256, device: str | torch.device | None = None
) -> torch.Tensor:
    """Logits of `model` (put in eval mode) for images `x`, in order, as float32 on the CPU."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out = []
    precision = resolve_precision("auto", device) if device.type == "cuda" else "float32"  # the CPU evaluates in float32
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        with autocast_for(device, precision):
            out.append(model(device_layout(xb, device.type == "cuda")).float().cpu())
    return torch.cat(out)


__all__ = ["PRECISIONS", "autocast_for", "channels_last_for", "cpu_has_bf16", "predict", "resolve_device", "resolve_precision"]
