"""Gram matrices and their centring.

All Gram matrices are returned in float64. `center_gram(..., unbiased=True)` is
the U-centring of Szekely & Rizzo (2014): the Frobenius inner product of two
U-centred Grams, divided by n(n-3), is the unbiased HSIC of Song et al. (2012).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ckatlas.cka._inputs import CKAInputError, as_features, check_finite


def gram_linear(x: Any, *, name: str = "X", center_features: bool = True) -> torch.Tensor:
    """Linear-kernel Gram matrix ``X X^T`` of the flattened examples, in float64.

    Args:
        x: activations of shape (n, ...), NumPy or Tensor, any float dtype, any device.
        name: what to call `x` in error messages (e.g. "activation 3 of model A").
        center_features: subtract the mean over examples from every feature first.
            Every HSIC and CKA estimator here is unchanged by it (a shift of all
            examples adds only terms that centring removes), and it keeps a float32
            product accurate when activations share a large common component.

    Returns:
        (n, n) float64 tensor on the device of `x`. The product itself is taken in
        the activations' precision (float32 for float32/16 inputs). A layer whose
        every feature is constant over the examples gets an exactly zero Gram.
    """
    t = as_features(x, name=name)
    check_finite(t, name)
    if not center_features:
        return (t @ t.T).double()
    return _centered_gram(t, t.mean(dim=0, keepdim=True)).double()


def _centered_gram(t: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    c = t - mean
    gram = c @ c.T
    # A constant layer leaves only the rounding error of its mean: trace(K) of order
    # n * (eps * |mean|)^2. Only then is the exact (and slower) check worth doing.
    tol = (64 * torch.finfo(t.dtype).eps) ** 2 * t.shape[0]
    if t.device.type == "cpu":
        if float(gram.diagonal().sum()) <= tol * float((mean * mean).sum()) and _is_constant(t):
            gram.zero_()
        return gram
    suspicious = gram.diagonal().sum() <= tol * (mean * mean).sum()
    return torch.where(suspicious & _constant_flag(t), torch.zeros_like(gram), gram)  # no host sync


def _constant_flag(t: torch.Tensor) -> torch.Tensor:
    return (t == t[:1]).all()


def _is_constant(t: torch.Tensor) -> bool:
    return bool(_constant_flag(t))


def centered_features(t: torch.Tensor) -> torch.Tensor:
    """(n, p) features minus their mean over examples.

    Exactly zero when every feature is constant over the examples (a plain
    subtraction of a rounded mean would leave noise that CKA would normalise into
    a meaningless value).
    """
    if _is_constant(t):
        return torch.zeros_like(t)
    return t - t.mean(dim=0, keepdim=True)


def gram_rbf(x: Any, threshold: float = 1.0, *, name: str = "X") -> torch.Tensor:
    """RBF-kernel Gram matrix, bandwidth relative to the median distance (float64).

    ``K_ij = exp(-d_ij^2 / (2 * threshold^2 * median(d^2)))``, the median taken over
    all n^2 squared distances, as in Kornblith et al. (2019).
    """
    if not threshold > 0:
        raise CKAInputError(f"threshold must be a positive number, got {threshold!r}")
    t = as_features(x, name=name).double()
    check_finite(t, name)
    t = centered_features(t)
    sq_norms = (t * t).sum(dim=1)
    sq_dist = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * (t @ t.T)).clamp_min_(0.0)
    median = float(np.median(sq_dist.cpu().numpy()))
    if median <= 0.0:
        raise CKAInputError(
            f"{name}: the median pairwise distance is 0 (most examples are identical), so the RBF bandwidth is undefined"
        )
    return torch.exp(-sq_dist / (2.0 * threshold**2 * median))


def center_gram(gram: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Centre a Gram matrix (or a stack of them, shape (..., n, n)), in float64.

    Args:
        gram: symmetric Gram matrices.
        unbiased: False gives ``H K H`` with ``H = I - 11^T/n``; True gives the
            U-centred matrix (zero diagonal), needing n >= 4.
    """
    k = torch.as_tensor(gram).double()
    n = k.shape[-1]
    if k.ndim < 2 or k.shape[-2] != n:
        raise CKAInputError(f"a Gram matrix must be square, got shape {tuple(k.shape)}")
    if unbiased:
        if n < 4:
            raise CKAInputError(f"U-centring needs at least 4 examples, got n={n}")
        k = k.clone()
        k.diagonal(dim1=-2, dim2=-1).zero_()
        row = k.sum(dim=-1, keepdim=True) / (n - 2)  # (..., n, 1)
        total = row.sum(dim=-2, keepdim=True) / (n - 1)  # (..., 1, 1)
        k = k - row - row.transpose(-1, -2) + total
        k.diagonal(dim1=-2, dim2=-1).zero_()
        return k
    row_mean = k.mean(dim=-1, keepdim=True)
    col_mean = k.mean(dim=-2, keepdim=True)
    return k - row_mean - col_mean + k.mean(dim=(-2, -1), keepdim=True)
