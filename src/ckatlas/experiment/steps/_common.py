"""What every step module shares: where and how steps run (`StepContext`), `execute`, the test
inputs every heatmap and analysis is computed on, a run's trained model, and the plan of a kind
with one step per run."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ckatlas.data import ImageData, load_dataset
from ckatlas.experiment.registry import Step, step_kind
from ckatlas.experiment.store import ExperimentStore
from ckatlas.train import load_run

if TYPE_CHECKING:
    from ckatlas.experiment.config import DatasetConfig, ExperimentConfig


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


@functools.lru_cache(maxsize=2)
def test_data(dataset: DatasetConfig, normalize: bool = True) -> ImageData:
    """The experiment's dataset (cached: every step of a process reads the same test split)."""
    return load_dataset(dataset.name, dataset.data_dir, resize=dataset.resize, normalize=normalize)


def test_inputs(config: ExperimentConfig) -> torch.Tensor:
    """The test images every heatmap and analysis is computed on: the first `num_examples`,
    prepared as the runs were trained on them (normalised or in [0, 1], one recipe per experiment)."""
    x = test_data(config.dataset, config.train_config(config.runs[0]).normalize).x_test
    return x if config.cka.num_examples is None else x[: config.cka.num_examples]


def load_model(store: ExperimentStore, name: str, device: torch.device) -> torch.nn.Module:
    """The trained model of run `name`, on `device`."""
    return load_run(store.path(store.run_dir(name)), device=device).model


def per_run(kind: str, output: Callable[[str], str], needs: Callable[[str], tuple[str, ...]],
            wants: Callable[[ExperimentConfig, Any], bool] = lambda config, run: True
            ) -> Callable[[ExperimentConfig, list[Step]], list[Step]]:
    """The plan of a kind with one step per run (those `wants` picks): output `output(run)`, reading
    the steps `needs(run)`."""
    def plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
        return [Step(kind, f"{kind}/{r.name}", (output(r.name),), needs(r.name), (r,))
                for r in config.runs if wants(config, r)]
    return plan


def trained(name: str) -> tuple[str, ...]:
    """What a step of one run reads: the run's training."""
    return (f"train/{name}",)


__all__ = ["StepContext", "execute", "load_model", "per_run", "test_data", "test_inputs", "trained"]
