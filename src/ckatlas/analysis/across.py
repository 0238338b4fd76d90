"""Across models: heatmaps averaged over the pairs of a population, and matched layers.

Nguyen, Raghu & Kornblith (2021, Section 4, Figures 5-6) compare models of one
architecture trained from different seeds, and models of different architectures,
with cross-model CKA heatmaps averaged over pairs of models.

* `average_heatmaps`: the cell-wise mean of several heatmaps over the same layers,
  with the sample standard deviation (ddof=1) and the number of heatmaps in which
  each cell is defined (a NaN cell, from a dead layer, is left out of that cell's
  statistics).
* `population_cka`: one population (the seeds of an architecture): every unordered
  pair of different models (i < j), model i on the rows; two populations
  (architecture A against B): every pair (a, b), A on the rows. All heatmaps come
  from one pass of every model over the same minibatches
  (`ckatlas.heatmap.population_heatmaps`).
* `match_layers`: for each layer of model A, the layer of model B with the highest
  CKA (the paper's "which layer of the deep model matches this layer of the wide one").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ckatlas.capture import LayerSpec
from ckatlas.errors import UserInputError
from ckatlas.heatmap import population_heatmaps
from ckatlas.io.results import JsonResult, NpzResult



@dataclass
class AveragedCKA(NpzResult):
    """A CKA heatmap averaged over several heatmaps (e.g. pairs of seeds), with its spread.

    It has the `matrix`, `layers_a`, `layers_b` of a `CKAResult`, so `find_blocks`,
    `match_layers` and `plot_heatmap` take it as they take one heatmap.

    Attributes:
        matrix: (La, Lb) mean CKA per cell (NaN where no heatmap defines the cell).
        std: (La, Lb) sample standard deviation (ddof=1) per cell; NaN with fewer than 2.
        count: (La, Lb) how many heatmaps define each cell.
        layers_a, layers_b: layer names of the rows and columns.
        pairs: a label per averaged heatmap (e.g. "seed0 vs seed1").
        model_a, model_b: names of the row and column populations.
        is_square: True when every averaged heatmap compares a model with itself.
    """

    FORMAT = "ckatlas.AveragedCKA"
    WHAT = "an AveragedCKA"
    ARRAYS = ("matrix", "std", "count")

    matrix: np.ndarray
    std: np.ndarray
    count: np.ndarray
    layers_a: list[str]
    layers_b: list[str]
    pairs: list[str]
    model_a: str = "population"
    model_b: str = "population"
    is_square: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.float64)
        self.std = np.asarray(self.std, dtype=np.float64)
        self.count = np.asarray(self.count, dtype=np.int64)
        self.layers_a, self.layers_b, self.pairs = list(self.layers_a), list(self.layers_b), list(self.pairs)

    @property
    def num_pairs(self) -> int:
        """How many heatmaps were averaged."""
        return len(self.pairs)

    @property
    def standard_error(self) -> np.ndarray:
        """(La, Lb) standard error of the mean over heatmaps: std / sqrt(count)."""
        return self.std / np.sqrt(np.maximum(self.count, 1))


def average_heatmaps(results: Sequence[Any], labels: Sequence[str] | None = None) -> AveragedCKA:
    """Cell-wise mean, standard deviation and count of several heatmaps over the same layers.

    Args:
        results: `CKAResult`s (or (La, Lb) arrays) of the same shape; results with
            layer names must all have the same ones.
        labels: one label per heatmap (default: "model_a vs model_b" or its index).

    Raises:
        UserInputError: no heatmaps, different shapes or different layer names.
    """
    results = list(results)
    if not results:
        raise UserInputError("average_heatmaps needs at least one heatmap")
    matrices = [np.asarray(getattr(r, "matrix", r), dtype=np.float64) for r in results]
    shape = matrices[0].shape
    if len(shape) != 2:
        raise UserInputError(f"a heatmap must be a 2-D matrix, got shape {shape}")
    for i, m in enumerate(matrices):
        if m.shape != shape:
            raise UserInputError(
                f"heatmap {i} has shape {m.shape} but heatmap 0 has {shape}: average heatmaps of the same layers"
            )
    named = [r for r in results if hasattr(r, "layers_a")]
    layers_a = list(named[0].layers_a) if named else [str(i) for i in range(shape[0])]
    layers_b = list(named[0].layers_b) if named else [str(j) for j in range(shape[1])]
    for i, r in enumerate(results):
        if hasattr(r, "layers_a") and (list(r.layers_a) != layers_a or list(r.layers_b) != layers_b):
            if list(r.layers_a) != layers_a:
                side, mine, first = "rows", list(r.layers_a), layers_a
            else:
                side, mine, first = "columns", list(r.layers_b), layers_b
            k = next((k for k, (x, y) in enumerate(zip(mine, first)) if x != y), min(len(mine), len(first)))
            raise UserInputError(
                f"heatmap {i} has different layers ({side}) from heatmap 0: layer {k} is "
                f"{mine[k] if k < len(mine) else 'missing'!r}, expected {first[k] if k < len(first) else 'none'!r}; "
                "average heatmaps of the same layers"
            )
    if labels is None:
        labels = [f"{r.model_a} vs {r.model_b}" if hasattr(r, "model_a") else str(i) for i, r in enumerate(results)]
    elif len(labels) != len(results):
        raise UserInputError(f"{len(labels)} labels for {len(results)} heatmaps: give one label per heatmap")
    stack = np.stack(matrices)
    valid = ~np.isnan(stack)
    count = valid.sum(axis=0)
    total = np.where(valid, stack, 0.0).sum(axis=0)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    squares = np.where(valid, (stack - mean) ** 2, 0.0).sum(axis=0)
    std = np.where(count > 1, np.sqrt(squares / np.maximum(count - 1, 1)), np.nan)
    return AveragedCKA(
        mean, std, count, layers_a, layers_b, [str(x) for x in labels],
        is_square=all(getattr(r, "is_square", False) for r in results),
    )


def _named(models: Mapping[str, nn.Module] | Sequence[nn.Module], prefix: str) -> dict[str, nn.Module]:
    if isinstance(models, nn.Module):
        raise UserInputError("pass a list (or dict) of models, not a single model")
    if isinstance(models, Mapping):
        return {str(k): m for k, m in models.items()}
    return {f"{prefix}{i}": m for i, m in enumerate(models)}


def population_cka(
    models_a: Mapping[str, nn.Module] | Sequence[nn.Module],
    inputs: Any,
    models_b: Mapping[str, nn.Module] | Sequence[nn.Module] | None = None,
    *,
    layers: LayerSpec = "auto",
    layers_b: LayerSpec | None = None,
    batch_size: int = 256,
    passes: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
    names: tuple[str, str] = ("A", "B"),
    progress: bool | None = None,
    measure: str = "cka",
) -> AveragedCKA:
    """Cross-model heatmap averaged over the pairs of one or two populations (module docstring).

    Args:
        models_a: the row population, e.g. the seeds of one architecture ({name: model} or a list).
        inputs: a Tensor (N, ...) or an iterable of batches (as in `ckatlas.heatmap.heatmap`).
        models_b: the column population (another architecture); None pairs the
            models of `models_a` with each other.
        layers: layer spec of the models of A; `layers_b` that of B (None: `layers`).
        batch_size, passes, shuffle, seed, device, progress, measure: as in `ckatlas.heatmap.heatmap`.
        names: names of the two populations, stored in the result.

    Returns:
        An `AveragedCKA`; `pairs` names the models of each averaged heatmap.

    Raises:
        UserInputError: fewer than two pairs of different models (e.g. a population
            of one model), a model listed twice, layers that do not exist.
    """
    pop_a = _named(models_a, "a")
    pop_b = _named(models_b, "b") if models_b is not None else {}
    if models_b is None:
        if len(pop_a) < 2:
            raise UserInputError(
                f"a population of {len(pop_a)} model(s) has no pair of different models: "
                "cross-seed CKA needs at least 2 models (e.g. 2 seeds)"
            )
        pairs = [(a, b) for i, a in enumerate(pop_a) for b in list(pop_a)[i + 1 :]]
    else:
        pairs = [(a, b) for a in pop_a for b in pop_b]
        if len(pairs) < 2:
            raise UserInputError(
                f"populations of {len(pop_a)} and {len(pop_b)} model(s) give {len(pairs)} pair: averaging needs at "
                "least 2 pairs (more seeds); for one pair use ckatlas.heatmap.heatmap"
            )
        clash = sorted(set(pop_a) & set(pop_b))
        if clash:
            raise UserInputError(f"model names {clash} are in both populations: give the models distinct names")
    everyone = {**pop_a, **pop_b}
    seen: dict[int, str] = {}
    for name, model in everyone.items():
        if id(model) in seen:
            raise UserInputError(
                f"models {seen[id(model)]!r} and {name!r} are the same object: a pair needs two models"
            )
        seen[id(model)] = name
    specs = {name: layers for name in pop_a}
    specs.update({name: layers if layers_b is None else layers_b for name in pop_b})
    population = population_heatmaps(
        everyone, inputs, specs, batch_size, passes, shuffle, seed, device, progress=progress, measure=measure
    )
    results = [population[a, b] for a, b in pairs]
    avg = average_heatmaps(results, [f"{a} vs {b}" for a, b in pairs])
    avg.model_a, avg.model_b = names[0], names[0] if models_b is None else names[1]
    avg.metadata = {**results[0].metadata, "passes": passes, "n": results[0].n}
    return avg


# -- layer matching ------------------------------------------------------------------------------
@dataclass
class LayerMatch(JsonResult):
    """For each layer of model A, the most similar layer of model B.

    Attributes:
        layers_a, layers_b: layer names of the two models.
        index: (La,) index into `layers_b` of each row's best match; -1 where the
            row is all NaN.
        cka: (La,) the CKA of the match (NaN where there is none).
    """

    FORMAT = "ckatlas.LayerMatch"
    WHAT = "a layer match"

    layers_a: list[str]
    layers_b: list[str]
    index: np.ndarray
    cka: np.ndarray

    @property
    def matched(self) -> list[str | None]:
        """Name of the matched layer of B for each layer of A (None: no match)."""
        return [self.layers_b[j] if j >= 0 else None for j in self.index]

    def summary(self) -> str:
        width = max(len(name) for name in self.layers_a)
        return "\n".join(
            f"{a:<{width}} -> {b if b is not None else '(none)'}  CKA {c:.3f}"
            for a, b, c in zip(self.layers_a, self.matched, self.cka)
        )

    def fields(self) -> dict[str, Any]:
        return {"layers_a": self.layers_a, "layers_b": self.layers_b,
                "index": self.index.tolist(), "matched": self.matched, "cka": self.cka.tolist()}

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> LayerMatch:
        return cls(data["layers_a"], data["layers_b"], np.asarray(data["index"], dtype=np.int64),
                   np.asarray(data["cka"], dtype=np.float64))


def match_layers(
    cka: Any, layers_a: Sequence[str] | None = None, layers_b: Sequence[str] | None = None
) -> LayerMatch:
    """For each row (layer of A) of a cross-model CKA matrix, its highest-CKA column (layer of B).

    Args:
        cka: a `CKAResult`, an `AveragedCKA` or an (La, Lb) array.
        layers_a, layers_b: layer names (default: the result's, or indices).

    Returns:
        A `LayerMatch`; ties go to the earliest layer of B, NaN cells are skipped.
    """
    matrix = np.asarray(getattr(cka, "matrix", cka), dtype=np.float64)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise UserInputError(f"match_layers needs a non-empty 2-D CKA matrix, got shape {matrix.shape}")
    layers_a = list(layers_a if layers_a is not None else getattr(cka, "layers_a", range(matrix.shape[0])))
    layers_b = list(layers_b if layers_b is not None else getattr(cka, "layers_b", range(matrix.shape[1])))
    if (len(layers_a), len(layers_b)) != matrix.shape:
        raise UserInputError(f"{len(layers_a)} x {len(layers_b)} layer names for a matrix of shape {matrix.shape}")
    dead = np.isnan(matrix).all(axis=1)
    index = np.where(dead, -1, np.argmax(np.where(np.isnan(matrix), -np.inf, matrix), axis=1))
    best = np.where(dead, np.nan, matrix[np.arange(matrix.shape[0]), np.maximum(index, 0)])
    return LayerMatch([str(x) for x in layers_a], [str(x) for x in layers_b], index.astype(np.int64), best)


__all__ = ["AveragedCKA", "LayerMatch", "average_heatmaps", "match_layers", "population_cka"]
