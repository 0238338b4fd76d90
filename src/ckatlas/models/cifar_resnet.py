"""The paper's CIFAR ResNet (He et al. 2016, v1, basic blocks) and its plain-CNN twin.

Depth 6n+2: a 3x3 stem conv, three stages of n basic blocks (two 3x3 convs each)
with 16w, 32w and 64w channels, global average pooling and a linear head. The
first block of stages 2 and 3 halves the resolution and has a 1x1 projection
shortcut (option B); all other shortcuts are identities. With `residual=False`
the same network has no shortcuts and no sums (the paper's "no residual" CNN).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.models.base import LayeredModel, check_positive_int, check_width, init_weights
from ckatlas.models.modules import GlobalAvgPool, ResidualBlock, conv_bn, scaled_channels, shortcut

STAGE_CHANNELS = (16, 32, 64)  # at width 1
STANDARD_DEPTHS = (14, 20, 26, 32, 38, 44, 56, 62, 110, 164)


@dataclass(frozen=True)
class ResNetConfig:
    """A CIFAR ResNet (or plain CNN) of depth 6n+2.

    Channels are `max(1, round_half_up(c * width))` for c = 16 (stem, stage 1),
    32 (stage 2) and 64 (stage 3): width 0.25 gives 4/8/16, width 10 gives 160/320/640.

    Attributes:
        depth: number of conv and linear layers on the longest path, 6n+2 with n >= 1.
        width: channel multiplier (> 0).
        num_classes: outputs of the linear head.
        in_channels: channels of the input images (3 for CIFAR, 1 for digits).
        residual: False removes every shortcut and residual sum.
        zero_init_residual: start each residual branch's last BN at zero (off in v1).
    """

    depth: int = 20
    width: float = 1.0
    num_classes: int = 10
    in_channels: int = 3
    residual: bool = True
    zero_init_residual: bool = False

    def __post_init__(self) -> None:
        depth = self.depth
        is_int = isinstance(depth, int) and not isinstance(depth, bool)
        if not (is_int and depth >= 8 and (depth - 2) % 6 == 0):
            raise UserInputError(
                "ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 56, 110, ...), "
                f"got {self.depth!r}"
            )
        check_width(self.width)
        check_positive_int("num_classes", self.num_classes)
        check_positive_int("in_channels", self.in_channels)

    @property
    def blocks_per_stage(self) -> int:
        """n, the number of blocks in each of the three stages."""
        return (self.depth - 2) // 6

    @property
    def channels(self) -> tuple[int, int, int]:
        """Channels of the three stages (the stem has those of stage 1)."""
        return tuple(scaled_channels(c, self.width) for c in STAGE_CHANNELS)


class CifarResNet(LayeredModel):
    """The CIFAR ResNet of `ResNetConfig`; `residual=False` gives the plain CNN.

    Module names: `stem.{conv,bn,relu}`; `stage{s}.{i}.branch.{conv1,bn1,relu1,conv2,bn2}`,
    `stage{s}.{i}.shortcut.{conv,bn}` (projection blocks only), `stage{s}.{i}.add`,
    `stage{s}.{i}.relu` (the block's output); `pool`; `fc`.

    Args:
        config: the architecture.
        device: device to construct on.
        dtype: dtype of the parameters.
        generator: source of randomness for the initial weights (global RNG if None).
    """

    def __init__(
        self,
        config: ResNetConfig,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        fk = {"device": device, "dtype": dtype}
        c1, c2, c3 = config.channels
        self.stem = conv_bn(config.in_channels, c1, 3, relu=True, **fk)
        self.stage1 = self._stage(1, c1, c1, stride=1, **fk)
        self.stage2 = self._stage(2, c1, c2, stride=2, **fk)
        self.stage3 = self._stage(3, c2, c3, stride=2, **fk)
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(c3, config.num_classes, **fk)
        init_weights(self, generator, config.zero_init_residual)

    def _stage(
        self, stage: int, in_channels: int, out_channels: int, stride: int, **fk
    ) -> nn.Sequential:
        blocks = []
        for i in range(self.config.blocks_per_stage):
            block_in, block_stride = (in_channels, stride) if i == 0 else (out_channels, 1)
            blocks.append(ResidualBlock(
                basic_branch(block_in, out_channels, block_stride, **fk),
                shortcut(block_in, out_channels, block_stride, self.config.residual, **fk),
                stage=stage,
            ))
        return nn.Sequential(*blocks)

    @property
    def num_features(self) -> int:
        """Size of the pooled features (the input of `fc`)."""
        return self.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 16w, H, W)
        x = self.stage1(x)  # (B, 16w, H, W)
        x = self.stage2(x)  # (B, 32w, H/2, W/2)
        x = self.stage3(x)  # (B, 64w, H/4, W/4)
        x = self.pool(x)  # (B, 64w)
        return self.fc(x)  # (B, num_classes)


def basic_branch(
    in_channels: int,
    out_channels: int,
    stride: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Sequential:
    """The residual branch of a basic block: conv3x3-BN-ReLU-conv3x3-BN."""
    fk = {"device": device, "dtype": dtype}
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False, **fk),
        bn1=nn.BatchNorm2d(out_channels, **fk),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False, **fk),
        bn2=nn.BatchNorm2d(out_channels, **fk),
    ))


__all__ = ["CifarResNet", "ResNetConfig", "STANDARD_DEPTHS", "basic_branch"]
