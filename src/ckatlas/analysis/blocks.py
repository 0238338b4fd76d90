"""Block structure: contiguous runs of layers whose representations stand out as alike.

Wide or deep networks (relative to the data) show a *block structure* (Nguyen, Raghu &
Kornblith, 2021): a large contiguous run of layers, mostly late in the network, that are
much more similar to one another than to the layers around them, a square that stands out
on the CKA heatmap. Residual networks also show a fine *checkerboard* (post-residual sums
similar to one another, layers inside the residual branches not), and every network a
smooth decay of similarity away from the diagonal; neither is a block.

`BlockDetector` holds how blocks are found, with one set of defaults that every caller
(`find_blocks`, `ckatlas blocks`, `[analyses.blocks]`, training dynamics, the claims,
`ckatlas.hf`) shares. Two rules (`ckatlas.analysis.block_rules` has the formulas):

- ``method="contrast"`` (the default): every run of at least ``max(min_size,
  ceil(min_fraction * L))`` layers is scored by how much the CKA of its pairs exceeds that
  of the pairs at the same distance from the diagonal that straddle its borders (each
  border judged on its own, when at least ``border_fraction`` of the layers lie beyond it;
  the weaker decides),
  relative to the dissimilarity across the border (``score`` in [.., 1]; ``gap`` the same excess in
  CKA units). A run is a block when ``score >= min_score`` and ``gap >= min_gap``, both
  with the mean and with the median of the straddling pairs (`typical_contrast`: a square
  cut off from squares as alike as it by a thin line of unlike layers is not a block): the
  score makes the verdict independent of the heatmap's floor, the gap asks for a
  difference a reader can see. Of the qualifying runs the highest-scoring is taken first
  (scores within `SCORE_TIE` of the best count as equal, and the largest of them wins: a
  block is not cut short by noise), skipping any that overlaps one already taken.
- ``method="threshold"`` (earlier releases; for comparison): a run is a block when each of
  its layers reaches CKA ``threshold`` with all but a ``tolerance`` share of the others;
  the largest runs are taken first. It measures how bright a square is, not whether it
  stands out.

A layer with no finite CKA (dead, zero variance) is never inside a block and separates the
layers before it from those after it (runs are judged within each stretch of live layers);
other NaN cells are skipped. Every block carries its contrast ``score`` and ``gap`` whichever rule found it.
Per model: ``block_fraction`` (share of the layers inside a block), ``block_strength``
(the same share weighted by each block's score), ``block_area`` (the contrast rule's block
fraction averaged over ``min_score`` from 0.05 to 1: continuous and free of the threshold,
the statistic of the trend claims, since a square whose score sits near ``min_score`` makes
fraction and strength jump between 0 and its size from seed to seed) and ``peak_score``
(the best score of any run long enough to be a block, found or not). `block_stability` (`ckatlas.analysis.stability`) compares the blocks
of several models.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ckatlas.analysis.block_inputs import as_matrix, select_layers
from ckatlas.analysis.block_rules import (
    interval_means,
    live_stretches,
    pick_disjoint,
    pick_standing_out,
    segmented_contrast,
    typical_contrast,
    uniform_intervals,
)
from ckatlas.errors import UserInputError
from ckatlas.io.results import JsonResult

METHODS = ("contrast", "threshold")

#: The min_score levels `BlockResult.block_area` averages the contrast rule's block fraction over.
AREA_LEVELS = tuple(np.arange(1, 21) / 20)


@dataclass(frozen=True)
class BlockDetector:
    """How blocks are found (module docstring); checked when made.

    Attributes:
        method: "contrast" (a block stands out from its surroundings) or "threshold"
            (a block is uniformly above a CKA level; earlier releases).
        min_score: contrast: smallest score of a block, in (0, 1].
        min_gap: contrast: smallest gap of a block, in CKA units, in [0, 1).
        threshold: threshold rule: CKA at or above which two layers count as similar.
        tolerance: threshold rule: share of a layer's partners allowed below it, in [0, 0.5).
        min_size: smallest block, in layers (>= 2).
        min_fraction: smallest block as a share of the analysed layers; the effective
            minimum is ``max(min_size, ceil(min_fraction * L))``.
        border_fraction: contrast: a border is judged only with at least this share of the
            analysed layers beyond it (``ceil(border_fraction * L)``, at least one). 0.15: at 10%
            a uniformly bright untrained ResNet-8 (30 layers) was one block of layers 2-26, judged
            against its relu, pool and fc alone (docs/gallery). Results saved before it existed
            were found with ``min_fraction`` (`ckatlas.io.formats.complete_detector`).
    """

    method: Literal["contrast", "threshold"] = "contrast"
    min_score: float = 0.5
    min_gap: float = 0.05
    threshold: float = 0.9
    tolerance: float = 0.1
    min_size: int = 3
    min_fraction: float = 0.1
    border_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserInputError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("min_score", "min_gap", "threshold", "tolerance", "min_fraction", "border_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserInputError(f"{name} must be a number, got {value!r}")
        if not 0 < self.min_score <= 1:
            raise UserInputError(f"min_score must be in (0, 1], got {self.min_score}")
        if not 0 <= self.min_gap < 1:
            raise UserInputError(f"min_gap must be in [0, 1), got {self.min_gap}")
        if not 0 < self.threshold <= 1:
            raise UserInputError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0 <= self.tolerance < 0.5:
            raise UserInputError(f"tolerance must be in [0, 0.5), got {self.tolerance}")
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, (int, np.integer)) or self.min_size < 2:
            raise UserInputError(f"min_size must be an integer >= 2, got {self.min_size!r}")
        if not 0 <= self.min_fraction <= 1:
            raise UserInputError(f"min_fraction must be in [0, 1], got {self.min_fraction}")
        if not 0 <= self.border_fraction <= 1:
            raise UserInputError(f"border_fraction must be in [0, 1], got {self.border_fraction}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "the block detector") -> BlockDetector:
        """A detector from a mapping of its fields (a TOML table, a JSON object); unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserInputError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**dict(data))
        except UserInputError as exc:
            raise UserInputError(f"{where}: {exc}") from None

    @classmethod
    def from_saved(cls, table: Mapping[str, Any] | None, where: str = "the saved detector") -> BlockDetector:
        """The detector of a saved ``[analyses.blocks]`` table (summary.json, experiment.json, a result's
        metadata, as `ckatlas.io.formats` brought it to the current version): its ``on`` (the rows) is left out;
        no table is the default detector."""
        return cls.from_dict({k: v for k, v in (table or {}).items() if k != "on"}, where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> BlockDetector:
        """The same detector with some settings changed (checked; an unknown setting is an error)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(BlockDetector)})
        if unknown:
            raise UserInputError(f"unknown block detector setting(s) {unknown}")
        return dataclasses.replace(self, **changes)

    def smallest_block(self, num_layers: int) -> int:
        """The effective minimum block size for `num_layers` analysed layers."""
        return max(int(self.min_size), math.ceil(self.min_fraction * num_layers))

    def border_context(self, num_layers: int) -> int:
        """Layers a border needs beyond it to be judged: ``border_fraction`` of the analysed layers, at least one."""
        return max(1, math.ceil(self.border_fraction * num_layers))

    def describe(self) -> str:
        """One line saying what counts as a block."""
        size = f"at least {self.min_size} layers and {self.min_fraction:.0%} of them"
        if self.method == "contrast":
            return (f"contrast rule: a run of layers that stands out from its surroundings by a score of at least "
                    f"{self.min_score:g} and a CKA gap of at least {self.min_gap:g}, {size}; a border judged with "
                    f"{self.border_fraction:.0%} of the layers beyond it")
        return (f"threshold rule: a run of layers each at CKA >= {self.threshold:g} with all but "
                f"{self.tolerance:.0%} of the others, {size}")

    def find(self, cka_matrix: Any, *, layers: Sequence[str | int] | None = None,
             layer_names: Sequence[str] | None = None) -> BlockResult:
        """The blocks of one within-model CKA matrix (`find_blocks`)."""
        matrix, names = as_matrix(cka_matrix, layer_names)
        indices = select_layers(layers, names, matrix.shape[0])
        sub = matrix[np.ix_(indices, indices)]
        num_layers = len(indices)
        smallest = self.smallest_block(num_layers)
        beyond = self.border_context(num_layers)
        score, gap = segmented_contrast(sub, beyond)  # NaN for any run with a dead layer in it
        size = np.arange(num_layers)[None, :] - np.arange(num_layers)[:, None] + 1
        admissible = size >= smallest
        stretches = live_stretches(sub)
        typical: dict[tuple[int, int], tuple[float, float]] = {}

        def standing_out(min_score: float) -> list[tuple[int, int]]:
            """The contrast rule's blocks at `min_score` (the surroundings' median must pass too; each run's
            median contrast is computed once, whichever levels ask for it)."""

            def typical_passes(run: tuple[int, int]) -> bool:
                if run not in typical:
                    start, stop = next(s for s in stretches if s[0] <= run[0] < s[1])
                    part = sub[start:stop, start:stop]
                    t_score, t_gap = typical_contrast(part, [(run[0] - start, run[1] - start)], beyond)[0]
                    typical[run] = (float(t_score), float(t_gap))
                t_score, t_gap = typical[run]
                return bool(t_score >= min_score and t_gap >= self.min_gap)

            ok = admissible & (score >= min_score) & (gap >= self.min_gap)
            return pick_standing_out([(int(i), int(j)) for i, j in zip(*np.nonzero(ok))], score, num_layers,
                                     typical_passes)

        if self.method == "contrast":
            spans = standing_out(self.min_score)
        else:
            candidates = uniform_intervals(sub, self.threshold, self.tolerance, smallest)
            means = interval_means(candidates, sub) if candidates else np.zeros(0)
            priority = [(i - j, -float(m), i) for (i, j), m in zip(candidates, means)]
            spans = pick_disjoint(candidates, priority, num_layers)
        covered = [sum(j - i + 1 for i, j in standing_out(level)) for level in AREA_LEVELS]
        peak = np.where(admissible, score, np.nan)
        return BlockResult(
            blocks=[_block(sub, i, j, score, gap) for i, j in spans],
            num_layers=num_layers,
            layer_indices=[int(i) for i in indices],
            detector=self,
            min_size=int(smallest),
            layer_names=None if names is None else [names[i] for i in indices],
            peak_score=float(np.nanmax(peak)) if np.isfinite(peak).any() else float("nan"),
            block_area=float(np.mean(covered)) / num_layers,
        )


@dataclass(frozen=True)
class Block:
    """One block: analysed layers ``start`` to ``end``, both inclusive (0-based).

    Attributes:
        start: first layer of the block, an index into the analysed layers.
        end: last layer of the block (inclusive).
        mean_cka: mean off-diagonal CKA inside the block (NaN entries skipped).
        min_cka: smallest off-diagonal CKA inside the block.
        score: how much the block stands out from its surroundings (contrast rule,
            module docstring): 1 for a uniform block, 0 for none; NaN when the block
            spans every layer (no border).
        gap: the same, in CKA units (mean inside minus across the border, at equal distances).
    """

    start: int
    end: int
    mean_cka: float
    min_cka: float
    score: float = float("nan")
    gap: float = float("nan")

    @property
    def size(self) -> int:
        """Number of layers in the block."""
        return self.end - self.start + 1

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "size": self.size, "mean_cka": self.mean_cka,
                "min_cka": self.min_cka, "score": self.score, "gap": self.gap}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Block:
        return cls(int(data["start"]), int(data["end"]), float(data["mean_cka"]), float(data["min_cka"]),
                   _number(data["score"]), _number(data["gap"]))


@dataclass
class BlockResult(JsonResult):
    """The blocks found in one CKA matrix, and the detector that found them.

    Attributes:
        blocks: the blocks, in layer order.
        num_layers: number of analysed layers.
        layer_indices: for each analysed layer, its row in the input matrix.
        detector: the `BlockDetector` used.
        min_size: the effective smallest block, in layers (after ``min_fraction``).
        layer_names: names of the analysed layers, when known.
        peak_score: the best contrast score of any run of at least ``min_size`` layers
            without a dead layer, found as a block or not (NaN when there is none).
        block_area: the contrast rule's block fraction averaged over ``min_score`` 0.05, 0.10,
            .., 1.00 (`AREA_LEVELS`; the detector's other settings as given): the share of the
            layers in a block, each counted up to the score at which its block stops being found.
            Free of the ``min_score`` threshold (``min_gap`` and the sizes still apply), so a square
            whose score sits near it does not jump between 0 and its size from seed to seed (NaN in
            results of earlier releases).
    """

    FORMAT = "ckatlas.BlockResult"
    WHAT = "a block result"

    blocks: list[Block]
    num_layers: int
    layer_indices: list[int]
    detector: BlockDetector
    min_size: int
    layer_names: list[str] | None = None
    peak_score: float = float("nan")
    block_area: float = float("nan")

    @property
    def layers(self) -> list[str]:
        """The analysed layers' names (as every single-model result names them: `PCAResult.layers`,
        `ProbeResult.layers`, ...); indices as strings when the heatmap had none. Saved as
        ``layer_names``."""
        return list(self.layer_names) if self.layer_names else [str(i) for i in self.layer_indices]

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

    @property
    def block_strength(self) -> float:
        """Share of the analysed layers inside a block, each weighted by its block's score (clipped
        to [0, 1]): 0 without a block, 1 for one uniform block over every layer."""
        if not self.num_layers:
            return 0.0
        total = sum(b.size * min(max(b.score, 0.0), 1.0) for b in self.blocks if math.isfinite(b.score))
        return float(total / self.num_layers)

    def block_layers(self, block: Block) -> list[str]:
        """Names of the layers in `block` (indices as strings when names are unknown)."""
        names = self.layer_names or [str(i) for i in self.layer_indices]
        return names[block.start : block.end + 1]

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"{len(self.blocks)} block(s) in {self.num_layers} layers, block_fraction {self.block_fraction:.2f}, "
            f"block_strength {self.block_strength:.2f}, block_area {self.block_area:.2f}, peak score "
            f"{self.peak_score:.2f} ({self.detector.method} rule)"
        ]
        for b in self.blocks:
            names = self.block_layers(b)
            named = f", {names[0]} .. {names[-1]}" if self.layer_names is not None else ""
            lines.append(f"  layers {b.start}-{b.end} ({b.size} layers{named}): score {b.score:.2f}, "
                         f"gap {b.gap:.3f}, mean CKA {b.mean_cka:.3f}, min {b.min_cka:.3f}")
        return "\n".join(lines)

    def fields(self) -> dict[str, Any]:
        return {
            "blocks": [b.to_dict() for b in self.blocks],
            "block_fraction": self.block_fraction,
            "block_strength": self.block_strength,
            "peak_score": self.peak_score,
            "block_area": self.block_area,
            "num_layers": self.num_layers,
            "layer_indices": list(self.layer_indices),
            "layer_names": None if self.layer_names is None else list(self.layer_names),
            "detector": self.detector.to_dict(),
            "min_size": self.min_size,
        }

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> BlockResult:
        detector = BlockDetector.from_dict(data["detector"], "the block result's detector")
        return cls(
            blocks=[Block.from_dict(b) for b in data["blocks"]],
            num_layers=int(data["num_layers"]),
            layer_indices=[int(i) for i in data["layer_indices"]],
            detector=detector,
            min_size=int(data["min_size"]),
            layer_names=data["layer_names"],
            peak_score=_number(data["peak_score"]),
            block_area=_number(data["block_area"]),
        )


def find_blocks(
    cka_matrix: Any,
    detector: BlockDetector | None = None,
    *,
    layers: Sequence[str | int] | None = None,
    layer_names: Sequence[str] | None = None,
    **settings: Any,
) -> BlockResult:
    """Find the block structure of a within-model CKA matrix (module docstring).

    Args:
        cka_matrix: square (L, L) CKA matrix of one model's layers against themselves,
            as an array, or any object with a ``.matrix`` attribute (a `CKAResult`),
            whose ``.layers_a`` then names the layers. NaN marks a dead layer.
        detector: how blocks are found (default: `BlockDetector()`, the contrast rule).
        layers: analyse only these layers (names or row indices), e.g. block outputs
            only; they are taken in model order.
        layer_names: names of the matrix's rows (overrides ``.layers_a``).
        **settings: fields of `BlockDetector` that replace the detector's
            (``find_blocks(m, min_score=0.6)``).

    Returns:
        A `BlockResult`; block indices refer to the analysed layers.

    Raises:
        UserInputError: a matrix that is not square, holds infinities or values above 1,
            a layer that does not exist, or settings out of range.
    """
    detector = (detector or BlockDetector()).replace(**settings)
    return detector.find(cka_matrix, layers=layers, layer_names=layer_names)


def find_threshold_blocks(cka_matrix: Any, *, threshold: float = 0.9, tolerance: float = 0.1, min_size: int = 3,
                          min_fraction: float = 0.1, layers: Sequence[str | int] | None = None,
                          layer_names: Sequence[str] | None = None) -> BlockResult:
    """The threshold rule of earlier releases (module docstring), for comparison with their results."""
    detector = BlockDetector(method="threshold", threshold=threshold, tolerance=tolerance, min_size=min_size,
                             min_fraction=min_fraction)
    return detector.find(cka_matrix, layers=layers, layer_names=layer_names)


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _block(sub: np.ndarray, start: int, end: int, score: np.ndarray, gap: np.ndarray) -> Block:
    part = sub[start : end + 1, start : end + 1]
    off = part[~np.eye(part.shape[0], dtype=bool)]
    off = off[~np.isnan(off)]
    return Block(start, end, float(off.mean()), float(off.min()), float(score[start, end]), float(gap[start, end]))



__all__ = ["AREA_LEVELS", "Block", "BlockDetector", "BlockResult", "find_blocks", "find_threshold_blocks"]
