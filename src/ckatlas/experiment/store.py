"""The experiment directory: where every piece of an experiment lives on disk (each analysis' own
files are named by its step module, `ckatlas.experiment.steps`).

    DIR/
      experiment.json          the resolved config (and versions); fixes what DIR holds
      experiment.toml          the same config as TOML, to read or to re-run
      runs/<run>/              one training run each (`ckatlas.train`)
      cka/<run>.npz            each model's within-model heatmap (`CKAResult`)
      cka/<run_a>__<run_b>.npz cross-model heatmaps (cross-seed pairs)
      analysis/blocks/<run>.json          `BlockResult` of each model
      analysis/stability/<group>.json     `BlockStability` of each group of seeds
      analysis/pca/<run>.npz              `PCAResult` of each model
      analysis/probes/<run>.json          `ProbeResult` of each model
      analysis/prune/<run>.json           `PruneResult` of each residual model
      analysis/errors.json                `ErrorComparison` of the two populations
      timings.json             seconds each step took when it was computed
      spans.json               when each step ran ([start, end], Unix seconds): the wall-clock time
      summary.json             one entry per model and the paths of every result
      report/index.html        the report (`ckatlas.report`)

A piece is finished when its file exists: every file is written atomically, so a
present file is a whole file. A training run is finished when its metrics.json
has its final entry (written last by `ckatlas.train`). Interrupted atomic writes
leave hidden `.<name>.<random>.tmp` files, which are never read and are removed
when the experiment starts again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ckatlas._version import __version__
from ckatlas.errors import UserInputError
from ckatlas.experiment.config import ExperimentConfig, to_toml
from ckatlas.io.files import atomic_write_json, atomic_write_text, is_stray, read_json
from ckatlas.io.formats import tag, upgrade
from ckatlas.io.rundir import RunDir

EXPERIMENT_FILE = "experiment.json"
SUMMARY_FILE = "summary.json"
TIMINGS_FILE = "timings.json"
SPANS_FILE = "spans.json"
_FORMAT = "ckatlas.Experiment"


class ExperimentStore:
    """Paths of one experiment directory, and the checks that make re-runs safe.

    Args:
        root: the experiment directory (created by `claim`).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    # -- paths (relative to the root, as summary.json records them) --------------------------
    @staticmethod
    def run_dir(run: str) -> str:
        return f"runs/{run}"

    @staticmethod
    def cka_file(run_a: str, run_b: str | None = None) -> str:
        return f"cka/{run_a}.npz" if run_b is None else f"cka/{run_a}__{run_b}.npz"

    @staticmethod
    def blocks_file(run: str) -> str:
        return f"analysis/blocks/{run}.json"

    def path(self, relative: str) -> Path:
        """The absolute path of a file or folder given relative to the root."""
        return self.root / relative

    # -- state -------------------------------------------------------------------------------
    def is_finished_run(self, run: str) -> bool:
        """Whether runs/<run> holds a finished training run."""
        return self.run(run).is_finished()

    def run(self, run: str) -> RunDir:
        """The run directory of `run` (runs/<run>)."""
        return RunDir(self.path(self.run_dir(run)))

    def claim(self, config: ExperimentConfig) -> None:
        """Make the root hold `config`'s experiment, or check that it already does.

        The first call writes experiment.json and experiment.toml. Later calls compare
        the config with the one recorded (where the dataset is read from may change).

        Raises:
            UserInputError: the root is a file, a non-empty folder that is no
                experiment, or an experiment with a different config.
        """
        if self.root.exists() and not self.root.is_dir():
            raise UserInputError(f"--out {self.root} is a file; expected a folder for the experiment")
        record = self.path(EXPERIMENT_FILE)
        if record.is_file():
            old = _recorded_config(read_json(record, "an experiment record (delete it to start over)"), record)
            diff = _first_difference(_identity(old), _identity(config.to_dict()))
            if diff is not None:
                raise UserInputError(
                    f"{self.root} holds a different experiment ({diff}); use another --out, or delete it to start over"
                )
            return
        if self.root.is_dir() and any(not is_stray(p) for p in self.root.iterdir()):
            raise UserInputError(f"{self.root} is not empty and holds no ckatlas experiment ({EXPERIMENT_FILE}); use another --out")
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path("experiment.toml"), to_toml(config))
        atomic_write_json(record, {**tag(_FORMAT), "ckatlas": __version__, "config": config.to_dict(),
                                   "runs": [r.to_dict() for r in config.runs]})

    def remove_strays(self) -> list[Path]:
        """Delete the temporary files of interrupted writes; returns what was removed."""
        removed = []
        for path in self.root.rglob(".*.tmp"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def read_timings(self) -> dict[str, float]:
        """Seconds each step took, by step key, as recorded so far."""
        path = self.path(TIMINGS_FILE)
        if not path.is_file():
            return {}
        return {k: float(v) for k, v in read_json(path, "step timings (delete the file to start them over)").items()}

    def record_timings(self, seconds: dict[str, float], ended: float | None = None) -> None:
        """Add (or overwrite) the seconds of the given steps; with `ended` (Unix time), also
        when they ran, for the wall-clock time (`wall_seconds`)."""
        atomic_write_json(self.path(TIMINGS_FILE), {**self.read_timings(), **seconds})
        if ended is not None:
            spans = {key: [ended - s, ended] for key, s in seconds.items()}
            atomic_write_json(self.path(SPANS_FILE), {**self._read_spans(), **spans})

    def _read_spans(self) -> dict[str, list[float]]:
        path = self.path(SPANS_FILE)
        if not path.is_file():
            return {}
        return read_json(path, "step spans (delete the file to start them over)")

    def wall_seconds(self) -> float | None:
        """Wall-clock seconds during which at least one step was computing, over every
        invocation so far (steps run side by side counted once; the pauses between a crash and
        its resume not counted); None before any span was recorded."""
        spans = sorted((float(a), float(b)) for a, b in self._read_spans().values())
        if not spans:
            return None
        total, (start, end) = 0.0, spans[0]
        for a, b in spans[1:]:
            if a > end:
                total, start, end = total + end - start, a, b
            else:
                end = max(end, b)
        return total + end - start


def _recorded_config(record: Any, path: Path) -> dict[str, Any]:
    """The config of an experiment.json, of any version, as this release records it (`ckatlas.io.formats`)."""
    if not isinstance(record, dict):
        raise UserInputError(f"{path}: not an experiment record (a JSON object); delete it to start over")
    try:
        return dict(upgrade(_FORMAT, record, "an experiment record").get("config") or {})
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What must match for a directory to hold the same experiment: all but the description and where data is read from."""
    dataset = {k: v for k, v in config.get("dataset", {}).items() if k != "data_dir"}
    return {**{k: v for k, v in config.items() if k != "description"}, "dataset": dataset}


def _first_difference(old: Any, new: Any, where: str = "") -> str | None:
    """The first key where two JSON-like values differ, in words; None when equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{where}.{key}" if where else str(key)
            if key not in new:
                return f"{sub} was {old[key]!r}, now not set"
            if key not in old:
                return f"{sub} was not set, now {new[key]!r}"
            found = _first_difference(old[key], new[key], sub)
            if found is not None:
                return found
        return None
    if old != new:
        return f"{where or 'the config'} was {old!r}, now {new!r}"
    return None


__all__ = ["EXPERIMENT_FILE", "ExperimentStore", "SUMMARY_FILE", "TIMINGS_FILE"]
