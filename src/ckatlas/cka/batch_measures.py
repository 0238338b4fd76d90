"""The similarity measures' accumulators beside `MinibatchCKA`, each from the same per-batch Grams
(`ckatlas.cka.measures` names and registers them): RBF and debiased CKA, and the measures averaged
over batches (`BatchMeanMeasure`: orthogonal Procrustes, mutual k-NN, RSA, SVCCA).

A new measure averaged over batches subclasses `BatchMeanMeasure`, computes one batch's (La, Lb)
similarity from its float64 Grams in `batch_similarity`, and is registered with
`ckatlas.cka.measures.register_measure`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ckatlas.cka._inputs import CKAInputError
from ckatlas.cka.kernels import center_gram
from ckatlas.cka.minibatch import LayerPairs, MinibatchCKA


# -- CKA variants ---------------------------------------------------------------------------
def squared_distances(grams: torch.Tensor) -> torch.Tensor:
    """(L, n, n) squared Euclidean distances between the examples, from their Grams (L, n, n)."""
    diag = grams.diagonal(dim1=-2, dim2=-1)
    return (diag[:, :, None] + diag[:, None, :] - 2.0 * grams).clamp_min(0.0)


def rbf_kernels(grams: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """RBF kernels (L, n, n) from linear Grams (L, n, n): ``exp(-d^2 / (2 t^2 median(d^2)))``, the median
    over all n^2 squared distances of each layer, as `gram_rbf` takes it from features. A layer whose
    examples are all identical (median 0) gets a constant kernel (zero HSIC: a dead layer)."""
    sq = squared_distances(grams.double())
    ordered, m = sq.flatten(1).sort(dim=1).values, sq.shape[-1] ** 2
    median = ordered[:, m // 2] if m % 2 else (ordered[:, m // 2 - 1] + ordered[:, m // 2]) / 2
    scale = (2.0 * threshold**2 * median).clamp_min(torch.finfo(torch.float64).tiny)
    out = torch.exp(-sq / scale[:, None, None])
    return torch.where((median > 0)[:, None, None], out, torch.ones_like(out))


class RBFMinibatchCKA(MinibatchCKA):
    """Minibatch CKA on RBF kernels: each batch's linear Grams become RBF kernels (bandwidth
    relative to that batch's median distance, `rbf_kernels`), then the unbiased HSIC sums of
    `MinibatchCKA`. Exact for one batch: equals CKA with unbiased HSIC of `gram_rbf` kernels."""

    def update_grams(self, grams_a: Any, grams_b: Any = None) -> None:
        self._check_sides(grams_a, grams_b)
        grams_b = None if grams_b is None else rbf_kernels(_stacked(grams_b, self.num_layers_b, "B"))
        super().update_grams(rbf_kernels(_stacked(grams_a, self.num_layers_a, "A")), grams_b)


class AllExamplesCKA(MinibatchCKA):
    """Debiased linear CKA (the unbiased HSIC of all examples, Davari et al. 2022): `MinibatchCKA`
    fed exactly one batch holding every example. A second batch is an error (it would make it the
    minibatch estimator), as is summing it over torch.distributed ranks."""

    def update_grams(self, grams_a: Any, grams_b: Any = None) -> None:
        if self.num_batches:
            raise CKAInputError("measure 'cka-debiased' needs all examples in one batch; this one got a second batch")
        super().update_grams(grams_a, grams_b)

    def all_reduce(self, group: Any = None) -> MinibatchCKA:
        raise CKAInputError("measure 'cka-debiased' needs all examples in one process; "
                            "it cannot be summed over torch.distributed ranks (use a minibatch measure)")


# -- measures averaged over batches ------------------------------------------------------------
def _stacked(grams: Any, expected: int | None, side: str) -> torch.Tensor:
    """(L, n, n) float64 from a stacked tensor or a list of Grams, checked."""
    g = grams if isinstance(grams, torch.Tensor) else torch.stack([torch.as_tensor(x) for x in grams])
    if g.ndim != 3 or g.shape[1] != g.shape[2]:
        raise CKAInputError(f"model {side}'s Grams have shape {tuple(g.shape)}; expected (layers, n, n)")
    if expected is not None and g.shape[0] != expected:
        raise CKAInputError(f"model {side} has {expected} layers but this update holds {g.shape[0]} Grams")
    if g.shape[1] < 4:
        raise CKAInputError(f"a minibatch needs at least 4 examples, got n={g.shape[1]}")
    return g.double()


class BatchMeanMeasure(LayerPairs):
    """Accumulates a similarity computed per batch (`batch_similarity`) as its mean over batches,
    with the standard error from their spread; NaN cells (a dead layer in a batch) are left out."""

    name = ""

    def __init__(self, num_layers_a: int, num_layers_b: int | None = None, *, device: Any = None) -> None:
        super().__init__(num_layers_a, num_layers_b, device=device)
        self._sum: torch.Tensor | None = None
        self._sumsq: torch.Tensor | None = None
        self._count: torch.Tensor | None = None

    def batch_similarity(self, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """(La, Lb) similarity of one batch from its float64 Grams (b None: a with itself)."""
        raise NotImplementedError

    def update_grams(self, grams_a: Any, grams_b: Any = None) -> None:
        if self.square and grams_b is not None:
            raise CKAInputError("this accumulator compares the layers of one model; pass model B's Grams only to a "
                                "rectangular one")
        if not self.square and grams_b is None:
            raise CKAInputError("this accumulator compares two models: update_grams() needs model B's Grams too")
        a = _stacked(grams_a, self.num_layers_a, "A")
        b = None if grams_b is None else _stacked(grams_b, self.num_layers_b, "B")
        if b is not None and b.shape[1] != a.shape[1]:
            raise CKAInputError(f"model A's Grams have n={a.shape[1]} examples but model B's have n={b.shape[1]}: "
                                "both must see the same minibatch")
        if self.device is None:
            self.device = a.device
        a = a.to(self.device)
        sim = self.batch_similarity(a, None if b is None else b.to(self.device))
        valid = ~torch.isnan(sim)
        sim = torch.where(valid, sim, 0.0)
        if self._sum is None:
            self._sum, self._sumsq, self._count = (torch.zeros(self.shape, dtype=torch.float64, device=self.device)
                                                   for _ in range(3))
        self._sum += sim
        self._sumsq += sim * sim
        self._count += valid
        self.num_batches += 1
        self.num_examples += a.shape[1]

    def _state(self, what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._sum is None:
            raise CKAInputError(f"{type(self).__name__}.{what}() was called before any update: there is nothing to compute")
        return self._sum, self._sumsq, self._count

    def compute(self) -> torch.Tensor:
        """The (La, Lb) mean over batches, float64; NaN where a layer was dead in every batch."""
        total, _, count = self._state("compute")
        if bool((count == 0).any()):
            warnings.warn("some layers have zero variance across examples; their cells are NaN", RuntimeWarning,
                          stacklevel=2)
        return torch.where(count > 0, total / count.clamp_min(1), math.nan)

    def standard_error(self) -> torch.Tensor:
        """``std / sqrt(k)`` of the per-batch values over the k batches of each cell; NaN below two."""
        total, sumsq, k = self._state("standard_error")
        mean = total / k.clamp_min(1)
        var = (sumsq - k * mean * mean).clamp_min(0) / (k - 1).clamp_min(1)
        return torch.where(k >= 2, (var / k.clamp_min(1)).sqrt(), math.nan)

    def all_reduce(self, group: Any = None) -> BatchMeanMeasure:
        """Sum over the ranks of a ``torch.distributed`` group, in place (as `MinibatchCKA.all_reduce`)."""
        import torch.distributed as dist

        device = self.device or torch.device("cpu")
        zeros = torch.zeros(self.shape, dtype=torch.float64, device=device)
        parts = [zeros if t is None else t.to(device) for t in (self._sum, self._sumsq, self._count)]
        counts = torch.tensor([self.num_batches, self.num_examples], dtype=torch.float64, device=device)
        flat = torch.cat([p.reshape(-1) for p in parts] + [counts])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        size = zeros.numel()
        self._sum, self._sumsq, self._count = (flat[k * size:(k + 1) * size].reshape(self.shape).clone() for k in range(3))
        self.num_batches, self.num_examples = (int(round(v)) for v in flat[-2:].tolist())
        self.device = device
        return self

    def __repr__(self) -> str:
        la, lb = self.shape
        return f"{type(self).__name__}({la}x{lb}, batches={self.num_batches}, examples={self.num_examples})"


def pairwise_nuclear_norms(left: Sequence[torch.Tensor], right: Sequence[torch.Tensor] | None) -> torch.Tensor:
    """(La, Lb) the nuclear norm (sum of singular values) of ``left[i]' right[j]`` for every pair of
    factors, each (n, r_i) with its own number of columns; `right` None: `left` with itself (each pair
    once, mirrored).

    Each pair is taken from the side with fewer columns (r = min(r_i, r_j)): with M = F_s' F_t (r x r_t),
    the singular values are the square roots of the eigenvalues of the symmetric r x r matrix M M'
    (`eigvalsh`, about half an SVD's work), batched over every partner of one layer, whose factors are
    padded with zero columns (which leave M M' unchanged). Generic layers make M M' full rank, so no
    square root of a rounding error enters the sum."""
    square = right is None
    other = left if square else right
    device = left[0].device if len(left) else torch.device("cpu")
    out = torch.zeros(len(left), len(other), dtype=torch.float64, device=device)
    ranks_l, ranks_o = [f.shape[1] for f in left], [f.shape[1] for f in other]
    if square:
        order = sorted(range(len(left)), key=lambda i: (ranks_l[i], i))
        for position, i in enumerate(order):  # its partners: itself and every layer of as many columns or more
            partners = order[position:]
            values = _nuclear_norms_from(left[i], [other[j] for j in partners])
            out[i, partners] = values
            out[partners, i] = values
        return out
    for i in range(len(left)):  # A's layer is the smaller side (ties here) ...
        partners = [j for j in range(len(other)) if ranks_o[j] >= ranks_l[i]]
        out[i, partners] = _nuclear_norms_from(left[i], [other[j] for j in partners])
    for j in range(len(other)):  # ... or B's is
        partners = [i for i in range(len(left)) if ranks_l[i] > ranks_o[j]]
        out[partners, j] = _nuclear_norms_from(other[j], [left[i] for i in partners])
    return out


def _nuclear_norms_from(small: torch.Tensor, partners: list[torch.Tensor]) -> torch.Tensor:
    """The nuclear norms of ``small' p`` for each partner p (each with at least as many columns)."""
    if not partners:
        return small.new_zeros(0)
    if small.shape[1] == 0:
        return small.new_zeros(len(partners))
    stack = small.new_zeros(len(partners), small.shape[0], max(p.shape[1] for p in partners))
    for k, p in enumerate(partners):
        stack[k, :, : p.shape[1]] = p
    m = small.T @ stack  # (P, r, r_max)
    return torch.linalg.eigvalsh(m @ m.mT).clamp_min(0).sqrt().sum(-1)


class MinibatchProcrustes(BatchMeanMeasure):
    """Orthogonal Procrustes similarity per batch: with X, Y the batch's features centred and scaled to
    unit Frobenius norm, ``max_R tr(X'YR) = ||X'Y||_*`` over orthogonal R (= 1 - d^2/2, d the
    Procrustes distance). From Grams: ``||X'Y||_* = ||F_a'F_b||_*`` with ``F F' = K`` (each factor
    from the eigendecomposition of its layer's centred, unit-trace Gram, cut to that layer's rank):
    the eigenvalues of one symmetric r x r matrix per layer pair (`pairwise_nuclear_norms`), O(r^3)
    with r up to the batch size, so it costs more than CKA for large batches."""

    name = "procrustes"

    def batch_similarity(self, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        fa, dead_a = self._factors(a)
        fb, dead_b = (fa, dead_a) if b is None else self._factors(b)
        out = pairwise_nuclear_norms(fa, None if b is None else fb)  # ||X'Y||_* = ||F_a'F_b||_*
        out[dead_a] = math.nan
        out[:, dead_b] = math.nan
        return out.clamp_max(1.0)

    @classmethod
    def _factors(cls, g: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per layer, (n, r) F with F F' = the centred Gram over its trace (X X' for the normalised X, up
        to a rotation), r its rank (eigenvalues above n * 1e-14 of its largest: float64 rounding is
        below that); which layers are dead."""
        k, dead = cls._normalised(g)
        values, vectors = torch.linalg.eigh(k)
        keep = values > values.amax(dim=-1, keepdim=True) * 1e-14 * k.shape[-1]
        roots = values.clamp_min(0).sqrt()
        return [vectors[i][:, keep[i]] * roots[i][keep[i]] for i in range(len(k))], dead

    @staticmethod
    def _normalised(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = center_gram(g)
        trace = k.diagonal(dim1=-2, dim2=-1).sum(-1)
        dead = trace <= 0
        return k / torch.where(dead, 1.0, trace)[:, None, None], dead


class MinibatchKNN(BatchMeanMeasure):
    """Mutual k-nearest-neighbour alignment per batch (Huh et al. 2024, "The platonic representation
    hypothesis"): for each example, its `k` nearest other examples by cosine similarity of the
    centred features in each layer; the score is the mean share of neighbours the two layers have in
    common (1: the same neighbourhoods; about k/(n-1) for unrelated ones)."""

    name = "knn"

    def __init__(self, num_layers_a: int, num_layers_b: int | None = None, *, device: Any = None, k: int = 10) -> None:
        super().__init__(num_layers_a, num_layers_b, device=device)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise CKAInputError(f"k must be a positive integer, got {k!r}")
        self.k = k

    def batch_similarity(self, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        n = a.shape[-1]
        if n <= self.k:
            raise CKAInputError(f"measure 'knn' with k={self.k} needs batches of more than {self.k} examples, got n={n}: "
                                f"give at least {self.k + 1} examples per batch (batch_size >= {self.k + 1}), or a smaller k")
        ma, dead_a = self._neighbours(a)
        mb, dead_b = (ma, dead_a) if b is None else self._neighbours(b)
        out = (ma @ mb.T).double() / (n * self.k)
        out[dead_a] = math.nan
        out[:, dead_b] = math.nan
        return out

    def _neighbours(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, n*n) float32 0/1 rows marking each example's k neighbours; which layers are dead."""
        norms = g.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt()
        cos = g / (norms[:, :, None] * norms[:, None, :]).clamp_min(torch.finfo(torch.float64).tiny)
        cos.diagonal(dim1=-2, dim2=-1).fill_(-math.inf)  # an example is not its own neighbour
        index = cos.topk(self.k, dim=-1).indices
        marks = torch.zeros(g.shape, dtype=torch.float32, device=g.device).scatter_(-1, index, 1.0)
        return marks.flatten(1), norms.amax(dim=1) <= 0


class MinibatchRSA(BatchMeanMeasure):
    """Representational similarity analysis per batch: each layer's dissimilarity matrix (Euclidean
    distances between the examples, from the Gram), compared by the Spearman correlation of their
    upper triangles (ties get their average rank)."""

    name = "rsa"

    def batch_similarity(self, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ra, dead_a = self._ranks(a)
        rb, dead_b = (ra, dead_a) if b is None else self._ranks(b)
        out = (ra @ rb.T) / ra.shape[1]
        out[dead_a] = math.nan
        out[:, dead_b] = math.nan
        return out.clamp(-1.0, 1.0)

    @staticmethod
    def _ranks(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, m) standardised ranks of each layer's m = n(n-1)/2 squared distances; dead layers."""
        from scipy.stats import rankdata

        n = g.shape[-1]
        sq = squared_distances(g)
        rows, cols = torch.triu_indices(n, n, offset=1, device=g.device)
        upper = sq[:, rows, cols].cpu().numpy()
        ranks = torch.as_tensor(rankdata(upper, axis=1), dtype=torch.float64, device=g.device)
        ranks -= ranks.mean(dim=1, keepdim=True)
        scale = ranks.pow(2).mean(dim=1, keepdim=True).sqrt()
        dead = scale.squeeze(1) <= 0
        return ranks / torch.where(scale > 0, scale, 1.0), dead


class MinibatchSVCCA(BatchMeanMeasure):
    """SVCCA per batch (Raghu et al. 2017): each layer's centred features are cut to their top principal
    directions that together explain `variance` of the variance (the SVD step), and the two cut
    representations are compared by CCA; the cell is the mean of their min(k_a, k_b) canonical
    correlations. From Grams: the principal directions in example space are the top eigenvectors of the
    centred Gram, and the canonical correlations of two representations are the singular values of the
    product of orthonormal bases of their spans (Bjorck & Golub 1973): the eigenvalues of one symmetric
    min(k_a, k_b) square matrix per pair (`pairwise_nuclear_norms`).
    Invariant to any invertible linear map of the kept directions; CCA needs n well above k, else
    every correlation nears 1 (compare heatmaps made with the same batch size)."""

    name = "svcca"

    def __init__(self, num_layers_a: int, num_layers_b: int | None = None, *, device: Any = None,
                 variance: float = 0.99) -> None:
        super().__init__(num_layers_a, num_layers_b, device=device)
        if isinstance(variance, bool) or not isinstance(variance, (int, float)) or not 0 < variance <= 1:
            raise CKAInputError(f"variance must be a share in (0, 1], got {variance!r}")
        self.variance = float(variance)

    def batch_similarity(self, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ua, ka = self._bases(a)
        ub, kb = (ua, ka) if b is None else self._bases(b)
        out = pairwise_nuclear_norms(ua, None if b is None else ub)  # the sum of the canonical correlations
        pairs = torch.minimum(ka[:, None], kb[None, :]).double()
        out = torch.where(pairs > 0, out / pairs.clamp_min(1), math.nan)  # no direction kept: a dead layer
        return out.clamp_max(1.0)

    def _bases(self, g: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per layer, the (n, k) orthonormal basis of its kept directions, and each layer's k (0 for a dead
        layer)."""
        values, vectors = torch.linalg.eigh(center_gram(g))
        values, vectors = values.flip(-1).clamp_min(0), vectors.flip(-1)  # largest first
        total = values.sum(-1, keepdim=True)
        before = values.cumsum(-1) - values  # variance of the directions ahead of each one
        keep = (before < self.variance * total * (1 - 1e-12)) & (values > total * 1e-12)
        return [vectors[i][:, keep[i]] for i in range(len(g))], keep.sum(-1)



__all__ = ["AllExamplesCKA", "BatchMeanMeasure", "MinibatchKNN", "MinibatchProcrustes", "MinibatchRSA", "MinibatchSVCCA",
           "RBFMinibatchCKA", "pairwise_nuclear_norms", "rbf_kernels", "squared_distances"]
