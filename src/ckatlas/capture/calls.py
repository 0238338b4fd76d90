"""Which tensor, which input: calling any model on any batch; see `ckatlas.capture`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.capture.layers import uncompiled
from ckatlas.runtime.devices import model_device  # noqa: F401  (re-exported by ckatlas.capture)



# -- which tensor, which input ---------------------------------------------------------------
def pick_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a layer's output stands for (see the module docstring), or None."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        hidden = output.get("last_hidden_state")
        if isinstance(hidden, torch.Tensor):
            return hidden
        values = list(output.values())
    elif isinstance(output, (tuple, list)):
        values = list(output)
    else:
        return None
    for value in values:
        found = pick_tensor(value)
        if found is not None:
            return found
    return None


def batch_inputs(batch: Any) -> Any:
    """What the model is called with: the batch, or its first element for a tuple/list (arrays as tensors)."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise UserInputError("a batch is an empty tuple; expected a Tensor, a dict or (inputs, labels)")
        batch = batch[0]
    if isinstance(batch, np.ndarray):
        return as_tensor(batch)
    if isinstance(batch, Mapping):
        return {k: as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
    return batch


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A NumPy array as a Tensor (sharing memory where it can); one clear error for object arrays."""
    if array.dtype == object or array.dtype.kind in "USV":
        raise UserInputError(
            f"inputs hold a NumPy array of dtype {array.dtype}; expected numbers (float images, integer token ids)"
        )
    return torch.from_numpy(np.ascontiguousarray(array))


def batch_len(batch: Any) -> int:
    """Number of examples in a batch (first dimension of its tensor, or of a dict's first tensor)."""
    x = batch_inputs(batch)
    if isinstance(x, torch.Tensor) and x.ndim > 0:
        return x.shape[0]
    if isinstance(x, Mapping):
        for value in x.values():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                return value.shape[0]
    raise UserInputError(
        f"cannot tell the batch size of a {type(x).__name__}: a batch must be a Tensor (n, ...), "
        "a dict of Tensors (n, ...) or a tuple whose first element is one"
    )


def call_model(model: nn.Module, batch: Any, device: torch.device | str | None = None) -> Any:
    """Run `model` on one batch (see the module docstring), moving tensors to `device`.

    Floating-point inputs take the dtype of the model's floating parameters; a
    ``torch.compile`` model runs as the module it wraps.
    """
    model = uncompiled(model)
    x = batch_inputs(batch)
    dtype = _float_dtype(model)
    if isinstance(x, Mapping):
        return model(**{k: _to(v, device, dtype) for k, v in x.items()})
    return model(_to(x, device, dtype))


def first_call(model: nn.Module, batch: Any, device: torch.device | str | None = None, what: str | None = None) -> Any:
    """`call_model` for the first batch of a pass: an input the model cannot take (wrong channels, size,
    dtype) becomes one clear error naming the input's shape and dtype and the model, not a traceback from
    deep inside it. Later batches call `call_model` directly, so a failure there is not taken for this.
    A model that can check its inputs itself (`check_inputs`, as ckatlas's own models do) checks them
    first, before any forward pass."""
    what = what or f"model {type(uncompiled(model)).__name__!r}"
    check = getattr(uncompiled(model), "check_inputs", None)
    if callable(check):
        check(batch_inputs(batch), what)
    try:
        return call_model(model, batch, device)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        x = batch_inputs(batch)
        if isinstance(x, Mapping):
            given = ", ".join(f"{k} {_describe(v)}" for k, v in x.items())
        else:
            given = _describe(x)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(
            f"{what} cannot take the inputs ({given}): {message[:300]}; give "
            "inputs of the shape and kind it was built for (channels, image size, token ids or floats)"
        ) from None


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}, {str(value.dtype).removeprefix('torch.')}"
    return type(value).__name__


def _float_dtype(model: nn.Module) -> torch.dtype | None:
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return None


def _to(value: Any, device: torch.device | str | None, dtype: torch.dtype | None = None) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    if dtype is not None and value.is_floating_point() and value.dtype != dtype:
        value = value.to(dtype)
    if device is not None:
        return value.to(device, non_blocking=True)
    return value


@contextlib.contextmanager
def inference(*models: nn.Module) -> Iterator[None]:
    """Eval mode and `torch.inference_mode` for the duration; training flags restored after.

    Each submodule's own flag is restored (also when an error is raised), so a
    model with some submodules deliberately in eval mode comes back as it was.
    """
    models = tuple(uncompiled(m) for m in models)
    flags = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        with torch.inference_mode():
            yield
    finally:
        for module, training in flags:
            module.training = training


