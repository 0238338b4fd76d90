"""The experiment file's simple tables: `[dataset]`, `[[grid]]` and `[cka]`, each a frozen
dataclass that checks itself (`load_config` runs the checks; re-exported by
`ckatlas.experiment.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ckatlas.errors import UserInputError
from ckatlas.cka.measures import MEASURES
from ckatlas.capture.tokens import TOKEN_MODES


def valid_depths(up_to: int = 164) -> list[int]:
    """Depths the CIFAR ResNet family accepts: 6n+2, n >= 1."""
    return list(range(8, up_to + 1, 6))


@dataclass(frozen=True)
class DatasetConfig:
    """`[dataset]`: what `ckatlas.data.load_dataset` loads (the training fraction comes from the grid)."""

    name: str = "digits"
    data_dir: str | None = None
    resize: int | None = None


@dataclass(frozen=True)
class GridConfig:
    """One `[[grid]]` table: every combination of its lists is a training run."""

    depths: tuple[int, ...]
    widths: tuple[float, ...] = (1.0,)
    residual: tuple[bool, ...] = (True,)
    seeds: tuple[int, ...] = (0,)
    fractions: tuple[float, ...] = (1.0,)
    family: Literal["resnet", "vit"] = "resnet"

    def check(self, where: str) -> None:
        """One clear error for a table that cannot be run (`where` names it in the message)."""
        for key in ("depths", "widths", "residual", "seeds", "fractions"):
            values = getattr(self, key)
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise UserInputError(f"{key} in {where} lists {repeated[0]!r} more than once")
        if self.family == "vit":
            if False in self.residual:
                raise UserInputError(f"residual = [false] in {where} is for the CNN family; a vision transformer keeps "
                                     "its residual connections")
            bad = [d for d in self.depths if d < 1]
            if bad:
                raise UserInputError(f"depth {bad[0]} in {where} must be >= 1 (a vision transformer's number of blocks)")
        for depth in self.depths if self.family == "resnet" else ():
            if depth < 8 or (depth - 2) % 6:
                shown = ", ".join(str(d) for d in valid_depths(56))
                raise UserInputError(f"depth {depth} in {where} is not 6n+2 (n >= 1); valid depths are {shown}, ..., 110, 164")
        for width in self.widths:
            if not width > 0:
                raise UserInputError(f"width {width:g} in {where} must be > 0 (a channel multiplier, e.g. 0.5, 1, 2)")
        for seed in self.seeds:
            if seed < 0:
                raise UserInputError(f"seed {seed} in {where} must be >= 0")
        for fraction in self.fractions:
            if not 0 < fraction <= 1:
                raise UserInputError(f"fraction {fraction:g} in {where} must be in (0, 1] (a share of the training set)")


@dataclass(frozen=True)
class CKAConfig:
    """`[cka]`: how every heatmap is computed (`ckatlas.heatmap`), on the test split.

    `num_examples` takes the first N test examples (None: all of them); `passes`
    reshuffles them each pass (the paper uses 10). `tokens`: how a transformer layer's
    token sequence becomes one example's representation (`ckatlas.capture.tokens`: "auto",
    "flatten", "mean", "first", "last"), for the heatmaps, PCA, dynamics and origins.
    `measure`: what each heatmap cell holds, a name in `ckatlas.cka.measures.MEASURES` ("cka", the
    paper's minibatch linear CKA, by default); the blocks are then found on that measure's heatmaps.
    """

    layers: Literal["blocks", "all"] = "blocks"
    batch_size: int = 256
    passes: int = 1
    num_examples: int | None = None
    seed: int = 0
    tokens: str = "auto"
    measure: str = "cka"

    def check(self) -> None:
        """One clear error for settings the estimator cannot use."""
        if self.batch_size < 4:
            raise UserInputError(f"batch_size in [cka] must be >= 4 (the unbiased estimator's minimum), got {self.batch_size}")
        if self.passes < 1:
            raise UserInputError(f"passes in [cka] must be >= 1, got {self.passes}")
        if self.tokens not in TOKEN_MODES:
            raise UserInputError(f"tokens in [cka] must be one of {', '.join(TOKEN_MODES)}, got {self.tokens!r}")
        if self.measure not in MEASURES:
            raise UserInputError(f"measure in [cka] must be one of {', '.join(MEASURES)}, got {self.measure!r}")
        if self.num_examples is not None and self.num_examples < 4:
            raise UserInputError(f"num_examples in [cka] must be >= 4 (or left out for the whole test split), got {self.num_examples}")


__all__ = ["CKAConfig", "DatasetConfig", "GridConfig", "valid_depths"]
