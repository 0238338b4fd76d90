"""The two rules that find blocks in a within-model CKA matrix, as pure NumPy functions.

**Contrast** (`contrast_table`, the default): a block is a contiguous run of layers whose
similarity to one another stands out from their similarity to the layers around them.
For a run [i, j], every pair of layers at distance d from the diagonal with both ends
inside the run is compared with the pairs at the *same* distance d that straddle one of
its borders (one end inside, the other just outside). Comparing at equal distances is
what keeps a heatmap's smooth decay away from the diagonal (neighbouring layers are
always more alike than distant ones) from looking like a block: in a decay that depends
on distance only, the two sets of pairs have the same mean. A periodic pattern such as
the residual checkerboard averages out the same way over a run of several periods.

Each border is judged on its own. With I_d the mean CKA of the inside pairs at distance d,
S_d that of the pairs at distance d that straddle the border, and w_d = n_in n_out /
(n_in + n_out) (the effective number of pairs of a difference of two means; 0 where either
set is empty), a border's

    gap   = sum_d w_d (I_d - S_d) / sum_d w_d                 (in CKA units)
    score = sum_d w_d (I_d - S_d) / sum_d w_d (1 - S_d)       (in [-inf, 1])

and a run's score and gap are those of its weaker border. A border counts only with at
least ``min_outside`` layers beyond it (`BlockDetector` asks for ``border_fraction`` of the
layers): a run that starts at the first layer, or leaves only a layer or two before it, is
judged by its other border alone, and a run with neither has no score. The score is the gap relative to the
dissimilarity across the border: 1 when the run is uniform (CKA 1 inside) against any
surroundings, 0 when it is no more alike inside than across. It does not move with the
heatmap's floor: mixing every cell towards 1, C -> a + (1 - a) C, leaves it unchanged.
Judging the borders apart keeps a piece of a block, whose one border lies inside the
block, from passing on the strength of its other border; the gap (which `BlockDetector`
asks to be visible, ``min_gap``) keeps a run of near-identical layers from passing against
surroundings that are nearly as alike, where the score alone would be near 1. A run the
size of the whole matrix has no border and no score.

`typical_contrast` computes a robust version for a few runs, with medians over the straddling
pairs instead of weighted means; `BlockDetector` asks a block to pass both, so that a
square cut off only by a thin line of unlike layers, in a field of squares as alike as it,
is not a block.

**Threshold** (`uniform_intervals`, kept for comparison with earlier results): a run is a
block when every layer in it reaches CKA ``threshold`` with all but a ``tolerance`` share
of the others. It measures how bright a square is, not whether it stands out: a uniformly
bright heatmap is one large block, and a block on a low floor can be missed.

Both run in O(L^3) NumPy time (L iterations over an (L, L) table), well under a second
for the few hundred layers of a ResNet's "all" list.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np


def symmetric_cells(matrix: np.ndarray) -> np.ndarray:
    """The mean of the matrix and its transpose; NaN where either is NaN (a dead layer's cells)."""
    return (matrix + matrix.T) / 2.0


def dead_layers(matrix: np.ndarray) -> np.ndarray:
    """(L,) bool: layers with no finite CKA to any other layer (zero variance); never in a block."""
    finite = np.isfinite(matrix)
    np.fill_diagonal(finite, False)
    return ~finite.any(axis=1) if matrix.shape[0] > 1 else np.zeros(matrix.shape[0], dtype=bool)


def contrast_table(matrix: np.ndarray, min_outside: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Score and gap (module docstring) of every run [i, j] of a square CKA matrix.

    Args:
        matrix: (L, L) CKA matrix.
        min_outside: a border counts only with at least this many layers beyond it (a run that
            leaves fewer layers before it than this has no left border, and likewise on the right).

    Returns:
        ``(score, gap)``, each (L, L) float64 with entry [i, j] for the run of layers i..j
        (inclusive); NaN where j <= i, where the run has no border to compare with, or
        where no pair is finite.
    """
    cells = symmetric_cells(np.asarray(matrix, dtype=np.float64))
    size = cells.shape[0]
    first = np.arange(size)[:, None]  # i
    last = np.arange(size)[None, :]  # j
    sums = {side: [np.zeros((size, size)) for _ in range(3)] for side in ("left", "right")}  # diff, 1 - S, weight
    for d in range(1, size):
        values = np.diagonal(cells, offset=d)  # values[a] = cells[a, a + d], a = 0 .. size-d-1
        valid = ~np.isnan(values)
        prefix = np.concatenate([[0.0], np.cumsum(np.where(valid, values, 0.0))])
        counts = np.concatenate([[0], np.cumsum(valid)])

        def span(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Sum and count of values[a] for lo <= a <= hi (empty where hi < lo)."""
            lo_c = np.clip(lo, 0, size - d)
            hi_c = np.maximum(np.clip(hi + 1, 0, size - d), lo_c)
            return prefix[hi_c] - prefix[lo_c], counts[hi_c] - counts[lo_c]

        runs = (last - first) >= d  # runs with pairs at distance d inside them
        in_sum, in_count = span(first, last - d)  # both ends inside: a in [i, j - d]
        across = {"left": span(np.maximum(first - d, 0), first - 1),  # a < i <= a + d <= j
                  "right": span(last - d + 1, np.minimum(last, size - 1 - d))}  # i <= a <= j < a + d
        beyond = {"left": first >= min_outside, "right": size - 1 - last >= min_outside}
        with np.errstate(invalid="ignore", divide="ignore"):
            inside_mean = in_sum / in_count
            for side, (out_sum, out_count) in across.items():
                both = runs & beyond[side] & (in_count > 0) & (out_count > 0)
                outside_mean = out_sum / out_count
                weight = np.where(both, in_count * out_count / (in_count + out_count), 0.0)
                diff, dissimilar, weights = sums[side]
                diff += np.where(both, weight * (inside_mean - outside_mean), 0.0)
                dissimilar += np.where(both, weight * (1.0 - outside_mean), 0.0)
                weights += weight
    scores, gaps = [], []
    for diff, dissimilar, weights in sums.values():
        with np.errstate(invalid="ignore", divide="ignore"):
            gaps.append(np.where(weights > 0, diff / weights, np.nan))
            scores.append(np.where((weights > 0) & (dissimilar > 0), diff / dissimilar, np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: a run without any border
        return np.fmin(*scores), np.fmin(*gaps)  # the weaker border decides; a missing side does not count


def segmented_contrast(matrix: np.ndarray, min_outside: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`contrast_table` within each stretch of live layers: a dead layer (`dead_layers`) ends one
    stretch and starts the next, so no run contains it and no run is compared across it (a
    block interrupted by a dead layer is two blocks, each judged against its own surroundings)."""
    size = matrix.shape[0]
    score = np.full((size, size), np.nan)
    gap = np.full((size, size), np.nan)
    for start, stop in live_stretches(matrix):
        if stop - start >= 2:
            part = slice(start, stop)
            score[part, part], gap[part, part] = contrast_table(matrix[part, part], min_outside)
    return score, gap


def allowed_low(size: np.ndarray | int, tolerance: float) -> np.ndarray:
    """Low partners a layer of a run of `size` may have under the threshold rule."""
    # A small epsilon so that e.g. 0.1 * 10 counts as 1, not 0.999...
    return np.floor(tolerance * (np.asarray(size) - 1) + 1e-9).astype(np.int64)


def uniform_intervals(matrix: np.ndarray, threshold: float, tolerance: float, min_size: int) -> list[tuple[int, int]]:
    """The threshold rule: all runs [i, j] (inclusive) of at least `min_size` layers in which every
    layer reaches `threshold` (in both triangles; NaN counts as low) with all but
    ``floor(tolerance * (size - 1))`` of the others."""
    low = ~((matrix >= threshold) & (matrix.T >= threshold))  # NaN compares False: low
    np.fill_diagonal(low, False)
    n = low.shape[0]
    prefix = np.zeros((n, n + 1), dtype=np.int64)  # prefix[k, m] = low pairs of k with layers < m
    prefix[:, 1:] = np.cumsum(low, axis=1)
    out: list[tuple[int, int]] = []
    for i in range(n - min_size + 1):
        # counts[k - i, j - i] = low partners of layer k among layers i..j, for k, j >= i
        counts = prefix[i:, i + 1 :] - prefix[i:, i : i + 1]
        counts = np.where(np.triu(np.ones_like(counts, dtype=bool)), counts, 0)  # only k <= j
        worst = counts.max(axis=0)
        sizes = np.arange(1, n - i + 1)
        ok = (worst <= allowed_low(sizes, tolerance)) & (sizes >= min_size)
        out.extend((i, i + int(s) - 1) for s in sizes[ok])
    return out


def interval_means(candidates: list[tuple[int, int]], matrix: np.ndarray) -> np.ndarray:
    """Mean off-diagonal CKA of each run (NaN skipped), from 2-D prefix sums (O(1) per run)."""
    valid = ~np.isnan(matrix)
    np.fill_diagonal(valid, False)
    values = np.where(valid, matrix, 0.0)
    sums = np.pad(values.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = np.pad(valid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    i = np.array([c[0] for c in candidates], dtype=np.int64)
    j = np.array([c[1] for c in candidates], dtype=np.int64) + 1

    def rect(table: np.ndarray) -> np.ndarray:
        return table[j, j] - table[i, j] - table[j, i] + table[i, i]

    return rect(sums) / np.maximum(rect(counts), 1)


def typical_contrast(matrix: np.ndarray, runs: list[tuple[int, int]], min_outside: int = 1) -> np.ndarray:
    """(R, 2) a robust score and gap of each run: per border, the *median* over the pairs straddling it of
    (I_d - the pair's CKA), I_d the run's mean CKA at the pair's distance d, and of (1 - the pair's CKA);
    the gap is the first median, the score the first over the second; the weaker border decides, and a
    border counts with at least `min_outside` layers beyond it, as in `contrast_table`.

    A field of alike layers cut by thin lines of unlike ones (a transformer's residual stream at
    initialisation) makes each piece between two lines look like a block by the mean, which the few pairs
    with a line layer pull down; most straddling pairs join the piece to the next piece, as alike as its
    own, and the median says so. A true block, unlike everything around it, has about the same median as
    mean.
    """
    cells = symmetric_cells(np.asarray(matrix, dtype=np.float64))
    size = cells.shape[0]
    out = np.full((len(runs), 2), np.nan)
    for r, (i, j) in enumerate(runs):
        sides = []
        for side, beyond in (("left", i), ("right", size - 1 - j)):
            if beyond < min_outside:
                continue
            excess, dissimilar = [], []
            for d in range(1, j - i + 1):
                diagonal = np.diagonal(cells, offset=d)
                inside = diagonal[i : j - d + 1]
                inside = inside[~np.isnan(inside)]
                lo, hi = (max(0, i - d), i - 1) if side == "left" else (j - d + 1, min(j, size - 1 - d))
                across = diagonal[lo : hi + 1]
                across = across[~np.isnan(across)]
                if len(inside) and len(across):
                    excess.append(inside.mean() - across)
                    dissimilar.append(1.0 - across)
            if excess:
                gap, spread = float(np.median(np.concatenate(excess))), float(np.median(np.concatenate(dissimilar)))
                sides.append((gap / spread if spread > 0 else np.nan, gap))
        if sides:
            out[r] = np.fmin.reduce([s[0] for s in sides]), min(s[1] for s in sides)
    return out


#: Scores closer than this to the best are ties, which the larger run wins (`pick_standing_out`).
SCORE_TIE = 0.02


def pick_standing_out(candidates: list[tuple[int, int]], score: np.ndarray, size: int,
                      accept: Callable[[tuple[int, int]], bool] = lambda run: True) -> list[tuple[int, int]]:
    """Greedy over the contrast rule's qualifying runs: of the runs still free, those within `SCORE_TIE` of the
    best score are ties, and the largest of them (then the higher score, the earlier start) is taken if
    `accept` takes it (else dropped, and the next tried); runs overlapping a taken one are dropped.
    Returned in layer order."""
    free = sorted(candidates, key=lambda c: (-float(score[c]), c[0] - c[1], c[0]))
    picked = []
    while free:
        best = float(score[free[0]])
        run = min((c for c in free if float(score[c]) >= best - SCORE_TIE),
                  key=lambda c: (c[0] - c[1], -float(score[c]), c[0]))
        if not accept(run):
            free.remove(run)
            continue
        i, j = run
        picked.append(run)
        free = [c for c in free if c[1] < i or c[0] > j]
    return sorted(picked)


def live_stretches(matrix: np.ndarray) -> list[tuple[int, int]]:
    """The [start, stop) stretches of live layers between dead ones (`dead_layers`)."""
    dead = dead_layers(matrix)
    stretches, start = [], 0
    for stop in [*np.flatnonzero(dead).tolist(), matrix.shape[0]]:
        if stop > start:
            stretches.append((start, stop))
        start = stop + 1
    return stretches


def pick_disjoint(candidates: list[tuple[int, int]], priority: list[tuple[float, ...]], size: int) -> list[tuple[int, int]]:
    """Greedy: the candidate with the smallest `priority` tuple first, skipping any that overlaps
    one already picked; returned in layer order."""
    taken = np.zeros(size, dtype=bool)
    picked = []
    for k in sorted(range(len(candidates)), key=lambda k: priority[k]):
        i, j = candidates[k]
        if not taken[i : j + 1].any():
            taken[i : j + 1] = True
            picked.append((i, j))
    return sorted(picked)


__all__ = [
    "allowed_low",
    "contrast_table",
    "dead_layers",
    "interval_means",
    "live_stretches",
    "SCORE_TIE",
    "pick_disjoint",
    "pick_standing_out",
    "segmented_contrast",
    "symmetric_cells",
    "typical_contrast",
    "uniform_intervals",
]
