"""HSIC estimators on Gram matrices (float64).

* `hsic_biased`: Gretton et al. (2005), ``tr(K H L H) / (n-1)^2``.
* `hsic_unbiased`: Song et al. (2012), with K~, L~ the Grams with zeroed diagonals,
  ``[tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))``.
"""

from __future__ import annotations

import torch

from ckatlas.cka._inputs import CKAInputError, check_examples


def _pair(k: torch.Tensor, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.as_tensor(k).double()
    l = torch.as_tensor(l).double().to(k.device)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape != l.shape:
        raise CKAInputError(
            f"HSIC needs two square Gram matrices of the same size, got shapes {tuple(k.shape)} and {tuple(l.shape)}"
        )
    return k, l


def hsic_biased(k: torch.Tensor, l: torch.Tensor) -> float:
    """Biased HSIC of two (n, n) Gram matrices: ``tr(K H L H) / (n-1)^2``."""
    k, l = _pair(k, l)
    n = k.shape[0]
    check_examples(n, 2, "HSIC")
    kc = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()
    return float((kc * l).sum() / (n - 1) ** 2)


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> float:
    """Unbiased HSIC (Song et al., 2012) of two symmetric (n, n) Gram matrices, n >= 4."""
    k, l = _pair(k, l)
    n = k.shape[0]
    check_examples(n, 4, "the unbiased HSIC estimator")
    k = k.clone()
    l = l.clone()
    k.fill_diagonal_(0.0)
    l.fill_diagonal_(0.0)
    k1, l1 = k.sum(dim=1), l.sum(dim=1)  # K~1, L~1
    trace = (k * l).sum()  # tr(K~ L~) for symmetric L~
    value = trace + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)
    return float(value / (n * (n - 3)))
