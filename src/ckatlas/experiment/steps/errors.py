"""The ``errors`` step: do two populations of models (every seed of two architectures) make
different errors? (``[analyses.errors]``, `ckatlas.analysis.error_compare`)

    errors               analysis/errors.json                <- train/<run> of both populations
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ckatlas.analysis import compare_populations, load_predictions
from ckatlas.analysis.error_compare import ErrorSettings
from ckatlas.errors import UserInputError
from ckatlas.experiment.registry import Step, StepKind, register_step
from ckatlas.experiment.runspec import RunSpec
from ckatlas.experiment.steps._common import StepContext, test_data
from ckatlas.experiment.store import ExperimentStore

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


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
    alpha: float = ErrorSettings.alpha  # `ErrorSettings`: the defaults and checks of these three
    num_permutations: int = ErrorSettings.num_permutations
    seed: int = ErrorSettings.seed

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
        ErrorSettings(self.alpha, self.num_permutations, self.seed).check(" in [analyses.errors]")


ERRORS_FILE = "analysis/errors.json"


def _compute(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    config, settings = ctx.config, ctx.config.analyses.errors
    populations = []
    for pop in (settings.population_a, settings.population_b):
        runs = config.groups[pop.label]
        populations.append(load_predictions([store.path(store.run_dir(r.name)) for r in runs], name=pop.label))
    result = compare_populations(*populations, alpha=settings.alpha, seed=settings.seed,
                                 num_permutations=settings.num_permutations,
                                 class_names=list(test_data(config.dataset).class_names))
    result.save(store.path(step.outputs[0]))


def _plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    errors = config.analyses.errors
    members = tuple(r for pop in (errors.population_a, errors.population_b) for r in config.groups[pop.label])
    return [Step("errors", "errors", (ERRORS_FILE,), tuple(f"train/{r.name}" for r in members), members)]


register_step(StepKind("errors", _plan, _compute, settings=ErrorsConfig, description="error comparison",
                       after=("train",)))

__all__ = ["ERRORS_FILE", "ErrorsConfig", "PopulationConfig"]
