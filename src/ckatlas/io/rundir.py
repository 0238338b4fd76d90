"""A run directory: the one place that knows its file names, when it is finished, and its readers and writers.

    RUN/
      config.json          resolved settings, data summary, versions ("info")
      model.safetensors    final (or kept) weights
      metrics.json         per-epoch records and, once finished, "final"
      predictions.npz      test-set logits and labels, in dataset order
      dynamics.npz         (optional) heatmaps and blocks at some epochs (ckatlas.analysis.dynamics)
      state/checkpoint.safetensors   what resuming needs, rewritten every epoch

Everything is written atomically (`ckatlas.io.files`); an interrupted write leaves only a
stray temporary file (``.NAME.XXXX.tmp``), which `clean_strays` removes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ckatlas.errors import UserInputError
from ckatlas.io.files import atomic_write_json, is_stray, npz_intact, read_json, safetensors_intact
from ckatlas.io.formats import tag, upgrade

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"
STATE_FILE = "state/checkpoint.safetensors"
DYNAMICS_FILE = "dynamics.npz"
CONFIG_FORMAT = "ckatlas.RunConfig"  # the kinds of config.json and metrics.json (`ckatlas.io.formats`)
METRICS_FORMAT = "ckatlas.RunMetrics"


class RunDir:
    """The files of one training run (module docstring).

    Args:
        path: the run directory (it need not exist yet).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def model(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS_FILE

    @property
    def state(self) -> Path:
        return self.path / STATE_FILE

    @property
    def dynamics(self) -> Path:
        return self.path / DYNAMICS_FILE

    def is_finished(self) -> bool:
        """Whether it holds a finished run: its config, whole weights and predictions, and final metrics.

        A weights or predictions file cut short (a copy interrupted, a full disk) makes the
        run unfinished, so that training it again with `resume` writes it again.
        """
        if not all(p.is_file() for p in (self.config, self.model, self.predictions, self.metrics)):
            return False
        try:
            metrics = json.loads(self.metrics.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return False
        if not isinstance(metrics, dict) or metrics.get("final") is None:
            return False
        return safetensors_intact(self.model) and npz_intact(self.predictions)

    def has_files(self) -> bool:
        """Whether the folder holds anything but stray temporary files."""
        return self.path.is_dir() and any(not is_stray(p) for p in self.path.iterdir())

    def read_info(self) -> dict[str, Any]:
        """config.json: {"config": settings, "data": data summary, "model": ..., "environment": ...}, of any
        version, as this release writes it (`ckatlas.io.formats`)."""
        return self._json(self.config, "a ckatlas run's config.json", CONFIG_FORMAT)

    def read_metrics(self) -> dict[str, Any]:
        """metrics.json: {"epochs": [...], "final": {...} or None}, of any version, as this release writes it."""
        return self._json(self.metrics, "a ckatlas run's metrics.json", METRICS_FORMAT)

    def write_info(self, info: dict[str, Any]) -> None:
        """Write config.json (atomically, tagged with its format version)."""
        atomic_write_json(self.config, {**tag(CONFIG_FORMAT), **info})

    def write_metrics(self, epochs: list[dict[str, Any]], final: dict[str, Any] | None) -> None:
        """Write metrics.json: the per-epoch records and, once finished, "final" (atomically, tagged)."""
        atomic_write_json(self.metrics, {**tag(METRICS_FORMAT), "epochs": epochs, "final": final})

    def _json(self, path: Path, what: str, kind: str) -> dict[str, Any]:
        if not path.is_file():
            raise UserInputError(f"{path} not found: {self.path} is not a (finished) ckatlas run directory")
        data = read_json(path, what)
        if not isinstance(data, dict):
            raise UserInputError(f"{path}: expected {what} (a JSON object)")
        try:
            return upgrade(kind, data, what)
        except UserInputError as exc:
            raise UserInputError(f"{path}: {exc}") from None

    def clean_strays(self) -> list[Path]:
        """Delete the temporary files of interrupted writes; returns what was removed."""
        removed = []
        for folder in (self.path, self.state.parent):
            if folder.is_dir():
                for path in folder.iterdir():
                    if path.is_file() and is_stray(path):
                        path.unlink(missing_ok=True)
                        removed.append(path)
        return removed


__all__ = ["CONFIG_FILE", "CONFIG_FORMAT", "METRICS_FILE", "METRICS_FORMAT", "MODEL_FILE", "PREDICTIONS_FILE", "RunDir",
           "STATE_FILE"]
