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
from ckatlas.io.rundir import METRICS_FILE, MODEL_FILE, RunDir
from ckatlas.train.config import TrainConfig, build_model
from ckatlas.runtime.devices import resolve_device


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


def _not_a_finished_run(run_dir: Path) -> str:
    """Why `run_dir` is no finished run, in words: missing (with close names beside it), no run at all, or
    a run not yet finished (only then the advice to resume it)."""
    if not run_dir.exists():
        import difflib

        parent = run_dir.parent if run_dir.parent.is_dir() else None
        names = [p.name for p in parent.iterdir() if p.is_dir()] if parent is not None else []
        close = difflib.get_close_matches(run_dir.name, names, n=3, cutoff=0.5)
        hint = f"; close matches: {', '.join(str(run_dir.parent / n) for n in close)}" if close else ""
        where = "" if parent is not None else f" (nor is {run_dir.parent})"
        return f"{run_dir}: no such run folder{where}{hint}"
    files = RunDir(run_dir)
    if not run_dir.is_dir() or not files.config.is_file():
        return f"{run_dir} holds no ckatlas run (no {files.config.name}); give a folder that 'ckatlas train' wrote"
    return (f"{run_dir} holds an unfinished ckatlas run (no {MODEL_FILE} or final {METRICS_FILE} yet); "
            "finish it with 'ckatlas train ... --resume'")


def load_run(run_dir: str | Path, device: str | torch.device | None = "cpu") -> LoadedRun:
    """Rebuild a finished run's model (in eval mode) from its config.json and model.safetensors."""
    run_dir = Path(run_dir).expanduser()
    if not run_is_finished(run_dir):
        raise UserInputError(_not_a_finished_run(run_dir))
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
