"""Training one model into a run directory, resumable after any interruption.

    result = train(TrainConfig(arch="resnet20", width=2, dataset="digits"), "runs/r20w2")
    run = load_run("runs/r20w2")          # model (eval mode), config, metrics
    logits = predict(run.model, run.config.load_data().x_test)

A run directory (DESIGN.md):

    config.json          resolved settings, data summary, versions, seed
    model.safetensors    final weights
    metrics.json         per-epoch loss/accuracy, final test accuracy ("final" is null until done)
    predictions.npz      test-set logits and labels, in dataset order
    state/checkpoint.safetensors   model, optimizer and generator state after the last
                         finished epoch, its bookkeeping as JSON in the file's metadata

Every file is written atomically (`ckatlas.files`), so a killed run leaves at most
a stray hidden `.tmp` file, never a half-written file under a final name. The
checkpoint is one file, so its tensors and its bookkeeping always agree. On the
CPU with a fixed seed, a resumed run ends with the same weights, bit for bit, as
one that was never interrupted.

Defaults follow the usual CIFAR ResNet recipe: SGD with momentum 0.9, learning
rate 0.1 for batch size 128 (He et al. 2016), weight decay 5e-4 (Zagoruyko &
Komodakis 2016), a cosine schedule to zero over all steps (Loshchilov & Hutter
2017), 200 epochs. Digits default to 15 epochs at 16x16, which reaches >= 97%
test accuracy with ResNet-20 in under two minutes on two CPU cores
(BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from ckatlas import __version__
from ckatlas.cpu import training_threads
from ckatlas.data import (
    NO_AUGMENTATION,
    ImageData,
    default_resize,
    iterate_batches,
    load_dataset,
    num_batches,
    standard_layout,
)
from ckatlas.data.subsets import check_fraction, validation_split
from ckatlas.errors import UserInputError
from ckatlas.files import atomic_write_bytes, atomic_write_json
from ckatlas.rundir import CONFIG_FILE, METRICS_FILE, MODEL_FILE, RunDir
from ckatlas.models import create_model

DEFAULT_EPOCHS = {"digits": 15}  # every other dataset: 200
_STATE_KEY = "ckatlas.state"


_CHOICES = {
    "model_style": ("paper", "torchvision"),
    "lr_schedule": ("cosine-step", "cosine-epoch"),
    "decay_scope": ("all", "kernels"),
    "pad_mode": ("zeros", "reflect"),
    "keep": ("final", "best-val"),
}

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


@dataclass(frozen=True)
class TrainResult:
    """A finished run: where it is, what it was, how it went."""

    run_dir: Path
    config: TrainConfig
    metrics: dict[str, Any]

    @property
    def test_accuracy(self) -> float:
        return float(self.metrics["final"]["test_accuracy"])

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "config": self.config.to_dict(), "metrics": self.metrics}

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainResult:
        run_dir = Path(run_dir)
        return cls(run_dir, _read_config(run_dir), RunDir(run_dir).read_metrics())


@dataclass(frozen=True)
class LoadedRun:
    """A trained model read back from its run directory (see `load_run`)."""

    run_dir: Path
    model: nn.Module
    config: TrainConfig
    metrics: dict[str, Any]
    info: dict[str, Any]  # the whole config.json: data summary, versions, device


# -- devices and precision -------------------------------------------------------------------


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a torch.device; None or "auto": CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserInputError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for, but PyTorch sees no CUDA device; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UserInputError(f"unsupported device {device!r}; expected auto, cpu, cuda or cuda:N")
    return dev


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    # bfloat16 needs no loss scaling; CUDA devices without it train in float32.
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _memory_format(device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def _layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Images in the layout the device's convolutions want: channels_last on CUDA, NCHW on the CPU."""
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else standard_layout(x)


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, batch_size: int = 256, device: str | torch.device | None = None
) -> torch.Tensor:
    """Logits of `model` (put in eval mode) for images `x`, in order, as float32 on the CPU."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        with _autocast(device):
            out.append(model(_layout(xb, device)).float().cpu())
    return torch.cat(out)


def cosine_lr(step: int, total_steps: int, peak: float) -> float:
    """Cosine decay from `peak` at step 0 towards 0 at `total_steps` (Loshchilov & Hutter 2017)."""
    return peak * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def learning_rate(config: TrainConfig, step: int, per_epoch: int) -> float:
    """The learning rate of optimiser step `step` (0-based) under `config.lr_schedule`.

    "cosine-epoch" holds each epoch at the value of its first step's epoch, as Keras'
    ``LearningRateScheduler(CosineDecay(lr, epochs))`` in the paper's code does.
    """
    if config.lr_schedule == "cosine-epoch":
        return cosine_lr(step // per_epoch, config.epochs, config.lr)
    return cosine_lr(step, config.epochs * per_epoch, config.lr)


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """SGD parameter groups: weight decay on every parameter, or on conv and linear kernels only."""
    if config.decay_scope == "all":
        return [{"params": list(model.parameters()), "weight_decay": config.weight_decay}]
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    params = list(model.parameters())
    return [
        {"params": [p for p in params if id(p) in kernels], "weight_decay": config.weight_decay},
        {"params": [p for p in params if id(p) not in kernels], "weight_decay": 0.0},
    ]


def _held_out(data: ImageData, config: TrainConfig) -> tuple[ImageData, tuple[torch.Tensor, torch.Tensor] | None]:
    """The data to train on and, for ``keep="best-val"``, the held-out (images, labels).

    The split is stratified and seeded with `subset_seed`, so every run of one
    experiment holds out the same examples.
    """
    if config.keep != "best-val":
        return data, None
    fit, val = validation_split(data.y_train, config.val_fraction, config.subset_seed)
    fit_t, val_t = torch.from_numpy(fit), torch.from_numpy(val)
    kept = data.train_indices[fit_t] if data.train_indices is not None else fit_t
    train_part = replace(data, x_train=data.x_train[fit_t], y_train=data.y_train[fit_t], train_indices=kept)
    return train_part, (data.x_train[val_t], data.y_train[val_t])


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


def _seeds(seed: int) -> tuple[int, int]:
    """Independent seeds for the weights and for the data order and augmentation."""
    init, data = np.random.SeedSequence(seed).spawn(2)
    return int(init.generate_state(1, np.uint64)[0]), int(data.generate_state(1, np.uint64)[0])


# -- files -------------------------------------------------------------------------------------


def _read_config(run_dir: Path) -> TrainConfig:
    return TrainConfig.from_dict(RunDir(run_dir).read_info()["config"])


def run_is_finished(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a finished run (`RunDir.is_finished`)."""
    return RunDir(run_dir).is_finished()


