"""The paper's CIFAR ResNet (He et al. 2016, v1, basic blocks) and its plain-CNN twin.

Depth 6n+2: a 3x3 stem conv, three stages of n basic blocks (two 3x3 convs each)
with 16w, 32w and 64w channels, global average pooling and a linear head. The
first block of stages 2 and 3 halves the resolution and has a 1x1 projection
shortcut (option B); all other shortcuts are identities. With `residual=False`
the same network has no shortcuts and no sums (the paper's "no residual" CNN).

Two styles of the same architecture (`MODEL_STYLES`): "paper" (the default)
follows the paper's official Keras code (Nguyen, Raghu & Kornblith 2021,
`resnet_cifar.py`): conv biases, a projection shortcut without BatchNorm, Keras'
he_normal init and BatchNorm settings, channels from one rounded base width.
"torchvision" is the PyTorch convention (and ckatlas' models before the paper
style): bias-free convs, conv+BN projections, Kaiming fan-out init, PyTorch's
BatchNorm settings, each stage's channels rounded on their own.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.models.base import (
    INIT_SCHEMES,
    LayeredModel,
    check_positive_int,
    check_width,
    init_weights,
    is_positive_number,
)
from ckatlas.models.modules import GlobalAvgPool, ResidualBlock, conv_bn, scaled_channels, shortcut

STAGE_CHANNELS = (16, 32, 64)  # at width 1
STANDARD_DEPTHS = (14, 20, 26, 32, 38, 44, 56, 62, 110, 164)
CHANNEL_ROUNDINGS = ("paper", "per-stage")

# The options that differ between the paper's Keras code and torchvision's conventions.
MODEL_STYLES: dict[str, dict[str, Any]] = {
    "paper": {
        "conv_bias": True,
        "shortcut_bn": False,
        "init": "he-normal",
        "bn_eps": 1e-3,  # Keras BatchNormalization epsilon
        "bn_momentum": 0.01,  # Keras momentum 0.99 is the weight of the *old* running stat
        "channel_rounding": "paper",
    },
    "torchvision": {
        "conv_bias": False,
        "shortcut_bn": True,
        "init": "kaiming-fan-out",
        "bn_eps": 1e-5,
        "bn_momentum": 0.1,
        "channel_rounding": "per-stage",
    },
}


@dataclass(frozen=True)
class ResNetConfig:
    """A CIFAR ResNet (or plain CNN) of depth 6n+2; the defaults are the paper's.

    Channels of the stem and the three stages, with `channel_rounding`:
    "paper" (the paper's code): base = max(1, round(16 * width)) (Python's round),
    stages base, 2 base, 4 base; width 2.8 gives 45/90/180. "per-stage" (ckatlas'
    torchvision style): each stage `max(1, round_half_up(c * width))` for c = 16,
    32, 64; width 2.8 gives 45/90/179. Both give 4/8/16 at width 0.25.

    Attributes:
        depth: number of conv and linear layers on the longest path, 6n+2 with n >= 1.
        width: channel multiplier (> 0).
        num_classes: outputs of the linear head.
        in_channels: channels of the input images (3 for CIFAR, 1 for digits).
        residual: False removes every shortcut and residual sum.
        zero_init_residual: start each residual branch's last BN at zero (off in v1).
        conv_bias: convs have a bias (the paper's Keras default; torchvision: none,
            since the BN that follows cancels it). Also the projection conv's bias.
        shortcut_bn: the projection shortcut is conv+BN (torchvision) instead of the
            paper's bare 1x1 conv.
        init: "he-normal" (the paper's Keras he_normal: truncated normal, fan_in,
            zero biases) or "kaiming-fan-out" (torchvision: normal, fan_out, and
            PyTorch's default uniform Linear); see `init_weights`.
        bn_eps: BatchNorm epsilon (paper / Keras 1e-3, PyTorch 1e-5).
        bn_momentum: PyTorch BatchNorm momentum, the weight of the *new* batch
            statistic (paper: Keras momentum 0.99 -> 0.01; PyTorch 0.1).
        channel_rounding: "paper" or "per-stage" (see above); they differ only
            for some fractional widths.
    """

    depth: int = 20
    width: float = 1.0
    num_classes: int = 10
    in_channels: int = 3
    residual: bool = True
    zero_init_residual: bool = False
    conv_bias: bool = True
    shortcut_bn: bool = False
    init: str = "he-normal"
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    channel_rounding: str = "paper"

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
        for name in ("conv_bias", "shortcut_bn"):
            if not isinstance(getattr(self, name), bool):
                raise UserInputError(f"{name} must be True or False, got {getattr(self, name)!r}")
        _check_choice("init", self.init, INIT_SCHEMES)
        _check_choice("channel_rounding", self.channel_rounding, CHANNEL_ROUNDINGS)
        if not is_positive_number(self.bn_eps):
            raise UserInputError(f"bn_eps must be a number > 0 (e.g. 1e-3), got {self.bn_eps!r}")
        if not (is_positive_number(self.bn_momentum) and self.bn_momentum <= 1):
            raise UserInputError(
                f"bn_momentum must be a number in (0, 1] (e.g. 0.01), got {self.bn_momentum!r}"
            )

    @classmethod
    def from_style(cls, style: str = "paper", **options: Any) -> ResNetConfig:
        """A config with the options of `MODEL_STYLES[style]`, overridden by `options`.

        Args:
            style: "paper" or "torchvision".
            **options: any field of `ResNetConfig` (depth, width, conv_bias, ...).

        Raises:
            UserInputError: unknown style or option, or an invalid value.
        """
        _check_choice("style", style, tuple(MODEL_STYLES))
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise UserInputError(
                f"unknown ResNet option {unknown[0]!r}; expected one of {', '.join(known)}"
            )
        return cls(**{**MODEL_STYLES[style], **options})

    @property
    def blocks_per_stage(self) -> int:
        """n, the number of blocks in each of the three stages."""
        return (self.depth - 2) // 6

    @property
    def channels(self) -> tuple[int, int, int]:
        """Channels of the three stages (the stem has those of stage 1)."""
        if self.channel_rounding == "paper":
            base = max(1, round(STAGE_CHANNELS[0] * self.width))
            return (base, 2 * base, 4 * base)
        return tuple(scaled_channels(c, self.width) for c in STAGE_CHANNELS)


class CifarResNet(LayeredModel):
    """The CIFAR ResNet of `ResNetConfig`; `residual=False` gives the plain CNN.

    Module names: `stem.{conv,bn,relu}`; `stage{s}.{i}.branch.{conv1,bn1,relu1,conv2,bn2}`,
    `stage{s}.{i}.shortcut.conv` and, with `shortcut_bn`, `stage{s}.{i}.shortcut.bn`
    (projection blocks only), `stage{s}.{i}.add`, `stage{s}.{i}.relu` (the block's
    output); `pool`; `fc`.

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
        fk: dict[str, Any] = {"device": device, "dtype": dtype, **_layer_options(config)}
        c1, c2, c3 = config.channels
        self.stem = conv_bn(config.in_channels, c1, 3, relu=True, **fk)
        self.stage1 = self._stage(1, c1, c1, stride=1, **fk)
        self.stage2 = self._stage(2, c1, c2, stride=2, **fk)
        self.stage3 = self._stage(3, c2, c3, stride=2, **fk)
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(c3, config.num_classes, device=device, dtype=dtype)
        init_weights(self, generator, config.zero_init_residual, scheme=config.init)

    def _stage(
        self, stage: int, in_channels: int, out_channels: int, stride: int, **fk
    ) -> nn.Sequential:
        config = self.config
        blocks = []
        for i in range(config.blocks_per_stage):
            block_in, block_stride = (in_channels, stride) if i == 0 else (out_channels, 1)
            blocks.append(ResidualBlock(
                basic_branch(block_in, out_channels, block_stride, **fk),
                shortcut(
                    block_in, out_channels, block_stride, config.residual,
                    bn=config.shortcut_bn, **fk,
                ),
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
    *,
    bias: bool = False,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
) -> nn.Sequential:
    """The residual branch of a basic block: conv3x3-BN-ReLU-conv3x3-BN.

    The keyword defaults are torchvision's (as in `conv_bn`); `CifarResNet` passes
    its config's values.
    """
    fk: dict[str, Any] = {"device": device, "dtype": dtype}
    bn: dict[str, Any] = {"eps": bn_eps, "momentum": bn_momentum, **fk}
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=bias, **fk),
        bn1=nn.BatchNorm2d(out_channels, **bn),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=bias, **fk),
        bn2=nn.BatchNorm2d(out_channels, **bn),
    ))


def _layer_options(config: ResNetConfig) -> dict[str, Any]:
    """The keyword options of `conv_bn`, `shortcut` and `basic_branch` from a config."""
    return {"bias": config.conv_bias, "bn_eps": config.bn_eps, "bn_momentum": config.bn_momentum}


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        expected = ", ".join(repr(c) for c in choices)
        raise UserInputError(f"{name} must be one of {expected}, got {value!r}")


__all__ = [
    "CHANNEL_ROUNDINGS",
    "CifarResNet",
    "MODEL_STYLES",
    "ResNetConfig",
    "STANDARD_DEPTHS",
    "basic_branch",
]
