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

    [train]                      # any ckatlas.train.TrainConfig setting not set by the grid
    epochs = 10

    [cka]
    layers = "blocks"            # or "all"
    num_examples = 256           # test examples the heatmaps are computed on (default: all)

    [analyses.blocks]            # always run (summary.json needs block_fraction)
    threshold = 0.85
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ckatlas.data import list_datasets
from ckatlas.errors import UserInputError
from ckatlas.experiment.presets import list_presets, preset_path
from ckatlas.experiment.schema import check_keys, convert, from_table, to_table
from ckatlas.train import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# -- the tables ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetConfig:
    """`[dataset]`: what `ckatlas.data.load_dataset` loads (the training fraction comes from the grid)."""

    name: str = "digits"
    data_dir: str | None = None
    resize: int | None = None


@dataclass(frozen=True)
class GridConfig:
    """One `[[grid]]` table: every combination of its lists is a training run."""

    depths: tuple[int, ...]
    widths: tuple[float, ...] = (1.0,)
    residual: tuple[bool, ...] = (True,)
    seeds: tuple[int, ...] = (0,)
    fractions: tuple[float, ...] = (1.0,)


@dataclass(frozen=True)
class CKAConfig:
    """`[cka]`: how every heatmap is computed (`ckatlas.heatmap`), on the test split.

    `num_examples` takes the first N test examples (None: all of them); `passes`
    reshuffles them each pass (the paper uses 10).
    """

    layers: Literal["blocks", "all"] = "blocks"
    batch_size: int = 256
    passes: int = 1
    num_examples: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class BlocksConfig:
    """`[analyses.blocks]`: settings of `ckatlas.analysis.find_blocks`.

    `on` chooses the rows blocks are found in: "heatmap" (every layer of the heatmap)
    or "block-outputs" (the residual stream: the stem's output, each residual block's
    output, the pooled features and the logits, `model.layer_names("blocks")`, taken
    out of a heatmap of all layers). Inside a residual network's block the layers of
    the residual branches differ from the stream (the paper's checkerboard); the block
    itself is a run of stream layers with uniformly high CKA.
    """

    threshold: float = 0.85
    tolerance: float = 0.1
    min_size: int = 3
    min_fraction: float = 0.1
    on: Literal["heatmap", "block-outputs"] = "heatmap"

    def check(self, config: ExperimentConfig) -> None:
        from ckatlas.analysis import find_blocks

        try:  # find_blocks checks its own settings; a 2 x 2 identity is the cheapest matrix it accepts
            find_blocks(np.eye(2), **{k: v for k, v in dataclasses.asdict(self).items() if k != "on"})
        except UserInputError as exc:
            raise UserInputError(f"[analyses.blocks]: {exc}") from None


@dataclass(frozen=True)
class PCAConfig:
    """`[analyses.pca]`: first principal components of each model (`principal_components`)."""


@dataclass(frozen=True)
class RunSelection:
    """Which runs an analysis takes: those with these `seeds`, `depths` and training `fractions`
    (each None: any). For analyses too costly for every model of a large grid."""

    seeds: tuple[int, ...] | None = None
    depths: tuple[int, ...] | None = None
    fractions: tuple[float, ...] | None = None

    def wants(self, run: RunSpec) -> bool:
        """Whether `run` is selected."""
        return all(
            allowed is None or value in allowed
            for allowed, value in ((self.seeds, run.seed), (self.depths, run.depth), (self.fractions, run.fraction))
        )

    def check_selection(self, config: ExperimentConfig, where: str) -> None:
        if not any(self.wants(r) for r in config.runs):
            raise UserInputError(f"{where} selects no run of the grid (check its seeds, depths and fractions)")
        if self.seeds is not None:
            grid_seeds = sorted({r.seed for r in config.runs})
            missing = [seed for seed in self.seeds if seed not in grid_seeds]
            if missing:
                raise UserInputError(f"seeds in {where} lists seed(s) {missing} that no run of the grid has "
                                     f"(the grid's seeds: {grid_seeds})")

    def shifted(self, offset: int) -> RunSelection:
        """The same selection with every seed s as s + `offset` (`ExperimentConfig.with_seed_offset`)."""
        if self.seeds is None:
            return self
        return dataclasses.replace(self, seeds=tuple(s + offset for s in self.seeds))


