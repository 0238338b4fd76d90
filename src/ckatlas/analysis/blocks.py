"""Block structure: contiguous runs of layers whose representations are uniformly similar.

Wide or deep networks (relative to the data) show a *block structure* (Nguyen, Raghu &
Kornblith, 2021): a large contiguous run of layers, mostly late in the network, whose
pairwise CKA is close to 1, a bright square on the CKA heatmap. Residual networks also
show a fine *checkerboard* (post-residual sums similar to one another, layers inside
the residual branches not); that alternation is not a block.

The algorithm (`find_blocks`), on a square within-model CKA matrix ``C`` of L layers:

1. A pair of layers (a, b), a != b, is *high* when both ``C[a, b]`` and ``C[b, a]``
   are >= ``threshold``. NaN (a dead layer whose CKA is undefined) counts as low, so a
   dead layer is never inside a block. The diagonal is ignored.
2. An interval of layers [i, j] (in layer order, j inclusive) is *uniformly high* when
   every layer k in it is high with all but at most ``floor(tolerance * (size - 1))``
   of the other layers of the interval. With ``tolerance=0`` this is "the minimum
   off-diagonal CKA of the sub-matrix is >= threshold". The condition is per layer, not
   per interval, so a large block cannot absorb a neighbouring layer that is unlike it,
   and a checkerboard (where about half of every layer's partners are low) or a block
   with a dissimilar layer or patch in the middle (a hole) fails.
3. Of the uniformly high intervals with ``size >= max(min_size, ceil(min_fraction * L))``,
   blocks are picked greedily: the largest first (ties: the higher mean CKA, then the
   earlier start), skipping any interval that overlaps one already picked. Blocks
   therefore never overlap, and each one is maximal among the intervals still free.

Every interval is tested, in O(L^3) time with NumPy (row prefix sums of the low-pair
indicator), which is well under a second for the few hundred layers of a ResNet's
"all" layer list.

`block_fraction` is the share of the analysed layers that lie inside a block.
`block_stability` (`ckatlas.analysis.stability`) compares the blocks found in several models.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ckatlas.errors import UserInputError
from ckatlas.results import JsonResult

_FORMAT = "ckatlas.BlockResult"


@dataclass(frozen=True)
class Block:
    """One block: analysed layers ``start`` to ``end``, both inclusive (0-based).

    Attributes:
        start: first layer of the block, an index into the analysed layers.
        end: last layer of the block (inclusive).
        mean_cka: mean off-diagonal CKA inside the block (NaN entries skipped).
        min_cka: smallest off-diagonal CKA inside the block (below the threshold when
            the tolerance let a few low pairs in).
    """

    start: int
    end: int
    mean_cka: float
    min_cka: float

    @property
    def size(self) -> int:
        """Number of layers in the block."""
        return self.end - self.start + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "size": self.size,
            "mean_cka": self.mean_cka,
            "min_cka": self.min_cka,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Block:
        return cls(int(data["start"]), int(data["end"]), float(data["mean_cka"]), float(data["min_cka"]))


@dataclass
class BlockResult(JsonResult):
    """The blocks found in one CKA matrix, and the settings that found them.

    Attributes:
        blocks: the blocks, in layer order.
        num_layers: number of analysed layers.
        layer_indices: for each analysed layer, its row in the input matrix.
        layer_names: names of the analysed layers, when known.
        threshold, tolerance, min_size: the settings used (``min_size`` is the
            effective minimum, after ``min_fraction``).
    """

    FORMAT = "ckatlas.BlockResult"
    WHAT = "a block result"

    blocks: list[Block]
    num_layers: int
    layer_indices: list[int]
    threshold: float
    tolerance: float
    min_size: int
    layer_names: list[str] | None = None

    @property
    def in_block(self) -> np.ndarray:
        """(num_layers,) bool: whether each analysed layer lies inside a block."""
        mask = np.zeros(self.num_layers, dtype=bool)
        for b in self.blocks:
            mask[b.start : b.end + 1] = True
        return mask

    @property
    def block_fraction(self) -> float:
        """Share of the analysed layers that lie inside a block, in [0, 1]."""
        return float(self.in_block.mean()) if self.num_layers else 0.0

    def block_layers(self, block: Block) -> list[str]:
        """Names of the layers in `block` (indices as strings when names are unknown)."""
        names = self.layer_names or [str(i) for i in self.layer_indices]
        return names[block.start : block.end + 1]

    def summary(self) -> str:
        """A few human-readable lines."""
        head = (
            f"{len(self.blocks)} block(s) in {self.num_layers} layers, block_fraction {self.block_fraction:.2f} "
            f"(threshold {self.threshold:g}, tolerance {self.tolerance:g}, min_size {self.min_size})"
        )
        lines = [head]
        for b in self.blocks:
            names = self.block_layers(b)
            named = f", {names[0]} .. {names[-1]}" if self.layer_names is not None else ""
            lines.append(
                f"  layers {b.start}-{b.end} ({b.size} layers{named}): mean CKA {b.mean_cka:.3f}, min {b.min_cka:.3f}"
            )
        return "\n".join(lines)

    def fields(self) -> dict[str, Any]:
        return {
            "blocks": [b.to_dict() for b in self.blocks],
            "block_fraction": self.block_fraction,
            "num_layers": self.num_layers,
            "layer_indices": list(self.layer_indices),
            "layer_names": None if self.layer_names is None else list(self.layer_names),
            "threshold": self.threshold,
            "tolerance": self.tolerance,
            "min_size": self.min_size,
        }

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> BlockResult:
        return cls(
            blocks=[Block.from_dict(b) for b in data["blocks"]],
            num_layers=int(data["num_layers"]),
            layer_indices=[int(i) for i in data["layer_indices"]],
            threshold=float(data["threshold"]),
            tolerance=float(data["tolerance"]),
            min_size=int(data["min_size"]),
            layer_names=data.get("layer_names"),
        )


def find_blocks(
    cka_matrix: Any,
    *,
    threshold: float = 0.9,
    tolerance: float = 0.1,
    min_size: int = 3,
    min_fraction: float = 0.1,
    layers: Sequence[str | int] | None = None,
    layer_names: Sequence[str] | None = None,
) -> BlockResult:
    """Find the block structure of a within-model CKA matrix (algorithm: module docstring).

    Args:
        cka_matrix: square (L, L) CKA matrix of one model's layers against themselves,
            as an array, or any object with a ``.matrix`` attribute (a `CKAResult`),
            whose ``.layers_a`` then names the layers. NaN marks a dead layer.
        threshold: CKA at or above which two layers count as similar. The default asks
            for the near-1 similarity inside the paper's blocks; neighbouring layers of
            any network can be that similar too, which ``min_size`` and ``min_fraction``
            guard against. Tune all three for your models.
        tolerance: fraction, in [0, 0.5), of a layer's partners inside a block that may
            fall below ``threshold`` (noise tolerance; 0 asks for the minimum to pass).
        min_size: smallest block, in layers (>= 2).
        min_fraction: smallest block as a fraction of the analysed layers; the effective
            minimum is ``max(min_size, ceil(min_fraction * L))``.
        layers: analyse only these layers (names or row indices), e.g. block outputs
            only; they are taken in model order.
        layer_names: names of the matrix's rows (overrides ``.layers_a``).

    Returns:
        A `BlockResult`; block indices refer to the analysed layers.

    Raises:
        UserInputError: a matrix that is not square, holds infinities or values above 1,
            a layer that does not exist, or settings out of range.
    """
    matrix, names = _as_matrix(cka_matrix, layer_names)
    _check_settings(threshold, tolerance, min_size, min_fraction)
    indices = _select_layers(layers, names, matrix.shape[0])
    sub = matrix[np.ix_(indices, indices)]
    num_layers = len(indices)
    effective_min = max(min_size, math.ceil(min_fraction * num_layers))

    low = ~((sub >= threshold) & (sub.T >= threshold))  # NaN compares False: low
    np.fill_diagonal(low, False)
    candidates = _uniform_intervals(low, tolerance, effective_min)
    blocks = _pick_blocks(candidates, sub)
    return BlockResult(
        blocks=blocks,
        num_layers=num_layers,
        layer_indices=[int(i) for i in indices],
        threshold=float(threshold),
        tolerance=float(tolerance),
        min_size=int(effective_min),
        layer_names=None if names is None else [names[i] for i in indices],
    )


def _allowed_low(size: np.ndarray | int, tolerance: float) -> np.ndarray:
    # A small epsilon so that e.g. 0.1 * 10 counts as 1, not 0.999...
    return np.floor(tolerance * (np.asarray(size) - 1) + 1e-9).astype(np.int64)


def _uniform_intervals(low: np.ndarray, tolerance: float, min_size: int) -> list[tuple[int, int]]:
    """All intervals [i, j] (inclusive) of size >= min_size that are uniformly high."""
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
        ok = (worst <= _allowed_low(sizes, tolerance)) & (sizes >= min_size)
        out.extend((i, i + int(s) - 1) for s in sizes[ok])
    return out


def _block_stats(sub: np.ndarray, start: int, end: int) -> tuple[float, float]:
    """Mean and minimum off-diagonal CKA of the block (NaN skipped)."""
    part = sub[start : end + 1, start : end + 1]
    off = part[~np.eye(part.shape[0], dtype=bool)]
    off = off[~np.isnan(off)]
    return float(off.mean()), float(off.min())


def _interval_means(candidates: list[tuple[int, int]], sub: np.ndarray) -> np.ndarray:
    """Mean off-diagonal CKA of each interval, from 2-D prefix sums (O(1) per interval)."""
    valid = ~np.isnan(sub)
    np.fill_diagonal(valid, False)
    values = np.where(valid, sub, 0.0)
    sums = np.pad(values.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = np.pad(valid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    i = np.array([c[0] for c in candidates], dtype=np.int64)
    j = np.array([c[1] for c in candidates], dtype=np.int64) + 1

    def rect(table: np.ndarray) -> np.ndarray:
        return table[j, j] - table[i, j] - table[j, i] + table[i, i]

    return rect(sums) / np.maximum(rect(counts), 1)


def _pick_blocks(candidates: list[tuple[int, int]], sub: np.ndarray) -> list[Block]:
    """Greedy: largest first (then higher mean CKA, then earlier start), no overlaps."""
    if not candidates:
        return []
    means = _interval_means(candidates, sub)
    order = sorted(
        range(len(candidates)), key=lambda k: (candidates[k][0] - candidates[k][1], -means[k], candidates[k][0])
    )
    taken = np.zeros(sub.shape[0], dtype=bool)
    blocks = []
    for k in order:
        i, j = candidates[k]
        if not taken[i : j + 1].any():
            taken[i : j + 1] = True
            blocks.append(Block(i, j, *_block_stats(sub, i, j)))
    return sorted(blocks, key=lambda b: b.start)


def _as_matrix(cka_matrix: Any, layer_names: Sequence[str] | None) -> tuple[np.ndarray, list[str] | None]:
    names = layer_names
    source = cka_matrix
    if hasattr(cka_matrix, "matrix"):
        source = cka_matrix.matrix
        layers_a = getattr(cka_matrix, "layers_a", None)
        layers_b = getattr(cka_matrix, "layers_b", None)
        cross = getattr(cka_matrix, "is_square", True) is False
        if cross or (layers_a is not None and layers_b is not None and list(layers_a) != list(layers_b)):
            raise UserInputError(
                "block structure needs one model's layers against themselves; this CKA result compares "
                "two models or two layer lists"
            )
        if names is None and layers_a is not None:
            names = list(layers_a)
    try:
        matrix = np.array(source, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserInputError(
            f"expected a square CKA matrix of numbers (or an object with .matrix), got {type(source).__name__}"
        ) from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise UserInputError(f"expected a square (L, L) CKA matrix, got shape {matrix.shape}")
    if np.isinf(matrix).any():
        raise UserInputError("the CKA matrix holds infinities; expected values in [0, 1] (NaN for dead layers)")
    if np.nanmax(matrix, initial=0.0) > 1.0 + 1e-6:
        raise UserInputError(
            f"the CKA matrix holds values above 1 (max {np.nanmax(matrix):.4g}); expected CKA values in [0, 1]"
        )
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != matrix.shape[0]:
            raise UserInputError(f"{len(names)} layer names for a matrix of {matrix.shape[0]} layers")
    _check_dead_layers(matrix, names)
    return matrix, names


def _check_dead_layers(matrix: np.ndarray, names: list[str] | None) -> None:
    """No finite CKA at all is an error; layers without one (dead, zero variance) are a warning."""
    off = ~np.eye(matrix.shape[0], dtype=bool)
    finite = np.isfinite(matrix) & off
    if matrix.shape[0] > 1 and not finite.any():
        raise UserInputError(
            f"the {matrix.shape[0]} x {matrix.shape[0]} CKA matrix holds no finite value between two layers (all NaN): "
            "every layer had zero variance, or this is not a CKA matrix; nothing to find blocks in"
        )
    dead = np.flatnonzero(~finite.any(axis=1)) if matrix.shape[0] > 1 else []
    if len(dead):
        shown = [names[i] if names is not None else int(i) for i in dead[:5]]
        warnings.warn(
            f"{len(dead)} of {matrix.shape[0]} layers have no finite CKA (dead layers, zero variance) and cannot be "
            f"in a block: {shown}{' ...' if len(dead) > 5 else ''}",
            RuntimeWarning,
            stacklevel=4,
        )


def _select_layers(layers: Sequence[str | int] | None, names: list[str] | None, size: int) -> np.ndarray:
    if layers is None:
        return np.arange(size)
    if isinstance(layers, str):
        layers = [layers]
    chosen = []
    for layer in layers:
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if not 0 <= layer < size:
                raise UserInputError(f"layer index {layer} does not exist; the matrix has layers 0..{size - 1}")
            chosen.append(int(layer))
        elif names is None:
            raise UserInputError(
                f"layer {layer!r} given by name, but the matrix has no layer names (pass layer_names=)"
            )
        elif layer not in names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise UserInputError(f"layer {layer!r} does not exist; known layers: {shown}")
        else:
            chosen.append(names.index(layer))
    if len(set(chosen)) != len(chosen):
        raise UserInputError("the same layer is listed twice in layers=")
    if len(chosen) < 2:
        raise UserInputError(f"block structure needs at least 2 layers, got {len(chosen)}")
    return np.array(sorted(chosen))


def _check_settings(threshold: float, tolerance: float, min_size: int, min_fraction: float) -> None:
    if not 0 < threshold <= 1:
        raise UserInputError(f"threshold must be in (0, 1], got {threshold}")
    if not 0 <= tolerance < 0.5:
        raise UserInputError(f"tolerance must be in [0, 0.5), got {tolerance}")
    if isinstance(min_size, bool) or int(min_size) != min_size or min_size < 2:
        raise UserInputError(f"min_size must be an integer >= 2, got {min_size}")
    if not 0 <= min_fraction <= 1:
        raise UserInputError(f"min_fraction must be in [0, 1], got {min_fraction}")


__all__ = ["Block", "BlockResult", "find_blocks"]
