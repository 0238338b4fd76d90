"""Deleting residual blocks: does the block structure hold redundant computation?

Nguyen, Raghu & Kornblith (2021, Section 5) delete residual blocks one at a time
from the end of each stage, without retraining, and find that deleting blocks
inside the block structure costs little test accuracy while deleting blocks
outside it costs much more.

Order (`deletion_order`): stage by stage, each on its own (the other stages stay
intact). For stage s with blocks b_1 .. b_m, step k deletes the last k blocks
b_m, b_{m-1}, .., b_{m-k+1}; steps go on while the next block from the end is
deletable (has an identity shortcut; a block with a projection shortcut, always
the first of stages 2 and 3 of the CIFAR ResNets, ends the sequence). A deleted
block becomes the identity (`model.set_submodule(name, nn.Identity())`), which is
exactly the block with its residual branch zeroed: the skip connection stays.

Each step starts from a deep copy of the given model (which is never changed) and
is evaluated on the test split. With ``finetune_epochs`` > 0 the pruned copy is
first fine-tuned on the training split: SGD with momentum 0.9, weight decay 5e-4,
a cosine schedule from ``finetune_lr`` to 0, the data's augmentation, example
order and augmentation drawn from a generator seeded with ``seed``. The reference
accuracy is that of the unpruned model as given (not fine-tuned).

With a `BlockResult` (from `find_blocks` on a heatmap of the model's "blocks"
layers), each step records whether the block deleted at that step lies inside a
detected block: whether its output layer (``stage{s}.{i}.relu``) is one of the
layers of a block (`mark_blocks`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ckatlas.analysis.blocks import BlockResult
from ckatlas.runtime.devices import run_device
from ckatlas.errors import UserInputError
from ckatlas.io.results import JsonResult
from ckatlas.train import TrainConfig, fit, predict



@dataclass(frozen=True)
class PruneStep:
    """One point of a pruning curve.

    Attributes:
        stage: the stage pruned (1-based).
        num_removed: blocks deleted from the end of the stage.
        block: the block deleted at this step (the earliest of `removed`).
        removed: every deleted block, in deletion order (last block first).
        output_layer: the output layer of `block` (its name in the "blocks" layers).
        accuracy: test accuracy of the pruned (and, if asked, fine-tuned) model.
        delta: accuracy minus the unpruned accuracy.
        in_block: whether `block` lies inside a detected block; None when not known.
    """

    stage: int
    num_removed: int
    block: str
    removed: tuple[str, ...]
    output_layer: str
    accuracy: float
    delta: float
    in_block: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "num_removed": self.num_removed,
            "block": self.block,
            "removed": list(self.removed),
            "output_layer": self.output_layer,
            "accuracy": self.accuracy,
            "delta": self.delta,
            "in_block": self.in_block,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneStep:
        return cls(
            int(data["stage"]), int(data["num_removed"]), str(data["block"]), tuple(data["removed"]),
            str(data["output_layer"]), float(data["accuracy"]), float(data["delta"]), data["in_block"],
        )


@dataclass
class PruneResult(JsonResult):
    """Test accuracy as blocks are deleted from the end of each stage.

    Attributes:
        unpruned_accuracy: test accuracy of the model as given.
        steps: the pruning steps, stage by stage, fewest deletions first.
        finetune_epochs: fine-tuning epochs after each deletion (0: none).
        num_test: test examples.
        metadata: settings (seed, fine-tuning learning rate, batch size).
    """

    FORMAT = "ckatlas.PruneResult"
    WHAT = "a pruning result"

    unpruned_accuracy: float
    steps: list[PruneStep]
    finetune_epochs: int
    num_test: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def stages(self) -> list[int]:
        """The pruned stages, in order."""
        return sorted({s.stage for s in self.steps})

    def curve(self, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """(blocks removed, accuracy) of one stage, starting at (0, unpruned accuracy)."""
        steps = [s for s in self.steps if s.stage == stage]
        if not steps:
            raise UserInputError(f"stage {stage} was not pruned; pruned stages are {self.stages}")
        removed = np.array([0] + [s.num_removed for s in steps])
        accuracy = np.array([self.unpruned_accuracy] + [s.accuracy for s in steps])
        return removed, accuracy

    def summary(self) -> str:
        """One line per step."""
        tuned = ", no fine-tuning"
        if self.finetune_epochs:
            tuned = f", {self.finetune_epochs} fine-tuning epoch(s) per step"
        lines = [f"unpruned test accuracy {self.unpruned_accuracy:.4f} ({self.num_test} examples{tuned})"]
        for s in self.steps:
            where = {True: "  inside a block", False: "  outside blocks", None: ""}[s.in_block]
            lines.append(f"  stage {s.stage}, {s.num_removed} removed (last: {s.block}): "
                         f"accuracy {s.accuracy:.4f} ({s.delta:+.4f}){where}")
        return "\n".join(lines)

    def fields(self) -> dict[str, Any]:
        return {
            "unpruned_accuracy": self.unpruned_accuracy,
            "steps": [s.to_dict() for s in self.steps],
            "finetune_epochs": self.finetune_epochs,
            "num_test": self.num_test,
            "metadata": self.metadata,
        }

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> PruneResult:
        return cls(
            float(data["unpruned_accuracy"]), [PruneStep.from_dict(s) for s in data["steps"]],
            int(data["finetune_epochs"]), int(data["num_test"]), dict(data["metadata"]),
        )


def deletion_order(model: nn.Module) -> dict[int, list[str]]:
    """For each stage with a deletable block at its end, its blocks in deletion order (last first).

    Raises:
        UserInputError: the model has no residual blocks, or none can be deleted.
    """
    if not callable(getattr(model, "residual_blocks", None)):
        raise UserInputError(f"{type(model).__name__} has no residual_blocks(): pruning needs a ckatlas ResNet")
    refs = model.residual_blocks()
    by_stage: dict[int, list[Any]] = {}
    for ref in refs:
        by_stage.setdefault(ref.stage, []).append(ref)
    order: dict[int, list[str]] = {}
    for stage, stage_refs in sorted(by_stage.items()):
        names = []
        for ref in reversed(stage_refs):
            if not ref.block.deletable:
                break
            names.append(ref.name)
        if names:
            order[stage] = names
    if not order:
        raise UserInputError(
            f"{type(model).__name__} has no deletable residual block (a block needs an identity shortcut); "
            "a network without residual connections cannot be pruned this way"
        )
    return order


@dataclass(frozen=True)
class PruneSettings:
    """How `prune_blocks` fine-tunes after each deletion: the one place of these settings and their
    defaults (`[analyses.prune]` is this class with a run selection; `ckatlas prune` makes its options
    from it)."""

    finetune_epochs: int = field(default=0, metadata={
        "help": "fine-tuning epochs after each deletion (0: none, the paper's setting)"})
    finetune_lr: float = field(default=0.01, metadata={"help": "peak learning rate of the fine-tuning"})

    def check(self, where: str = "") -> None:
        """One clear error for a setting `prune_blocks` cannot use."""
        epochs, lr = self.finetune_epochs, self.finetune_lr
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise UserInputError(f"finetune_epochs{where} must be an integer >= 0, got {epochs!r}")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise UserInputError(f"finetune_lr{where} must be a positive number, got {lr!r}")


def prune_blocks(
    model: nn.Module,
    data: Any,
    *,
    stages: Sequence[int] | None = None,
    finetune_epochs: int = PruneSettings.finetune_epochs,
    finetune_lr: float = PruneSettings.finetune_lr,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str | None = None,
    block_result: BlockResult | None = None,
) -> PruneResult:
    """Delete residual blocks from the end of each stage and test each pruned model (module docstring).

    Args:
        model: a ckatlas ResNet (never modified).
        data: an `ImageData` (or any object with x_test, y_test, and x_train, y_train
            for fine-tuning).
        stages: the stages to prune (1-based); None: every stage with a deletable block.
        finetune_epochs: fine-tuning epochs after each deletion (0: none, the paper's setting).
        finetune_lr: peak learning rate of the fine-tuning.
        batch_size: examples per batch, for evaluation and fine-tuning.
        seed: seed of the fine-tuning's example order and augmentation.
        device: where to run; None means the device of the model's parameters.
        block_result: blocks found on this model's "blocks" layers, to mark the steps
            that delete a block inside them (see `mark_blocks`).

    Returns:
        A `PruneResult`.

    Raises:
        UserInputError: a model without deletable residual blocks, an unknown stage,
            bad settings.
    """
    order = deletion_order(model)
    if stages is not None:
        unknown = [s for s in stages if s not in order]
        if unknown:
            raise UserInputError(
                f"stage(s) {unknown} have no deletable block at their end; prunable stages are {list(order)}"
            )
        order = {s: order[s] for s in stages}
    PruneSettings(finetune_epochs, finetune_lr).check()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = run_device(model, device)
    x_test, y_test = _split(data, "test")
    unpruned = _accuracy(copy.deepcopy(model), x_test, y_test, batch_size, device)
    steps = []
    for stage, names in order.items():
        for k in range(1, len(names) + 1):
            pruned = copy.deepcopy(model)
            for name in names[:k]:
                pruned.set_submodule(name, nn.Identity())
            if finetune_epochs:
                _finetune(pruned, data, finetune_epochs, finetune_lr, batch_size, seed, device)
            accuracy = _accuracy(pruned, x_test, y_test, batch_size, device)
            steps.append(PruneStep(stage, k, names[k - 1], tuple(names[:k]), f"{names[k - 1]}.relu",
                                   accuracy, accuracy - unpruned))
    result = PruneResult(
        unpruned, steps, finetune_epochs, len(y_test),
        {"seed": seed, "finetune_lr": finetune_lr if finetune_epochs else None, "batch_size": batch_size},
    )
    return mark_blocks(result, block_result) if block_result is not None else result


def mark_blocks(result: PruneResult, block_result: BlockResult) -> PruneResult:
    """A copy of `result` whose steps say whether the deleted block lies inside a detected block.

    Args:
        result: pruning steps.
        block_result: blocks found (by `find_blocks`) on a heatmap of the same
            model's layers, with layer names; its layers must include every deleted
            block's output layer (the "blocks" layers do).

    Raises:
        UserInputError: the block result has no layer names or lacks a deleted block's output layer.
    """
    if block_result.layer_names is None:
        raise UserInputError("the block result has no layer names: find blocks on a CKAResult (or pass layer_names=)")
    names = list(block_result.layer_names)
    inside = block_result.in_block
    steps = []
    for step in result.steps:
        if step.output_layer not in names:
            raise UserInputError(
                f"the block result does not cover layer {step.output_layer!r}: find blocks on the same model's "
                "'blocks' layers"
            )
        steps.append(replace(step, in_block=bool(inside[names.index(step.output_layer)])))
    return replace(result, steps=steps)


# -- evaluation and fine-tuning ----------------------------------------------------------------
def _split(data: Any, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        x, y = getattr(data, f"x_{part}"), getattr(data, f"y_{part}")
    except AttributeError:
        raise UserInputError(
            f"pruning needs data with x_{part} and y_{part} (an ImageData), got {type(data).__name__}"
        ) from None
    if len(x) != len(y) or len(x) == 0:
        raise UserInputError(
            f"the {part} split holds {len(x)} images and {len(y)} labels; expected as many of each, at least one"
        )
    return torch.as_tensor(x), torch.as_tensor(y)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device) -> float:
    logits = predict(model, x, batch_size, device)
    return float((logits.argmax(1) == y.cpu()).double().mean())


def _finetune(
    model: nn.Module, data: Any, epochs: int, lr: float, batch_size: int, seed: int, device: torch.device
) -> None:
    """Fine-tune through the training loop: ckatlas's recipe (SGD momentum 0.9, weight decay 5e-4,
    cosine from `lr`, the data's augmentation) for `epochs` epochs, no evaluation on the way."""
    fit(model, data, TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, eval_every=0), device)


__all__ = ["PruneResult", "PruneSettings", "PruneStep", "deletion_order", "mark_blocks", "prune_blocks"]