@dataclass(frozen=True)
class ProbesConfig(RunSelection):
    """`[analyses.probes]`: a linear probe on each layer of each model (`linear_probes`).

    Probes train on the model's own training examples and are scored on the test split.
    `seeds` (and `depths`, `fractions`) limit them to the runs with those seeds (depths,
    training fractions); default: every run. The report shows one seed per cell.
    `c_grid`: the inverse penalty strengths to choose from.
    """

    val_fraction: float = 0.2
    max_features: int = 4096
    seed: int = 0
    c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)

    def check(self, config: ExperimentConfig) -> None:
        self.check_selection(config, "[analyses.probes]")
        if not 0 < self.val_fraction < 1:
            raise UserInputError(f"val_fraction in [analyses.probes] must be in (0, 1), got {self.val_fraction:g}")
        if self.max_features < 1:
            raise UserInputError(f"max_features in [analyses.probes] must be >= 1, got {self.max_features}")
        if not self.c_grid or any(not c > 0 for c in self.c_grid):
            raise UserInputError(f"c_grid in [analyses.probes] must be positive numbers, got {list(self.c_grid)}")


@dataclass(frozen=True)
class PruneConfig(RunSelection):
    """`[analyses.prune]`: delete residual blocks from the end of each stage (`prune_blocks`);
    `seeds`, `depths`, `fractions` limit it to some runs (default: every residual run)."""

    finetune_epochs: int = 0
    finetune_lr: float = 0.01

    def check(self, config: ExperimentConfig) -> None:
        self.check_selection(config, "[analyses.prune]")
        if not any(r.residual for r in config.runs):
            raise UserInputError("[analyses.prune] deletes residual blocks, but the grid has no residual network")
        if self.finetune_epochs < 0 or not self.finetune_lr > 0:
            raise UserInputError("[analyses.prune]: finetune_epochs must be >= 0 and finetune_lr > 0")


@dataclass(frozen=True)
class CrossSeedConfig:
    """`[analyses.cross_seed]`: CKA between models that differ only in their seed.

    `pairs = "first"` compares the first two seeds of each architecture, "all" every pair.
    """

    pairs: Literal["first", "all"] = "first"

    def check(self, config: ExperimentConfig) -> None:
        if all(len(runs) < 2 for runs in config.groups.values()):
            raise UserInputError(
                "[analyses.cross_seed] compares seeds, but no architecture of the grid has 2 or more seeds; "
                "add seeds to the grid"
            )


@dataclass(frozen=True)
class PopulationConfig:
    """One population of the errors analysis: every seed of one grid architecture."""

    depth: int
    width: float = 1.0
    residual: bool = True
    fraction: float = 1.0

    @property
    def label(self) -> str:
        return RunSpec(self.depth, self.width, self.residual, 0, self.fraction).group


@dataclass(frozen=True)
class ErrorsConfig:
    """`[analyses.errors]`: do two populations make different errors (`compare_populations`)?"""

    population_a: PopulationConfig
    population_b: PopulationConfig
    alpha: float = 0.05
    num_permutations: int = 10_000
    seed: int = 0

    def check(self, config: ExperimentConfig) -> None:
        groups = config.groups
        if self.population_a == self.population_b:
            raise UserInputError("[analyses.errors]: population_a and population_b are the same architecture; compare "
                                 "two different ones")
        for key in ("population_a", "population_b"):
            pop: PopulationConfig = getattr(self, key)
            runs = groups.get(pop.label, [])
            if not runs:
                raise UserInputError(
                    f"{key} in [analyses.errors] ({pop.label}) is not in the grid; the grid has {', '.join(groups)}"
                )
            if len(runs) < 2:
                raise UserInputError(
                    f"{key} in [analyses.errors] ({pop.label}) has {len(runs)} seed in the grid; comparing errors "
                    "needs at least 2 seeds per population"
                )
        if not 0 < self.alpha < 1:
            raise UserInputError(f"alpha in [analyses.errors] must be in (0, 1), got {self.alpha}")
        if self.num_permutations < 1:
            raise UserInputError(f"num_permutations in [analyses.errors] must be >= 1, got {self.num_permutations}")


