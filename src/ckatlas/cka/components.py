"""Principal components in example space, read off centred linear Grams.

For centred features X (n, p) with SVD X = U S V^T, the Gram K = X X^T = U S^2 U^T.
So the example-space principal components are the eigenvectors of K, the variance
each explains is its eigenvalue over tr(K), and removing the top k components
from X (X - X V_k V_k^T) leaves the Gram K - U_k S_k^2 U_k^T. All of it works on
one minibatch's Gram, without the activations.
"""

from __future__ import annotations

import torch

from ckatlas.cka._inputs import CKAInputError


def _checked(gram: torch.Tensor, k: int) -> torch.Tensor:
    g = torch.as_tensor(gram).double()
    if g.ndim < 2 or g.shape[-1] != g.shape[-2]:
        raise CKAInputError(f"a Gram matrix must be square, got shape {tuple(g.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= g.shape[-1]:
        raise CKAInputError(f"k must be an integer between 1 and n={g.shape[-1]}, got {k!r}")
    return g


def top_components(gram: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k eigenvalues (descending) and unit eigenvectors of centred Grams.

    Args:
        gram: (..., n, n) Gram(s) of centred features (`gram_linear` centres them).
        k: how many components.

    Returns:
        eigenvalues (..., k) and eigenvectors (..., n, k), float64. The sign of each
        eigenvector is fixed so that its largest-magnitude entry is positive.
    """
    g = _checked(gram, k)
    values, vectors = torch.linalg.eigh(g)  # ascending
    values = values[..., -k:].flip(-1).clamp_min(0.0)
    vectors = vectors[..., -k:].flip(-1)
    pivot = vectors.abs().argmax(dim=-2, keepdim=True)
    sign = torch.sign(torch.gather(vectors, -2, pivot))
    return values, vectors * torch.where(sign == 0, 1.0, sign)


def explained_variance_ratio(gram: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Fraction of the total variance explained by each of the top-k components.

    NaN for a Gram of zero variance.
    """
    values, _ = top_components(gram, k)
    total = torch.as_tensor(gram).double().diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True)
    return torch.where(total > 0, values / total.clamp_min(torch.finfo(torch.float64).tiny), torch.nan)


def remove_top_components(gram: torch.Tensor, k: int = 1) -> torch.Tensor:
    """The Gram of the same features with their top-k principal components removed."""
    values, vectors = top_components(gram, k)
    g = torch.as_tensor(gram).double()
    return g - (vectors * values.unsqueeze(-2)) @ vectors.transpose(-1, -2)
