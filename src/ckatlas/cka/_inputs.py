"""Turning user activations into (n, p) tensors, and the errors bad ones raise."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class CKAInputError(ValueError):
    """Activations or Gram matrices that CKA cannot be computed from.

    The message names what was wrong (which layer, which shape) and what is expected.
    """


def as_features(x: Any, *, name: str = "X") -> torch.Tensor:
    """Return `x` of shape (n, ...) as an (n, p) tensor, flattened per example.

    NumPy arrays and Tensors (any device) are accepted. Half-precision inputs are
    promoted to float32 and integer or boolean inputs to float64, so that products
    are never taken in a precision that loses the answer. The device is kept.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise CKAInputError(f"{name} must be a NumPy array or a torch.Tensor of shape (n, ...), got {type(x).__name__}") from exc
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise CKAInputError(f"{name} must hold numbers, got an array of dtype {arr.dtype}")
        if arr.ndim == 0:
            raise CKAInputError(f"{name} is a scalar; expected an array of shape (n, ...) with one row per example")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise CKAInputError(f"{name} is complex ({t.dtype}); CKA needs real-valued activations")
    if t.ndim == 0:
        raise CKAInputError(f"{name} is a scalar; expected an array of shape (n, ...) with one row per example")
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    elif not t.is_floating_point():
        t = t.double()
    n = t.shape[0]
    return t.reshape(n, -1) if t.ndim != 2 else t


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise `CKAInputError` if `t` holds a NaN or an infinity."""
    if not bool(torch.isfinite(t).all()):
        raise CKAInputError(f"{name} contains NaN or Inf; CKA needs finite activations")


def check_examples(n: int, minimum: int, what: str) -> None:
    """Raise `CKAInputError` if there are fewer than `minimum` examples."""
    if n < minimum:
        raise CKAInputError(f"{what} needs at least {minimum} examples, got n={n}")