class AnalysesConfig(Mapping[str, Any]):
    """`[analyses]`: the settings of each analysis that will run, by name (`registry.analysis_kinds`).

    An analysis runs when its table is present (or ``name = true``), or, for one that is
    on by default (blocks), always. ``config.analyses.pca`` is the PCA settings, or None
    when PCA is off; iterating gives the names of the analyses that run, in plan order.

    Args:
        tables: {name: settings dataclass}; analyses on by default are added.
    """

    def __init__(self, tables: Mapping[str, Any] | None = None, **named: Any) -> None:
        from ckatlas.experiment.registry import analysis_kinds

        kinds = analysis_kinds()
        given = {**(tables or {}), **named}
        unknown = [name for name in given if name not in kinds]
        if unknown:
            raise UserInputError(f"unknown analysis {unknown[0]!r}; expected some of {', '.join(kinds)}")
        self._tables = {
            name: given[name] if given.get(name) is not None else kind.settings()
            for name, kind in kinds.items()
            if given.get(name) is not None or kind.default_on
        }

    @classmethod
    def from_table(cls, table: Any, where: str = "[analyses]") -> AnalysesConfig:
        """Validate the `[analyses]` table: each registered analysis' settings from its own sub-table."""
        from ckatlas.experiment.registry import analysis_kinds

        if not isinstance(table, Mapping):
            raise UserInputError(f"{where} must be a table of analyses, got {table!r}")
        kinds = analysis_kinds()
        check_keys(table, kinds, where)
        tables = {}
        for name, value in table.items():
            if value is False:
                continue
            tables[name] = from_table(kinds[name].settings, {} if value is True else value, f"[analyses.{name}]")
        return cls(tables)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        from ckatlas.experiment.registry import analysis_kinds

        if name in analysis_kinds():
            return self._tables.get(name)
        raise AttributeError(f"{name!r} is not a registered analysis")

    def __getitem__(self, name: str) -> Any:
        return self._tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnalysesConfig) and self._tables == other._tables

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._tables.items(), key=lambda kv: kv[0])))

    def __repr__(self) -> str:
        return f"AnalysesConfig({self._tables!r})"

    def replace(self, **changes: Any) -> AnalysesConfig:
        """A copy with some analyses' settings replaced (None turns one off)."""
        return AnalysesConfig({**self._tables, **changes})

    @property
    def enabled(self) -> list[str]:
        """Names of the analyses that will run."""
        return list(self._tables)


# -- one training run --------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class RunSpec:
    """One model of the grid: architecture, width, training fraction and seed."""

    depth: int
    width: float
    residual: bool
    seed: int
    fraction: float = 1.0

    @property
    def arch(self) -> str:
        """"resnet20" or "cnn20" (no residual connections)."""
        return f"{'resnet' if self.residual else 'cnn'}{self.depth}"

    @property
    def model_name(self) -> str:
        """The `create_model` name ("cifar_resnet<depth>", never the ImageNet ResNet of that name)."""
        return f"cifar_resnet{self.depth}" if self.residual else f"cnn{self.depth}"

    @property
    def group(self) -> str:
        """The name without the seed: runs of one group differ only in their seed."""
        fraction = f"-f{_number(self.fraction)}" if self.fraction != 1.0 else ""
        return f"{self.arch}-w{_number(self.width)}{fraction}"

    @property
    def name(self) -> str:
        """Directory name of the run, e.g. "resnet20-w1-s0" or "resnet20-w1-f0.25-s0"."""
        return f"{self.group}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "depth": self.depth,
            "width": self.width,
            "residual": self.residual,
            "seed": self.seed,
            "fraction": self.fraction,
        }


