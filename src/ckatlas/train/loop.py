"""The training loop: `train` one model into its run directory, epoch by epoch, resumable (package docstring)."""

from __future__ import annotations

import io
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors
from torch import nn

from ckatlas._version import __version__
from ckatlas.runtime.cpu import training_threads
from ckatlas.data import (
    NO_AUGMENTATION,
    ImageData,
    iterate_batches,
    num_batches,
)
from ckatlas.data.subsets import validation_split
from ckatlas.errors import UserInputError
from ckatlas.io.files import atomic_write_bytes
from ckatlas.io.rundir import CONFIG_FILE, RunDir
from ckatlas.train.checkpoint import load_state, save_state
from ckatlas.train.config import TrainConfig, build_model
from ckatlas.train.predict import (
    autocast_for,
    device_layout,
    channels_last_for,
    memory_format_for,
    predict,
    resolve_device,
    resolve_precision,
)
from ckatlas.train.runs import TrainResult, run_is_finished

EpochCallback = Callable[[nn.Module, int, torch.device], None]


class EpochRecording(Protocol):
    """What `train(dynamics=...)` takes, e.g. `ckatlas.analysis.dynamics.DynamicsSettings`: it makes
    the callback that training calls with the model at initialisation (epoch 0, on a fresh start)
    and after every epoch. Training imports no analysis: the analysis brings its own callback."""

    def recorder(self, data: ImageData, total_epochs: int, run_dir: Path) -> EpochCallback: ...


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
    """Parameter groups: weight decay on every parameter, or on conv and linear kernels only."""
    if config.decay_scope == "all":
        return [{"params": list(model.parameters()), "weight_decay": config.weight_decay}]
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    params = list(model.parameters())
    return [
        {"params": [p for p in params if id(p) in kernels], "weight_decay": config.weight_decay},
        {"params": [p for p in params if id(p) not in kernels], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The run's optimiser (`config.optimizer`) over `parameter_groups`."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameter_groups(model, config), lr=config.lr)
    return torch.optim.SGD(parameter_groups(model, config), lr=config.lr, momentum=config.momentum,
                           nesterov=config.nesterov)


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


def _seeds(seed: int) -> tuple[int, int]:
    """Independent seeds for the weights and for the data order and augmentation."""
    init, data = np.random.SeedSequence(seed).spawn(2)
    return int(init.generate_state(1, np.uint64)[0]), int(data.generate_state(1, np.uint64)[0])


def initial_model(config: TrainConfig, num_classes: int, in_channels: int) -> nn.Module:
    """The model a run of `config` starts from: the same architecture and initial weights (its seed), before any
    step; what the untrained baseline of an analysis is computed on."""
    return build_model(config, num_classes, in_channels, torch.Generator().manual_seed(_seeds(config.seed)[0]))


def _run_info(config: TrainConfig, data: ImageData, model: nn.Module, device: torch.device,
              precision: str) -> dict[str, Any]:
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
            "precision": precision,
            "amp": "bfloat16" if precision == "bfloat16" else None,
            "channels_last": channels_last_for(device, precision),
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


def _recorded_arithmetic(info: dict[str, Any]) -> tuple[str, bool]:
    """The precision and layout a run was started in, as its config.json records them (`RunDir.read_info`
    brings runs of earlier releases forward)."""
    environment = info["environment"]
    return str(environment["precision"]), bool(environment["channels_last"])


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


def _clean_train_accuracy(model: nn.Module, data: ImageData, batch_size: int, device: torch.device) -> float:
    """Accuracy of the final model on the examples it trained on, without augmentation (eval mode): whether
    it fits its training data, unlike the running accuracy over augmented batches that each epoch records."""
    logits = predict(model, data.x_train, batch_size, device)
    return (logits.argmax(1) == data.y_train.cpu()).double().mean().item()


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
    arithmetic: tuple[str, bool] = ("float32", False),
) -> Iterator[dict[str, Any]]:
    """Train epoch by epoch from `start_epoch`; yield each finished epoch's metrics.

    With `val` (images, labels), each epoch's record holds its validation accuracy.
    """
    n = data.x_train.shape[0]
    drop_last = n % config.batch_size == 1  # BatchNorm needs two examples in a batch
    per_epoch = num_batches(n, config.batch_size, drop_last)
    total = config.epochs * per_epoch
    augment = data.augmentation if config.augment else NO_AUGMENTATION
    precision, channels_last = arithmetic
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
                with autocast_for(device, precision):
                    logits = model(device_layout(xb, channels_last))
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


def fit(
    model: nn.Module, data: ImageData, config: TrainConfig, device: str | torch.device | None = None,
    *, quiet: bool = True,
) -> list[dict[str, Any]]:
    """Train an in-memory `model` on `data` as `train` would (its optimiser, schedule, decay and
    augmentation from `config`), without a run directory; returns the per-epoch records.

    For fine-tuning (block deletion): ``fit(pruned, data, TrainConfig(epochs=2, lr=0.01, eval_every=0))``.
    The model ends in eval mode.
    """
    config = replace(config, dataset=getattr(data, "name", config.dataset)).resolved()
    device = resolve_device(device)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(_seeds(config.seed)[1])
    precision = resolve_precision(config.precision, device, model)
    arithmetic = (precision, channels_last_for(device, precision))
    model.to(memory_format=memory_format_for(arithmetic[1]))
    with training_threads(model, device):  # narrow models: 1 CPU thread (see ckatlas.runtime.cpu)
        history = list(_epochs(model, optimizer, data, config, device, generator, 0, quiet, arithmetic=arithmetic))
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return history


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    device: str | torch.device | None = None,
    dynamics: EpochRecording | None = None,
) -> TrainResult:
    """Train one model and write its run directory (see the module docstring).

    Args:
        config: what to train.
        out_dir: the run directory; created if missing. It must be empty or hold
            this same run.
        resume: finish the run already in `out_dir` (from its last finished epoch);
            a finished run is returned as it is, an empty folder starts afresh.
        quiet: no progress bar.
        device: "cpu", "cuda", "cuda:N" or None (CUDA when present). On CUDA, training uses
            channels_last; the arithmetic is `config.precision`'s (by default bfloat16 autocast
            where the device has it natively; a resumed run continues in the precision it began in).
        dynamics: record something at some epochs, e.g. `DynamicsSettings`: the heatmap,
            blocks and first-PC variance into the run's dynamics.npz
            (`ckatlas.analysis.dynamics`); training is unchanged (`EpochRecording`).

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
    data_seed = _seeds(config.seed)[1]
    model = initial_model(config, data.num_classes, data.in_channels)
    precision = resolve_precision(config.precision, device, model)
    info = _run_info(config, data, model, device, precision)
    if val is not None:
        info["data"]["num_val"] = len(val[1])
    if _check_run_dir(run_dir, info, resume):
        if run_is_finished(run_dir):
            return TrainResult.load(run_dir)
        files.clean_strays()
    else:
        files.write_info(info)
    precision, channels_last = _recorded_arithmetic(files.read_info())  # a resumed run continues as it began

    model.to(device=device, memory_format=memory_format_for(channels_last))
    data = data.to(device) if device.type == "cuda" else data
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(data_seed)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    best: dict[str, torch.Tensor] | None = None  # the weights of the best validation epoch so far
    if files.state.is_file():
        meta, best = load_state(files.state, model, optimizer, generator, device)
        start_epoch, history = meta["epoch"], meta["history"]

    recorder = None if dynamics is None else dynamics.recorder(data, config.epochs, run_dir)
    with training_threads(model, device):  # narrow models: 1 CPU thread (see ckatlas.runtime.cpu)
        if recorder is not None and start_epoch == 0:
            recorder(model, 0, device)
        for record in _epochs(model, optimizer, data, config, device, generator, start_epoch, quiet, val,
                              (precision, channels_last)):
            if recorder is not None:
                recorder(model, record["epoch"], device)
            history.append(record)
            if val is not None and record["val_accuracy"] >= max(r["val_accuracy"] for r in history):
                best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}  # ties: the later epoch
            bookkeeping = {"epoch": record["epoch"], "history": history}
            save_state(files.state, model, optimizer, generator, bookkeeping, best)
            files.write_metrics(history, None)
        if best is not None:
            model.load_state_dict(best)
        model.to(memory_format=torch.contiguous_format)  # evaluated as a reloaded model runs: the same logits

        test_loss, test_accuracy, logits = _evaluate(model, data, config.batch_size, device, config.label_smoothing)
        train_accuracy = _clean_train_accuracy(model, data, config.batch_size, device)
    buffer = io.BytesIO()
    np.savez(buffer, logits=logits.numpy(), labels=data.y_test.cpu().numpy())
    atomic_write_bytes(files.predictions, buffer.getvalue())
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(files.model, save_safetensors(weights, metadata={"arch": config.arch}))
    final = {
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "train_accuracy": train_accuracy,
        "train_seconds": sum(r["seconds"] for r in history),
        "epochs": config.epochs,
    }
    if val is not None:
        kept = max(history, key=lambda r: (r["val_accuracy"], r["epoch"]))
        final["kept_epoch"], final["val_accuracy"] = kept["epoch"], kept["val_accuracy"]
    files.write_metrics(history, final)
    return TrainResult.load(run_dir)


__all__ = ["cosine_lr", "fit", "initial_model", "learning_rate", "parameter_groups", "train"]
