"""The built-in step kinds, each registered once with its plan and its computation.

    train/<run>          runs/<run>/                     (ckatlas.train)
    cka/<run>            cka/<run>.npz                   <- train/<run>
    cross/<a>__<b>       cka/<a>__<b>.npz                <- train/<a>, train/<b>      [analyses.cross_seed]
    blocks/<run>         analysis/blocks/<run>.json      <- cka/<run>                 [analyses.blocks] (always)
    stability/<group>    analysis/stability/<group>.json <- blocks/<run> of the group's seeds
    pca/<run>            analysis/pca/<run>.npz          <- train/<run>               [analyses.pca]
    probes/<run>         analysis/probes/<run>.json      <- train/<run>               [analyses.probes]
    prune/<run>          analysis/prune/<run>.json       <- train/<run>, blocks/<run> [analyses.prune] (residual)
    dynamics/<run>       runs/<run>/dynamics.npz         <- train/<run> (recorded by it) [analyses.dynamics]
    errors               analysis/errors.json            <- train/<run> of both populations  [analyses.errors]
    summary              summary.json                    <- every other step
    report               report/index.html               <- summary    (once ckatlas.report.html exists)

A step reads only files under the experiment directory (and the dataset), and
writes only its own outputs, atomically: it can run in this process, in a Ray
worker, or again after a crash, with the same result. Models run on
`StepContext.device`; every random choice comes from the config's seeds.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ckatlas.analysis import BlockResult, block_stability, compare_populations, load_predictions
from ckatlas.analysis.pca import principal_components
from ckatlas.analysis.probes import linear_probes
from ckatlas.analysis.prune import prune_blocks
from ckatlas.data import ImageData, load_dataset
from ckatlas.experiment.config import (
    BlocksConfig,
    CrossSeedConfig,
    DatasetConfig,
    DynamicsConfig,
    ErrorsConfig,
    ExperimentConfig,
    PCAConfig,
    ProbesConfig,
    PruneConfig,
)
from ckatlas.experiment.registry import Step, StepKind, register_step, step_kind
from ckatlas.experiment.store import SUMMARY_FILE, ExperimentStore
from ckatlas.experiment.summary import build_summary
from ckatlas.errors import UserInputError
from ckatlas.heatmap import CKAResult, heatmap
from ckatlas.devices import resolve_device
from ckatlas.report.html import write_report
from ckatlas.train import load_run, train


@dataclass(frozen=True)
class StepContext:
    """Where and how steps run.

    Attributes:
        root: the experiment directory.
        config: the experiment.
        device: "cpu", "cuda", "cuda:N", or None for CUDA when present.
        quiet: no progress bars.
    """

    root: str
    config: ExperimentConfig
    device: str | None = None
    quiet: bool = False


def execute(step: Step, ctx: StepContext) -> float:
    """Compute `step` (its registered kind's computation) and write its outputs; returns the seconds it took."""
    started = time.perf_counter()
    step_kind(step.kind).compute(step, ctx, ExperimentStore(ctx.root))
    return time.perf_counter() - started


# -- inputs ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _test_data(dataset: DatasetConfig, normalize: bool = True) -> ImageData:
    return load_dataset(dataset.name, dataset.data_dir, resize=dataset.resize, normalize=normalize)


def _normalize(config: ExperimentConfig) -> bool:
    """Whether the runs see normalised pixels (one recipe for the whole experiment)."""
    return config.train_config(config.runs[0]).normalize


def test_inputs(config: ExperimentConfig) -> torch.Tensor:
    """The test images every heatmap and analysis is computed on: the first `num_examples`,
    prepared as the runs were trained on them (normalised or in [0, 1])."""
    x = _test_data(config.dataset, _normalize(config)).x_test
    return x if config.cka.num_examples is None else x[: config.cka.num_examples]


def load_model(store: ExperimentStore, name: str, device: torch.device) -> torch.nn.Module:
    """The trained model of run `name`, on `device`."""
    return load_run(store.path(store.run_dir(name)), device=device).model


# -- the steps ---------------------------------------------------------------------------------
def _train(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    run, analyses = step.runs[0], ctx.config.analyses
    wanted = analyses.dynamics is not None and analyses.dynamics.wants(run)
    train(ctx.config.train_config(run), store.path(store.run_dir(run.name)), resume=True, quiet=ctx.quiet,
          device=ctx.device, dynamics=analyses.dynamics.settings(ctx.config) if wanted else None)


def _dynamics(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    # Written by the run's training (`_train`): missing only when deleted from a finished run,
    # and training again is the one way to get it back.
    if not store.path(step.outputs[0]).is_file():
        raise UserInputError(
            f"{step.outputs[0]} is missing from a finished run: block structure through training is recorded "
            f"while a run trains; delete {store.run_dir(step.runs[0].name)} to train it again with the record"
        )


def _cka(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
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


def _blocks(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    run = step.runs[0]
    cka = CKAResult.load(store.path(store.cka_file(run.name)))
    settings = ctx.config.analyses.blocks
    layers = None
    if settings.on == "block-outputs":
        outputs = set(load_model(store, run.name, torch.device("cpu")).layer_names("blocks"))
        layers = [name for name in cka.layers_a if name in outputs]
    settings.detector.find(cka, layers=layers).save(store.path(step.outputs[0]))


def _stability(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    results = [BlockResult.load(store.path(store.blocks_file(r.name))) for r in step.runs]
    block_stability(results, labels=[r.name for r in step.runs]).save(store.path(step.outputs[0]))


def _pca(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    cka = ctx.config.cka
    model = load_model(store, step.runs[0].name, device)
    result = principal_components(model, test_inputs(ctx.config), layers=cka.layers, batch_size=cka.batch_size,
                                  shuffle=True, seed=cka.seed, device=device, tokens=cka.tokens)
    result.save(store.path(step.outputs[0]))


def _probes(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    run, settings = step.runs[0], ctx.config.analyses.probes
    assert settings is not None
    data = ctx.config.train_config(run).load_data()  # the examples this model was trained on
    result = linear_probes(load_model(store, run.name, device), data, val_fraction=settings.val_fraction,
                           max_features=settings.max_features, c_grid=settings.c_grid, seed=settings.seed,
                           device=device)
    result.save(store.path(step.outputs[0]))


def _prune(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    run, settings = step.runs[0], ctx.config.analyses.prune
    assert settings is not None
    data = ctx.config.train_config(run).load_data()
    result = prune_blocks(
        load_model(store, run.name, device),
        data,
        finetune_epochs=settings.finetune_epochs,
        finetune_lr=settings.finetune_lr,
        seed=run.seed,
        device=device,
        block_result=BlockResult.load(store.path(store.blocks_file(run.name))),
    )
    result.save(store.path(step.outputs[0]))


def _errors(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    config = ctx.config
    settings = config.analyses.errors
    assert settings is not None
    populations = []
    for pop in (settings.population_a, settings.population_b):
        runs = config.groups[pop.label]
        populations.append(load_predictions([store.path(store.run_dir(r.name)) for r in runs], name=pop.label))
    result = compare_populations(
        *populations,
        alpha=settings.alpha,
        seed=settings.seed,
        num_permutations=settings.num_permutations,
        class_names=list(_test_data(config.dataset).class_names),
    )
    result.save(store.path(step.outputs[0]))


def _summary(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    build_summary(store, ctx.config).save(store.path(SUMMARY_FILE))


def _report(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    write_report(store.root)


# -- the plans ---------------------------------------------------------------------------------
_store = ExperimentStore


def _per_run(kind: str, output: Callable[[str], str], needs: Callable[[str], tuple[str, ...]],
             wants: Callable[[ExperimentConfig, Any], bool] = lambda config, run: True
             ) -> Callable[[ExperimentConfig, list[Step]], list[Step]]:
    """The plan of a kind with one step per run (those `wants` picks)."""
    def plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
        return [Step(kind, f"{kind}/{r.name}", (output(r.name),), needs(r.name), (r,))
                for r in config.runs if wants(config, r)]
    return plan


def _cross_plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    from ckatlas.experiment.plan import cross_seed_pairs

    return [Step("cross", f"cross/{a.name}__{b.name}", (_store.cka_file(a.name, b.name),),
                 (f"train/{a.name}", f"train/{b.name}"), (a, b)) for a, b in cross_seed_pairs(config)]


def _stability_plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    return [Step("stability", f"stability/{group}", (_store.stability_file(group),),
                 tuple(f"blocks/{r.name}" for r in members), tuple(members))
            for group, members in config.groups.items() if len(members) >= 2]


def _errors_plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    errors = config.analyses.errors
    members = tuple(r for pop in (errors.population_a, errors.population_b) for r in config.groups[pop.label])
    return [Step("errors", "errors", (_store.errors_file(),), tuple(f"train/{r.name}" for r in members), members)]


def _summary_plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    return [Step("summary", "summary", (SUMMARY_FILE,), tuple(s.key for s in earlier), tuple(config.runs))]


def _report_plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    return [Step("report", "report", ("report/index.html",), ("summary",), tuple(config.runs))]


def _train_done(step: Step, store: ExperimentStore) -> bool:
    return store.is_finished_run(step.runs[0].name)


def _trained(name: str) -> tuple[str, ...]:
    return (f"train/{name}",)


for _kind in (
    StepKind("train", _per_run("train", _store.run_dir, lambda name: ()), _train, uses_models=True, done=_train_done,
             resumable=True, description="training"),
    StepKind("cka", _per_run("cka", _store.cka_file, _trained), _cka, uses_models=True,
             description="the model's within-model CKA heatmap"),
    StepKind("cross", _cross_plan, _cka, settings=CrossSeedConfig, table="cross_seed", uses_models=True,
             description="cross-seed CKA"),
    StepKind("blocks", _per_run("blocks", _store.blocks_file, lambda name: (f"cka/{name}",)), _blocks,
             settings=BlocksConfig, default_on=True, description="the block structure of the heatmap"),
    StepKind("stability", _stability_plan, _stability, description="how the blocks of a group's seeds agree"),
    StepKind("pca", _per_run("pca", _store.pca_file, _trained, lambda c, r: c.analyses.pca.wants(r)), _pca,
             settings=PCAConfig, uses_models=True,
             description="first principal components"),
    StepKind("probes", _per_run("probes", _store.probes_file, _trained, lambda c, r: c.analyses.probes.wants(r)),
             _probes, settings=ProbesConfig, uses_models=True, description="linear probes"),
    StepKind("prune", _per_run("prune", _store.prune_file, lambda name: (f"train/{name}", f"blocks/{name}"),
                               lambda c, r: r.prunable and c.analyses.prune.wants(r)), _prune, settings=PruneConfig,
             uses_models=True,
             description="block deletion"),
    StepKind("dynamics", _per_run("dynamics", _store.dynamics_file, _trained,
                                  lambda c, r: c.analyses.dynamics.wants(r)), _dynamics, settings=DynamicsConfig,
             resumable=True,  # its file is written by training: kept when a run resumes
             description="block structure through training"),
    StepKind("errors", _errors_plan, _errors, settings=ErrorsConfig,
             description="error comparison"),
    StepKind("summary", _summary_plan, _summary, driver=True, description="summary.json"),
    StepKind("report", _report_plan, _report, driver=True, description="report/index.html"),
):
    register_step(_kind)


__all__ = ["StepContext", "execute", "load_model", "test_inputs"]