def _save_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    bookkeeping: dict[str, Any],
    best: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write everything resuming needs into one safetensors file (bookkeeping as JSON metadata)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if best is not None:
        tensors.update({f"best.{k}": v.contiguous() for k, v in best.items()})
    opt_state = optimizer.state_dict()
    extra: dict[str, dict[str, Any]] = {}
    for index, entries in opt_state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                extra.setdefault(str(index), {})[key] = value
    tensors["rng.data"] = generator.get_state()
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    meta = {**bookkeeping, "optimizer": {"param_groups": opt_state["param_groups"], "extra_state": extra}}
    atomic_write_bytes(path, save_safetensors(tensors, metadata={_STATE_KEY: json.dumps(meta)}))


def _load_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore what `_save_state` wrote; returns the bookkeeping and the best weights (if kept)."""
    data = path.read_bytes()
    try:
        tensors = load_safetensors(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8 : 8 + header_len])["__metadata__"][_STATE_KEY])
    except (SafetensorError, KeyError, ValueError) as exc:
        raise UserInputError(f"{path}: unreadable checkpoint ({exc}); delete the state/ folder to start over") from None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device)
    for index, entries in meta["optimizer"]["extra_state"].items():
        state.setdefault(int(index), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    generator.set_state(tensors["rng.data"])
    torch.set_rng_state(tensors["rng.torch_cpu"])
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return meta, best or None


def _run_info(config: TrainConfig, data: ImageData, model: nn.Module, device: torch.device) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "data": data.to_dict(),
        "model": {"arch": config.arch, "num_parameters": sum(p.numel() for p in model.parameters())},
        "environment": {
            "ckatlas": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "device": str(device),
            "amp": "bfloat16" if isinstance(_autocast(device), torch.autocast) else None,
            "channels_last": device.type == "cuda",
        },
    }


def _identity(info: dict[str, Any]) -> dict[str, Any]:
    """What two runs must share to be the same run: settings (bar where the data lives) and data."""
    config = {k: v for k, v in TrainConfig.from_dict(info["config"]).to_dict().items() if k != "data_dir"}
    data = {k: v for k, v in info["data"].items() if k != "class_names"}
    for key in ("mean", "std"):  # float32 sums: the last digits move with the thread count
        if key in data:
            data[key] = [float(f"{v:.6g}") for v in data[key]]
    return {"config": config, "data": data}


def _check_run_dir(run_dir: Path, info: dict[str, Any], resume: bool) -> bool:
    """Decide what to do with `run_dir`; True when it holds this run already (resume it)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserInputError(f"--out {run_dir} is a file; expected a folder for the run")
    files = RunDir(run_dir)
    if not files.has_files():
        return False
    if not files.config.is_file():
        raise UserInputError(f"{run_dir} is not empty and holds no ckatlas run ({CONFIG_FILE}); choose another --out")
    old = _identity(files.read_info())
    new = _identity(info)
    if old != new:
        diffs = [
            f"{k}: {old[part].get(k)!r} there, {new[part].get(k)!r} now"
            for part in ("config", "data")
            for k in sorted(set(old[part]) | set(new[part]))
            if old[part].get(k) != new[part].get(k)
        ]
        raise UserInputError(f"{run_dir} holds a different run ({'; '.join(diffs[:3])}); choose another --out")
    if not resume:
        status = "finished" if run_is_finished(run_dir) else "unfinished"
        raise UserInputError(f"{run_dir} already holds this run ({status}); pass --resume to finish or reuse it")
    return True


