"""The ``pca`` step: first principal components of each model's layers (``[analyses.pca]``,
`ckatlas.analysis.pca`).

    pca/<run>            analysis/pca/<run>.npz              <- train/<run>
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckatlas.analysis.pca import principal_components
from ckatlas.runtime.devices import resolve_device
from ckatlas.experiment.analyses import RunSelection
from ckatlas.experiment.registry import Step, StepKind, register_step
from ckatlas.experiment.steps._common import StepContext, load_model, per_run, test_inputs, trained
from ckatlas.experiment.store import ExperimentStore

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


@dataclass(frozen=True)
class PCAConfig(RunSelection):
    """`[analyses.pca]`: first principal components of each model (`principal_components`); `seeds`,
    `depths`, `fractions` limit it to some runs (default: every run)."""

    def check(self, config: ExperimentConfig) -> None:
        self.check_selection(config, "[analyses.pca]")


def pca_file(run: str) -> str:
    return f"analysis/pca/{run}.npz"


def _compute(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    cka = ctx.config.cka
    model = load_model(store, step.runs[0].name, device)
    result = principal_components(model, test_inputs(ctx.config), layers=cka.layers, batch_size=cka.batch_size,
                                  shuffle=True, seed=cka.seed, device=device, tokens=cka.tokens)
    result.save(store.path(step.outputs[0]))


register_step(StepKind("pca", per_run("pca", pca_file, trained, lambda c, r: c.analyses.pca.wants(r)), _compute,
                       settings=PCAConfig, uses_models=True, description="first principal components", after=("train",)))

__all__ = ["PCAConfig", "pca_file"]
