"""Minibatch CKA (Nguyen, Raghu & Kornblith, 2021): a streaming accumulator.

For batches i = 1..k with linear-kernel Grams K_i (layer a) and L_i (layer b),

    CKA(a, b) = sum_i HSIC_1(K_i, L_i) / sqrt(sum_i HSIC_1(K_i, K_i) * sum_i HSIC_1(L_i, L_i))

with HSIC_1 the unbiased estimator of Song et al. (2012). Each of its three terms
is an inner product of per-layer summaries of a Gram (its upper triangle, its
row sums), so every layer pair of a batch comes from one matrix product over the
stacked summaries, in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from ckatlas.cka._inputs import CKAInputError
from ckatlas.cka.kernels import gram_linear

class _GramPieces(NamedTuple):
    """What HSIC_1 needs of one batch's Grams K (one row per layer), in float64."""

    upper: torch.Tensor  # (L, n(n-1)/2) strict upper triangle of K
    row_sums: torch.Tensor  # (L, n) K~1, row sums without the diagonal
    total: torch.Tensor  # (L,) 1'K~1


_STATE_TENSORS = ("hsic_ab", "hsic_aa", "hsic_bb", "batch_count", "batch_cka_sum", "batch_cka_sumsq")


class LayerPairs:
    """What every all-layer-pairs accumulator holds (`MinibatchCKA`, the measures of
    `ckatlas.cka.measures`): the two layer counts (`num_layers_b` None: one model with itself),
    the device of its sums (None: that of the first update), and the batches and examples seen."""

    def __init__(self, num_layers_a: int, num_layers_b: int | None = None, *, device: Any = None) -> None:
        for name, value in (("num_layers_a", num_layers_a), ("num_layers_b", num_layers_b)):
            if value is None and name == "num_layers_b":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CKAInputError(f"{name} must be a positive integer, got {value!r}")
        self.num_layers_a = num_layers_a
        self.num_layers_b = num_layers_b
        self.device = torch.device(device) if device is not None else None
        self.num_batches = 0
        self.num_examples = 0

    @property
    def square(self) -> bool:
        """True when comparing one model with itself."""
        return self.num_layers_b is None

    @property
    def shape(self) -> tuple[int, int]:
        """(La, Lb) of the similarity matrix."""
        return (self.num_layers_a, self.num_layers_a if self.square else self.num_layers_b)


