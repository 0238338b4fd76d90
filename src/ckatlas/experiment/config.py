"""The experiment file: a TOML grid of training runs and the analyses to run on them.

    name = "depth-width"
    description = "ResNets of three depths and three widths on digits"

    [dataset]
    name = "digits"              # or cifar10 with data_dir = "~/data/cifar-10-batches-py"

    [[grid]]                     # runs: the product of these lists
    depths = [8, 14, 20]         # 6n+2
    widths = [0.25, 0.5, 1]
    residual = [true]            # false: the same net without skip connections (cnn<depth>)
    seeds = [0]
    fractions = [1.0]            # share of each training class

    [[grid]]                     # more runs; the union of all [[grid]] tables is trained
    depths = [20]
    widths = [1]
    seeds = [0, 1, 2]

    [[grid]]                     # family = "vit": vision transformers, depth = blocks (ckatlas.models.vit)
    family = "vit"
    depths = [2, 4, 8]

    [train]                      # any ckatlas.train.TrainConfig setting not set by the grid
    epochs = 10

    [cka]
    layers = "blocks"            # or "all"
    num_examples = 256           # test examples the heatmaps are computed on (default: all)
    # tokens = "mean"            # transformers: how a token sequence becomes one example (ckatlas.capture.tokens)

    [analyses.blocks]            # always run (summary.json needs block_fraction)
    threshold = 0.9
    [analyses.pca]               # a table (or `pca = true`) turns an analysis on: pca, probes,
                                 # prune (residual nets only), cross_seed, errors
    [analyses.errors]
    population_a = { depth = 20, width = 1 }
    population_b = { depth = 8, width = 0.5 }

`load_config` reads a file or a preset name and validates everything that can be
checked without data: unknown keys, value types, depths, ranges and combinations
(an analysis that needs seeds the grid does not have, a population that is not in
the grid). What needs the data (a CIFAR folder) is checked by `run_experiment`
before it trains anything.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ckatlas.data import list_datasets
from ckatlas.errors import UserInputError
from ckatlas.experiment.analyses import AnalysesConfig, RunSelection  # noqa: F401  (re-exported)
from ckatlas.experiment.presets import list_presets, preset_path
from ckatlas.experiment.runspec import RunSpec  # noqa: F401  (re-exported)
from ckatlas.experiment.tables import CKAConfig, DatasetConfig, GridConfig, valid_depths  # noqa: F401  (re-exported)
from ckatlas.experiment.schema import check_keys, convert, from_table, to_table, toml_text
from ckatlas.train import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# -- the experiment ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment file (see the module docstring); build it with `load_config`."""

    name: str
    dataset: DatasetConfig
    grid: tuple[GridConfig, ...]
    description: str = ""
    train: Mapping[str, Any] = field(default_factory=dict)
    cka: CKAConfig = field(default_factory=CKAConfig)
    analyses: AnalysesConfig = field(default_factory=lambda: AnalysesConfig())

    @property
    def runs(self) -> list[RunSpec]:
        """Every run of the grid, once, sorted by (depth, width, residual, seed, fraction)."""
        runs = {
            RunSpec(d, w, r, s, f, g.family)
            for g in self.grid
            for d in g.depths
            for w in g.widths
            for r in g.residual
            for s in g.seeds
            for f in g.fractions
        }
        return sorted(runs, key=lambda r: (r.family != "resnet", r.family, r.fraction != 1.0, -r.fraction,
                                           not r.residual, r.depth, r.width, r.seed))

    @property
    def groups(self) -> dict[str, list[RunSpec]]:
        """Runs by group (all but the seed), in run order."""
        out: dict[str, list[RunSpec]] = {}
        for run in self.runs:
            out.setdefault(run.group, []).append(run)
        return out

    def train_config(self, run: RunSpec) -> TrainConfig:
        """The `ckatlas.train.TrainConfig` of one run of the grid ([train] recipe first, its keys on top)."""
        settings = {k: v for k, v in self.train.items() if k != "recipe"}
        return TrainConfig.from_recipe(
            self.train.get("recipe", "ckatlas"),
            arch=run.model_name,
            width=run.width,
            dataset=self.dataset.name,
            data_dir=self.dataset.data_dir,
            fraction=run.fraction,
            resize=self.dataset.resize,
            seed=run.seed,
            **settings,
        )

    def to_dict(self) -> dict[str, Any]:
        """The config as a TOML-ready dict; `config_from_dict` of it gives this config back."""
        return to_table(self)

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with top-level fields changed, validated again."""
        return _validate(dataclasses.replace(self, **changes))

    def with_seed_offset(self, offset: int) -> ExperimentConfig:
        """A copy in which every seed s (of the grid and of [analyses.probes]) is s + `offset`.

        A replication on seeds not used for choosing the grid and the settings; the name
        gets "-seed+OFFSET", so that the copy is a different experiment.
        """
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise UserInputError(f"the seed offset must be an integer >= 0, got {offset!r}")
        if offset == 0:
            return self
        grid = tuple(dataclasses.replace(g, seeds=tuple(s + offset for s in g.seeds)) for g in self.grid)
        analyses = self.analyses.replace(**{
            name: settings.shifted(offset) for name, settings in self.analyses.items() if isinstance(settings, RunSelection)
        })
        return self.replace(grid=grid, analyses=analyses, name=f"{self.name}-seed+{offset}")

    def with_data_dir(self, data_dir: str | Path | None) -> ExperimentConfig:
        """A copy whose dataset is read from `data_dir`."""
        dataset = dataclasses.replace(self.dataset, data_dir=None if data_dir is None else str(data_dir))
        return self.replace(dataset=dataset)


_TOP_KEYS = [f.name for f in dataclasses.fields(ExperimentConfig)]


def config_from_dict(table: Mapping[str, Any], source: str = "the experiment") -> ExperimentConfig:
    """Validate a parsed experiment table (what `tomllib` returns) into an `ExperimentConfig`.

    Raises:
        UserInputError: the first mistake found, in one line that starts with `source`.
    """
    try:
        if not isinstance(table, Mapping):
            raise UserInputError("an experiment must be a table")
        check_keys(table, _TOP_KEYS, "the top level")
        table = dict(table)
        if "name" not in table:
            raise UserInputError('missing key "name" at the top level (a short name for the experiment)')
        if "grid" not in table:
            raise UserInputError("missing [[grid]]: list the depths (and widths, seeds, ...) to train")
        if isinstance(table["grid"], Mapping):  # [grid] (one table) as well as [[grid]] (a list)
            table["grid"] = [table["grid"]]
        if not isinstance(table["grid"], list) or not table["grid"]:
            raise UserInputError("[[grid]] must be one or more tables")
        grids = tuple(from_table(GridConfig, g, "[grid]" if len(table["grid"]) == 1 else f"[[grid]] #{i + 1}")
                      for i, g in enumerate(table["grid"]))
        config = ExperimentConfig(
            name=_string(table["name"], "name"),
            description=_string(table.get("description", ""), "description"),
            dataset=from_table(DatasetConfig, table.get("dataset", {}), "[dataset]"),
            grid=grids,
            train=_train_settings(table.get("train", {})),
            cka=from_table(CKAConfig, table.get("cka", {}), "[cka]"),
            analyses=AnalysesConfig.from_table(table.get("analyses", {})),
        )
        return _validate(config)
    except UserInputError as exc:
        raise UserInputError(f"{source}: {exc}") from None


def load_config(source: str | Path) -> ExperimentConfig:
    """Read and validate an experiment: a TOML file, or the name of a preset (`list_presets`).

    Raises:
        UserInputError: no such file or preset, TOML syntax errors, and every check of
            `config_from_dict`.
    """
    path = Path(source).expanduser()
    if not path.is_file():
        if str(source) in list_presets():
            path = preset_path(str(source))
        else:
            names = ", ".join(list_presets())
            raise UserInputError(f"{source}: no such file, and not a preset name (presets: {names})")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{path}: not a text file") from None
    return config_from_dict(table, str(path))


def to_toml(config: ExperimentConfig) -> str:
    """The config as TOML text that `load_config` reads back to an equal config."""
    data = config.to_dict()
    top = {k: data[k] for k in ("name", "description") if k in data}
    sections = [(f"[{key}]", data.get(key, {})) for key in ("dataset", "train", "cka")]
    sections += [("[[grid]]", grid) for grid in data["grid"]]
    sections += [(f"[analyses.{name}]", table) for name, table in data["analyses"].items()]
    return toml_text(top, sections)


# TrainConfig fields that the grid and [dataset] set for each run; [train] holds the others.
_SET_PER_RUN = {
    "arch": "depths and residual in [[grid]]",
    "width": "widths in [[grid]]",
    "seed": "seeds in [[grid]]",
    "fraction": "fractions in [[grid]]",
    "dataset": "name in [dataset]",
    "data_dir": "data_dir in [dataset]",
    "resize": "resize in [dataset]",
}


def _train_settings(table: Any) -> dict[str, Any]:
    """Check `[train]` against the fields of `TrainConfig` that the grid does not set."""
    if not isinstance(table, Mapping):
        raise UserInputError("[train] must be a table of training settings")
    for key in table:
        if key in _SET_PER_RUN:
            raise UserInputError(f"{key} cannot be set in [train]: it comes from {_SET_PER_RUN[key]}")
    hints = {**typing.get_type_hints(TrainConfig), "recipe": str}
    allowed = ["recipe"] + [f.name for f in dataclasses.fields(TrainConfig) if f.name not in _SET_PER_RUN]
    check_keys(table, allowed, "[train]")
    settings = {key: convert(value, hints[key], f"{key} in [train]", f"[train.{key}]") for key, value in table.items()}
    try:
        TrainConfig.from_recipe(settings.get("recipe", "ckatlas"), **{k: v for k, v in settings.items() if k != "recipe"})
    except UserInputError as exc:
        raise UserInputError(f"[train]: {exc}") from None
    return settings


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise UserInputError(f"{key} must be a string, got {value!r}")
    return value


# -- checks that span fields -------------------------------------------------------------------
def _validate(config: ExperimentConfig) -> ExperimentConfig:
    if not config.name.strip() or any(c in config.name for c in "/\\\n"):
        raise UserInputError(f"name must be a non-empty one-line name without slashes, got {config.name!r}")
    if config.dataset.name not in list_datasets():
        raise UserInputError(f"unknown dataset {config.dataset.name!r} in [dataset]; expected one of {', '.join(list_datasets())}")
    if config.dataset.resize is not None and config.dataset.resize < 1:
        raise UserInputError(f"resize in [dataset] must be a positive number of pixels, got {config.dataset.resize}")
    for i, grid in enumerate(config.grid):
        where = "[grid]" if len(config.grid) == 1 else f"[[grid]] #{i + 1}"
        grid.check(where)
    config.cka.check()
    for settings in config.analyses.values():
        check = getattr(settings, "check", None)
        if check is not None:  # each analysis validates its own settings against the grid
            check(config)
    return config


__all__ = [
    "AnalysesConfig",
    "CKAConfig",
    "DatasetConfig",
    "ExperimentConfig",
    "GridConfig",
    "RunSpec",
    "config_from_dict",
    "load_config",
    "to_toml",
    "valid_depths",
]
