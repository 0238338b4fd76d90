"""Textbook references shared by the engine's tests (test_cka.py, test_pca.py, test_measures.py):
plain NumPy, float64, written from the papers term by term."""

from __future__ import annotations

import numpy as np


def hsic1(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC of two Grams, written out term by term."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    term1 = np.trace(kt @ lt)
    term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def cka1(k: np.ndarray, l: np.ndarray) -> float:
    """CKA of two Grams with the unbiased HSIC."""
    return hsic1(k, l) / np.sqrt(hsic1(k, k) * hsic1(l, l))
