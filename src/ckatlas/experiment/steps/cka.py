"""The ``cka``, ``untrained`` and ``cross`` steps: each model's within-model heatmap, the same of the model
at initialisation (its architecture, seed and images before any step: the untrained baseline the claims
subtract, ``[analyses.untrained]``, always on), and the cross-seed heatmaps (``[analyses.cross_seed]``),
as ``[cka]`` says (`ckatlas.heatmap`).

    cka/<run>            cka/<run>.npz            <- train/<run>
    untrained/<run>      cka/untrained/<run>.npz  <- train/<run> (its settings)  [analyses.untrained]
    cross/<a>__<b>       cka/<a>__<b>.npz         <- train/<a>, train/<b>      [analyses.cross_seed]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ckatlas.runtime.devices import resolve_device
from ckatlas.errors import UserInputError
from ckatlas.experiment.registry import Step, StepKind, register_step
from ckatlas.experiment.steps._common import StepContext, load_model, per_run, test_inputs, trained
from ckatlas.experiment.store import ExperimentStore
from ckatlas.heatmap import heatmap
from ckatlas.io.rundir import RunDir
from ckatlas.train import initial_model

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


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
class UntrainedConfig:
    """`[analyses.untrained]`: each model's heatmap at initialisation (no settings; always on, as blocks), so
    that every trend claim is also decided as trained minus untrained."""


def untrained_file(name: str) -> str:
    """Where the heatmap of run `name` at initialisation is kept."""
    return f"cka/untrained/{name}.npz"


def _compute(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    if step.kind == "untrained":
        run = step.runs[0]
        info = RunDir(store.path(store.run_dir(run.name))).read_info()  # its classes and channels; no weights read
        shape = info["data"]["image_shape"]
        models = [initial_model(ctx.config.train_config(run), info["data"]["num_classes"], shape[0]).to(device)]
    else:
        models = [load_model(store, r.name, device) for r in step.runs]
    cka = ctx.config.cka
    result = heatmap(
        models[0],
        test_inputs(ctx.config),
        models[1] if len(models) > 1 else None,
        layers=cka.layers,
        batch_size=cka.batch_size,
        passes=cka.passes,
        shuffle=True,
        seed=cka.seed,
        device=device,
        progress=not ctx.quiet,
        model_names=(step.runs[0].name, step.runs[-1].name),
        tokens=cka.tokens,
        measure=cka.measure,
    )
    result.save(store.path(step.outputs[0]))


def _cross_plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    from ckatlas.experiment.plan import cross_seed_pairs

    return [Step("cross", f"cross/{a.name}__{b.name}", (ExperimentStore.cka_file(a.name, b.name),),
                 (f"train/{a.name}", f"train/{b.name}"), (a, b)) for a, b in cross_seed_pairs(config)]


register_step(StepKind("cka", per_run("cka", ExperimentStore.cka_file, trained), _compute, uses_models=True,
                       description="the model's within-model CKA heatmap", after=("train",)))
register_step(StepKind("untrained", per_run("untrained", untrained_file, trained), _compute, settings=UntrainedConfig,
                       default_on=True, uses_models=True, description="the model's heatmap at initialisation",
                       after=("train",)))
register_step(StepKind("cross", _cross_plan, _compute, settings=CrossSeedConfig, table="cross_seed",
                       uses_models=True, description="cross-seed CKA", after=("train",)))

__all__ = ["CrossSeedConfig", "UntrainedConfig", "untrained_file"]
