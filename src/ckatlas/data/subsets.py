"""Stratified subsets of a training set, and the fixed train/test split of unsplit data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ckatlas.errors import UserInputError


def check_fraction(fraction: Any) -> float:
    """Return `fraction` as a float in (0, 1], or raise a `UserInputError`."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise UserInputError(f"fraction must be a number with 0 < fraction <= 1, got {fraction!r}") from None
    if isinstance(fraction, bool) or not 0.0 < value <= 1.0:
        raise UserInputError(f"fraction must be a number with 0 < fraction <= 1, got {fraction!r}")
    return value


def _labels(y: Any) -> np.ndarray:
    labels = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if labels.ndim != 1:
        raise UserInputError(f"labels must be one-dimensional, got shape {labels.shape}")
    return labels


def subset_fraction(y: Any, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of a class-stratified random subset holding `fraction` of the examples.

    Each class keeps `max(1, floor(fraction * n_c + 1/2))` of its n_c examples,
    chosen uniformly at random. For one seed the subsets are nested: the 1/16
    subset lies inside the 1/4 subset, which lies inside the 1/2 subset (each
    class's examples are taken from the front of one permutation per seed), so a
    data-size experiment (Nguyen et al. 2021, Section 4) varies only the amount
    of data. Reproducible for a given seed and PyTorch version.

    Args:
        y: class labels, shape (N,).
        fraction: share of each class to keep, 0 < fraction <= 1.
        seed: seed of the permutations.

    Returns:
        Sorted int64 indices into `y` (dataset order kept).
    """
    fraction = check_fraction(fraction)
    labels = _labels(y)
    if fraction == 1.0:
        return torch.arange(len(labels), dtype=torch.int64)
    gen = torch.Generator().manual_seed(int(seed))
    kept = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        keep = max(1, math.floor(fraction * len(members) + 0.5))
        order = torch.randperm(len(members), generator=gen).numpy()
        kept.append(members[order[:keep]])
    return torch.from_numpy(np.sort(np.concatenate(kept))).to(torch.int64)


def validation_split(labels: Any, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded (fit, validation) indices of a training split.

    Each class with n_c examples gives round(val_fraction * n_c) of them, at least
    1 and at most n_c - 1 (none for a class of one example), to the validation split.

    Returns:
        Sorted int64 index arrays (fit, validation).
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise UserInputError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    y = _labels(labels)
    rng = np.random.default_rng(seed)
    val = []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        k = min(max(1, round(val_fraction * len(members))), len(members) - 1)
        val.append(rng.permutation(members)[:k])
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    if len(val_idx) == 0:
        raise UserInputError("the training split is too small to carve a validation split from (one example per class)")
    fit_idx = np.setdiff1d(np.arange(len(y)), val_idx).astype(np.int64)
    return fit_idx, val_idx


def fixed_split(y: Any, test_every: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, stratified train/test split with no randomness in it.

    Within each class, in dataset order, every `test_every`-th example (the
    `test_every`-th, the 2*`test_every`-th, ...) goes to the test split and the
    rest to the training split. Being a rule rather than a random draw, the split
    is the same on every machine and every library version.

    Args:
        y: class labels, shape (N,).
        test_every: one example in this many (per class) is a test example.

    Returns:
        (train_indices, test_indices), each sorted int64.
    """
    labels = _labels(y)
    is_test = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        is_test[members[test_every - 1 :: test_every]] = True
    return (
        torch.from_numpy(np.flatnonzero(~is_test)).to(torch.int64),
        torch.from_numpy(np.flatnonzero(is_test)).to(torch.int64),
    )


__all__ = ["check_fraction", "fixed_split", "subset_fraction", "validation_split"]
