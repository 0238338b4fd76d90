"""Similarity measures beside the paper's minibatch linear CKA, each from the same per-batch Grams.

ckatlas holds every layer's (n, n) Gram of each minibatch (the examples' inner products, the
features centred over the batch). Every measure here is a function of those Grams, so one
forward pass per batch serves any of them, for all layer pairs at once:

=================  ==============================  ===============================================
measure            estimate                        what it is
=================  ==============================  ===============================================
``cka``            minibatch (sums of HSIC)        linear CKA with the unbiased HSIC estimator,
                                                   summed over batches (Nguyen et al. 2021)
``cka-rbf``        minibatch (sums of HSIC)        the same on RBF kernels, bandwidth the batch's
                                                   median distance (Kornblith et al. 2019)
``cka-debiased``   all examples at once            linear CKA with the unbiased HSIC of all N
                                                   examples (Davari et al. 2022): one "batch" of
                                                   N, so N^2 memory per layer
``procrustes``     minibatch (mean over batches)   orthogonal Procrustes similarity ||X'Y||_* of
                                                   centred, unit-norm X and Y (1 - d^2/2 for the
                                                   Procrustes distance d; Ding et al. 2021)
``knn``            minibatch (mean over batches)   mutual k-nearest-neighbour alignment (Huh et
                                                   al. 2024): the share of each example's k
                                                   nearest neighbours (cosine of the centred
                                                   features) that both layers share
``rsa``            minibatch (mean over batches)   RSA: Spearman correlation of the two layers'
                                                   Euclidean dissimilarity matrices (Kriegeskorte
                                                   et al. 2008)
``svcca``          minibatch (mean over batches)   SVCCA (Raghu et al. 2017): each layer cut to the
                                                   top principal directions that explain 99% of
                                                   its variance, then the mean canonical
                                                   correlation of the two
=================  ==============================  ===============================================

PWCCA (Morcos et al. 2018) does not fit this design: its weights are the L1 norms of each
canonical variate's projections onto the individual neurons, which depend on the neuron basis
that a Gram (the examples' inner products) no longer holds.

Every measure is 1 for identical representations and (for these) invariant to rotations and
to a global scale. A "minibatch" measure depends on the batch size for the non-CKA ones
(Procrustes, kNN and SVCCA see n examples at a time; CCA needs many more examples than kept
directions, else every correlation nears 1): compare heatmaps computed with the same batch
size. `accumulator(measure, ...)` builds the streaming accumulator of a measure; all of them
take `update_grams`, `compute`, `standard_error` and `all_reduce` as `MinibatchCKA` does.

The registry (`MEASURES`) is the one list of measures: the CLI's choices, `[cka] measure`'s
check, the error messages and the colour bars' labels are read from it. A measure of your own:

    from ckatlas.cka.batch_measures import BatchMeanMeasure
    from ckatlas.cka.measures import MeasureInfo, register_measure

    class GramCorrelation(BatchMeanMeasure):          # one batch's (La, Lb) cells from float64 Grams
        def batch_similarity(self, a, b): ...

    register_measure(MeasureInfo("gram-corr", False, "correlation of centred Grams", "Gram correlation"),
                     GramCorrelation)
"""


from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ckatlas.cka._inputs import CKAInputError
from ckatlas.cka.batch_measures import (
    AllExamplesCKA,
    BatchMeanMeasure,
    MinibatchKNN,
    MinibatchProcrustes,
    MinibatchRSA,
    MinibatchSVCCA,
    RBFMinibatchCKA,
    pairwise_nuclear_norms,
    rbf_kernels,
    squared_distances,
)
from ckatlas.cka.minibatch import MinibatchCKA


@dataclass(frozen=True)
class MeasureInfo:
    """What a measure is: its name, whether it needs every example in one batch, one line about it, its
    colour bar's label, the fewest examples a batch must hold for it (4 for the unbiased HSIC; k + 1 for
    k-NN), whether its Grams must be float64, and its streaming accumulator's class (set by
    `register_measure`)."""

    name: str
    all_examples: bool
    description: str
    label: str  # a colour bar's label
    min_batch: int = 4
    float64_grams: bool = False  # built on eigenvalues of the Grams: float32 rounding would not do
    accumulator: type | None = None  # called as accumulator(num_layers_a, num_layers_b, device=..., **options)


#: Every measure by name, in the order registered (the built-ins first).
MEASURES: dict[str, MeasureInfo] = {}


def register_measure(info: MeasureInfo, accumulator: type | None = None) -> MeasureInfo:
    """Add a measure to `MEASURES` (and so to the CLI's choices, `[cka] measure` and `heatmap(measure=)`).

    `accumulator` (default: `info.accumulator`) is its streaming accumulator's class, called as
    ``accumulator(num_layers_a, num_layers_b, device=..., **options)``, with `update_grams`, `compute`,
    `standard_error` and `all_reduce` (subclass `BatchMeanMeasure` for a mean over batches). Returns the
    registered `MeasureInfo`.

    Raises:
        ValueError: the name is taken, is not a non-empty string, or no accumulator is given.
    """
    kind = accumulator or info.accumulator
    if not isinstance(info.name, str) or not info.name.strip():
        raise ValueError(f"a measure's name must be a non-empty string, got {info.name!r}")
    if info.name in MEASURES:
        raise ValueError(f"measure {info.name!r} is already registered")
    if not callable(kind):
        raise ValueError(f"measure {info.name!r} needs its accumulator's class, got {kind!r}")
    MEASURES[info.name] = registered = replace(info, accumulator=kind)
    return registered


