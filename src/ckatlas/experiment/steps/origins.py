"""The ``origins`` step: where each block of a model comes from (`ckatlas.analysis.origins`), in one module:
its settings table, plan and computation.

    [analyses.origins]        # the examples that dominate each block's first PC, and the block without them
    seeds = [0]               # which runs (default: every run); also depths, fractions
    remove = 0.02             # share of the examples left out per block (and as many random ones, the control)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckatlas.analysis import BlockResult
from ckatlas.analysis.origins import OriginSettings, block_origins
from ckatlas.experiment.analyses import RunSelection
from ckatlas.experiment.registry import Step, StepKind, register_step
from ckatlas.experiment.steps._common import StepContext, load_model, test_inputs
from ckatlas.experiment.store import ExperimentStore
from ckatlas.runtime.devices import resolve_device

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


@dataclass(frozen=True)
class OriginsConfig(RunSelection, OriginSettings):
    """`[analyses.origins]`: trace each block to the examples that dominate its first PC (`block_origins`,
    with the fields of `OriginSettings`: remove, show). `seeds`, `depths`, `fractions` limit it to some runs
    (default: every run).
    """

    def check(self, config: ExperimentConfig) -> None:
        self.check_selection(config, "[analyses.origins]")
        OriginSettings.check(self, " in [analyses.origins]")


def origins_file(run: str) -> str:
    return f"analysis/origins/{run}.npz"


def _plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    settings = config.analyses.origins
    return [Step("origins", f"origins/{r.name}", (origins_file(r.name),), (f"train/{r.name}", f"blocks/{r.name}"),
                 (r,)) for r in config.runs if settings.wants(r)]


def _compute(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    run, settings, cka = step.runs[0], ctx.config.analyses.origins, ctx.config.cka
    blocks = BlockResult.load(store.path(store.blocks_file(run.name)))
    result = block_origins(load_model(store, run.name, device), test_inputs(ctx.config), blocks, layers=cka.layers,
                           batch_size=cka.batch_size, remove=settings.remove, show=settings.show, seed=run.seed,
                           device=device, tokens=cka.tokens)
    result.save(store.path(step.outputs[0]))


register_step(StepKind("origins", _plan, _compute, settings=OriginsConfig, uses_models=True,
                       description="the examples each block comes from", after=("train", "blocks")))

__all__ = ["OriginsConfig", "origins_file"]
