"""What every model family shares: layer names, residual blocks, initialisation.

Layer names follow DESIGN.md. "all" is every leaf module in registration order
(each family registers its modules in the order `forward` calls them, and a test
checks it), leaving out `nn.Identity` (it has no output of its own); "blocks" is
the stem output, each block's output, the pooled features and the logits.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.models.modules import ResidualBlock

LAYER_KINDS = ("all", "blocks")


class BlockRef(NamedTuple):
    """A block of a model: its name for `get_submodule`, the module, its stage (1-based)."""

    name: str
    block: ResidualBlock
    stage: int


class LayeredModel(nn.Module):
    """Base of the model families: `layer_names`, `residual_blocks`, `num_features`.

    Subclasses set `stem_output` (the name of the stem's last module) and `head`
    (the name of the logits' Linear), and build their blocks from `ResidualBlock`.
    The pooled features are the module `pool`.
    """

    stem_output: str = "stem.relu"
    head: str = "fc"

    def layer_names(self, kind: str = "blocks") -> list[str]:
        """Names of the model's activation points, in forward order.

        Args:
            kind: "all" (every conv, norm, activation and residual sum, then the
                pooled features and the logits) or "blocks" (stem output, each
                block's output, pooled features, logits).

        Returns:
            Names valid for `self.get_submodule(name)`.
        """
        if kind == "all":
            return [
                name
                for name, module in self.named_modules()
                if name and not list(module.children()) and not isinstance(module, nn.Identity)
            ]
        if kind == "blocks":
            blocks = [f"{ref.name}.relu" for ref in self.residual_blocks()]
            return [self.stem_output, *blocks, "pool", self.head]
        raise UserInputError(f"layer kind {kind!r} is not known; expected one of {LAYER_KINDS}")

    def check_inputs(self, x: object, what: str | None = None) -> None:
        """One clear error, before any forward pass, for inputs this model cannot take.

        The model takes float images (n, C, H, W) with the C channels it was built for.
        `what` names the model in the message (default: its class).

        Raises:
            UserInputError: `x` is no 4-d tensor, has other channels, or holds integers
                (e.g. uint8 pixels), naming its shape and dtype and what to change.
        """
        stem = next((m for m in self.modules() if isinstance(m, nn.Conv2d)), None)
        if stem is None or not isinstance(x, torch.Tensor):
            return
        model = f"{what or type(self).__name__} (built for {stem.in_channels}-channel images)"
        given = f"shape {tuple(x.shape)}, {str(x.dtype).removeprefix('torch.')}"
        if x.ndim != 4:
            raise UserInputError(f"{model} takes images (n, {stem.in_channels}, H, W); the inputs have {given}")
        if x.shape[1] != stem.in_channels:
            raise UserInputError(
                f"{model} cannot take {x.shape[1]}-channel inputs ({given}); build the model with "
                f"in_channels={x.shape[1]} (create_model(..., in_channels={x.shape[1]})) or give "
                f"{stem.in_channels}-channel images"
            )
        if not x.is_floating_point():
            raise UserInputError(
                f"{model} takes float images; the inputs hold {str(x.dtype).removeprefix('torch.')} ({given}): "
                "convert them as training did (e.g. x.float() / 255, then normalise)"
            )

    def residual_blocks(self) -> list[BlockRef]:
        """The model's blocks in forward order (blocks replaced by `nn.Identity` are gone).

        A block with `block.deletable` (identity shortcut) can be removed with
        `model.set_submodule(ref.name, nn.Identity())`; blocks with a projection
        shortcut, and the blocks of a network without residual connections, cannot.
        """
        return [
            BlockRef(name, module, module.stage)
            for name, module in self.named_modules()
            if isinstance(module, ResidualBlock)
        ]


INIT_SCHEMES = ("he-normal", "kaiming-fan-out")

# Std of a standard normal truncated to [-2, 2]; Keras divides by it so that the
# truncated draw has the intended std (keras.initializers.VarianceScaling).
_TRUNCATED_NORMAL_STD = 0.87962566103423978


@torch.no_grad()
def init_weights(
    model: nn.Module,
    generator: torch.Generator | None = None,
    zero_init_residual: bool = False,
    scheme: str = "kaiming-fan-out",
) -> None:
    """Initialise a model in place; BatchNorm always gets weight 1, bias 0.

    Schemes:
        "kaiming-fan-out" (torchvision's, the default): convs normal with std
            sqrt(2 / fan_out) (He et al. 2015), conv biases 0; Linear
            U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias (PyTorch's default).
        "he-normal" (Keras' 'he_normal', the paper's code): conv and Linear weights
            from a normal truncated at +-2 std, scaled so that the truncated draw
            has std sqrt(2 / fan_in); all biases 0.

    Values are drawn in float32 on the generator's device (CPU without one) and
    copied in, so one seed gives the same weights on any device and dtype.

    Args:
        model: the model to initialise.
        generator: source of randomness; None uses torch's global CPU generator.
        zero_init_residual: zero the last BN of each residual branch, so that every
            block starts as the identity (Goyal et al. 2017); off in He et al.'s v1.
        scheme: one of `INIT_SCHEMES`.

    Raises:
        UserInputError: unknown `scheme`.
    """
    if scheme not in INIT_SCHEMES:
        expected = ", ".join(repr(s) for s in INIT_SCHEMES)
        raise UserInputError(f"init scheme must be one of {expected}, got {scheme!r}")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, (nn.Conv2d, nn.Linear)) and scheme == "he-normal":
            module.weight.copy_(_he_normal(module.weight, generator))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Conv2d):
            weight = _scratch(module.weight, generator)
            nn.init.kaiming_normal_(
                weight, mode="fan_out", nonlinearity="relu", generator=generator
            )
            module.weight.copy_(weight)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            for param in (module.weight, module.bias):
                if param is not None:
                    value = _scratch(param, generator).uniform_(-bound, bound, generator=generator)
                    param.copy_(value)
    if zero_init_residual:
        for module in model.modules():
            if isinstance(module, ResidualBlock) and module.add is not None:
                last_bn = [m for m in module.branch if isinstance(m, nn.BatchNorm2d)][-1]
                last_bn.weight.zero_()


def _he_normal(weight: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Keras' he_normal draw for a conv or Linear weight `(out, in, ...)`: fan_in = in * kernel."""
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / _TRUNCATED_NORMAL_STD
    value = _scratch(weight, generator)
    return nn.init.trunc_normal_(
        value, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=generator
    )


def _scratch(param: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """An empty float32 tensor shaped like `param`, on the generator's device (CPU if None)."""
    device = generator.device if generator is not None else torch.device("cpu")
    if param.is_meta:  # nothing to draw: shapes only
        device = torch.device("meta")
    return torch.empty(param.shape, dtype=torch.float32, device=device)


def check_positive_int(name: str, value: object) -> None:
    """Raise `UserInputError` unless `value` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"{name} must be an integer >= 1, got {value!r}")


def is_positive_number(value: object) -> bool:
    """True for a finite int or float > 0 (not a bool)."""
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value) and value > 0
    )


def check_width(width: object) -> None:
    """Raise `UserInputError` unless `width` is a number > 0."""
    if not is_positive_number(width):
        raise UserInputError(f"width must be a number > 0 (e.g. 0.25, 1, 10), got {width!r}")


__all__ = [
    "BlockRef",
    "INIT_SCHEMES",
    "LAYER_KINDS",
    "LayeredModel",
    "check_positive_int",
    "check_width",
    "init_weights",
    "is_positive_number",
]
