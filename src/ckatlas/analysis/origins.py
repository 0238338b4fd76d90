"""Where a block comes from: the few examples that dominate its first principal component.

Nguyen, Raghu & Kornblith (2022, "On the origins of the block structure phenomenon in
neural network representations", TMLR) found that block structure is carried by a few
*dominant datapoints*: examples with very large activations along the block's first
principal component, sharing image statistics. `block_origins` measures this for each block
of one model, from the same per-batch Grams as the heatmap:

1. **Dominance.** For every layer of a block, the top eigenvector v of the batch's centred
   Gram (the first PC's per-example scores, normalised) gives each example's share v_i^2 of
   that PC; an example's dominance is its share averaged over the block's layers, times the
   batch size (1 for an average example).
2. **Left out.** The ``remove`` share of the examples most dominant in each block are left
   out and the heatmap is measured again (``cka_without``); as a control, as many examples
   drawn at random are left out instead (``cka_random``), so that a change that any smaller
   set of examples would cause is not taken for the dominant examples' doing.
3. **Normalised.** Each example's centred activation vector scaled to unit length (from the
   Gram: K_ij / sqrt(K_ii K_jj)), which takes away what large activation norms carry
   (``cka_normalised``).

Each block's contrast score (`ckatlas.analysis.block_rules`, with the detector that found
the blocks) is read off all four heatmaps for the same span of layers: if the dominant examples carry the block, it falls without them
(more than without random ones) and with normalised activations.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ckatlas.analysis.block_rules import contrast_table
from ckatlas.analysis.blocks import BlockDetector, BlockResult
from ckatlas.capture import LayerSpec
from ckatlas.capture.gram_passes import GramPasses
from ckatlas.cka import MinibatchCKA, center_gram, top_components
from ckatlas.errors import UserInputError
from ckatlas.io.results import NpzResult

HEATMAPS = ("cka", "cka_without", "cka_random", "cka_normalised")


@dataclass
class BlockOrigins(NpzResult):
    """What carries each block of one model (module docstring).

    Attributes:
        layers: the heatmap's L layers.
        blocks: per block, its [first, last] layer (inclusive, indices into `layers`).
        dominance: (B, N) each example's dominance in each block (1: an average example).
        dominant: (B, k) per block, the k most dominant examples (indices into the inputs), most first.
        removed: the examples left out for ``cka_without`` (every block's dominant ones).
        random_removed: the as many random examples left out for ``cka_random``.
        cka, cka_without, cka_random, cka_normalised: (L, L) the four heatmaps.
        images: (B, S, ...) the S most dominant inputs of each block (float16), for showing.
        metadata: examples, batch size, the share removed, the seed.
    """

    FORMAT = "ckatlas.BlockOrigins"
    WHAT = "a block origins result (origins.npz)"
    ARRAYS = ("dominance", "dominant", "removed", "random_removed", *HEATMAPS, "images")

    layers: list[str]
    blocks: list[list[int]]
    dominance: np.ndarray
    dominant: np.ndarray
    removed: np.ndarray
    random_removed: np.ndarray
    cka: np.ndarray
    cka_without: np.ndarray
    cka_random: np.ndarray
    cka_normalised: np.ndarray
    images: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def scores(self) -> dict[str, np.ndarray]:
        """(B,) each block's contrast score on each heatmap: "cka", "cka_without", "cka_random", "cka_normalised"."""
        out = {}
        detector = BlockDetector.from_saved(self.metadata.get("detector"))
        for name in HEATMAPS:
            table, _ = contrast_table(getattr(self, name), detector.border_context(len(self.layers)))
            out[name] = np.array([table[start, end] for start, end in self.blocks], dtype=np.float64)
        return out

    def dominant_share(self) -> np.ndarray:
        """(B,) the share of each block's first PC that its k dominant examples carry (k / N if none dominates)."""
        total = self.dominance.sum(axis=1)
        top = np.take_along_axis(self.dominance, self.dominant, axis=1).sum(axis=1)
        return np.where(total > 0, top / np.maximum(total, 1e-300), np.nan)

    def summary(self) -> str:
        if not self.blocks:
            return "no block: nothing to trace"
        scores = self.scores()
        share = self.dominant_share()
        lines = [f"{len(self.blocks)} block(s); {len(self.removed)} of {self.dominance.shape[1]} examples left out "
                 "(each block's most dominant), or as many random ones:"]
        for b, (start, end) in enumerate(self.blocks):
            lines.append(f"  layers {start}-{end}: the {self.dominant.shape[1]} most dominant examples carry "
                         f"{share[b]:.0%} of its PC1; score {scores['cka'][b]:.2f} -> without them "
                         f"{scores['cka_without'][b]:.2f}, without random ones {scores['cka_random'][b]:.2f}, "
                         f"normalised {scores['cka_normalised'][b]:.2f}")
        return "\n".join(lines)


@dataclass(frozen=True)
class OriginSettings:
    """How `block_origins` traces a block: the one place of these settings and their defaults
    (`[analyses.origins]` is this class with a run selection)."""

    remove: float = field(default=0.02, metadata={
        "help": "share of the examples left out per block (and as many random ones, the control)"})
    show: int = field(default=8, metadata={"help": "most dominant inputs kept per block, for figures"})

    def check(self, where: str = "") -> None:
        """One clear error for a setting `block_origins` cannot use."""
        if isinstance(self.remove, bool) or not isinstance(self.remove, (int, float)) or not 0 < self.remove < 0.5:
            raise UserInputError(f"remove{where} must be a share in (0, 0.5), got {self.remove}")
        if isinstance(self.show, bool) or not isinstance(self.show, int) or self.show < 0:
            raise UserInputError(f"show{where} must be an integer >= 0, got {self.show}")


def block_origins(
    model: nn.Module,
    inputs: torch.Tensor,
    blocks: BlockResult,
    *,
    layers: LayerSpec = "all",
    batch_size: int = 256,
    remove: float = OriginSettings.remove,
    show: int = OriginSettings.show,
    seed: int = 0,
    device: torch.device | str | None = None,
    tokens: str = "auto",
) -> BlockOrigins:
    """Trace each block of `blocks` to its dominant examples (module docstring).

    Args:
        model: the model whose heatmap `blocks` were found in.
        inputs: the examples (N, ...) of that heatmap, in a fixed order.
        blocks: its blocks; their layer names place them among `layers`.
        layers: the heatmap's layers (as for `heatmap`).
        batch_size: examples per minibatch (consecutive slices of `inputs`).
        remove: share of the examples left out per block (at least one).
        show: most dominant inputs kept per block, for figures.
        seed: seed of the random examples left out as the control.
        device: where the model runs (None: the device of its parameters).
        tokens: how a token sequence becomes one example's representation (as in `heatmap`).
    """
    if not isinstance(inputs, torch.Tensor):
        raise UserInputError(f"block_origins takes the inputs as one Tensor (N, ...), got {type(inputs).__name__}")
    OriginSettings(remove, show).check()
    count = len(inputs)
    first = _pass(model, inputs, layers, batch_size, device, tokens, blocks)
    spans = first["spans"]
    k = max(1, math.ceil(remove * count))
    dominance = first["dominance"]
    dominant = np.argsort(-dominance, axis=1, kind="stable")[:, :k] if spans else np.zeros((0, k), dtype=np.int64)
    removed = np.unique(dominant) if spans else np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    random_removed = np.sort(rng.choice(count, size=len(removed), replace=False)) if len(removed) else removed
    empty = np.full_like(first["cka"], np.nan)
    without = _pass(model, _drop(inputs, removed), layers, batch_size, device, tokens)["cka"] if len(removed) else empty
    random = (_pass(model, _drop(inputs, random_removed), layers, batch_size, device, tokens)["cka"] if len(removed)
              else empty)
    shown = dominant[:, :show]
    images = inputs.detach().cpu()[torch.from_numpy(shown.reshape(-1))].reshape(*shown.shape, *inputs.shape[1:])
    return BlockOrigins(
        layers=first["layers"], blocks=[list(s) for s in spans], dominance=dominance, dominant=dominant,
        removed=removed, random_removed=random_removed, cka=first["cka"], cka_without=without, cka_random=random,
        cka_normalised=first["normalised"], images=images.to(torch.float16).numpy(),
        metadata={"examples": count, "batch_size": batch_size, "remove": remove, "removed_per_block": k,
                  "seed": seed, "detector": blocks.detector.to_dict()},
    )


def _drop(inputs: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
    keep = np.setdiff1d(np.arange(len(inputs)), indices)
    return inputs[torch.from_numpy(keep)]


def _spans(blocks: BlockResult, layers: list[str]) -> list[tuple[int, int]]:
    """Each block as a span of heatmap layers (blocks found on a subset of them cover the layers between)."""
    names = blocks.layer_names
    if names is None:
        raise UserInputError("the block result has no layer names: find blocks on a CKAResult (or pass layer_names=)")
    spans = []
    for b in blocks.blocks:
        ends = blocks.block_layers(b)
        missing = [n for n in (ends[0], ends[-1]) if n not in layers]
        if missing:
            raise UserInputError(f"block layer {missing[0]!r} is not among the heatmap's layers; find the blocks on "
                                 "a heatmap of the same model and layers")
        spans.append((layers.index(ends[0]), layers.index(ends[-1])))
    return spans


def _pass(model: nn.Module, inputs: torch.Tensor, layers: LayerSpec, batch_size: int,
          device: torch.device | str | None, tokens: str, blocks: BlockResult | None = None) -> dict[str, Any]:
    """One pass: the heatmap, and with `blocks` also the normalised heatmap and every example's dominance."""
    loop = GramPasses([model], ["model"], [layers], inputs, min(batch_size, len(inputs)), 1, False, 0, device,
                      tokens=tokens, desc="origins")
    acc = acc_normalised = None
    dominance: np.ndarray | None = None
    spans: list[tuple[int, int]] = []
    offset = 0
    for (grams,) in loop:
        grams = center_gram(grams)  # (L, n, n), float64; a centred Gram stays as it is
        size, n = grams.shape[0], grams.shape[-1]
        if acc is None:
            acc = MinibatchCKA(size, device=loop.device)
            if blocks is not None:
                acc_normalised = MinibatchCKA(size, device=loop.device)
                spans = _spans(blocks, loop.names[0])
                dominance = np.zeros((len(spans), len(inputs)))
        acc.update_grams(grams)
        if blocks is not None:
            acc_normalised.update_grams(_normalised(grams))
            for b, (start, end) in enumerate(spans):
                vectors = top_components(grams[start : end + 1], 1)[1][..., 0]  # (Lb, n): each layer's top PC
                alive = torch.diagonal(grams[start : end + 1], dim1=1, dim2=2).sum(-1) > 0
                if bool(alive.any()):
                    dominance[b, offset : offset + n] = (vectors[alive] ** 2).mean(0).cpu().numpy() * n
        offset += n
    assert acc is not None
    out: dict[str, Any] = {"layers": list(loop.names[0]), "cka": _compute(acc), "spans": spans}
    if blocks is not None:
        out["normalised"] = _compute(acc_normalised)
        out["dominance"] = dominance[:, :offset]
    return out


def _normalised(grams: torch.Tensor) -> torch.Tensor:
    """The Grams of each example's centred activations scaled to unit length (0 for an example at the mean)."""
    diag = torch.diagonal(grams, dim1=1, dim2=2)
    scale = torch.where(diag > 0, diag.clamp_min(1e-300).rsqrt(), torch.zeros_like(diag))
    return grams * scale[:, :, None] * scale[:, None, :]


def _compute(acc: MinibatchCKA) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # dead layers: NaN, as in the heatmap
        return acc.compute().cpu().numpy()


__all__ = ["OriginSettings", "BlockOrigins", "block_origins"]
