"""How a token sequence becomes one example's representation (transformers).

A layer of a transformer returns one vector per token, ``(n, seq, d)``. CKA
compares one representation per example, so the tokens must be combined, and
which way is a choice that changes the answer (`TOKEN_MODES`):

* ``"flatten"``: all tokens side by side, ``(n, seq * d)``: position matters (as a
  CNN's feature map is flattened);
* ``"mean"``: the mean over the example's valid tokens, ``(n, d)``;
* ``"first"``: the first valid token (``[CLS]`` of a BERT, right padding);
* ``"last"``: the last valid token (what a causal language model predicts from);
* ``"auto"`` (the default): ``"mean"`` when the batch carries an attention mask,
  else ``"flatten"`` (the behaviour for images, patch tokens included).

The attention mask is the batch's ``attention_mask`` (a dict or a tokenizer's
``BatchEncoding``), ``(n, seq)``, nonzero for real tokens. Every mode honours
it, so padding never enters a Gram: "mean", "first" and "last" use valid tokens
only, and "flatten" zeroes the padded positions, so the ids or values behind the
padding change nothing.

Which outputs are token sequences: 3-D outputs ``(n, seq, d)``; with a mask, only
those whose ``seq`` equals the mask's (an attention map ``(n, heads, seq, seq)``
or a pooled ``(n, d)`` output is used as it is, flattened).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ckatlas.errors import UserInputError

TOKEN_MODES = ("auto", "flatten", "mean", "first", "last")


def check_token_mode(mode: Any) -> str:
    """`mode` if it is one of `TOKEN_MODES`, else one clear error."""
    if not isinstance(mode, str) or mode not in TOKEN_MODES:
        raise UserInputError(f"tokens must be one of {', '.join(TOKEN_MODES)}, got {mode!r}")
    return mode


def resolve_token_mode(mode: str, masked: bool) -> str:
    """The mode "auto" stands for: "mean" for a masked batch, else "flatten"."""
    if mode != "auto":
        return mode
    return "mean" if masked else "flatten"


def attention_mask(batch: Any) -> torch.Tensor | None:
    """The ``attention_mask`` of a dict batch (or of a tuple's first element), as bool (n, seq); else None."""
    x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    if not isinstance(x, Mapping) or x.get("attention_mask") is None:
        return None
    mask = torch.as_tensor(x["attention_mask"])
    if mask.ndim != 2:
        raise UserInputError(
            f"attention_mask has shape {tuple(mask.shape)}; expected (batch, tokens), nonzero for real tokens"
        )
    mask = mask != 0
    if not bool(mask.any(dim=1).all()):
        raise UserInputError("an example's attention_mask is all zeros: every example needs at least one real token")
    return mask


def is_token_output(t: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether `t` is a sequence of token vectors (see the module docstring)."""
    return t.ndim == 3 and (mask is None or tuple(t.shape[:2]) == tuple(mask.shape))


def reduce_tokens(t: torch.Tensor, mode: str, mask: torch.Tensor | None) -> torch.Tensor:
    """One representation per example from token vectors `t` (n, seq, d).

    Args:
        t: a token output (`is_token_output`).
        mode: "flatten", "mean", "first" or "last" (resolve "auto" first).
        mask: bool (n, seq), True for real tokens; None when every token is real.

    Returns:
        (n, seq * d) for "flatten", else (n, d); in `t`'s dtype.
    """
    n, seq, _ = t.shape
    if mask is not None:
        mask = mask.to(t.device)
    if mode == "flatten":
        if mask is not None:
            t = t * mask.unsqueeze(-1).to(t.dtype)
        return t.reshape(n, -1)
    if mode == "mean":
        if mask is None:
            return t.mean(dim=1)
        weights = mask.to(t.dtype).unsqueeze(-1)
        return (t * weights).sum(dim=1) / weights.sum(dim=1)
    positions = torch.arange(seq, device=t.device)
    if mask is None:
        index = torch.full((n,), 0 if mode == "first" else seq - 1, device=t.device)
    elif mode == "first":  # the first real token, also under left padding
        index = torch.where(mask, positions, seq).amin(dim=1)
    elif mode == "last":  # the last real token, also under left padding
        index = torch.where(mask, positions, -1).amax(dim=1)
    else:
        raise UserInputError(f"tokens must be one of {', '.join(TOKEN_MODES[1:])} here, got {mode!r}")
    return t[torch.arange(n, device=t.device), index]


__all__ = ["TOKEN_MODES", "attention_mask", "check_token_mode", "is_token_output", "reduce_tokens",
           "resolve_token_mode"]
