"""The `[analyses.*]` tables of an experiment file: each analysis' settings, and
`AnalysesConfig`, the mapping of the analyses that run (re-exported by `ckatlas.experiment.config`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal


from ckatlas.analysis.blocks import BlockDetector
from ckatlas.errors import UserInputError
from ckatlas.experiment.runspec import RunSpec
from ckatlas.experiment.schema import check_keys, from_table

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


@dataclass(frozen=True)
class BlocksConfig(BlockDetector):
    """`[analyses.blocks]`: the block detector (`ckatlas.analysis.BlockDetector`: its fields and
    defaults) and the rows it reads.

    `on` chooses the rows blocks are found in: "heatmap" (every layer of the heatmap)
    or "block-outputs" (the residual stream: the stem's output, each residual block's
    output, the pooled features and the logits, `model.layer_names("blocks")`, taken
    out of a heatmap of all layers). Inside a residual network's block the layers of
    the residual branches differ from the stream (the paper's checkerboard).
    """

    on: Literal["heatmap", "block-outputs"] = "heatmap"

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except UserInputError as exc:
            raise UserInputError(f"[analyses.blocks]: {exc}") from None

    @property
    def detector(self) -> BlockDetector:
        """The detector alone (without `on`)."""
        return BlockDetector(**{f.name: getattr(self, f.name) for f in dataclasses.fields(BlockDetector)})

    def check(self, config: ExperimentConfig) -> None:
        """Checked when made."""




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
class PCAConfig(RunSelection):
    """`[analyses.pca]`: first principal components of each model (`principal_components`); `seeds`,
    `depths`, `fractions` limit it to some runs (default: every run)."""

    def check(self, config: ExperimentConfig) -> None:
        self.check_selection(config, "[analyses.pca]")


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
class DynamicsConfig(RunSelection):
    """`[analyses.dynamics]`: block structure through training (`ckatlas.analysis.dynamics`).

    Recorded while each run trains (not afterwards): at `epochs` (0: the initialisation;
    default 0, 1, 2, 4, ... and the last), the heatmap over `layers` (default: those of
    [cka]) of the first `examples`
    test images, its blocks (the detector of [analyses.blocks]) and each layer's first-PC
    variance, into the run's dynamics.npz. `seeds`, `depths`, `fractions` limit it to some runs.
    """

    epochs: tuple[int, ...] | None = None
    examples: int = 256
    layers: Literal["all", "blocks"] | None = None

    def check(self, config: ExperimentConfig) -> None:
        self.check_selection(config, "[analyses.dynamics]")
        if self.examples < 4:
            raise UserInputError(f"examples in [analyses.dynamics] must be >= 4 (the unbiased CKA estimator), "
                                 f"got {self.examples}")
        if self.epochs is not None:
            last = min(config.train_config(r).epochs for r in config.runs if self.wants(r))
            bad = [e for e in self.epochs if not 0 <= e <= last]
            if bad or not self.epochs:
                raise UserInputError(f"epochs in [analyses.dynamics] must be epochs in [0, {last}] (0: the "
                                     f"initialisation), got {list(self.epochs)}")

    def settings(self, config: ExperimentConfig):  # -> ckatlas.analysis.dynamics.DynamicsSettings
        """The recorder's settings: these, with the layers of [cka] (unless set) and the detector of [analyses.blocks]."""
        from ckatlas.analysis.dynamics import DynamicsSettings

        layers = self.layers if self.layers is not None else config.cka.layers
        return DynamicsSettings(epochs=self.epochs, examples=self.examples, layers=layers,
                                detector=config.analyses.blocks.detector, tokens=config.cka.tokens)


@dataclass(frozen=True)
class PruneConfig(RunSelection):
    """`[analyses.prune]`: delete residual blocks from the end of each stage (`prune_blocks`);
    `seeds`, `depths`, `fractions` limit it to some runs (default: every residual run)."""

    finetune_epochs: int = 0
    finetune_lr: float = 0.01

    def check(self, config: ExperimentConfig) -> None:
        self.check_selection(config, "[analyses.prune]")
        if not any(r.prunable for r in config.runs):
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
    family: Literal["resnet", "vit"] = "resnet"

    @property
    def label(self) -> str:
        return RunSpec(self.depth, self.width, self.residual, 0, self.fraction, self.family).group


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
