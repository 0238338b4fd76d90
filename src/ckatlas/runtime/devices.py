"""Where work runs: the one place a device is resolved.

`resolve_device` turns what a user wrote ("auto", "cpu", "cuda:1") into a device;
`model_device` reads a model's; `run_device` is the device an analysis of some models runs
on (the one asked for, else the first model's), checked against every model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ckatlas.errors import UserInputError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a torch.device; None or "auto": CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserInputError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for, but PyTorch sees no CUDA device; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UserInputError(f"unsupported device {device!r}; expected auto, cpu, cuda or cuda:N")
    return dev


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def run_device(
    models: nn.Module | Sequence[nn.Module], device: str | torch.device | None = None, names: Sequence[str] | None = None
) -> torch.device:
    """The device to run `models` on: `device` (None: the first model's); each model must be on it.

    Raises:
        UserInputError: a model is not a torch.nn.Module, or sits on another device.
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    names = list(names) if names is not None else [str(i) for i in range(len(models))]
    for name, model in zip(names, models):
        if not isinstance(model, nn.Module):
            raise UserInputError(f"model {name!r} must be a torch.nn.Module, got {type(model).__name__}")
    if device is not None:
        device = torch.device(device)
    elif models:
        device = model_device(models[0])
    else:
        return torch.device("cpu")
    for name, model in zip(names, models):
        on = model_device(model)
        if not _same_device(on, device):
            raise UserInputError(f"model {name!r} is on {on} but the work runs on {device}: move it with model.to(device)")
    return device


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


__all__ = ["model_device", "resolve_device", "run_device"]
