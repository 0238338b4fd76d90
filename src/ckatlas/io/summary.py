"""`ExperimentSummary`: summary.json as typed entries, read and written in one place.

`ckatlas.experiment.summarise.build_summary` makes one from an experiment directory; the report,
the claims and the command line read it with `ExperimentSummary.load(root / "summary.json")`
(`read_summary(root)` says what to do when it is missing) and use attributes instead of string
keys: ``summary.models[0].block_strength``, ``model.path("pca")``, ``summary.model(name)``,
``summary.group_of(run)``. Saving writes the JSON of earlier releases (the keys in the same order)
with its format version; summaries written by earlier releases load (`ckatlas.io.formats` brings them
forward; an entry's fields missing in older files get their defaults, and newer keys are left out).
The file's layout is described in `ckatlas.experiment.summarise`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckatlas.errors import UserInputError
from ckatlas.io.results import JsonResult


def _from(cls: type, data: dict[str, Any]) -> Any:
    """An entry from its JSON object: known keys only (newer files may hold more), defaults for missing ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class ModelEntry:
    """One trained model: its place in the grid, its accuracy, its blocks and where its results are.

    `blocks` are inclusive [start, end] indices into `layers` (the analysed layers of its
    within-model heatmap), `block_scores` their contrast scores; `paths` maps "run", "cka",
    "blocks" and each analysis' step kind ("pca", "probes", ...) to a file relative to the
    experiment directory.
    """

    name: str
    arch: str
    depth: int
    width: float
    residual: bool
    seed: int
    fraction: float
    family: str = "resnet"
    test_accuracy: float | None = None
    train_accuracy: float | None = None  # clean, on the examples trained on; None in runs of earlier releases
    block_fraction: float = 0.0
    block_strength: float | None = None
    peak_score: float | None = None
    block_area: float | None = None  # None in summaries of earlier releases
    blocks: list[list[int]] = field(default_factory=list)
    block_scores: list[float] = field(default_factory=list)
    layers: list[str] | None = None
    num_parameters: int | None = None
    train_seconds: float | None = None
    paths: dict[str, str] = field(default_factory=dict)

    def path(self, kind: str) -> str | None:
        """The file of one of this model's results ("run", "cka", "blocks", "pca", ...), or None."""
        return self.paths.get(kind)

    def has(self, kind: str) -> bool:
        """Whether the experiment computed `kind` ("pca", "probes", ...) for this model."""
        return kind in self.paths

    @property
    def slice_key(self) -> tuple[str, bool, float]:
        """(family, residual, fraction): which depth x width table of the grid it belongs to."""
        return (self.family, self.residual, self.fraction)


@dataclass
class GroupEntry:
    """One architecture (all its seeds): means over the seeds; `stability` the file comparing their blocks."""

    name: str
    arch: str
    depth: int
    width: float
    residual: bool
    fraction: float
    runs: list[str]
    test_accuracy_mean: float | None = None
    test_accuracy_std: float | None = None
    train_accuracy_mean: float | None = None
    block_fraction_mean: float | None = None
    block_fraction_std: float | None = None
    block_strength_mean: float | None = None
    block_strength_std: float | None = None
    block_area_mean: float | None = None
    block_area_std: float | None = None
    stability: str | None = None


@dataclass
class GridTable:
    """One depth x width table (one family, residual setting and data fraction): `block_fraction[i][j]`
    is the mean over seeds at `depths[i]`, `widths[j]` (None where the grid has no such model)."""

    residual: bool
    fraction: float
    depths: list[int]
    widths: list[float]
    block_fraction: list[list[float | None]]
    test_accuracy: list[list[float | None]]
    family: str = "resnet"
    block_strength: list[list[float | None]] | None = None
    block_area: list[list[float | None]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"family": self.family, "residual": self.residual, "fraction": self.fraction, "depths": self.depths,
               "widths": self.widths, "block_fraction": self.block_fraction}
        if self.block_strength is not None:
            out["block_strength"] = self.block_strength
        if self.block_area is not None:
            out["block_area"] = self.block_area
        return {**out, "test_accuracy": self.test_accuracy}

    @property
    def slice_key(self) -> tuple[str, bool, float]:
        return (self.family, self.residual, self.fraction)


