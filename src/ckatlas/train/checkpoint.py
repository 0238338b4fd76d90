"""The resume checkpoint: model, optimiser, random generators and bookkeeping in one safetensors file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.io.files import atomic_write_bytes

_STATE_KEY = "ckatlas.state"


def save_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    bookkeeping: dict[str, Any],
    best: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write everything resuming needs into one safetensors file (bookkeeping as JSON metadata)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if best is not None:
        tensors.update({f"best.{k}": v.contiguous() for k, v in best.items()})
    opt_state = optimizer.state_dict()
    extra: dict[str, dict[str, Any]] = {}
    for index, entries in opt_state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                extra.setdefault(str(index), {})[key] = value
    tensors["rng.data"] = generator.get_state()
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    meta = {**bookkeeping, "optimizer": {"param_groups": opt_state["param_groups"], "extra_state": extra}}
    atomic_write_bytes(path, save_safetensors(tensors, metadata={_STATE_KEY: json.dumps(meta)}))


def load_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore what `save_state` wrote; returns the bookkeeping and the best weights (if kept)."""
    data = path.read_bytes()
    try:
        tensors = load_safetensors(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8 : 8 + header_len])["__metadata__"][_STATE_KEY])
    except (SafetensorError, KeyError, ValueError) as exc:
        raise UserInputError(f"{path}: unreadable checkpoint ({exc}); delete the state/ folder to start over") from None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device)
    for index, entries in meta["optimizer"]["extra_state"].items():
        state.setdefault(int(index), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    generator.set_state(tensors["rng.data"])
    torch.set_rng_state(tensors["rng.torch_cpu"])
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return meta, best or None


__all__ = ["load_state", "save_state"]
