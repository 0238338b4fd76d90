"""`TrainConfig`: everything that decides a training run, the named recipes, and the run's model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ckatlas.data import (
    ImageData,
    default_resize,
    load_dataset,
)
from ckatlas.data.subsets import check_fraction
from ckatlas.errors import UserInputError
from ckatlas.models import create_model

DEFAULT_EPOCHS = {"digits": 15}  # every other dataset: 200

_CHOICES = {
    "model_style": ("paper", "torchvision"),
    "lr_schedule": ("cosine-step", "cosine-epoch"),
    "decay_scope": ("all", "kernels"),
    "pad_mode": ("zeros", "reflect"),
    "keep": ("final", "best-val"),
    "optimizer": ("sgd", "adamw"),
    "precision": ("auto", "float32", "bfloat16"),
}
#: What `TrainConfig.precision` may say: "auto" (`ckatlas.train.predict.resolve_precision`) or one explicitly.
PRECISIONS = _CHOICES["precision"]

#: Named sets of training settings (`TrainConfig.from_recipe`, `[train] recipe = "..."`,
#: `ckatlas train --recipe`). "ckatlas": the defaults, the common PyTorch CIFAR recipe.
#: "paper": the official code of Nguyen, Raghu & Kornblith (2021), cifar_train.py:
#: SGD momentum 0.9 at lr 0.01, batch 128, 300 epochs, cosine decay stepped per epoch,
#: Keras L2 1e-4 on conv and dense kernels (= weight decay 2e-4 on those only), pixels
#: in [0, 1] without normalisation, reflect padding 4 + crop + flip, the best epoch's
#: weights, BatchNorm decay 0.99 (momentum 0.01). One departure: the paper's code picks
#: that epoch on the test set; here it is picked on a held-out validation split (10% of
#: each class), never on the test set.
RECIPES: dict[str, dict[str, Any]] = {
    "ckatlas": {},
    "paper": {
        "lr": 0.01,
        "epochs": 300,
        "batch_size": 128,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 2e-4,
        "decay_scope": "kernels",
        "lr_schedule": "cosine-epoch",
        "normalize": False,
        "pad_mode": "reflect",
        "keep": "best-val",
        "val_fraction": 0.1,
        "model_style": "paper",
        "bn_momentum": 0.01,
    },
    # large_scale_training/imagenet_train.py and alt_resnet.py: SGD momentum 0.9, lr 0.1 at batch
    # 256, 120 epochs, cosine per step, Keras L2 5e-5 on kernels (weight decay 1e-4), BatchNorm
    # decay 0.99, the last BN of each bottleneck starting at zero, the best epoch. Departures:
    # the best epoch on a held-out split (the code: ImageNet's validation set, which is our
    # test split); pad-and-crop + flip instead of Inception-style random-resized crops (not in
    # ckatlas); the input preprocessing of TF-models' ResNet was not checked (normalised here).
    "paper-imagenet": {
        "lr": 0.1,
        "epochs": 120,
        "batch_size": 256,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,
        "decay_scope": "kernels",
        "lr_schedule": "cosine-step",
        "keep": "best-val",
        "val_fraction": 0.02,
        "bn_momentum": 0.01,
        "zero_init_residual": True,
    },
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; runs with equal configs are the same run.

    Attributes:
        arch: a model name for `create_model` ("resnet20", "cnn56", ...).
        width: channel multiplier.
        dataset: a name for `load_dataset`.
        data_dir: where the dataset is (not for digits).
        fraction: share of each training class used (0 < fraction <= 1).
        subset_seed: seed of the training subset; fixed across runs by default, so
            that models of one data-size experiment see the same examples.
        resize: image side in pixels; None: the dataset's default.
        epochs: passes over the training set; None: 15 for digits, 200 otherwise.
        batch_size: examples per step.
        lr: peak learning rate (0.1 is He et al.'s for batch size 128).
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: SGD weight decay (the gradient of (weight_decay / 2) * |w|^2; a
            Keras L2 penalty c * |w|^2 is weight_decay = 2c).
        label_smoothing: cross-entropy label smoothing (0: none).
        augment: use the dataset's augmentation (pad-and-crop, flips; none for digits).
        seed: seed of the weights, the example order and the augmentation.
        eval_every: evaluate on the test split every this many epochs (0: only at the end).
        model_style: the architecture's details, `ckatlas.models.MODEL_STYLES`: "paper"
            (the paper's Keras ResNet: conv biases, 1x1 conv shortcut without BN,
            he_normal; the paper recipe's) or "torchvision" (no conv biases, conv + BN
            shortcut, Kaiming fan-out; the default: with the default lr 0.1 it trains
            stably, while 1 of the 27 demo models in the paper style diverged at lr 0.1).
        lr_schedule: "cosine-step" (cosine decay, updated every step) or "cosine-epoch"
            (updated once per epoch, as the paper's Keras scheduler).
        decay_scope: "all" (weight decay on every parameter) or "kernels" (conv and
            linear weights only, as a Keras kernel_regularizer).
        normalize: normalise pixels per channel (False: pixels in [0, 1], the paper's).
        pad_mode: padding of the pad-and-crop augmentation, "zeros" or "reflect" (the paper's).
        keep: which weights the run keeps, "final" or "best-val" (the epoch with the best
            accuracy on a validation split held out of the training data; the paper's
            code keeps the best epoch on the test set, which we do not copy).
        val_fraction: share of each training class held out for "best-val" (not trained on).
        bn_momentum: BatchNorm running-statistics momentum (PyTorch convention) of every
            BatchNorm: 0.1, PyTorch's default; the paper's Keras decay 0.99 is 0.01, which needs
            thousands of steps before the running statistics settle (the paper trains 117,000).
        zero_init_residual: start the last BatchNorm of each residual branch at zero (every
            block the identity at initialisation), as the paper's ImageNet code does.
        optimizer: "sgd" (momentum, nesterov and L2 weight decay as above) or "adamw"
            (Adam with decoupled weight decay, betas 0.9 and 0.999; momentum and nesterov
            unused): what transformers usually train with (e.g. lr 1e-3, weight_decay 0.05).
        precision: the arithmetic of the training steps: "auto" (bfloat16 autocast where the device
            computes bfloat16 natively: a CUDA GPU that supports it; a CPU with AVX-512 BF16 or AMX for
            a model that is mostly convolutions, where it pays; float32 elsewhere), "float32" or
            "bfloat16" (`ckatlas.train.predict.resolve_precision`). Weights, optimizer state, evaluation and every
            heatmap stay float32. The precision a run was trained in is recorded in its config.json
            (``environment.precision``), and a resumed "auto" run continues in it.
    """

    arch: str = "resnet20"
    width: float = 1.0
    dataset: str = "digits"
    data_dir: str | None = None
    fraction: float = 1.0
    subset_seed: int = 0
    resize: int | None = None
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: bool = True
    seed: int = 0
    eval_every: int = 1
    model_style: str = "torchvision"
    lr_schedule: str = "cosine-step"
    decay_scope: str = "all"
    normalize: bool = True
    pad_mode: str = "zeros"
    keep: str = "final"
    val_fraction: float = 0.1
    bn_momentum: float = 0.1
    zero_init_residual: bool = False
    optimizer: str = "sgd"
    precision: str = "auto"

    def __post_init__(self) -> None:
        def number(name: str, ok: bool, expected: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
                raise UserInputError(f"{name} must be {expected}, got {value!r}")

        def integer(name: str, low: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserInputError(f"{name} must be an integer >= {low}, got {value!r}")

        if not isinstance(self.arch, str) or not self.arch:
            raise UserInputError(f"arch must be a model name, got {self.arch!r}")
        number("width", isinstance(self.width, (int, float)) and self.width > 0, "a number > 0")
        check_fraction(self.fraction)
        integer("resize", 1, optional=True)
        integer("epochs", 1, optional=True)
        integer("batch_size", 1)
        integer("seed", 0)
        integer("subset_seed", 0)
        integer("eval_every", 0)
        number("lr", isinstance(self.lr, (int, float)) and self.lr > 0, "a number > 0")
        number("momentum", isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1, "in [0, 1)")
        number("weight_decay", isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, ">= 0")
        ls = self.label_smoothing
        number("label_smoothing", isinstance(ls, (int, float)) and 0 <= ls < 1, "in [0, 1)")
        if self.nesterov and self.momentum == 0:
            raise UserInputError("nesterov momentum needs momentum > 0")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise UserInputError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        vf = self.val_fraction
        number("val_fraction", isinstance(vf, (int, float)) and 0 < vf < 1, "in (0, 1)")
        bm = self.bn_momentum
        number("bn_momentum", isinstance(bm, (int, float)) and 0 < bm <= 1, "in (0, 1]")
        for name in ("nesterov", "augment", "normalize", "zero_init_residual"):
            if not isinstance(getattr(self, name), bool):
                raise UserInputError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def resolved(self) -> TrainConfig:
        """This config with every default filled in (epochs, resize, an absolute data_dir)."""
        return replace(
            self,
            epochs=self.epochs if self.epochs is not None else DEFAULT_EPOCHS.get(self.dataset, 200),
            resize=self.resize if self.resize is not None else default_resize(self.dataset),
            data_dir=str(Path(self.data_dir).expanduser().resolve()) if self.data_dir is not None else None,
            fraction=float(self.fraction),
            width=float(self.width),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys are an error.

        A dict from before the recipe options existed has none of them: their defaults
        are what such runs were trained with ("torchvision" models among them).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserInputError(f"unknown training setting(s) {', '.join(unknown)}; expected some of {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_recipe(cls, recipe: str = "ckatlas", **settings: Any) -> TrainConfig:
        """A config with a named recipe's settings (`RECIPES`), `settings` on top of them."""
        if recipe not in RECIPES:
            raise UserInputError(f"unknown recipe {recipe!r}; expected one of {', '.join(RECIPES)}")
        return cls(**{**RECIPES[recipe], **settings})

    def load_data(self, data_dir: str | Path | None = None) -> ImageData:
        """The dataset this config trains on (`data_dir` overrides where it is read from)."""
        return load_dataset(
            self.dataset,
            data_dir if data_dir is not None else self.data_dir,
            resize=self.resize,
            fraction=self.fraction,
            seed=self.subset_seed,
            normalize=self.normalize,
            pad_mode=self.pad_mode,
        )


def build_model(
    config: TrainConfig, num_classes: int, in_channels: int, generator: torch.Generator | None = None
) -> nn.Module:
    """The run's model with fresh weights; the CIFAR families in the config's `model_style`;
    every BatchNorm with the config's momentum."""
    options = {"style": config.model_style} if _has_styles(config.arch) else {}
    if config.zero_init_residual:
        options["zero_init_residual"] = True
    model = create_model(
        config.arch, width=config.width, num_classes=num_classes, in_channels=in_channels, generator=generator,
        **options,
    )
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = config.bn_momentum
    return model


def _has_styles(arch: str) -> bool:
    """Whether `arch` is a CIFAR ResNet / plain CNN, whose details `model_style` chooses."""
    from ckatlas.models.registry import is_cifar_family

    return is_cifar_family(arch)


__all__ = ["DEFAULT_EPOCHS", "PRECISIONS", "RECIPES", "TrainConfig", "build_model"]
