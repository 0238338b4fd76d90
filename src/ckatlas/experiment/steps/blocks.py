"""The ``blocks`` and ``stability`` steps: the block structure of each model's heatmap (``[analyses.blocks]``,
always on: the detector's settings), and how the blocks of each architecture's seeds agree.

    blocks/<run>         analysis/blocks/<run>.json          <- cka/<run>
    stability/<group>    analysis/stability/<group>.json     <- blocks/<run> of the group's seeds
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import dataclasses

import torch

from ckatlas.analysis import BlockResult, block_stability
from ckatlas.analysis.blocks import BlockDetector
from ckatlas.errors import UserInputError
from ckatlas.experiment.registry import Step, StepKind, register_step
from ckatlas.experiment.steps._common import StepContext, load_model, per_run
from ckatlas.experiment.store import ExperimentStore
from ckatlas.heatmap import CKAResult

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


@dataclass(frozen=True)
class BlocksConfig(BlockDetector):
    """`[analyses.blocks]`: the block detector (`ckatlas.analysis.BlockDetector`: its fields and
    defaults) and the rows it reads.

    `on` chooses the rows blocks are found in: "heatmap" (every layer of the heatmap)
    or "block-outputs" (the residual stream: the stem's output, each residual block's
    output, the pooled features and the logits, `model.layer_names("blocks")`, taken
    out of a heatmap of all layers). Inside a residual network's block the layers of
    the residual branches differ from the stream (the paper's checkerboard).
    """

    on: Literal["heatmap", "block-outputs"] = "heatmap"

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except UserInputError as exc:
            raise UserInputError(f"[analyses.blocks]: {exc}") from None

    @property
    def detector(self) -> BlockDetector:
        """The detector alone (without `on`)."""
        return BlockDetector(**{f.name: getattr(self, f.name) for f in dataclasses.fields(BlockDetector)})

    def check(self, config: ExperimentConfig) -> None:
        """Checked when made."""


def stability_file(group: str) -> str:
    return f"analysis/stability/{group}.json"


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


def _stability_plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    return [Step("stability", f"stability/{group}", (stability_file(group),),
                 tuple(f"blocks/{r.name}" for r in members), tuple(members))
            for group, members in config.groups.items() if len(members) >= 2]


register_step(StepKind("blocks", per_run("blocks", ExperimentStore.blocks_file, lambda name: (f"cka/{name}",)),
                       _blocks, settings=BlocksConfig, default_on=True,
                       description="the block structure of the heatmap", after=("cka",)))
register_step(StepKind("stability", _stability_plan, _stability, description="how the blocks of a group's seeds agree",
                       after=("blocks",)))

__all__ = ["BlocksConfig", "stability_file"]
