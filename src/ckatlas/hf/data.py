"""Inputs for the layer-removal analysis: token ids from text, from files, and their batches.

Inputs are token ids ``(N, seq)`` or a dict of tensors with one example per row
(``input_ids``, ``attention_mask``, ``pixel_values``, ``labels``, ...). Text becomes
token ids by the model's tokenizer: the whole text is tokenised once and cut into
consecutive sequences of `seq_len` tokens (the rest dropped), so no sequence is padded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ckatlas.errors import UserInputError


def text_token_ids(text: str, tokenizer: Any, seq_len: int, max_sequences: int | None = None) -> torch.Tensor:
    """`text` tokenised and cut into (N, seq_len) sequences (module docstring)."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise UserInputError(f"seq_len must be an integer >= 2 (next-token loss needs two tokens), got {seq_len!r}")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    count = len(ids) // seq_len
    if max_sequences is not None:
        count = min(count, max_sequences)
    if count < 1:
        raise UserInputError(f"the text holds {len(ids)} tokens, fewer than one sequence of {seq_len}")
    return torch.tensor(ids[: count * seq_len], dtype=torch.long).view(count, seq_len)


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file (one clear error for a missing or binary file)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"{path}: no such file; expected a UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserInputError(f"{path} is not UTF-8 text") from None


def load_inputs(path: str | os.PathLike) -> Any:
    """Token ids from a .npy (N, seq) or a dict of arrays from an .npz (``input_ids``,
    ``attention_mask``, ``pixel_values``, ``labels``, ...), as tensors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"{path}: no such file; expected a .npy of token ids or an .npz of arrays")
    try:
        if path.suffix == ".npy":
            data: Any = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                data = {k: torch.from_numpy(npz[k]) for k in npz.files}
        else:
            raise UserInputError(f"{path}: expected a .npy of token ids or an .npz of arrays, got {path.suffix or 'no suffix'}")
    except (ValueError, OSError) as exc:
        raise UserInputError(f"{path} could not be read as NumPy data ({exc})") from None
    num_examples(data)
    return data


def num_examples(inputs: Any) -> int:
    """The rows of `inputs` (all tensors of a dict must have as many)."""
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim < 2:
            raise UserInputError(f"token ids must be (N, seq), got shape {tuple(inputs.shape)}")
        return inputs.shape[0]
    if isinstance(inputs, Mapping) and inputs:
        sizes = {k: v.shape[0] for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.ndim > 0}
        if len(set(sizes.values())) != 1 or len(sizes) != len(inputs):
            raise UserInputError(f"inputs must be tensors with one example per row, got sizes {sizes}")
        return next(iter(sizes.values()))
    raise UserInputError(f"inputs must be token ids (N, seq) or a dict of tensors, got {type(inputs).__name__}")


def without_labels(inputs: Any) -> Any:
    """The inputs the model is called with (a dict's ``labels`` left out)."""
    if isinstance(inputs, Mapping):
        return {k: v for k, v in inputs.items() if k != "labels"}
    return inputs


def take(inputs: Any, rows: slice) -> Any:
    """Rows `rows` of the inputs."""
    if isinstance(inputs, Mapping):
        return {k: v[rows] for k, v in inputs.items()}
    return inputs[rows]


def split(inputs: Any, holdout: float) -> tuple[Any, Any]:
    """(calibration, held-out): the first rows and the last `holdout` share of them."""
    if not 0 < holdout < 1:
        raise UserInputError(f"holdout must be in (0, 1), got {holdout!r}")
    n = num_examples(inputs)
    cut = n - max(1, round(n * holdout))
    if cut < 4:
        raise UserInputError(f"{n} examples leave {cut} for calibration; give at least {4 + max(1, round(n * holdout))}")
    return take(inputs, slice(0, cut)), take(inputs, slice(cut, n))


def batches(inputs: Any, batch_size: int, min_size: int = 1) -> Iterator[Any]:
    """Consecutive batches of `batch_size` rows; a last batch under `min_size` rows is dropped."""
    n = num_examples(inputs)
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        if rows.stop - rows.start >= min_size:
            yield take(inputs, rows)


__all__ = ["batches", "load_inputs", "num_examples", "read_text", "split", "take", "text_token_ids", "without_labels"]