def _number(x: float) -> str:
    return format(x, ".6g")


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
            RunSpec(d, w, r, s, f)
            for g in self.grid
            for d in g.depths
            for w in g.widths
            for r in g.residual
            for s in g.seeds
            for f in g.fractions
        }
        return sorted(runs, key=lambda r: (r.fraction != 1.0, -r.fraction, not r.residual, r.depth, r.width, r.seed))

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
    lines = [f"{k} = {_toml_value(data[k])}" for k in ("name", "description") if k in data]
    for key in ("dataset", "train", "cka"):
        lines += ["", f"[{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in data.get(key, {}).items()]
    for grid in data["grid"]:
        lines += ["", "[[grid]]"] + [f"{k} = {_toml_value(v)}" for k, v in grid.items()]
    for name, table in data["analyses"].items():
        lines += ["", f"[analyses.{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


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
def valid_depths(up_to: int = 164) -> list[int]:
    """Depths the CIFAR ResNet family accepts: 6n+2, n >= 1."""
    return list(range(8, up_to + 1, 6))


def _validate(config: ExperimentConfig) -> ExperimentConfig:
    if not config.name.strip() or any(c in config.name for c in "/\\\n"):
        raise UserInputError(f"name must be a non-empty one-line name without slashes, got {config.name!r}")
    if config.dataset.name not in list_datasets():
        raise UserInputError(f"unknown dataset {config.dataset.name!r} in [dataset]; expected one of {', '.join(list_datasets())}")
    if config.dataset.resize is not None and config.dataset.resize < 1:
        raise UserInputError(f"resize in [dataset] must be a positive number of pixels, got {config.dataset.resize}")
    for i, grid in enumerate(config.grid):
        where = "[grid]" if len(config.grid) == 1 else f"[[grid]] #{i + 1}"
        _check_grid(grid, where)
    _check_cka(config.cka)
    for settings in config.analyses.values():
        check = getattr(settings, "check", None)
        if check is not None:  # each analysis validates its own settings against the grid
            check(config)
    return config


def _check_grid(grid: GridConfig, where: str) -> None:
    for key in ("depths", "widths", "residual", "seeds", "fractions"):
        values = getattr(grid, key)
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise UserInputError(f"{key} in {where} lists {repeated[0]!r} more than once")
    for depth in grid.depths:
        if depth < 8 or (depth - 2) % 6:
            shown = ", ".join(str(d) for d in valid_depths(56))
            raise UserInputError(f"depth {depth} in {where} is not 6n+2 (n >= 1); valid depths are {shown}, ..., 110, 164")
    for width in grid.widths:
        if not width > 0:
            raise UserInputError(f"width {width:g} in {where} must be > 0 (a channel multiplier, e.g. 0.5, 1, 2)")
    for seed in grid.seeds:
        if seed < 0:
            raise UserInputError(f"seed {seed} in {where} must be >= 0")
    for fraction in grid.fractions:
        if not 0 < fraction <= 1:
            raise UserInputError(f"fraction {fraction:g} in {where} must be in (0, 1] (a share of the training set)")


def _check_cka(cka: CKAConfig) -> None:
    if cka.batch_size < 4:
        raise UserInputError(f"batch_size in [cka] must be >= 4 (the unbiased estimator's minimum), got {cka.batch_size}")
    if cka.passes < 1:
        raise UserInputError(f"passes in [cka] must be >= 1, got {cka.passes}")
    if cka.num_examples is not None and cka.num_examples < 4:
        raise UserInputError(f"num_examples in [cka] must be >= 4 (or left out for the whole test split), got {cka.num_examples}")


__all__ = [
    "AnalysesConfig",
    "BlocksConfig",
    "CKAConfig",
    "CrossSeedConfig",
    "DatasetConfig",
    "ErrorsConfig",
    "ExperimentConfig",
    "GridConfig",
    "PCAConfig",
    "PopulationConfig",
    "ProbesConfig",
    "PruneConfig",
    "RunSpec",
    "config_from_dict",
    "load_config",
    "to_toml",
    "valid_depths",
]
