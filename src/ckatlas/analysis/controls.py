"""Positive controls of the instrument: a real network whose block is known by construction.

A null result ("this grid shows no block structure") means something only beside a control
that shows the instrument finds a block where one is. `silence_blocks` zeroes the residual
branches of consecutive residual blocks of a trained ResNet: each such block then passes its
input through unchanged (``relu(x + 0) = x`` for the non-negative output of the block before),
so the outputs of the block before them and of every silenced block are *identical*: a run of
layers with CKA exactly 1 among themselves, embedded in the network's real representations.
`silenced_control` maps the network with and without the silencing and asks each definition of
block structure whether it finds that run at its true extent, and nothing elsewhere that was not
there before:

- **the paper's** (very high similarity over a range of layers): the threshold rule at CKA 0.9;
- **stands out**: the contrast rule (ckatlas's `BlockDetector` defaults);
- **definition-free**: mean CKA inside the known run against the rest (it must rise to 1).

Only block outputs are compared by default (``layers="blocks"``): inside a silenced block the
branch's own layers still compute (and its last norm is dead), so on every layer the run is
interleaved with other layers by construction.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ckatlas.analysis.blocks import BlockDetector, BlockResult
from ckatlas.errors import UserInputError
from ckatlas.heatmap import CKAResult, heatmap
from ckatlas.models.modules import ResidualBlock

#: The definitions a control checks, by name: the paper's words and the contrast rule.
DEFINITIONS: dict[str, BlockDetector] = {
    "paper (threshold 0.9)": BlockDetector(method="threshold", threshold=0.9),
    "stands out (contrast)": BlockDetector(),
}


def silence_blocks(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """A copy of `model` whose named residual blocks pass their input through unchanged: the last norm of
    each block's branch gets zero weight and bias, so the branch adds zero. Each block must have an
    identity shortcut (`ResidualBlock.deletable`), else its output is not its input."""
    if not names:
        raise UserInputError("name at least one residual block to silence")
    out = copy.deepcopy(model)
    for name in names:
        try:
            block = out.get_submodule(name)
        except AttributeError:
            raise UserInputError(f"the model has no module {name!r}; name residual blocks such as 'stage2.1'") from None
        if not isinstance(block, ResidualBlock) or not block.deletable:
            raise UserInputError(f"{name!r} is not a residual block with an identity shortcut: silencing it would not "
                                 "make its output equal its input (the first block of a stage changes the width)")
        norm = [m for m in block.branch.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)][-1]
        with torch.no_grad():
            norm.weight.zero_()
            norm.bias.zero_()
    return out


@dataclass
class DefinitionOutcome:
    """What one definition found in the network with and without the silenced run.

    Attributes:
        definition: its name (`DEFINITIONS`).
        found: the blocks found in the silenced network, as (first, last) layer names.
        found_before: the same in the network as trained.
        exact: a block found spans exactly the known run.
        covers: a block found contains the known run (it may extend beyond it).
        new_elsewhere: blocks found in the silenced network that overlap neither the known run nor
            any block found before silencing (false finds the silencing caused).
    """

    definition: str
    found: list[tuple[str, str]]
    found_before: list[tuple[str, str]]
    exact: bool
    covers: bool
    new_elsewhere: int

    @property
    def passes(self) -> bool:
        """Found at its true extent, and nothing new elsewhere."""
        return self.exact and self.new_elsewhere == 0


@dataclass
class ControlResult:
    """A silenced-run positive control (module docstring).

    Attributes:
        true_layers: the layers of the known run (the block before the silenced ones, and these).
        silenced: the blocks silenced.
        before, after: the heatmaps of the network as trained and silenced.
        outcomes: one `DefinitionOutcome` per definition.
        mean_inside_before, mean_inside_after: mean off-diagonal CKA inside the known run.
        mean_outside_before, mean_outside_after: mean off-diagonal CKA of the other layer pairs.
    """

    true_layers: list[str]
    silenced: list[str]
    before: CKAResult
    after: CKAResult
    outcomes: list[DefinitionOutcome]
    mean_inside_before: float
    mean_inside_after: float
    mean_outside_before: float
    mean_outside_after: float
    results: dict[str, tuple[BlockResult, BlockResult]] = field(default_factory=dict, repr=False)

    def lines(self) -> list[str]:
        """One line per definition, and the definition-free means."""
        run = f"{self.true_layers[0]} .. {self.true_layers[-1]} ({len(self.true_layers)} layers)"
        out = [f"known run: {run}; silenced {', '.join(self.silenced)}"]
        for o in self.outcomes:
            verdict = "passes" if o.passes else "fails"
            out.append(f"{o.definition}: {verdict} (exact {o.exact}, covers {o.covers}, new blocks elsewhere "
                       f"{o.new_elsewhere}); found {o.found}, before silencing {o.found_before}")
        out.append(f"definition-free: mean CKA inside the run {self.mean_inside_before:.3f} -> "
                   f"{self.mean_inside_after:.3f}, elsewhere {self.mean_outside_before:.3f} -> {self.mean_outside_after:.3f}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "true_layers": self.true_layers, "silenced": self.silenced,
            "outcomes": [{**o.__dict__, "passes": o.passes} for o in self.outcomes],
            "mean_inside": [self.mean_inside_before, self.mean_inside_after],
            "mean_outside": [self.mean_outside_before, self.mean_outside_after],
        }


def silenced_control(model: nn.Module, inputs: Any, silence: Sequence[str], *, layers: Any = "blocks",
                     definitions: Mapping[str, BlockDetector] | None = None, batch_size: int = 256,
                     device: Any = None) -> ControlResult:
    """Map `model` as it is and with the blocks `silence` silenced (`silence_blocks`), and check each
    definition of block structure against the run of identical layers that silencing makes.

    Args:
        model: a trained ResNet (ckatlas's CIFAR ResNets, or any model built of `ResidualBlock`s).
        inputs: the images to map (a Tensor (N, ...)).
        silence: consecutive residual blocks with identity shortcuts, e.g. ["stage2.1", "stage2.2"].
        layers: the heatmap's layers (default: the block outputs).
        definitions: {name: detector} (default `DEFINITIONS`).
    """
    definitions = DEFINITIONS if definitions is None else definitions
    silenced = silence_blocks(model, silence)
    before = heatmap(model, inputs, layers=layers, batch_size=batch_size, shuffle=False, device=device)
    after = heatmap(silenced, inputs, layers=layers, batch_size=batch_size, shuffle=False, device=device)
    names = after.layers_a
    outputs = [f"{name}.relu" for name in silence]
    missing = [o for o in outputs if o not in names]
    if missing:
        raise UserInputError(f"the heatmap's layers leave out the silenced blocks' outputs {missing}; "
                             "map the block outputs (layers='blocks') or name them")
    rows = sorted(names.index(o) for o in outputs)
    if rows != list(range(rows[0], rows[0] + len(rows))):
        raise UserInputError(f"the silenced blocks {list(silence)} are not consecutive in the heatmap's layers")
    start = rows[0] - 1 if rows[0] > 0 else rows[0]  # the output before the first silenced block is the same
    true = (start, rows[-1])
    outcomes, results = [], {}
    for label, detector in definitions.items():
        found_after, found_before = detector.find(after), detector.find(before)
        results[label] = (found_before, found_after)
        spans = [(b.start, b.end) for b in found_after.blocks]
        spans_before = [(b.start, b.end) for b in found_before.blocks]
        elsewhere = [s for s in spans if not _overlaps(s, true) and not any(_overlaps(s, t) for t in spans_before)]
        outcomes.append(DefinitionOutcome(
            label, [(names[a], names[b]) for a, b in spans], [(names[a], names[b]) for a, b in spans_before],
            true in spans, any(a <= true[0] and true[1] <= b for a, b in spans), len(elsewhere)))
    inside = np.zeros(len(names), dtype=bool)
    inside[true[0]:true[1] + 1] = True
    in_before, out_before = _means(before.matrix, inside)
    in_after, out_after = _means(after.matrix, inside)
    return ControlResult([names[i] for i in range(true[0], true[1] + 1)], list(silence), before, after, outcomes,
                         in_before, in_after, out_before, out_after, results)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _means(matrix: np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """Mean off-diagonal CKA among the `inside` layers, and over every pair not both inside."""
    off = ~np.eye(len(matrix), dtype=bool)
    both = inside[:, None] & inside[None, :]
    return float(np.nanmean(matrix[both & off])), float(np.nanmean(matrix[~both & off]))


__all__ = ["DEFINITIONS", "ControlResult", "DefinitionOutcome", "silence_blocks", "silenced_control"]
