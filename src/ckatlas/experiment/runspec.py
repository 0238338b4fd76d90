"""One training run of an experiment's grid (`RunSpec`): its architecture, width, data fraction and seed,
and the names derived from them (run directory, group, `create_model` name)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class RunSpec:
    """One model of the grid: architecture family and depth, width, training fraction and seed."""

    depth: int
    width: float
    residual: bool
    seed: int
    fraction: float = 1.0
    family: str = "resnet"

    @property
    def arch(self) -> str:
        """"resnet20", "cnn20" (no residual connections) or "vit4" (a vision transformer of 4 blocks)."""
        if self.family == "vit":
            return f"vit{self.depth}"
        return f"{'resnet' if self.residual else 'cnn'}{self.depth}"

    @property
    def model_name(self) -> str:
        """The `create_model` name ("cifar_resnet<depth>", never the ImageNet ResNet of that name)."""
        if self.family == "vit":
            return self.arch
        return f"cifar_resnet{self.depth}" if self.residual else f"cnn{self.depth}"

    @property
    def prunable(self) -> bool:
        """Whether `prune_blocks` applies: a ResNet with residual connections (its blocks can be deleted)."""
        return self.family == "resnet" and self.residual

    @property
    def group(self) -> str:
        """The name without the seed: runs of one group differ only in their seed."""
        fraction = f"-f{_number(self.fraction)}" if self.fraction != 1.0 else ""
        return f"{self.arch}-w{_number(self.width)}{fraction}"

    @property
    def name(self) -> str:
        """Directory name of the run, e.g. "resnet20-w1-s0" or "resnet20-w1-f0.25-s0"."""
        return f"{self.group}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "depth": self.depth,
            "width": self.width,
            "residual": self.residual,
            "seed": self.seed,
            "fraction": self.fraction,
            "family": self.family,
        }


def _number(x: float) -> str:
    return format(x, ".6g")


__all__ = ["RunSpec"]
