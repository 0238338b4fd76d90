"""The ``probes`` step: a linear probe on each layer of each model (``[analyses.probes]``,
`ckatlas.analysis.probes`).

    probes/<run>         analysis/probes/<run>.json          <- train/<run>
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckatlas.analysis.probes import ProbeSettings, linear_probes
from ckatlas.runtime.devices import resolve_device
from ckatlas.experiment.analyses import RunSelection
from ckatlas.experiment.registry import Step, StepKind, register_step
from ckatlas.experiment.steps._common import StepContext, load_model, per_run, trained
from ckatlas.experiment.store import ExperimentStore

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


@dataclass(frozen=True)
class ProbesConfig(RunSelection, ProbeSettings):
    """`[analyses.probes]`: a linear probe on each layer of each model (`linear_probes`, with the fields
    of `ProbeSettings`: c_grid, val_fraction, max_features, seed).

    Probes train on the model's own training examples and are scored on the test split.
    `seeds` (and `depths`, `fractions`) limit them to the runs with those seeds (depths,
    training fractions); default: every run. The report shows one seed per cell.
    """

    def check(self, config: ExperimentConfig) -> None:
        self.check_selection(config, "[analyses.probes]")
        ProbeSettings.check(self, " in [analyses.probes]")


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
