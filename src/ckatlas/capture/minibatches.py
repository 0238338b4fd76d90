"""The minibatches of one pass over a user's inputs (`Minibatches`): a Tensor or array
(N, ...), a dict of them (a tokenizer's output), or any iterable of batches. Sliced inputs
follow ckatlas's one batch order (`ckatlas.data.batch_indices`), cut into batches of
near-equal size (`even=True`): N examples make round(N / batch_size) batches whose sizes
differ by at most one, so a short leftover batch never weighs as much as a full one in the
minibatch sums, and a multiple of `batch_size` gives batches of exactly `batch_size`. An
iterable's batches are used as they come; one with fewer than the measure's minimum
(`MIN_BATCH` for CKA) is skipped with one warning."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ckatlas.capture.calls import as_tensor, batch_len
from ckatlas.data.batches import batch_indices, even_batch_count
from ckatlas.errors import UserInputError
from ckatlas.runtime.seeding import make_generator

MIN_BATCH = 4  # the unbiased HSIC estimator needs n >= 4


class Minibatches:
    """The minibatches of one pass over `inputs` (module docstring), for as many passes as asked (`epoch`)."""

    def __init__(self, inputs: Any, batch_size: int, shuffle: bool, seed: int, min_size: int = MIN_BATCH,
                 needs: str = "minibatch CKA") -> None:
        self.min_size, self.needs = max(int(min_size), MIN_BATCH), needs
        inputs = sliceable_inputs(inputs)
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, (torch.Tensor, Mapping, Iterable)):
            raise UserInputError(
                f"inputs must be a Tensor or array (N, ...), a dict of them, or an iterable of batches, "
                f"got {type(inputs).__name__}"
            )
        self.inputs, self.batch_size, self.shuffle = inputs, batch_size, shuffle
        self.sliced = isinstance(inputs, (torch.Tensor, Mapping))
        self.one_shot = not self.sliced and iter(inputs) is inputs
        self.generator = make_generator(seed) if self.sliced and shuffle else None
        self._warned = False
        if self.sliced:
            size = count_examples(inputs)
            if size < self.min_size:
                shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else {
                    k: tuple(v.shape) for k, v in inputs.items()}
                raise UserInputError(
                    f"inputs must hold at least {self.min_size} examples along the first dimension ({needs} needs "
                    f"{self.min_size} per minibatch), got shape {shape}: give more examples"
                )
            if batch_size < self.min_size:
                paper = "; the paper uses 256" if needs == "minibatch CKA" else ""
                raise UserInputError(
                    f"batch_size must be at least {self.min_size} ({needs} needs {self.min_size} examples per "
                    f"minibatch), got {batch_size}{paper}"
                )
            self.count: int | None = even_batch_count(size, batch_size, self.min_size)
        else:
            self.count = len(inputs) if hasattr(inputs, "__len__") else None
            _check_not_examples(inputs)

    def epoch(self) -> Iterator[Any]:
        if not self.sliced:
            for batch in self.inputs:
                if self._usable(batch_len(batch)):
                    yield batch
            return
        x = self.inputs
        for index in batch_indices(count_examples(x), self.batch_size, generator=self.generator, even=True,
                                   min_size=self.min_size):
            count = index.stop - index.start if isinstance(index, slice) else len(index)
            if self._usable(count):
                yield take_examples(x, index)

    def _usable(self, n: int) -> bool:
        if n >= self.min_size:
            return True
        if not self._warned:
            which = "the final batch" if self.sliced else "a batch"
            warnings.warn(
                f"{which} of {n} example(s) is skipped: {self.needs} needs at least {self.min_size} per batch",
                UserWarning,
                stacklevel=4,
            )
            self._warned = True
        return False


def _check_not_examples(inputs: Any) -> None:
    """A list (or tuple) is a list of batches; one of tensors none of which holds `MIN_BATCH` examples along
    its first dimension is a list of single examples, and gets one clear error saying what to pass instead."""
    if not isinstance(inputs, (list, tuple)) or not inputs:
        return
    if not all(isinstance(item, torch.Tensor) for item in inputs):
        return
    shapes = {tuple(item.shape) for item in inputs}
    single_vectors = len(inputs) >= MIN_BATCH and len(shapes) == 1 and len(next(iter(shapes))) == 1
    if not single_vectors and any(item.ndim == 0 or item.shape[0] >= MIN_BATCH for item in inputs):
        return  # batches (a list of equal 1-d tensors is read as single examples: a batch has a feature axis)
    shown = next(iter(shapes)) if len(shapes) == 1 else "various shapes"
    what = ("each a single 1-d example rather than a batch with examples first" if single_vectors else
            f"each with fewer than {MIN_BATCH} examples along its first dimension")
    raise UserInputError(
        f"inputs is a {type(inputs).__name__} of {len(inputs)} tensors ({shown}), which ckatlas takes as "
        f"{len(inputs)} batches, {what}; to pass them "
        f"as {len(inputs)} examples, stack them into one tensor (torch.stack(inputs)), or pass batches of at "
        f"least {MIN_BATCH} examples each"
    )


def sliceable_inputs(inputs: Any) -> Any:
    """A Tensor for an array; a dict of Tensors (examples first, all the same count) for a dict; else as is."""
    if isinstance(inputs, np.ndarray):
        return as_tensor(inputs)
    if not isinstance(inputs, Mapping):
        return inputs
    out: dict[str, torch.Tensor] = {}
    for key, value in inputs.items():
        if isinstance(value, np.ndarray):
            value = as_tensor(value)
        if not isinstance(value, torch.Tensor) or value.ndim == 0:
            raise UserInputError(
                f"inputs[{key!r}] is a {type(value).__name__}: a dict of inputs must hold Tensors or arrays with the "
                "examples first (from a tokenizer: padding=True, return_tensors='pt')"
            )
        out[str(key)] = value
    if not out:
        raise UserInputError("inputs is an empty dict; expected e.g. {'input_ids': ..., 'attention_mask': ...}")
    sizes = {key: len(value) for key, value in out.items()}
    if len(set(sizes.values())) > 1:
        raise UserInputError(f"the tensors of a dict of inputs must hold the same number of examples, got {sizes}")
    return out


def count_examples(x: torch.Tensor | Mapping[str, torch.Tensor]) -> int:
    """The examples of sliceable inputs (`sliceable_inputs`)."""
    if isinstance(x, torch.Tensor):
        return len(x) if x.ndim else 0
    return len(next(iter(x.values())))


def take_examples(x: torch.Tensor | Mapping[str, torch.Tensor], index: slice | torch.Tensor) -> Any:
    """The examples `index` of a Tensor or of every Tensor of a dict."""
    if isinstance(x, torch.Tensor):
        return x[index] if isinstance(index, slice) else x[index.to(x.device)]
    return {k: v[index] if isinstance(index, slice) else v[index.to(v.device)] for k, v in x.items()}


__all__ = ["MIN_BATCH", "Minibatches", "count_examples", "sliceable_inputs", "take_examples"]
