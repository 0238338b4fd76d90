"""Full-batch CKA (Kornblith et al., 2019), biased or debiased, in float64."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from ckatlas.cka._inputs import CKAInputError, as_features, check_examples, check_finite
from ckatlas.cka.kernels import center_gram, centered_features, gram_linear, gram_rbf


def _ratio(xy: float, xx: float, yy: float) -> float:
    if not (xx > 0 and yy > 0):
        warnings.warn(
            "CKA is undefined (NaN): one of the representations has zero variance across examples",
            RuntimeWarning,
            stacklevel=3,
        )
        return math.nan
    return xy / math.sqrt(xx * yy)


def cka_from_grams(gram_x: torch.Tensor, gram_y: torch.Tensor, debiased: bool = False) -> float:
    """CKA of two (n, n) Gram matrices.

    Args:
        gram_x, gram_y: Gram matrices of the same n examples.
        debiased: use the unbiased HSIC estimator (U-centring, n >= 4) instead of the
            biased one.
    """
    kx = torch.as_tensor(gram_x).double()
    ky = torch.as_tensor(gram_y).double().to(kx.device)
    if kx.ndim != 2 or kx.shape != ky.shape or kx.shape[0] != kx.shape[1]:
        raise CKAInputError(
            f"CKA needs two square Gram matrices of the same size, got {tuple(kx.shape)} and {tuple(ky.shape)}"
        )
    check_examples(kx.shape[0], 4 if debiased else 2, "debiased CKA" if debiased else "CKA")
    cx = center_gram(kx, unbiased=debiased)
    cy = center_gram(ky, unbiased=debiased)
    return _ratio(float((cx * cy).sum()), float((cx * cx).sum()), float((cy * cy).sum()))


def _paired_features(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    fx = as_features(x, name="X").double()
    fy = as_features(y, name="Y").double().to(fx.device)
    if fx.shape[0] != fy.shape[0]:
        raise CKAInputError(
            f"X and Y must hold the same examples: X has n={fx.shape[0]} rows, Y has n={fy.shape[0]}"
        )
    check_finite(fx, "X")
    check_finite(fy, "Y")
    return fx, fy


def linear_cka(x: Any, y: Any, debiased: bool = False) -> float:
    """Linear CKA of two representations of the same examples.

    Args:
        x: (n, ...) activations (flattened per example); NumPy or Tensor.
        y: (n, ...) activations of the same n examples.
        debiased: unbiased HSIC estimator (n >= 4) instead of the biased one.

    Computed in float64, in example space (n x n Grams) or feature space
    (p x q cross-covariances), whichever is cheaper; both give the same value.
    """
    fx, fy = _paired_features(x, y)
    n, p, q = fx.shape[0], fx.shape[1], fy.shape[1]
    if p * q + p * p + q * q < n * (p + q):
        return feature_space_linear_cka(fx, fy, debiased=debiased)
    check_examples(n, 4 if debiased else 2, "debiased CKA" if debiased else "CKA")
    return cka_from_grams(gram_linear(fx), gram_linear(fy), debiased=debiased)


def rbf_cka(x: Any, y: Any, threshold: float = 1.0, debiased: bool = False) -> float:
    """CKA with RBF kernels, bandwidth = `threshold` x the median pairwise distance.

    Args:
        x, y: (n, ...) activations of the same n examples.
        threshold: bandwidth as a fraction of the median distance (Kornblith et al., 2019).
        debiased: unbiased HSIC estimator (n >= 4).
    """
    fx, fy = _paired_features(x, y)
    check_examples(fx.shape[0], 4 if debiased else 2, "debiased CKA" if debiased else "CKA")
    return cka_from_grams(gram_rbf(fx, threshold, name="X"), gram_rbf(fy, threshold, name="Y"), debiased=debiased)


def _feature_hsic(cross: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, n: int, debiased: bool) -> float:
    """Scaled HSIC from the feature-space pieces of centred X, Y.

    cross: X^T Y; dx, dy: squared row norms (the Grams' diagonals). With centred
    features K1 = 0, so tr(K~L~) = ||X^T Y||^2 - dx.dy, 1'K~1 = -sum(dx) and
    K~1 = -dx, which turn Song et al.'s estimator into the expression below.
    """
    frob = float((cross * cross).sum())
    if not debiased:
        return frob
    return frob - n / (n - 2) * float(dx @ dy) + float(dx.sum() * dy.sum()) / ((n - 1) * (n - 2))


def feature_space_linear_cka(x: Any, y: Any, debiased: bool = False) -> float:
    """Linear CKA computed from p x q cross-covariances, for n much larger than p, q.

    Cost O(n p q) time and O(p q) memory instead of O(n^2 (p + q)); equal to
    `linear_cka` up to rounding.
    """
    fx, fy = _paired_features(x, y)
    n = fx.shape[0]
    check_examples(n, 4 if debiased else 2, "debiased CKA" if debiased else "CKA")
    fx, fy = centered_features(fx), centered_features(fy)
    dx, dy = (fx * fx).sum(1), (fy * fy).sum(1)
    xy = _feature_hsic(fx.T @ fy, dx, dy, n, debiased)
    xx = _feature_hsic(fx.T @ fx, dx, dx, n, debiased)
    yy = _feature_hsic(fy.T @ fy, dy, dy, n, debiased)
    return _ratio(xy, xx, yy)
