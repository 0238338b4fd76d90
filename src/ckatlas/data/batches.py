"""Minibatches from tensors held in memory, augmented on the device they are sent to."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ckatlas.data.augment import Augmentation
from ckatlas.errors import UserInputError


def num_batches(num_examples: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches `iterate_batches` yields."""
    return num_examples // batch_size if drop_last else -(-num_examples // batch_size)


def even_batch_count(num_examples: int, batch_size: int, min_size: int = 1) -> int:
    """How many near-equal batches `num_examples` make with `batch_size` as the target size: the
    nearest whole number of batches (at least one), fewer where a batch would hold under `min_size`.
    A multiple of `batch_size` gives batches of exactly `batch_size`; otherwise the sizes differ by
    at most one and lie within about a third of `batch_size` on either side of it."""
    count = max(1, (2 * num_examples + batch_size) // (2 * batch_size))  # round half up
    return max(1, min(count, num_examples // max(min_size, 1)))


def even_bounds(num_examples: int, count: int) -> list[int]:
    """The `count` + 1 boundaries of `count` consecutive batches of near-equal size over `num_examples`
    examples: as `numpy.array_split` and `torch.tensor_split` cut, the first ``num_examples % count``
    batches hold one example more than the rest."""
    size, extra = divmod(num_examples, count)
    return [b * size + min(b, extra) for b in range(count + 1)]


def batch_indices(
    num_examples: int, batch_size: int, *, generator: torch.Generator | None = None, drop_last: bool = False,
    even: bool = False, min_size: int = 1,
) -> Iterator[slice | torch.Tensor]:
    """The examples of each minibatch of one pass: consecutive slices, or (with a `generator`)
    slices of one `torch.randperm` drawn from it when the pass starts. The one batch order of
    ckatlas: training (`iterate_batches`) and CKA (`ckatlas.heatmap.Minibatches`) both use it.

    With `even` (what every CKA estimate uses) the pass is cut into `even_batch_count` batches of
    near-equal size instead of full batches and a short remainder, so that no small last batch
    counts as much as a full one in the minibatch sums; a multiple of `batch_size` gives the same
    batches either way.

    Yields:
        A `slice` (no generator) or an int64 index tensor on the generator's device.
    """
    order = torch.randperm(num_examples, generator=generator, device=generator.device) if generator else None
    if even:
        bounds = even_bounds(num_examples, even_batch_count(num_examples, batch_size, min_size))
    else:
        count = num_batches(num_examples, batch_size, drop_last)
        bounds = [min(b * batch_size, num_examples) for b in range(count + 1)]
    for start, stop in zip(bounds, bounds[1:]):
        part = slice(start, stop)
        yield part if order is None else order[part]


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: Augmentation | None = None,
    device: str | torch.device | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield `(images, labels)` minibatches of `x`, `y`.

    Without shuffling, batches are consecutive slices in dataset order. With
    shuffling, the order is one `torch.randperm` drawn from `generator` when the
    iteration starts; augmentation then draws from the same generator, batch by
    batch, after the batch has been moved to `device`.

    Args:
        x: images, (N, C, H, W), on any device.
        y: labels, (N,).
        batch_size: examples per batch (the last batch may be smaller).
        shuffle: visit the examples in a random order.
        generator: the source of randomness; required for shuffling or augmentation.
        augment: augmentation applied to each batch; None or an inactive one for none.
        device: where batches are delivered; by default where `x` is.
        drop_last: leave out a final batch smaller than `batch_size`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if x.shape[0] != y.shape[0]:
        raise UserInputError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    augment = augment if augment is not None and augment.active else None
    if (shuffle or augment is not None) and generator is None:
        raise UserInputError("shuffling and augmentation need an explicit torch.Generator")
    device = torch.device(device) if device is not None else x.device
    for idx in batch_indices(x.shape[0], batch_size, generator=generator if shuffle else None, drop_last=drop_last):
        if isinstance(idx, torch.Tensor):
            idx = idx.to(x.device)
        xb, yb = x[idx], y[idx]
        xb = xb.to(device, non_blocking=True)
        yb = yb.to(device, non_blocking=True)
        if augment is not None:
            xb = augment(xb, generator)
        yield xb, yb


__all__ = ["batch_indices", "even_batch_count", "even_bounds", "iterate_batches", "num_batches"]