# -- training ----------------------------------------------------------------------------------


def _progress(total: int, initial: int, quiet: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=quiet, unit="step", dynamic_ncols=True, leave=False)


def _evaluate(
    model: nn.Module, data: ImageData, batch_size: int, device: torch.device, smoothing: float
) -> tuple[float, float, torch.Tensor]:
    """Test loss, test accuracy and the test logits (float32, CPU, dataset order)."""
    logits = predict(model, data.x_test, batch_size, device)
    labels = data.y_test.cpu()
    loss = F.cross_entropy(logits, labels, label_smoothing=smoothing).item()
    return loss, (logits.argmax(1) == labels).double().mean().item(), logits


def _epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageData,
    config: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    start_epoch: int,
    quiet: bool,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Iterator[dict[str, Any]]:
    """Train epoch by epoch from `start_epoch`; yield each finished epoch's metrics.

    With `val` (images, labels), each epoch's record holds its validation accuracy.
    """
    n = data.x_train.shape[0]
    drop_last = n % config.batch_size == 1  # BatchNorm needs two examples in a batch
    per_epoch = num_batches(n, config.batch_size, drop_last)
    total = config.epochs * per_epoch
    augment = data.augmentation if config.augment else NO_AUGMENTATION
    bar = _progress(total, start_epoch * per_epoch, quiet)
    step = start_epoch * per_epoch
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            bar.set_description(f"epoch {epoch}/{config.epochs}")
            model.train()
            started = time.perf_counter()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            batches = iterate_batches(
                data.x_train,
                data.y_train,
                config.batch_size,
                shuffle=True,
                generator=generator,
                augment=augment,
                device=device,
                drop_last=drop_last,
            )
            for i, (xb, yb) in enumerate(batches):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step, per_epoch)
                with _autocast(device):
                    logits = model(_layout(xb, device))
                    loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += loss.detach() * len(yb)
                correct += (logits.detach().argmax(1) == yb).sum()
                seen += len(yb)
                bar.update(1)
                if not quiet and (i % 10 == 9 or i == per_epoch - 1):  # .item() waits for the device
                    rate = seen / (time.perf_counter() - started)
                    bar.set_postfix(
                        loss=f"{loss_sum.item() / seen:.3f}",
                        acc=f"{correct.item() / seen:.3f}",
                        img_s=f"{rate:.0f}",
                        refresh=False,
                    )
            seconds = time.perf_counter() - started
            record = {
                "epoch": epoch,
                "lr": learning_rate(config, step - 1, per_epoch),
                "train_loss": loss_sum.item() / seen,
                "train_accuracy": correct.item() / seen,
                "test_loss": None,
                "test_accuracy": None,
                "seconds": seconds,
                "images_per_second": seen / seconds,
            }
            if val is not None:
                logits = predict(model, val[0], config.batch_size, device)
                record["val_accuracy"] = (logits.argmax(1) == val[1].cpu()).double().mean().item()
            if config.eval_every and (epoch % config.eval_every == 0 or epoch == config.epochs):
                record["test_loss"], record["test_accuracy"], _ = _evaluate(
                    model, data, config.batch_size, device, config.label_smoothing
                )
            yield record
    finally:
        bar.close()


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train one model and write its run directory (see the module docstring).

    Args:
        config: what to train.
        out_dir: the run directory; created if missing. It must be empty or hold
            this same run.
        resume: finish the run already in `out_dir` (from its last finished epoch);
            a finished run is returned as it is, an empty folder starts afresh.
        quiet: no progress bar.
        device: "cpu", "cuda", "cuda:N" or None (CUDA when present). On CUDA,
            training uses bfloat16 autocast and channels_last.

    Returns:
        The finished run's `TrainResult`.

    Raises:
        UserInputError: bad settings, missing data, or an `out_dir` holding
            something else (a different run, other files, or this run without `resume`).
    """
    config = config.resolved()
    device = resolve_device(device)
    run_dir = Path(out_dir).expanduser()
    files = RunDir(run_dir)
    data, val = _held_out(config.load_data(), config)
    init_seed, data_seed = _seeds(config.seed)
    model = build_model(config, data.num_classes, data.in_channels, torch.Generator().manual_seed(init_seed))
    info = _run_info(config, data, model, device)
    if val is not None:
        info["data"]["num_val"] = len(val[1])
    if _check_run_dir(run_dir, info, resume):
        if run_is_finished(run_dir):
            return TrainResult.load(run_dir)
        files.clean_strays()
    else:
        atomic_write_json(files.config, info)

    model.to(device=device, memory_format=_memory_format(device))
    data = data.to(device) if device.type == "cuda" else data
    optimizer = torch.optim.SGD(
        parameter_groups(model, config),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
    )
    generator = torch.Generator().manual_seed(data_seed)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    best: dict[str, torch.Tensor] | None = None  # the weights of the best validation epoch so far
    if files.state.is_file():
        meta, best = _load_state(files.state, model, optimizer, generator, device)
        start_epoch, history = meta["epoch"], meta["history"]

    with training_threads(model, device):  # narrow models: 1 CPU thread (see ckatlas.cpu)
        for record in _epochs(model, optimizer, data, config, device, generator, start_epoch, quiet, val):
            history.append(record)
            if val is not None and record["val_accuracy"] >= max(r["val_accuracy"] for r in history):
                best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}  # ties: the later epoch
            bookkeeping = {"epoch": record["epoch"], "history": history}
            _save_state(files.state, model, optimizer, generator, bookkeeping, best)
            atomic_write_json(files.metrics, {"epochs": history, "final": None})
        if best is not None:
            model.load_state_dict(best)

        test_loss, test_accuracy, logits = _evaluate(model, data, config.batch_size, device, config.label_smoothing)
    buffer = io.BytesIO()
    np.savez(buffer, logits=logits.numpy(), labels=data.y_test.cpu().numpy())
    atomic_write_bytes(files.predictions, buffer.getvalue())
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(files.model, save_safetensors(weights, metadata={"arch": config.arch}))
    final = {
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "train_seconds": sum(r["seconds"] for r in history),
        "epochs": config.epochs,
    }
    if val is not None:
        kept = max(history, key=lambda r: (r["val_accuracy"], r["epoch"]))
        final["kept_epoch"], final["val_accuracy"] = kept["epoch"], kept["val_accuracy"]
    atomic_write_json(files.metrics, {"epochs": history, "final": final})
    return TrainResult.load(run_dir)


def load_run(run_dir: str | Path, device: str | torch.device | None = "cpu") -> LoadedRun:
    """Rebuild a finished run's model (in eval mode) from its config.json and model.safetensors."""
    run_dir = Path(run_dir).expanduser()
    if not run_is_finished(run_dir):
        raise UserInputError(
            f"{run_dir} holds no finished ckatlas run (expected {MODEL_FILE} and a final {METRICS_FILE}); "
            "finish it with 'ckatlas train ... --resume'"
        )
    files = RunDir(run_dir)
    info = files.read_info()
    config = TrainConfig.from_dict(info["config"])
    shape = info["data"]["image_shape"]
    model = build_model(config, info["data"]["num_classes"], shape[0])
    try:
        weights = load_safetensors(files.model.read_bytes())
    except SafetensorError as exc:
        raise UserInputError(f"{files.model}: unreadable weights ({exc})") from None
    model.load_state_dict(weights)
    model.to(resolve_device(device)).eval()
    return LoadedRun(run_dir, model, config, files.read_metrics(), info)


__all__ = [
    "DEFAULT_EPOCHS",
    "LoadedRun",
    "TrainConfig",
    "TrainResult",
    "RECIPES",
    "build_model",
    "cosine_lr",
    "learning_rate",
    "load_run",
    "parameter_groups",
    "predict",
    "resolve_device",
    "run_is_finished",
    "train",
]
