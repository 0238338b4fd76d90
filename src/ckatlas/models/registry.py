"""Model registry: `create_model(name, ...)`, `list_models(pattern)`, `register_model`.

Named entries are builders registered with `@register_model`. Families whose
name carries a number are parsed: `resnet<depth>` and `cnn<depth>` build the
CIFAR ResNet / plain CNN for any depth 6n+2. Named entries win over parsed
names, so `resnet50` is the ImageNet bottleneck ResNet-50; the CIFAR ResNet of
depth 50 is `cifar_resnet50` (any depth works with the `cifar_` prefix).
The parsed families take `style="paper"` (the default) or `style="torchvision"`
(`MODEL_STYLES`) and any `ResNetConfig` option on top of it.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.models.cifar_resnet import STANDARD_DEPTHS, CifarResNet, ResNetConfig

ModelBuilder = Callable[..., nn.Module]
_Builder = TypeVar("_Builder", bound=ModelBuilder)

_REGISTRY: dict[str, ModelBuilder] = {}
_PARSED = re.compile(r"(?P<family>cifar_resnet|resnet|cnn)(?P<depth>\d+)")
_VIT = re.compile(r"vit(?P<depth>\d+)")
VIT_DEPTHS = (2, 4, 6, 8, 12)  # listed; any depth >= 1 builds


def register_model(
    fn: _Builder | None = None, *, name: str | None = None
) -> _Builder | Callable[[_Builder], _Builder]:
    """Register a builder under `name` (default: the function's name).

    The builder is called as `fn(width=..., num_classes=..., in_channels=...,
    **kwargs)` and returns an `nn.Module` with `layer_names`. Use as `@register_model`
    or `@register_model(name="resnet50_stage3_w2.8")`.
    """

    def register(builder: _Builder) -> _Builder:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = builder
        return builder

    return register(fn) if fn is not None else register


def unregister_model(name: str) -> None:
    """Remove a builder registered with `register_model` (the built-in families cannot be removed).

    Raises:
        KeyError: no builder is registered under `name`.
    """
    if name not in _REGISTRY:
        raise KeyError(f"no model {name!r} is registered (registered: {', '.join(sorted(_REGISTRY)) or 'none'})")
    del _REGISTRY[name]


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a glob `pattern` ("resnet*", "cnn*").

    The standard depths of the parsed families are listed (resnet14 ... resnet164,
    cnn14 ... cnn164); `create_model` accepts any depth 6n+2 as well.
    """
    parsed = [f"{family}{d}" for family in ("resnet", "cnn") for d in STANDARD_DEPTHS] + [f"vit{d}" for d in VIT_DEPTHS]
    names = sorted(set(_REGISTRY) | set(parsed), key=_natural_key)
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def create_model(
    name: str,
    width: float = 1.0,
    num_classes: int = 10,
    in_channels: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name, with random weights.

    Args:
        name: a registered name (`list_models()`), or `resnet<depth>`, `cnn<depth>`,
            `cifar_resnet<depth>` for any depth 6n+2, or `vit<depth>` (a vision
            transformer of `depth` blocks, `ckatlas.models.vit`; option `patch_size`, 4).
        width: channel multiplier.
        num_classes: outputs of the head.
        in_channels: channels of the input images.
        **kwargs: passed to the builder: `device`, `dtype`, `generator`,
            `zero_init_residual`, ... The parsed CIFAR families also take `style`
            ("paper", the default, or "torchvision"; see `MODEL_STYLES`) and the
            `ResNetConfig` options (`conv_bias`, `shortcut_bn`, `init`, `bn_eps`,
            `bn_momentum`, `channel_rounding`), which override the style's.

    Examples:
        create_model("resnet20", width=2.8)                       # the paper's code
        create_model("resnet20", style="torchvision")             # torchvision conventions
        create_model("cnn8", style="paper", channel_rounding="per-stage")

    Raises:
        UserInputError: unknown name, style or option, or an invalid depth/width/option.
    """
    builder = _REGISTRY.get(name)
    if builder is not None:
        return builder(width=width, num_classes=num_classes, in_channels=in_channels, **kwargs)
    vit = _VIT.fullmatch(name)
    if vit is not None:
        from ckatlas.models.vit import VisionTransformer

        return VisionTransformer(int(vit["depth"]), width, num_classes, in_channels, **kwargs)
    match = _PARSED.fullmatch(name)
    if match is not None:
        residual = match["family"] != "cnn"
        return _build_cifar(
            int(match["depth"]), residual, width, num_classes, in_channels, **kwargs
        )
    close = difflib.get_close_matches(name, list_models(), n=4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UserInputError(
        f"unknown model {name!r}: expected resnet<depth>, cnn<depth> (depth 6n+2), vit<depth> "
        f"or a name from list_models(){hint}"
    )


def is_cifar_family(name: str) -> bool:
    """True if `create_model(name)` builds a CIFAR ResNet or plain CNN (which take `style`).

    That is a parsed name (`resnet<depth>`, `cnn<depth>`, `cifar_resnet<depth>`) that no
    registered entry shadows: `resnet20` and `cifar_resnet50` are, `resnet50` is not.
    """
    return name not in _REGISTRY and _PARSED.fullmatch(name) is not None


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _build_cifar(
    depth: int,
    residual: bool,
    width: float,
    num_classes: int,
    in_channels: int,
    /,
    style: str = "paper",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    **options: Any,
) -> CifarResNet:
    fixed = sorted({"depth", "residual"} & set(options))
    if fixed:
        raise UserInputError(
            f"{fixed[0]} is set by the model name (resnet<depth>, cnn<depth>), not as an option"
        )
    config = ResNetConfig.from_style(
        style, depth=depth, width=width, num_classes=num_classes, in_channels=in_channels,
        residual=residual, **options,
    )
    return CifarResNet(config, device=device, dtype=dtype, generator=generator)


__all__ = ["ModelBuilder", "create_model", "is_cifar_family", "list_models", "register_model", "unregister_model"]
