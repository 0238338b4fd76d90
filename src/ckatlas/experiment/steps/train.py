"""The ``train`` step: one training run per model of the grid (`ckatlas.train`), resumable.

    train/<run>          runs/<run>/          (its dynamics.npz too, with [analyses.dynamics])
"""

from __future__ import annotations

from ckatlas.experiment.registry import Step, StepKind, register_step
from ckatlas.experiment.steps._common import StepContext, per_run
from ckatlas.experiment.store import ExperimentStore
from ckatlas.train import train


def _compute(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    run, analyses = step.runs[0], ctx.config.analyses
    wanted = analyses.dynamics is not None and analyses.dynamics.wants(run)
    train(ctx.config.train_config(run), store.path(store.run_dir(run.name)), resume=True, quiet=ctx.quiet,
          device=ctx.device, dynamics=analyses.dynamics.settings(ctx.config) if wanted else None)


def _done(step: Step, store: ExperimentStore) -> bool:
    return store.is_finished_run(step.runs[0].name)


register_step(StepKind("train", per_run("train", ExperimentStore.run_dir, lambda name: ()), _compute,
                       uses_models=True, done=_done, resumable=True, description="training"))
