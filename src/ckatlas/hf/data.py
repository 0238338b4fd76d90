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

from ckatlas.capture.minibatches import count_examples, sliceable_inputs, take_examples
from ckatlas.data.batches import batch_indices
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
    """The rows of `inputs` (all tensors of a dict must have as many; `sliceable_inputs` checks)."""
    if not isinstance(inputs, (torch.Tensor, np.ndarray, Mapping)):
        raise UserInputError(f"inputs must be token ids (N, seq) or a dict of tensors, got {type(inputs).__name__}")
    x = sliceable_inputs(inputs)
    if isinstance(x, torch.Tensor) and x.ndim < 2:
        raise UserInputError(f"token ids must be (N, seq), got shape {tuple(x.shape)}")
    return count_examples(x)


def without_labels(inputs: Any) -> Any:
    """The inputs the model is called with (a dict's ``labels`` left out)."""
    if isinstance(inputs, Mapping):
        return {k: v for k, v in inputs.items() if k != "labels"}
    return inputs


def take(inputs: Any, rows: slice) -> Any:
    """Rows `rows` of the inputs."""
    return take_examples(sliceable_inputs(inputs), rows)


def split(inputs: Any, holdout: float) -> tuple[Any, Any]:
    """(calibration, held-out): the first rows and the last `holdout` share of them."""
    if not 0 < holdout < 1:
        raise UserInputError(f"holdout must be in (0, 1), got {holdout!r}")
    n = num_examples(inputs)
    cut = n - max(1, round(n * holdout))
    if cut < 4:
        raise UserInputError(f"{n} examples leave {cut} for calibration; give at least {4 + max(1, round(n * holdout))}")
    return take(inputs, slice(0, cut)), take(inputs, slice(cut, n))


def batches(inputs: Any, batch_size: int, min_size: int = 1, even: bool = False) -> Iterator[Any]:
    """Consecutive batches of `batch_size` rows (ckatlas's one batch order, `batch_indices`);
    a last batch under `min_size` rows is dropped. With `even` (a CKA estimate's batches), batches
    of near-equal size around `batch_size` instead (`ckatlas.data.batches.even_batch_count`)."""
    x = sliceable_inputs(inputs)
    for rows in batch_indices(num_examples(x), batch_size, even=even, min_size=min_size):
        if rows.stop - rows.start >= min_size:
            yield take_examples(x, rows)


__all__ = ["batches", "load_inputs", "num_examples", "read_text", "split", "take", "text_token_ids", "without_labels"]
