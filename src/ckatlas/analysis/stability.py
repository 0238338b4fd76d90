"""How much the blocks found in several models (e.g. seeds) agree: `block_stability`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ckatlas.analysis.blocks import Block, BlockResult
from ckatlas.errors import UserInputError
from ckatlas.io.results import JsonResult


@dataclass
class BlockStability(JsonResult):
    """How much the blocks of several models (e.g. seeds) agree.

    Every statistic is derived from ``results``; ``to_dict`` writes them out.

    Attributes:
        results: one `BlockResult` per model, all over the same layers.
        labels: a label per model (e.g. the seed or the file it came from).
    """

    FORMAT = "ckatlas.BlockStability"
    WHAT = "a block stability result"

    results: list[BlockResult]
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.results) < 2:
            raise UserInputError(f"block stability needs at least 2 results (e.g. seeds), got {len(self.results)}")
        first = self.results[0]
        for r in self.results[1:]:
            if r.num_layers != first.num_layers or (
                r.layer_names is not None and first.layer_names is not None and r.layer_names != first.layer_names
            ):
                raise UserInputError(
                    f"block results cover different layers ({first.num_layers} vs {r.num_layers} layers, "
                    "or different names); compare models of one architecture"
                )
        if not self.labels:
            self.labels = [str(i) for i in range(len(self.results))]
        if len(self.labels) != len(self.results):
            raise UserInputError(f"{len(self.labels)} labels for {len(self.results)} results")

    @property
    def layer_frequency(self) -> np.ndarray:
        """(num_layers,) share of models in which each layer lies inside a block."""
        return np.mean([r.in_block for r in self.results], axis=0)

    @property
    def jaccard(self) -> np.ndarray:
        """(S, S) Jaccard overlap of the models' in-block layer sets (1 where both are empty)."""
        masks = [r.in_block for r in self.results]
        s = len(masks)
        out = np.ones((s, s))
        for a in range(s):
            for b in range(a + 1, s):
                union = (masks[a] | masks[b]).sum()
                out[a, b] = out[b, a] = (masks[a] & masks[b]).sum() / union if union else 1.0
        return out

    @property
    def mean_jaccard(self) -> float:
        """Mean Jaccard overlap over the pairs of models."""
        s = len(self.results)
        return float(self.jaccard[np.triu_indices(s, k=1)].mean())

    @property
    def block_fractions(self) -> np.ndarray:
        """(S,) block_fraction of each model."""
        return np.array([r.block_fraction for r in self.results])

    @property
    def largest_blocks(self) -> list[Block | None]:
        """Each model's largest block (ties: higher mean CKA), None where it has none."""
        return [max(r.blocks, key=lambda b: (b.size, b.mean_cka), default=None) for r in self.results]

    def summary(self) -> str:
        """A few human-readable lines."""
        fractions = self.block_fractions
        lines = [
            f"{len(self.results)} models: block_fraction {fractions.mean():.2f} ± {fractions.std(ddof=1):.2f} "
            f"(mean ± std), mean pairwise Jaccard of in-block layers {self.mean_jaccard:.2f}"
        ]
        largest = [b for b in self.largest_blocks if b is not None]
        if largest:
            starts = np.array([b.start for b in largest])
            ends = np.array([b.end for b in largest])
            lines.append(
                f"largest block (in {len(largest)} of {len(self.results)} models): start {_spread(starts)}, "
                f"end {_spread(ends)}, layers {starts.min()}-{ends.max()} at the widest"
            )
        else:
            lines.append("no model has a block")
        return "\n".join(lines)

    def fields(self) -> dict[str, Any]:
        largest = self.largest_blocks
        return {
            "labels": list(self.labels),
            "num_layers": self.results[0].num_layers,
            "block_fraction_mean": float(self.block_fractions.mean()),
            "block_fraction_std": float(self.block_fractions.std(ddof=1)),
            "mean_jaccard": self.mean_jaccard,
            "jaccard": self.jaccard.tolist(),
            "layer_frequency": self.layer_frequency.tolist(),
            "largest_blocks": [None if b is None else b.to_dict() for b in largest],
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> BlockStability:
        return cls([BlockResult.from_dict(r) for r in data["results"]], list(data["labels"]))


def _spread(values: np.ndarray) -> str:
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def block_stability(results: Sequence[BlockResult], labels: Sequence[str] | None = None) -> BlockStability:
    """Compare the blocks found in several models of one architecture (e.g. seeds).

    Args:
        results: one `BlockResult` per model, over the same layers (at least 2).
        labels: a label per model for the report (default: 0, 1, ...).

    Returns:
        A `BlockStability` with the per-layer frequency of being in a block, the pairwise
        Jaccard overlap of the in-block layer sets, block_fraction mean and std, and the
        spread of the largest block's start and end.
    """
    return BlockStability(list(results), list(labels) if labels is not None else [])


__all__ = ["BlockStability", "block_stability"]
