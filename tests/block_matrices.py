"""Synthetic CKA-like matrices for the block tests (test_blocks.py, test_block_threshold.py)."""

from __future__ import annotations

import numpy as np

from ckatlas.analysis import BlockResult


def planted(num_layers: int, blocks: list[tuple[int, int]], *, inside: float = 0.95, outside: float = 0.4,
            noise: float = 0.03, seed: int = 0) -> np.ndarray:
    """Symmetric CKA-like matrix: `inside` within each planted block (end inclusive), `outside` elsewhere."""
    rng = np.random.default_rng(seed)
    m = np.full((num_layers, num_layers), outside)
    for start, end in blocks:
        m[start : end + 1, start : end + 1] = inside
    m = m + rng.uniform(-noise, noise, m.shape)
    m = np.clip((m + m.T) / 2, 0.0, 1.0)
    np.fill_diagonal(m, 1.0)
    return m


def spans(result: BlockResult) -> list[tuple[int, int]]:
    return [(b.start, b.end) for b in result.blocks]