def unregister_measure(name: str) -> None:
    """Remove a measure added with `register_measure`.

    Raises:
        KeyError: no measure of that name is registered.
    """
    if name not in MEASURES:
        raise KeyError(f"no measure {name!r} is registered (registered: {', '.join(MEASURES)})")
    del MEASURES[name]


def minibatch_measures() -> list[str]:
    """The names of the measures that take examples a batch at a time (not all at once)."""
    return [name for name, info in MEASURES.items() if not info.all_examples]


def measures_help() -> str:
    """One line naming every registered measure with its description (the CLI's help)."""
    return "; ".join(f"{name}: {info.description}" for name, info in MEASURES.items())


ALL_EXAMPLES_MEMORY_LIMIT = 8 * 2**30


def measure_info(measure: str) -> MeasureInfo:
    """The `MeasureInfo` of a measure's name; one clear error for an unknown name."""
    info = MEASURES.get(measure) if isinstance(measure, str) else None
    if measure == "pwcca":
        raise CKAInputError("measure 'pwcca' is not offered: its weights need each neuron's projections, which the "
                            "Grams every measure is computed from do not hold; 'svcca' gives the same canonical "
                            "correlations, unweighted")
    if info is None:
        raise CKAInputError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    return info


def all_examples_bytes(num_examples: int, num_layers: int) -> int:
    """Memory an all-examples measure needs for `num_layers` Grams over `num_examples` (float32
    Grams plus the float64 triangles the estimator keeps)."""
    return int(num_layers) * int(num_examples) ** 2 * (4 + 4)


def check_all_examples_memory(measure: str, num_examples: int, num_layers: int,
                              limit: int = ALL_EXAMPLES_MEMORY_LIMIT) -> None:
    """Refuse, before any forward pass, an all-examples measure whose Grams would not fit `limit`."""
    need = all_examples_bytes(num_examples, num_layers)
    if need > limit:
        raise CKAInputError(
            f"measure {measure!r} needs all {num_examples} examples in one batch: {num_layers} Grams of "
            f"{num_examples} x {num_examples}, about {need / 2**30:.1f} GiB, over the limit of {limit / 2**30:.1f} GiB; "
            f"use fewer examples or layers, or a minibatch measure ({', '.join(minibatch_measures())})"
        )


def accumulator(measure: str, num_layers_a: int, num_layers_b: int | None = None, *, device: Any = None,
                **options: Any) -> Any:
    """The streaming accumulator of `measure` for `num_layers_a` x `num_layers_b` layers (None: square);
    `options` go to its class (``k`` for knn, ``variance`` for svcca)."""
    return measure_info(measure).accumulator(num_layers_a, num_layers_b, device=device, **options)


def measure_matrix(measure: str, acts_a: Sequence[Any], acts_b: Sequence[Any] | None = None, **kwargs: Any) -> np.ndarray:
    """One batch of activations (each (n, ...)) to the (La, Lb) matrix of `measure`: a convenience
    for small data; for a model use `ckatlas.heatmap(..., measure=...)`."""
    from ckatlas.cka.kernels import gram_linear

    grams_a = torch.stack([gram_linear(a, name=f"activation {i} of model A") for i, a in enumerate(acts_a)])
    grams_b = None if acts_b is None else torch.stack(
        [gram_linear(b, name=f"activation {i} of model B") for i, b in enumerate(acts_b)])
    acc = accumulator(measure, len(grams_a), None if grams_b is None else len(grams_b), **kwargs)
    acc.update_grams(grams_a, grams_b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return acc.compute().cpu().numpy()


for _info, _kind in (
    (MeasureInfo("cka", False, "linear CKA, unbiased HSIC summed over minibatches (the paper's)",
                 "CKA (minibatch, unbiased HSIC)"), MinibatchCKA),
    (MeasureInfo("cka-rbf", False, "RBF-kernel CKA, bandwidth the batch's median distance, unbiased HSIC over "
                 "minibatches", "RBF CKA (minibatch)"), RBFMinibatchCKA),
    (MeasureInfo("cka-debiased", True, "linear CKA with the unbiased HSIC of all examples at once",
                 "debiased CKA (all examples)"), AllExamplesCKA),
    (MeasureInfo("procrustes", False, "orthogonal Procrustes similarity, mean over minibatches",
                 "Procrustes similarity (minibatch)", float64_grams=True), MinibatchProcrustes),
    (MeasureInfo("knn", False, "mutual 10-nearest-neighbour alignment, mean over minibatches",
                 "mutual 10-NN alignment (minibatch)", min_batch=11), MinibatchKNN),
    (MeasureInfo("rsa", False, "Spearman correlation of Euclidean dissimilarity matrices, mean over minibatches",
                 "RSA, Spearman (minibatch)"), MinibatchRSA),
    (MeasureInfo("svcca", False, "SVCCA: mean canonical correlation of the directions that explain 99% of each "
                 "layer's variance, mean over minibatches", "SVCCA (minibatch)", float64_grams=True), MinibatchSVCCA),
):
    register_measure(_info, _kind)


__all__ = ["ALL_EXAMPLES_MEMORY_LIMIT", "MEASURES", "AllExamplesCKA", "BatchMeanMeasure", "MeasureInfo", "MinibatchKNN",
           "MinibatchProcrustes", "MinibatchRSA", "MinibatchSVCCA", "RBFMinibatchCKA", "accumulator", "all_examples_bytes",
           "check_all_examples_memory", "measure_info", "measure_matrix", "measures_help", "minibatch_measures",
           "pairwise_nuclear_norms", "rbf_kernels", "register_measure", "squared_distances", "unregister_measure"]
