"""The threshold rule of earlier releases (`find_threshold_blocks`, ``method="threshold"``), kept for
comparison: planted blocks recovered, checkerboards rejected, tolerance, a naive reference. What both rules
share (holes, neighbours, dead layers, sizes) is tested on both in test_blocks.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ckatlas.analysis import find_threshold_blocks

from block_matrices import planted, spans

find_blocks = find_threshold_blocks  # every test below is of the threshold rule


def naive_find_blocks(m: np.ndarray, threshold: float, tolerance: float, min_size: int) -> list[tuple[int, int]]:
    """The documented algorithm, one interval and one layer at a time."""
    n = len(m)
    candidates = []
    for i in range(n):
        for j in range(i + min_size - 1, n):
            size = j - i + 1
            allowed = math.floor(tolerance * (size - 1) + 1e-9)
            uniform = True
            for k in range(i, j + 1):
                lows = sum(1 for o in range(i, j + 1) if o != k and not (m[k, o] >= threshold and m[o, k] >= threshold))
                uniform = uniform and lows <= allowed
            if uniform:
                vals = [m[a, b] for a in range(i, j + 1) for b in range(i, j + 1) if a != b and not np.isnan(m[a, b])]
                candidates.append((size, float(np.mean(vals)), i, j))
    candidates.sort(key=lambda c: (-c[0], -c[1], c[2]))
    taken: set[int] = set()
    picked = []
    for _, _, i, j in candidates:
        if not taken & set(range(i, j + 1)):
            taken |= set(range(i, j + 1))
            picked.append((i, j))
    return sorted(picked)


# -- recovery -----------------------------------------------------------------------------------


def test_planted_blocks_are_recovered_exactly() -> None:
    m = planted(24, [(3, 8), (13, 21)])
    res = find_blocks(m)
    assert spans(res) == [(3, 8), (13, 21)]
    assert [b.size for b in res.blocks] == [6, 9]
    assert res.block_fraction == pytest.approx(15 / 24)
    inner = m[13:22, 13:22][~np.eye(9, dtype=bool)]
    assert res.blocks[1].mean_cka == pytest.approx(inner.mean())
    assert res.blocks[1].min_cka == pytest.approx(inner.min())


def test_adjacent_blocks_that_differ_stay_apart() -> None:
    m = planted(20, [(2, 9), (10, 17)], outside=0.5)
    assert spans(find_blocks(m)) == [(2, 9), (10, 17)]


def test_no_structure_gives_no_block() -> None:
    res = find_blocks(planted(20, []))
    assert res.blocks == [] and res.block_fraction == 0.0


@pytest.mark.parametrize("period", [2, 3])
def test_residual_checkerboard_is_not_a_block(period: int) -> None:
    # Post-residual-sum layers (every `period`-th) similar to each other, branch layers not.
    n = 30
    post = np.arange(n) % period == period - 1
    m = np.where(post[:, None] & post[None, :], 0.9, 0.3)
    if period == 2:  # the plain alternating checkerboard: 0.9 where i + j is even
        i, j = np.indices((n, n))
        m = np.where((i + j) % 2 == 0, 0.9, 0.3)
    m = m + np.random.default_rng(1).uniform(-0.02, 0.02, m.shape)
    m = (m + m.T) / 2
    np.fill_diagonal(m, 1.0)
    for tolerance in (0.0, 0.1, 0.3):
        assert find_blocks(m, tolerance=tolerance).blocks == []


def test_block_with_a_dissimilar_patch_is_not_one_block() -> None:
    m = planted(24, [(4, 17)])
    m[4:10, 12:18] = m[12:18, 4:10] = 0.5  # the two ends of the run are not alike
    res = find_blocks(m)
    assert not any(b.start <= 5 and b.end >= 16 for b in res.blocks)


def test_tolerance_admits_a_few_noisy_pairs() -> None:
    m = planted(20, [(5, 16)], noise=0.0)
    m[7, 12] = m[12, 7] = 0.6
    assert spans(find_blocks(m, tolerance=0.1)) == [(5, 16)]
    assert (5, 16) not in spans(find_blocks(m, tolerance=0.0))
    assert find_blocks(m, tolerance=0.1).blocks[0].min_cka == pytest.approx(0.6)


@pytest.mark.parametrize("seed", range(6))
def test_matches_naive_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(12, 22))
    starts = sorted(rng.choice(n - 3, size=3, replace=False))
    blocks = [(int(s), int(min(n - 1, s + rng.integers(2, 8)))) for s in starts]
    m = planted(n, blocks, inside=0.85, outside=0.6, noise=0.15, seed=seed)
    m[rng.random(m.shape) < 0.05] = np.nan
    for tolerance in (0.0, 0.15, 0.3):
        for min_size in (2, 3):
            res = find_blocks(m, threshold=0.8, tolerance=tolerance, min_size=min_size, min_fraction=0.0)
            assert spans(res) == naive_find_blocks(m, 0.8, tolerance, min_size)


def test_asymmetric_matrix_needs_both_directions_high() -> None:
    m = planted(12, [(2, 9)])
    m[5, 2:10] = 0.2  # row 5 low, column 5 high
    m[5, 5] = 1.0
    assert not any(b.start <= 5 <= b.end for b in find_blocks(m).blocks)


def test_a_bright_heatmap_is_one_block_under_the_threshold_rule() -> None:
    # What the rule measures: brightness. A flat 0.95 heatmap is one block; the contrast rule finds none.
    from ckatlas.analysis import find_blocks as contrast

    m = np.full((30, 30), 0.95)
    np.fill_diagonal(m, 1.0)
    assert spans(find_threshold_blocks(m)) == [(0, 29)]
    assert contrast(m).blocks == []
    same = contrast(m, method="threshold")
    assert spans(same) == [(0, 29)] and same.detector.method == "threshold"
    assert np.isnan(same.blocks[0].score)  # a block over every layer has no border to stand out from