class MinibatchCKA(LayerPairs):
    """Accumulates minibatch CKA between all layer pairs, in float64.

    Args:
        num_layers_a: number of layers (activations) of model A.
        num_layers_b: number of layers of model B; None compares model A with
            itself (a square, symmetric matrix).
        device: where the sums live; by default the device of the first update.

    Example:
        >>> acc = MinibatchCKA(3)
        >>> for batch in batches:
        ...     acc.update([layer1(batch), layer2(batch), layer3(batch)])
        >>> acc.compute()  # (3, 3) float64
    """

    def __init__(self, num_layers_a: int, num_layers_b: int | None = None, *, device: Any = None) -> None:
        super().__init__(num_layers_a, num_layers_b, device=device)
        self._state: dict[str, torch.Tensor] | None = None
        self._triu_cache: dict[tuple[int, torch.device], torch.Tensor] = {}

    # -- shape -----------------------------------------------------------------------------
    def _zeros(self, device: torch.device) -> dict[str, torch.Tensor]:
        la, lb = self.shape
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=device)  # noqa: E731
        return {
            "hsic_ab": z(la, lb),
            "hsic_aa": z(la),
            "hsic_bb": z(lb),
            "batch_count": z(la, lb),
            "batch_cka_sum": z(la, lb),
            "batch_cka_sumsq": z(la, lb),
        }

    # -- updates ---------------------------------------------------------------------------
    def update(self, acts_a: Sequence[Any], acts_b: Sequence[Any] | None = None) -> None:
        """Add one minibatch.

        Args:
            acts_a: the activations of model A's layers for this minibatch, each of
                shape (n, ...) with the same n (NumPy or Tensor, any float dtype).
            acts_b: model B's activations for the same examples (rectangular
                accumulators only).
        """
        self._check_sides(acts_a, acts_b)
        grams_a = [gram_linear(a, name=f"activation {i} of model A") for i, a in enumerate(acts_a)]
        grams_b = None
        if acts_b is not None:
            grams_b = [gram_linear(b, name=f"activation {i} of model B") for i, b in enumerate(acts_b)]
        self.update_grams(grams_a, grams_b)

    def update_grams(
        self,
        grams_a: Sequence[torch.Tensor] | torch.Tensor,
        grams_b: Sequence[torch.Tensor] | torch.Tensor | None = None,
    ) -> None:
        """Add one minibatch given its linear-kernel Grams (see `gram_linear`).

        This is the path for callers that compute Grams as activations are
        produced (e.g. inside forward hooks) and drop the activations.

        Args:
            grams_a: one symmetric (n, n) Gram per layer of model A (any float
                dtype), or a stacked (La, n, n) tensor.
            grams_b: the same for model B (rectangular accumulators only).
        """
        self._check_sides(grams_a, grams_b)
        pa, n = self._pieces(grams_a, self.num_layers_a, "A")
        if self.square:
            h = self._hsic(pa, pa, n)
            da = db = h.diagonal().clone()
        else:
            pb, nb = self._pieces(grams_b, self.num_layers_b, "B")
            if nb != n:
                raise CKAInputError(
                    f"model A's activations have n={n} examples but model B's have n={nb}: both must see the same minibatch"
                )
            h = self._hsic(pa, pb, n)
            da, db = self._self_hsic(pa, n), self._self_hsic(pb, n)
        self._accumulate(h, da, db, n)

    def _check_sides(self, a: Any, b: Any) -> None:
        if self.square and b is not None:
            raise CKAInputError(
                "this accumulator compares the layers of one model (num_layers_b=None); "
                "pass a second model's activations only to MinibatchCKA(num_layers_a, num_layers_b)"
            )
        if not self.square and b is None:
            raise CKAInputError("this accumulator compares two models: update() needs the activations of model B too")

    def _pieces(self, grams: Any, expected: int, side: str) -> tuple[_GramPieces, int]:
        """Reduce each layer's Gram K to what HSIC_1 needs (see `_hsic`), in float64."""
        if not (isinstance(grams, torch.Tensor) and grams.ndim == 3):
            grams = list(grams)
        if len(grams) != expected:
            raise CKAInputError(f"model {side} has {expected} layers but this update holds {len(grams)} activations")
        n = grams[0].shape[-1]
        for i, g in enumerate(grams):
            if g.ndim != 2 or g.shape[0] != g.shape[1]:
                raise CKAInputError(f"Gram {i} of model {side} has shape {tuple(g.shape)}; expected a square (n, n) matrix")
            if g.shape[0] != n:
                raise CKAInputError(
                    f"activation {i} of model {side} has {g.shape[0]} examples but activation 0 has {n}: "
                    "all activations of one update must come from the same minibatch"
                )
        if n < 4:
            raise CKAInputError(f"the unbiased HSIC estimator needs at least 4 examples per minibatch, got n={n}")
        if self.device is None:
            self.device = grams[0].device
        key = (n, self.device)
        idx = self._triu_cache.get(key)
        if idx is None:
            rows, cols = torch.triu_indices(n, n, offset=1, device=self.device)
            idx = self._triu_cache[key] = rows * n + cols
        f64 = dict(dtype=torch.float64, device=self.device)
        upper = torch.empty(expected, idx.numel(), **f64)
        row_sums = torch.empty(expected, n, **f64)
        for i, g in enumerate(grams):
            g = torch.as_tensor(g).to(self.device)
            torch.take(g, idx, out=upper[i]) if g.dtype == torch.float64 else upper[i].copy_(torch.take(g, idx))
            row_sums[i] = g.sum(dim=1, dtype=torch.float64) - g.diagonal().double()
        return _GramPieces(upper, row_sums, row_sums.sum(dim=1)), n

    @staticmethod
    def _hsic(a: _GramPieces, b: _GramPieces, n: int) -> torch.Tensor:
        """HSIC_1 of every layer pair, Song et al.'s formula in matrix form.

        With K~ the Gram with a zeroed diagonal: tr(K~L~) = 2 triu(K).triu(L),
        1'K~1 = the sum of K~1, and 1'K~L~1 = (K~1).(L~1).
        """
        h = a.upper @ b.upper.T
        h *= 2.0  # on the (La, Lb) result, not the (L, n(n-1)/2) operand
        h += torch.outer(a.total, b.total) / ((n - 1) * (n - 2))
        h -= (2.0 / (n - 2)) * (a.row_sums @ b.row_sums.T)
        return h / (n * (n - 3))

    @staticmethod
    def _self_hsic(a: _GramPieces, n: int) -> torch.Tensor:
        d = 2.0 * (a.upper * a.upper).sum(1) + a.total**2 / ((n - 1) * (n - 2))
        d -= (2.0 / (n - 2)) * (a.row_sums * a.row_sums).sum(1)
        return d / (n * (n - 3))

    def _accumulate(self, h: torch.Tensor, da: torch.Tensor, db: torch.Tensor, n: int) -> None:
        if self._state is None:
            self._state = self._zeros(h.device)
        s = self._state
        s["hsic_ab"] += h
        s["hsic_aa"] += da
        s["hsic_bb"] += db
        denom = da[:, None] * db[None, :]
        valid = denom > 0
        batch_cka = torch.where(valid, h / denom.clamp_min(torch.finfo(torch.float64).tiny).sqrt(), 0.0)
        s["batch_count"] += valid
        s["batch_cka_sum"] += batch_cka
        s["batch_cka_sumsq"] += batch_cka * batch_cka
        self.num_batches += 1
        self.num_examples += n

    # -- results ---------------------------------------------------------------------------
    def _require_state(self, what: str) -> dict[str, torch.Tensor]:
        if self._state is None:
            raise CKAInputError(f"MinibatchCKA.{what}() was called before any update(): there is nothing to compute")
        return self._state

    def compute(self) -> torch.Tensor:
        """The (La, Lb) CKA matrix, float64, on the accumulator's device.

        Cells of a layer with zero variance over all batches are NaN (with a
        warning naming the layers); the other cells are unaffected.
        """
        s = self._require_state("compute")
        aa, bb = s["hsic_aa"], s["hsic_bb"]
        dead_a = (aa <= 0).nonzero().flatten().tolist()
        dead_b = [] if self.square else (bb <= 0).nonzero().flatten().tolist()
        if dead_a or dead_b:
            parts = []
            if dead_a:
                parts.append(f"layer(s) {dead_a}" + ("" if self.square else " of model A"))
            if dead_b:
                parts.append(f"layer(s) {dead_b} of model B")
            warnings.warn(
                f"{' and '.join(parts)} have zero variance across examples; their CKA cells are NaN",
                RuntimeWarning,
                stacklevel=2,
            )
        denom = aa[:, None] * bb[None, :]
        out = s["hsic_ab"] / denom.clamp_min(torch.finfo(torch.float64).tiny).sqrt()
        return torch.where(denom > 0, out, torch.full_like(out, math.nan))

    def standard_error(self) -> torch.Tensor:
        """Standard error of each cell from the spread of per-batch CKA estimates.

        ``std(c_i) / sqrt(k)`` over the k batches in which the cell was defined;
        NaN where fewer than two batches contributed.
        """
        s = self._require_state("standard_error")
        k = s["batch_count"]
        mean = s["batch_cka_sum"] / k.clamp_min(1)
        var = (s["batch_cka_sumsq"] - k * mean * mean).clamp_min(0) / (k - 1).clamp_min(1)
        se = (var / k.clamp_min(1)).sqrt()
        return torch.where(k >= 2, se, torch.full_like(se, math.nan))

    # -- combining and saving --------------------------------------------------------------
    def merge(self, other: MinibatchCKA) -> MinibatchCKA:
        """A new accumulator holding the batches of both `self` and `other`.

        Merging shards of the data gives the same result as one pass over all of it.
        """
        if not isinstance(other, MinibatchCKA):
            raise CKAInputError(f"can only merge a MinibatchCKA with another MinibatchCKA, got {type(other).__name__}")
        if self.shape != other.shape or self.square != other.square:
            raise CKAInputError(
                f"cannot merge MinibatchCKA of shape {self.shape}{' (square)' if self.square else ''} "
                f"with one of shape {other.shape}{' (square)' if other.square else ''}"
            )
        merged = MinibatchCKA(self.num_layers_a, self.num_layers_b, device=self.device or other.device)
        merged.num_batches = self.num_batches + other.num_batches
        merged.num_examples = self.num_examples + other.num_examples
        states = [acc._state for acc in (self, other) if acc._state is not None]
        if states:
            device = merged.device or states[0]["hsic_ab"].device
            merged.device = device
            merged._state = {key: sum(st[key].to(device) for st in states) for key in _STATE_TENSORS}
        return merged

    def all_reduce(self, group: Any = None) -> MinibatchCKA:
        """Sum this accumulator over the ranks of a ``torch.distributed`` process group, in place.

        Afterwards every rank holds the batches of every rank, as `merge` combines shards in
        one process: each rank accumulates its own shard of the data, then all call this (a
        collective: every rank of `group` must call it, with the same layer counts). The
        tensors travel on the accumulator's device (the CPU for gloo, CUDA for NCCL).
        """
        import torch.distributed as dist

        device = self.device or torch.device("cpu")
        state = self._state if self._state is not None else self._zeros(device)
        counts = torch.tensor([self.num_batches, self.num_examples], dtype=torch.float64, device=device)
        flat = torch.cat([state[k].reshape(-1).to(device) for k in _STATE_TENSORS] + [counts])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        parts = flat.split([state[k].numel() for k in _STATE_TENSORS] + [2])
        self._state = {k: part.reshape(state[k].shape).clone() for k, part in zip(_STATE_TENSORS, parts)}
        self.num_batches, self.num_examples = (int(round(v)) for v in parts[-1].tolist())
        self.device = device
        return self

    def reset(self) -> None:
        """Forget every batch."""
        self._state = None
        self.num_batches = 0
        self.num_examples = 0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume or merge later (tensors on the CPU)."""
        sd: dict[str, Any] = {
            "num_layers_a": self.num_layers_a,
            "num_layers_b": self.num_layers_b,
            "num_batches": self.num_batches,
            "num_examples": self.num_examples,
        }
        if self._state is not None:
            sd.update({k: v.detach().cpu().clone() for k, v in self._state.items()})
        return sd

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; the layer counts must match."""
        shape = (state.get("num_layers_a"), state.get("num_layers_b"))
        if shape != (self.num_layers_a, self.num_layers_b):
            raise CKAInputError(
                f"state is for an accumulator with num_layers_a, num_layers_b = {shape}, "
                f"this one has {(self.num_layers_a, self.num_layers_b)}"
            )
        self.num_batches = int(state["num_batches"])
        self.num_examples = int(state["num_examples"])
        if all(k in state for k in _STATE_TENSORS):
            device = self.device or torch.device("cpu")
            expected = self._zeros(torch.device("meta"))
            for key in _STATE_TENSORS:
                if tuple(state[key].shape) != tuple(expected[key].shape):
                    raise CKAInputError(f"state tensor {key!r} has shape {tuple(state[key].shape)}, expected {tuple(expected[key].shape)}")
            self._state = {k: torch.as_tensor(state[k]).to(device=device, dtype=torch.float64).clone() for k in _STATE_TENSORS}
        else:
            self._state = None

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: Any = None) -> MinibatchCKA:
        """Build an accumulator from `state_dict()` output."""
        acc = cls(state["num_layers_a"], state["num_layers_b"], device=device)
        acc.load_state_dict(state)
        return acc

    def __repr__(self) -> str:
        la, lb = self.shape
        kind = "square" if self.square else "rectangular"
        return f"MinibatchCKA({la}x{lb} {kind}, batches={self.num_batches}, examples={self.num_examples})"
