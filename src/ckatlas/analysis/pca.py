"""Principal components of a model's layers: what the block structure is made of.

Nguyen, Raghu & Kornblith (2021, Section 4) show that the layers inside a block
share one dominant first principal component: CKA then reduces to the similarity
of those components, and with the first component removed the block disappears.

`principal_components` makes one pass over the data with Gram taps on the chosen
layers. For each minibatch i of n_i examples and each layer, with K the Gram of
the layer's centred, flattened activations (``ckatlas.capture.GramTaps``):

* the variance explained by the first PC is ``lambda_1(K) / tr(K)``
  (`ckatlas.cka.explained_variance_ratio`); the reported value is its mean over
  batches weighted by n_i;
* the similarity of the first PCs of layers a and b is ``(u_a . u_b)^2``, the
  squared cosine of the unit example-space first PCs (top eigenvectors of the
  Grams; squaring makes it sign-free). It is what linear CKA reduces to when one
  component carries all the variance of both layers. The reported value is the
  n_i-weighted mean over batches;
* the CKA without the first PC is the minibatch CKA of the Grams with their top
  component removed (`ckatlas.cka.remove_top_components`, per batch), and the
  plain CKA of the same pass is kept beside it.

A layer with zero variance in a batch is left out of that batch's averages (NaN
when it has none in any batch). A layer whose variance lies, to rounding
(below 1e-6 of the total), entirely in its first PC has nothing left after the
removal: its Gram without PC1 is zero and its CKA cells are NaN.

Batches are made as in `ckatlas.heatmap.heatmap` (same `batch_size`, `shuffle`
and `seed` give the same batches, so `cka` equals that function's matrix).

`pc_scatter` projects the examples on the first two PCs of one layer (one batch
holding all the examples) for a scatter plot coloured by class.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ckatlas.capture import LayerSpec, capture_activations
from ckatlas.cka import MinibatchCKA, top_components
from ckatlas.errors import UserInputError
from ckatlas.capture.gram_passes import GramPasses
from ckatlas.io.results import NpzResult

_RESIDUAL_TOL = 1e-6  # variance left after removing PC1, relative to the total, that counts as none


@dataclass
class PCAResult(NpzResult):
    """First principal components of a model's layers (see the module docstring).

    Attributes:
        layers: the analysed layers, input to output.
        variance_explained: (L,) fraction of each layer's variance in its first PC.
        pc_similarity: (L, L) squared cosine of the layers' first PCs, in [0, 1].
        cka_without_pc1: (L, L) minibatch CKA with every layer's first PC removed.
        cka: (L, L) plain minibatch CKA of the same batches.
        n: examples analysed.
        num_batches: minibatches.
        metadata: settings (batch size, shuffle, seed, device).
    """

    FORMAT = "ckatlas.PCAResult"
    WHAT = "a PCAResult"
    ARRAYS = ("variance_explained", "pc_similarity", "cka_without_pc1", "cka")

    layers: list[str]
    variance_explained: np.ndarray
    pc_similarity: np.ndarray
    cka_without_pc1: np.ndarray
    cka: np.ndarray
    n: int
    num_batches: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layers = list(self.layers)
        size = len(self.layers)
        self.variance_explained = np.asarray(self.variance_explained, dtype=np.float64)
        if self.variance_explained.shape != (size,):
            raise UserInputError(f"variance_explained has shape {self.variance_explained.shape}, expected ({size},)")
        for name in ("pc_similarity", "cka_without_pc1", "cka"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != (size, size):
                raise UserInputError(f"{name} has shape {value.shape}, expected ({size}, {size}) for {size} layers")
            setattr(self, name, value)

    def summary(self) -> str:
        """One line per layer: its first-PC variance fraction."""
        head = f"first principal components of {len(self.layers)} layers ({self.n} examples, {self.num_batches} batches)"
        lines = [head]
        width = max(len(name) for name in self.layers)
        lines += [f"  {name:<{width}}  PC1 variance {v:.3f}" for name, v in zip(self.layers, self.variance_explained)]
        return "\n".join(lines)


def principal_components(
    model: nn.Module,
    inputs: Any,
    layers: LayerSpec = "auto",
    batch_size: int = 256,
    shuffle: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
    tokens: str = "auto",
) -> PCAResult:
    """First-PC variance, first-PC similarity and CKA without the first PC, in one pass.

    Args:
        model: the model (put in eval mode for the pass; its flags are restored).
        inputs: a Tensor (N, ...) or an iterable of batches (as in `ckatlas.heatmap.heatmap`).
        layers: "auto" (a model's blocks, else every leaf module), "blocks", "all", module names,
            glob patterns or module classes.
        batch_size: examples per minibatch (Tensor inputs).
        shuffle: draw the batches from a random permutation (Tensor inputs).
        seed: seed of the permutation.
        device: where the model runs; None means the device of its parameters.
        tokens: how a token sequence becomes one example's representation (as in `heatmap`).

    Returns:
        A `PCAResult`.

    Raises:
        UserInputError: a layer that does not exist, no batch of at least 4 examples.
    """
    loop = GramPasses([model], ["model"], [layers], inputs, batch_size, 1, shuffle, seed, device, tokens=tokens,
                      desc="PCA")
    acc: _PCAccumulator | None = None
    for (grams,) in loop:
        grams = grams.double()  # (L, n, n)
        if acc is None:
            acc = _PCAccumulator(grams.shape[0], grams.device)
        acc.update(grams)
    assert acc is not None  # the loop raises when there is no batch
    meta = {k: v for k, v in loop.metadata().items() if k in ("batch_size", "shuffle", "seed", "device", "examples",
                                                              "batches_per_pass", "batch_sizes")}
    return acc.result(loop.names[0], meta)


class _PCAccumulator:
    """Running n-weighted sums of the per-batch first-PC statistics, and two CKA accumulators."""

    def __init__(self, num_layers: int, device: torch.device) -> None:
        f64 = dict(dtype=torch.float64, device=device)
        self.variance_sum = torch.zeros(num_layers, **f64)
        self.variance_weight = torch.zeros(num_layers, **f64)
        self.similarity_sum = torch.zeros(num_layers, num_layers, **f64)
        self.similarity_weight = torch.zeros(num_layers, num_layers, **f64)
        self.cka = MinibatchCKA(num_layers, device=device)
        self.cka_without_pc1 = MinibatchCKA(num_layers, device=device)
        self.n = 0

    def update(self, grams: torch.Tensor) -> None:
        n = grams.shape[-1]
        values, vectors = top_components(grams, 1)  # (L, 1), (L, n, 1)
        total = grams.diagonal(dim1=-2, dim2=-1).sum(-1)  # (L,)
        alive = total > 0
        weight = alive.double() * n
        self.variance_sum += torch.where(alive, values[:, 0] / total.clamp_min(1e-300), 0.0) * n
        self.variance_weight += weight
        u = vectors[..., 0]  # (L, n), unit norm
        self.similarity_sum += torch.where(alive[:, None] & alive[None, :], (u @ u.T) ** 2, 0.0) * n
        self.similarity_weight += torch.outer(weight, alive.double())
        # = remove_top_components(grams, 1), without a second eigendecomposition
        residual = grams - (vectors * values.unsqueeze(-2)) @ vectors.transpose(-1, -2)
        left = residual.diagonal(dim1=-2, dim2=-1).sum(-1)
        residual[left <= _RESIDUAL_TOL * total] = 0.0
        self.cka.update_grams(grams)
        self.cka_without_pc1.update_grams(residual)
        self.n += n

    def result(self, layers: list[str], metadata: dict[str, Any]) -> PCAResult:
        def mean(total: torch.Tensor, weight: torch.Tensor) -> np.ndarray:
            out = torch.where(weight > 0, total / weight.clamp_min(1), torch.nan)
            return out.cpu().numpy()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # dead layers are NaN, as documented
            cka = self.cka.compute().cpu().numpy()
            cka_without = self.cka_without_pc1.compute().cpu().numpy()
        return PCAResult(
            layers,
            mean(self.variance_sum, self.variance_weight),
            mean(self.similarity_sum, self.similarity_weight),
            cka_without,
            cka,
            self.n,
            self.cka.num_batches,
            metadata,
        )


# -- scatter on the first two components ---------------------------------------------------
@dataclass
class PCScatter:
    """The examples projected on the first two principal components of one layer.

    Attributes:
        layer: the layer.
        coords: (N, 2) coordinates on PC1 and PC2 (each PC's sign fixed so that its
            largest-magnitude coordinate is positive).
        labels: (N,) class labels, or None.
        variance_ratio: (2,) fraction of the layer's variance along PC1 and PC2.
    """

    layer: str
    coords: np.ndarray
    labels: np.ndarray | None
    variance_ratio: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "coords": self.coords.tolist(),
            "labels": None if self.labels is None else self.labels.tolist(),
            "variance_ratio": self.variance_ratio.tolist(),
        }


def pc_scatter(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    labels: Any = None,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> PCScatter:
    """Project every example of `x` on the first two PCs of one layer's activations.

    All N examples are one sample (not minibatches): the PCs are those of the
    (N, features) matrix of centred, flattened activations, found from its
    (N, N) Gram, so keep N to a few thousand.

    Args:
        model: the model.
        x: inputs (N, ...), run in batches of `batch_size`.
        layer: one module name (e.g. "stage3.2.relu").
        labels: (N,) class labels to colour the points by, or None.
        batch_size: examples per forward pass.
        device: where the model runs; None means the device of its parameters.

    Returns:
        A `PCScatter`.
    """
    if not isinstance(layer, str):
        raise UserInputError(f"pc_scatter takes one layer name, got {type(layer).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim == 0 or len(x) < 3:
        raise UserInputError("pc_scatter needs a Tensor of at least 3 examples (N, ...)")
    if labels is not None:
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if labels.shape != (len(x),):
            raise UserInputError(f"labels must have shape ({len(x)},) to match the inputs, got {labels.shape}")
    acts = capture_activations(model, [layer], x, batch_size=batch_size, device=device)[layer]
    features = acts.reshape(len(x), -1).double()
    features = features - features.mean(dim=0, keepdim=True)
    gram = features @ features.T
    values, vectors = top_components(gram, 2)  # gram = U S^2 U^T, so the PC scores are U S
    coords = vectors * values.clamp_min(0).sqrt()
    total = gram.diagonal().sum()
    ratio = values / total if total > 0 else torch.full_like(values, torch.nan)
    return PCScatter(layer, coords.numpy(), labels, ratio.numpy())


__all__ = ["PCAResult", "PCScatter", "pc_scatter", "principal_components"]
