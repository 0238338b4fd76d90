"""Finished runs read back: `load_run` (the model in eval mode, its config and metrics)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.rundir import METRICS_FILE, MODEL_FILE, RunDir
from ckatlas.train.config import TrainConfig, build_model
from ckatlas.devices import resolve_device


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


def _read_config(run_dir: Path) -> TrainConfig:
    return TrainConfig.from_dict(RunDir(run_dir).read_info()["config"])


def run_is_finished(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a finished run (`RunDir.is_finished`)."""
    return RunDir(run_dir).is_finished()


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


__all__ = ["LoadedRun", "TrainResult", "load_run", "run_is_finished"]
