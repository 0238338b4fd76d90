"""Checks of the `[[grid]]` and `[cka]` tables that span their fields (`load_config` runs them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ckatlas.errors import UserInputError
from ckatlas.tokens import TOKEN_MODES

if TYPE_CHECKING:  # pragma: no cover
    from ckatlas.experiment.config import CKAConfig, GridConfig


def valid_depths(up_to: int = 164) -> list[int]:
    """Depths the CIFAR ResNet family accepts: 6n+2, n >= 1."""
    return list(range(8, up_to + 1, 6))


def check_grid(grid: GridConfig, where: str) -> None:
    for key in ("depths", "widths", "residual", "seeds", "fractions"):
        values = getattr(grid, key)
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise UserInputError(f"{key} in {where} lists {repeated[0]!r} more than once")
    if grid.family == "vit":
        if False in grid.residual:
            raise UserInputError(f"residual = [false] in {where} is for the CNN family; a vision transformer keeps "
                                 "its residual connections")
        bad = [d for d in grid.depths if d < 1]
        if bad:
            raise UserInputError(f"depth {bad[0]} in {where} must be >= 1 (a vision transformer's number of blocks)")
    for depth in grid.depths if grid.family == "resnet" else ():
        if depth < 8 or (depth - 2) % 6:
            shown = ", ".join(str(d) for d in valid_depths(56))
            raise UserInputError(f"depth {depth} in {where} is not 6n+2 (n >= 1); valid depths are {shown}, ..., 110, 164")
    for width in grid.widths:
        if not width > 0:
            raise UserInputError(f"width {width:g} in {where} must be > 0 (a channel multiplier, e.g. 0.5, 1, 2)")
    for seed in grid.seeds:
        if seed < 0:
            raise UserInputError(f"seed {seed} in {where} must be >= 0")
    for fraction in grid.fractions:
        if not 0 < fraction <= 1:
            raise UserInputError(f"fraction {fraction:g} in {where} must be in (0, 1] (a share of the training set)")


def check_cka(cka: CKAConfig) -> None:
    if cka.batch_size < 4:
        raise UserInputError(f"batch_size in [cka] must be >= 4 (the unbiased estimator's minimum), got {cka.batch_size}")
    if cka.passes < 1:
        raise UserInputError(f"passes in [cka] must be >= 1, got {cka.passes}")
    if cka.tokens not in TOKEN_MODES:
        raise UserInputError(f"tokens in [cka] must be one of {', '.join(TOKEN_MODES)}, got {cka.tokens!r}")
    if cka.num_examples is not None and cka.num_examples < 4:
        raise UserInputError(f"num_examples in [cka] must be >= 4 (or left out for the whole test split), got {cka.num_examples}")


__all__ = ["check_cka", "check_grid", "valid_depths"]
