"""The ``prune`` step: delete residual blocks from the end of each stage and test what is left
(``[analyses.prune]``, residual networks only; `ckatlas.analysis.prune`).

    prune/<run>          analysis/prune/<run>.json           <- train/<run>, blocks/<run>
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckatlas.analysis import BlockResult
from ckatlas.analysis.prune import PruneSettings, prune_blocks
from ckatlas.runtime.devices import resolve_device
from ckatlas.errors import UserInputError
from ckatlas.experiment.analyses import RunSelection
from ckatlas.experiment.registry import Step, StepKind, register_step
from ckatlas.experiment.steps._common import StepContext, load_model, per_run
from ckatlas.experiment.store import ExperimentStore

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


@dataclass(frozen=True)
class PruneConfig(RunSelection, PruneSettings):
    """`[analyses.prune]`: delete residual blocks from the end of each stage (`prune_blocks`, with the
    fields of `PruneSettings`: finetune_epochs, finetune_lr); `seeds`, `depths`, `fractions` limit it to
    some runs (default: every residual run)."""

    def check(self, config: ExperimentConfig) -> None:
        self.check_selection(config, "[analyses.prune]")
        if not any(r.prunable for r in config.runs):
            raise UserInputError("[analyses.prune] deletes residual blocks, but the grid has no residual network")
        PruneSettings.check(self, " in [analyses.prune]")


def prune_file(run: str) -> str:
    return f"analysis/prune/{run}.json"


def _compute(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    run, settings = step.runs[0], ctx.config.analyses.prune
    result = prune_blocks(
        load_model(store, run.name, device),
        ctx.config.train_config(run).load_data(),
        finetune_epochs=settings.finetune_epochs,
        finetune_lr=settings.finetune_lr,
        seed=run.seed,
        device=device,
        block_result=BlockResult.load(store.path(store.blocks_file(run.name))),
    )
    result.save(store.path(step.outputs[0]))


register_step(StepKind("prune", per_run("prune", prune_file, lambda name: (f"train/{name}", f"blocks/{name}"),
                                        lambda c, r: r.prunable and c.analyses.prune.wants(r)), _compute,
                       settings=PruneConfig, uses_models=True, description="block deletion", after=("train", "blocks")))

__all__ = ["PruneConfig", "prune_file"]