@dataclass
class CrossSeedPair:
    """Two seeds of one architecture and the file of their cross-model heatmap."""

    a: str
    b: str
    path: str


@dataclass
class ExperimentSummary(JsonResult):
    """summary.json (module docstring): the models, their groups, the grid tables, the cross-seed
    pairs, the analyses, the step timings and the experiment's configuration (as a JSON table)."""

    FORMAT = "ckatlas.ExperimentSummary"
    WHAT = "a ckatlas experiment summary"

    name: str
    description: str
    dataset: dict[str, Any]
    models: list[ModelEntry]
    groups: list[GroupEntry] = field(default_factory=list)
    grid: list[GridTable] = field(default_factory=list)
    cross_seed: list[CrossSeedPair] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)  # the [analyses] tables this experiment ran
    errors: str | None = None  # the errors analysis' file, if it ran
    available: dict[str, dict[str, Any]] | None = None  # every analysis it could have run (None: an older summary)
    timings: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    # -- lookups --------------------------------------------------------------------------------
    def model(self, name: str) -> ModelEntry | None:
        """The entry of one model, by run name."""
        return next((m for m in self.models if m.name == name), None)

    def group_of(self, run: str) -> GroupEntry | None:
        """The group (one architecture, all its seeds) that a run belongs to."""
        return next((g for g in self.groups if run in g.runs), None)

    def slice_models(self, table: GridTable) -> list[ModelEntry]:
        """The models of one depth x width table."""
        return [m for m in self.models if m.slice_key == table.slice_key]

    def cell(self, table: GridTable, depth: int, width: float) -> list[ModelEntry]:
        """The models (all seeds, lowest first) at one cell of a depth x width table."""
        return sorted((m for m in self.slice_models(table) if (m.depth, m.width) == (depth, width)),
                      key=lambda m: m.seed)

    @property
    def blocks_table(self) -> dict[str, Any]:
        """The experiment's [analyses.blocks] table (the detector's settings; empty in the oldest summaries)."""
        return dict((self.config.get("analyses") or {}).get("blocks") or {})

    # -- saving and loading -----------------------------------------------------------------------
    def fields(self) -> dict[str, Any]:
        analyses: dict[str, Any] = {"enabled": list(self.enabled), "errors": self.errors}
        if self.available is not None:
            analyses["available"] = self.available
        return {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset,
            "models": [dataclasses.asdict(m) for m in self.models],
            "groups": [dataclasses.asdict(g) for g in self.groups],
            "grid": [t.to_dict() for t in self.grid],
            "cross_seed": [dataclasses.asdict(p) for p in self.cross_seed],
            "analyses": analyses,
            "timings": self.timings,
            "config": self.config,
        }

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> ExperimentSummary:
        analyses = data["analyses"]
        return cls(
            name=data["name"],
            description=data["description"],
            dataset=dict(data["dataset"]),
            models=[_from(ModelEntry, m) for m in data["models"]],
            groups=[_from(GroupEntry, g) for g in data["groups"]],
            grid=[_from(GridTable, t) for t in data["grid"]],
            cross_seed=[_from(CrossSeedPair, p) for p in data["cross_seed"]],
            enabled=list(analyses["enabled"]),
            errors=analyses["errors"],
            available=analyses.get("available"),  # written only when known (fields())
            timings=dict(data["timings"]),
            config=dict(data["config"]),
        )


def read_summary(root: str | Path) -> ExperimentSummary:
    """The summary of the finished experiment in `root`, with one clear error naming what to do when
    `root` is no folder, holds an unfinished experiment, or no experiment at all."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserInputError(f"{root} is not a folder; expected an experiment directory ('ckatlas run ... --out DIR')")
    path = root / "summary.json"
    if not path.is_file():
        if (root / "experiment.json").is_file():
            raise UserInputError(f"{root} holds an unfinished experiment (no summary.json); "
                                 f"finish it first: ckatlas run {root / 'experiment.toml'} --out {root}")
        raise UserInputError(f"{root} is not a ckatlas experiment (no summary.json); "
                             f"expected the --out folder of 'ckatlas run'")
    return ExperimentSummary.load(path)


__all__ = ["CrossSeedPair", "ExperimentSummary", "GridTable", "GroupEntry", "ModelEntry", "read_summary"]
