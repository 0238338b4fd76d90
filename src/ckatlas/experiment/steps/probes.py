"""The ``probes`` step: a linear probe on each layer of each model (``[analyses.probes]``,
`ckatlas.analysis.probes`).

    probes/<run>         analysis/probes/<run>.json          <- train/<run>
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckatlas.analysis.probes import linear_probes
from ckatlas.devices import resolve_device
from ckatlas.errors import UserInputError
from ckatlas.experiment.analyses import RunSelection
from ckatlas.experiment.registry import Step, StepKind, register_step
from ckatlas.experiment.steps._common import StepContext, load_model, per_run, trained
from ckatlas.experiment.store import ExperimentStore

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


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


def probes_file(run: str) -> str:
    return f"analysis/probes/{run}.json"


def _compute(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    run, settings = step.runs[0], ctx.config.analyses.probes
    data = ctx.config.train_config(run).load_data()  # the examples this model was trained on
    result = linear_probes(load_model(store, run.name, device), data, val_fraction=settings.val_fraction,
                           max_features=settings.max_features, c_grid=settings.c_grid, seed=settings.seed,
                           device=device)
    result.save(store.path(step.outputs[0]))


register_step(StepKind("probes", per_run("probes", probes_file, trained, lambda c, r: c.analyses.probes.wants(r)),
                       _compute, settings=ProbesConfig, uses_models=True, description="linear probes", after=("train",)))

__all__ = ["ProbesConfig", "probes_file"]
