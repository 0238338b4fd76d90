"""What each step of an experiment computes (`execute`), in any process of any machine.

A step reads only files under the experiment directory (and the dataset), and
writes only its own outputs, atomically: it can run in this process, in a Ray
worker, or again after a crash, with the same result. Models run on
`StepContext.device`; every random choice comes from the config's seeds.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ckatlas.analysis import BlockResult, block_stability, compare_populations, find_blocks, load_predictions
from ckatlas.analysis.pca import principal_components
from ckatlas.analysis.probes import linear_probes
from ckatlas.analysis.prune import prune_blocks
from ckatlas.data import ImageData, load_dataset
from ckatlas.experiment.config import DatasetConfig, ExperimentConfig
from ckatlas.experiment.plan import REPORT_MODULE, Step
from ckatlas.experiment.store import SUMMARY_FILE, ExperimentStore
from ckatlas.experiment.summary import build_summary
from ckatlas.files import atomic_write_json
from ckatlas.heatmap import CKAResult, heatmap
from ckatlas.train import load_run, resolve_device, train


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
    """Compute `step` and write its outputs; returns the seconds it took."""
    started = time.perf_counter()
    _RUNNERS[step.kind](step, ctx, ExperimentStore(ctx.root))
    return time.perf_counter() - started


def report_writer() -> Callable[[Path], object] | None:
    """`ckatlas.report.html.write_report` once that module exists, else None."""
    if importlib.util.find_spec(REPORT_MODULE) is None:
        return None
    return getattr(importlib.import_module(REPORT_MODULE), "write_report", None)


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


def _model(store: ExperimentStore, name: str, device: torch.device) -> torch.nn.Module:
    return load_run(store.path(store.run_dir(name)), device=device).model


# -- the steps ---------------------------------------------------------------------------------
def _train(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    run = step.runs[0]
    train(ctx.config.train_config(run), store.path(store.run_dir(run.name)), resume=True, quiet=ctx.quiet,
          device=ctx.device)


def _cka(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    models = [_model(store, r.name, device) for r in step.runs]
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
    )
    result.save(store.path(step.outputs[0]))


def _blocks(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    run = step.runs[0]
    cka = CKAResult.load(store.path(store.cka_file(run.name)))
    settings = dataclasses.asdict(ctx.config.analyses.blocks)
    layers = None
    if settings.pop("on") == "block-outputs":
        outputs = set(_model(store, run.name, torch.device("cpu")).layer_names("blocks"))
        layers = [name for name in cka.layers_a if name in outputs]
    find_blocks(cka, layers=layers, **settings).save(store.path(step.outputs[0]))


def _stability(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    results = [BlockResult.load(store.path(store.blocks_file(r.name))) for r in step.runs]
    block_stability(results, labels=[r.name for r in step.runs]).save(store.path(step.outputs[0]))


def _pca(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    cka = ctx.config.cka
    model = _model(store, step.runs[0].name, device)
    result = principal_components(model, test_inputs(ctx.config), layers=cka.layers, batch_size=cka.batch_size,
                                  shuffle=True, seed=cka.seed, device=device)
    result.save(store.path(step.outputs[0]))


def _probes(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    run, settings = step.runs[0], ctx.config.analyses.probes
    assert settings is not None
    data = ctx.config.train_config(run).load_data()  # the examples this model was trained on
    result = linear_probes(_model(store, run.name, device), data, val_fraction=settings.val_fraction,
                           max_features=settings.max_features, c_grid=settings.c_grid, seed=settings.seed,
                           device=device)
    result.save(store.path(step.outputs[0]))


def _prune(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    device = resolve_device(ctx.device)
    run, settings = step.runs[0], ctx.config.analyses.prune
    assert settings is not None
    data = ctx.config.train_config(run).load_data()
    result = prune_blocks(
        _model(store, run.name, device),
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
    atomic_write_json(store.path(SUMMARY_FILE), build_summary(store, ctx.config))


def _report(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    writer = report_writer()
    if writer is not None:
        writer(store.root)


_RUNNERS: dict[str, Callable[[Step, StepContext, ExperimentStore], None]] = {
    "train": _train,
    "cka": _cka,
    "cross": _cka,
    "blocks": _blocks,
    "stability": _stability,
    "pca": _pca,
    "probes": _probes,
    "prune": _prune,
    "errors": _errors,
    "summary": _summary,
    "report": _report,
}

__all__ = ["StepContext", "execute", "report_writer", "test_inputs"]
