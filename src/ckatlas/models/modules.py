"""Building pieces shared by the model families.

Every activation point is its own module, called exactly once per forward, so that
a forward hook on it sees that layer's output: the residual sum is an `Add`
module, the pooled features a `GlobalAvgPool` module, and each ReLU a separate
instance. ReLUs are not in-place: an in-place ReLU after a sum would overwrite the
sum's output that a hook has just been handed.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn


class Add(nn.Module):
    """The residual sum `a + b` as a module, so that it can carry a hook."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions: `(B, C, H, W) -> (B, C)`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class ResidualBlock(nn.Module):
    """One block: `relu(branch(x) + shortcut(x))`, or `relu(branch(x))` without a shortcut.

    Submodules, registered in the order `forward` calls them:
        branch:   the block's convs, norms and inner ReLUs (an `nn.Sequential`
                  ending in a norm, before the sum).
        shortcut: `nn.Identity` or a projection (`conv` 1x1, then `bn` unless the
                  model leaves it out); None in a plain CNN.
        add:      the residual sum (`Add`); None in a plain CNN.
        relu:     the block's output.

    A block with an identity shortcut is `deletable`: its input comes out of a
    ReLU, so it is non-negative and `relu(x + 0) == x`; replacing the block with
    `nn.Identity()` is therefore the same as zeroing its branch.

    Args:
        branch: the residual branch.
        shortcut: identity or projection; None for a block without residual connection.
        stage: which stage of the network the block sits in (1-based).
    """

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module | None, stage: int) -> None:
        super().__init__()
        self.stage = stage
        self.branch = branch
        self.shortcut = shortcut
        self.add = Add() if shortcut is not None else None
        self.relu = nn.ReLU()

    @property
    def deletable(self) -> bool:
        """True if the block can be replaced by `nn.Identity()` (identity shortcut)."""
        return self.add is not None and isinstance(self.shortcut, nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.add is not None:
            out = self.add(out, self.shortcut(x))
        return self.relu(out)


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    relu: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    bias: bool = False,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
) -> nn.Sequential:
    """`conv` ('same' padding for odd kernels), `bn`, optionally `relu`.

    The keyword defaults (no conv bias, PyTorch's BatchNorm eps and momentum) are
    torchvision's; the CIFAR ResNet passes its config's values.
    """
    fk: dict[str, Any] = {"device": device, "dtype": dtype}
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride,
            padding=kernel_size // 2, bias=bias, **fk,
        ),
        bn=nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum, **fk),
    )
    if relu:
        layers["relu"] = nn.ReLU()
    return nn.Sequential(layers)


def shortcut(
    in_channels: int,
    out_channels: int,
    stride: int,
    residual: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    bn: bool = True,
    bias: bool = False,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
) -> nn.Module | None:
    """Identity where shapes agree, else a 1x1 projection: He et al.'s option B.

    The projection is `conv`, `bn` (torchvision, the default) or, with `bn=False`,
    `conv` alone (the paper's Keras code, whose projection conv has a bias).
    None if not `residual` (the block of a plain CNN).
    """
    if not residual:
        return None
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if not bn:
        conv = nn.Conv2d(
            in_channels, out_channels, 1, stride=stride, bias=bias, device=device, dtype=dtype
        )
        return nn.Sequential(OrderedDict(conv=conv))
    return conv_bn(
        in_channels, out_channels, 1, stride=stride, device=device, dtype=dtype,
        bias=bias, bn_eps=bn_eps, bn_momentum=bn_momentum,
    )


def scaled_channels(base: int, width: float) -> int:
    """`base * width` rounded half up, at least 1 (16 x 0.25 -> 4, 64 x 2.8 -> 179)."""
    return max(1, int(base * width + 0.5))


__all__ = ["Add", "GlobalAvgPool", "ResidualBlock", "conv_bn", "scaled_channels", "shortcut"]
