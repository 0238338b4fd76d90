"""Devices, precision and predictions: where a model runs and its logits on a set of images."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ckatlas.data import (
    standard_layout,
)
from ckatlas.devices import resolve_device


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    # bfloat16 needs no loss scaling; CUDA devices without it train in float32.
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format_for(device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def device_layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Images in the layout the device's convolutions want: channels_last on CUDA, NCHW on the CPU."""
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else standard_layout(x)


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, batch_size: int = 256, device: str | torch.device | None = None
) -> torch.Tensor:
    """Logits of `model` (put in eval mode) for images `x`, in order, as float32 on the CPU."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        with autocast_for(device):
            out.append(model(device_layout(xb, device)).float().cpu())
    return torch.cat(out)


__all__ = ["predict", "resolve_device"]
