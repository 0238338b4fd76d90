"""ImageNet-style bottleneck ResNets (He et al. 2016) with per-stage depth and width.

A 7x7 stride-2 stem conv and a 3x3 stride-2 max pool, four stages of bottleneck
blocks (1x1 reduce, 3x3, 1x1 expand by 4) with 64, 128, 256 and 512 inner channels
at width 1, global average pooling and a linear head. Stages 2-4 halve the
resolution in the 3x3 conv of their first block (torchvision's "v1.5"); a block
whose shape changes has a 1x1 projection shortcut.

Registered: `resnet50` (3, 4, 6, 3), `resnet101` (3, 4, 23, 3), the paper's deeper
`resnet83` (stage 3 with 17 blocks), its wider `resnet50_stage3_w2.8` (every channel
of stage 3 x2.8), and `bottleneck_tiny` (one block per stage, quarter-width stages) for tests.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.models.base import (
    LayeredModel,
    check_positive_int,
    check_width,
    init_weights,
    is_positive_number,
)
from ckatlas.models.modules import GlobalAvgPool, ResidualBlock, conv_bn, scaled_channels, shortcut
from ckatlas.models.registry import register_model

STAGE_CHANNELS = (64, 128, 256, 512)  # inner channels at width 1; outputs are 4x
EXPANSION = 4


@dataclass(frozen=True)
class BottleneckResNetConfig:
    """A bottleneck ResNet with four stages.

    Inner channels of stage s are `max(1, round_half_up(c_s * width * stage_widths[s]))`
    for c = (64, 128, 256, 512); its block outputs have 4x as many. The stem has
    `round_half_up(64 * width)` channels.

    Attributes:
        blocks: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        stage_widths: channel multiplier of each stage, on top of `width`.
        width: channel multiplier of the whole network (> 0).
        num_classes: outputs of the linear head.
        in_channels: channels of the input images.
        residual: False removes every shortcut and residual sum.
        zero_init_residual: start each residual branch's last BN at zero.
    """

    blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    stage_widths: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    width: float = 1.0
    num_classes: int = 1000
    in_channels: int = 3
    residual: bool = True
    zero_init_residual: bool = False

    def __post_init__(self) -> None:
        # Lists (from TOML/JSON) become tuples, so that configs compare and hash.
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "stage_widths", tuple(self.stage_widths))
        if len(self.blocks) != 4 or not all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in self.blocks
        ):
            raise UserInputError(
                f"blocks must be 4 integers >= 1 (ResNet-50: (3, 4, 6, 3)), got {self.blocks!r}"
            )
        if len(self.stage_widths) != 4 or not all(is_positive_number(w) for w in self.stage_widths):
            raise UserInputError(
                "stage_widths must be 4 numbers > 0 (e.g. (1, 1, 2.8, 1)), "
                f"got {self.stage_widths!r}"
            )
        check_width(self.width)
        check_positive_int("num_classes", self.num_classes)
        check_positive_int("in_channels", self.in_channels)

    @property
    def depth(self) -> int:
        """Conv and linear layers on the longest path: 3 per block, the stem conv and the head."""
        return 3 * sum(self.blocks) + 2

    @property
    def stem_channels(self) -> int:
        """Channels of the stem."""
        return scaled_channels(64, self.width)

    @property
    def inner_channels(self) -> tuple[int, ...]:
        """Channels inside the blocks of each stage (the 3x3 convs)."""
        return tuple(
            scaled_channels(c, self.width * w) for c, w in zip(STAGE_CHANNELS, self.stage_widths)
        )


class BottleneckResNet(LayeredModel):
    """The bottleneck ResNet of `BottleneckResNetConfig`.

    Module names: `stem.{conv,bn,relu,pool}`;
    `stage{s}.{i}.branch.{conv1,bn1,relu1,conv2,bn2,relu2,conv3,bn3}`,
    `stage{s}.{i}.shortcut.{conv,bn}` (projection blocks only), `stage{s}.{i}.add`,
    `stage{s}.{i}.relu` (the block's output); `pool`; `fc`.

    Args:
        config: the architecture.
        device: device to construct on.
        dtype: dtype of the parameters.
        generator: source of randomness for the initial weights (global RNG if None).
    """

    stem_output = "stem.pool"

    def __init__(
        self,
        config: BottleneckResNetConfig,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        fk: dict[str, Any] = {"device": device, "dtype": dtype}
        self.stem = conv_bn(config.in_channels, config.stem_channels, 7, stride=2, relu=True, **fk)
        self.stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
        in_channels = config.stem_channels
        for s, (n, inner) in enumerate(zip(config.blocks, config.inner_channels), start=1):
            stride = 1 if s == 1 else 2
            self.add_module(f"stage{s}", self._stage(s, n, in_channels, inner, stride, **fk))
            in_channels = inner * EXPANSION
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(in_channels, config.num_classes, **fk)
        init_weights(self, generator, config.zero_init_residual)

    def _stage(
        self, stage: int, num_blocks: int, in_channels: int, inner: int, stride: int, **fk
    ) -> nn.Sequential:
        out_channels = inner * EXPANSION
        blocks = []
        for i in range(num_blocks):
            block_in, block_stride = (in_channels, stride) if i == 0 else (out_channels, 1)
            blocks.append(ResidualBlock(
                bottleneck_branch(block_in, inner, block_stride, **fk),
                shortcut(block_in, out_channels, block_stride, self.config.residual, **fk),
                stage=stage,
            ))
        return nn.Sequential(*blocks)

    @property
    def num_features(self) -> int:
        """Size of the pooled features (the input of `fc`)."""
        return self.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 64w, H/4, W/4)
        x = self.stage1(x)  # (B, 256w, H/4, W/4)
        x = self.stage2(x)  # (B, 512w, H/8, W/8)
        x = self.stage3(x)  # (B, 1024w, H/16, W/16)
        x = self.stage4(x)  # (B, 2048w, H/32, W/32)
        x = self.pool(x)  # (B, 2048w)
        return self.fc(x)  # (B, num_classes)


def bottleneck_branch(
    in_channels: int,
    inner: int,
    stride: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Sequential:
    """The residual branch of a bottleneck block: 1x1-BN-ReLU, 3x3 (stride)-BN-ReLU, 1x1-BN."""
    fk: dict[str, Any] = {"device": device, "dtype": dtype}
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(in_channels, inner, 1, bias=False, **fk),
        bn1=nn.BatchNorm2d(inner, **fk),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(inner, inner, 3, stride, padding=1, bias=False, **fk),
        bn2=nn.BatchNorm2d(inner, **fk),
        relu2=nn.ReLU(),
        conv3=nn.Conv2d(inner, inner * EXPANSION, 1, bias=False, **fk),
        bn3=nn.BatchNorm2d(inner * EXPANSION, **fk),
    ))


def _build(
    blocks: tuple[int, int, int, int],
    stage_widths: tuple[float, float, float, float],
    width: float,
    num_classes: int,
    in_channels: int,
    residual: bool = True,
    zero_init_residual: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> BottleneckResNet:
    config = BottleneckResNetConfig(
        blocks, stage_widths, width, num_classes, in_channels, residual, zero_init_residual
    )
    return BottleneckResNet(config, device=device, dtype=dtype, generator=generator)


@register_model
def resnet50(
    width: float = 1.0, num_classes: int = 10, in_channels: int = 3, **kwargs: Any
) -> BottleneckResNet:
    """ResNet-50: blocks (3, 4, 6, 3); 25.6M parameters with 1000 classes."""
    return _build((3, 4, 6, 3), (1, 1, 1, 1), width, num_classes, in_channels, **kwargs)


@register_model
def resnet101(
    width: float = 1.0, num_classes: int = 10, in_channels: int = 3, **kwargs: Any
) -> BottleneckResNet:
    """ResNet-101: blocks (3, 4, 23, 3); 44.5M parameters with 1000 classes."""
    return _build((3, 4, 23, 3), (1, 1, 1, 1), width, num_classes, in_channels, **kwargs)


@register_model
def resnet83(
    width: float = 1.0, num_classes: int = 10, in_channels: int = 3, **kwargs: Any
) -> BottleneckResNet:
    """The paper's deeper ResNet-50: stage 3 with 17 blocks, (3, 4, 17, 3)."""
    return _build((3, 4, 17, 3), (1, 1, 1, 1), width, num_classes, in_channels, **kwargs)


@register_model(name="resnet50_stage3_w2.8")
def resnet50_stage3_wide(
    width: float = 1.0, num_classes: int = 10, in_channels: int = 3, **kwargs: Any
) -> BottleneckResNet:
    """The paper's wider ResNet-50: every channel of stage 3 multiplied by 2.8."""
    return _build((3, 4, 6, 3), (1, 1, 2.8, 1), width, num_classes, in_channels, **kwargs)


@register_model
def bottleneck_tiny(
    width: float = 1.0, num_classes: int = 10, in_channels: int = 3, **kwargs: Any
) -> BottleneckResNet:
    """Test variant: one block per stage (depth 14), stages at a quarter width (0.7M parameters)."""
    return _build((1, 1, 1, 1), (0.25,) * 4, width, num_classes, in_channels, **kwargs)


__all__ = ["BottleneckResNet", "BottleneckResNetConfig", "bottleneck_branch"]
