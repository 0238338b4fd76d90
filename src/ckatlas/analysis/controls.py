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
        block = _block(out, name)
        if not block.deletable:
            raise UserInputError(f"{name!r} is not a residual block with an identity shortcut: silencing it would not "
                                 "make its output equal its input (the first block of a stage changes the width)")
        norm = _last_norm(block)
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
        silenced: the blocks silenced (or planted in).
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
        out = [f"known run: {run}; changed {', '.join(self.silenced)}"]
        for o in self.outcomes:
            verdict = "passes" if o.passes else "fails"
            out.append(f"{o.definition}: {verdict} (exact {o.exact}, covers {o.covers}, new blocks elsewhere "
                       f"{o.new_elsewhere}); found {o.found}, before the change {o.found_before}")
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
    silenced = silence_blocks(model, silence)
    before = heatmap(model, inputs, layers=layers, batch_size=batch_size, shuffle=False, device=device)
    after = heatmap(silenced, inputs, layers=layers, batch_size=batch_size, shuffle=False, device=device)
    rows = _consecutive_rows(after.layers_a, [f"{name}.relu" for name in silence], "silenced blocks")
    start = rows[0] - 1 if rows[0] > 0 else rows[0]  # the output before the first silenced block is the same
    return compare_with_known(before, after, (start, rows[-1]), list(silence), definitions)


def plant_block(model: nn.Module, blocks: Sequence[str], share: float = 0.8, calibration: torch.Tensor | None = None,
                seed: int = 0) -> nn.Module:
    """A copy of `model` whose block outputs carry a planted dominant direction in `blocks` only.

    The mechanism the paper finds behind real blocks (a first principal component that dominates a
    run of layers, Nguyen, Raghu & Kornblith 2021, 2022), planted at a known place: the output of
    each named block gets ``c * s(x)`` added to every feature, one non-negative scalar per example
    (``s`` a softplus of a fixed random projection of the first named block's pooled output, the same
    for the whole run), with ``c`` set on `calibration` images so that it carries `share` of the first
    block's output variance; the next module's input gets it subtracted again. So the network computes
    exactly what it did (every module's input is unchanged), the layers outside the run are bit for
    bit as before, and the named blocks' outputs share one dominant direction: a block with known
    borders in a real network's representations.
    """
    if not 0 < share < 1:
        raise UserInputError(f"share must be in (0, 1), got {share!r}")
    if not blocks:
        raise UserInputError("name the residual blocks to plant a block in, e.g. ['stage2.0', 'stage2.1', 'stage2.2']")
    if calibration is None:
        raise UserInputError("plant_block needs calibration images to set the planted direction's share")
    out = copy.deepcopy(model).eval()
    run = [_block(out, name) for name in blocks]
    outputs = out.layer_names("blocks") if hasattr(out, "layer_names") else []
    positions = [outputs.index(f"{name}.relu") if f"{name}.relu" in outputs else -1 for name in blocks]
    if -1 in positions or positions != list(range(positions[0], positions[0] + len(blocks))):
        raise UserInputError(f"the blocks {list(blocks)} are not consecutive residual blocks of the model")
    if positions[-1] + 1 >= len(outputs):
        raise UserInputError(f"{blocks[-1]!r} is the model's last module; plant the block earlier")
    following = [outputs[i + 1].removesuffix(".relu") for i in positions]  # each named block's next module
    direction = torch.randn(_last_norm(run[0]).num_features, generator=torch.Generator().manual_seed(seed))
    scales = _calibrated_scales(out, run, calibration, share, direction)
    state: dict[str, Any] = {}

    def planted(output: torch.Tensor) -> torch.Tensor:
        """s(x): a softplus of a fixed random projection of the first block's pooled output, standardised."""
        z = output.mean(dim=(2, 3)) @ direction.to(output)
        return torch.nn.functional.softplus(2.0 * (z - z.mean()) / z.std().clamp_min(1e-12))

    def add(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if module is run[0].relu:  # the run's first output: this batch's planted values
            state["s"] = planted(output)
        state["added"] = scales[id(module)] * state["s"]
        return output + state["added"][:, None, None, None]

    def remove(module: nn.Module, args: Any) -> tuple[Any, ...]:
        x = args[0]
        return (x - state["added"].reshape(-1, *([1] * (x.ndim - 1))), *args[1:])

    for block, name in zip(run, following):
        block.relu.register_forward_hook(add)  # on the block's output module: what the heatmap's tap sees
        out.get_submodule(name).register_forward_pre_hook(remove)  # the next module sees the network's own
    return out


def _block(model: nn.Module, name: str) -> ResidualBlock:
    try:
        block = model.get_submodule(name)
    except AttributeError:
        raise UserInputError(f"the model has no module {name!r}; name residual blocks such as 'stage2.1'") from None
    if not isinstance(block, ResidualBlock):
        raise UserInputError(f"{name!r} is not a residual block")
    return block


def _last_norm(block: ResidualBlock) -> nn.modules.batchnorm._BatchNorm:
    """The norm that ends the block's branch (what the branch adds is scaled by it)."""
    return [m for m in block.branch.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)][-1]


@torch.no_grad()
def _calibrated_scales(model: nn.Module, run: list[nn.Module], images: torch.Tensor, share: float,
                       direction: torch.Tensor) -> dict[int, float]:
    """Per block of the run (by id of its output module), the c for which c * s(x) carries `share` of that
    block's output variance (over examples and features), measured on `images` without the plant."""
    seen: dict[int, torch.Tensor] = {}
    handles = [b.relu.register_forward_hook(lambda m, a, o: seen.__setitem__(id(m), o.detach().double())) for b in run]
    try:
        model(images.to(next(model.parameters())))
    finally:
        for handle in handles:
            handle.remove()
    first = seen[id(run[0].relu)]
    z = first.mean(dim=(2, 3)) @ direction.to(first)
    s = torch.nn.functional.softplus(2.0 * (z - z.mean()) / z.std().clamp_min(1e-12))
    scales = {}
    for key, output in seen.items():
        flat = output.flatten(1)
        own = float(((flat - flat.mean(0)) ** 2).sum())  # total variance over examples, all features
        added = float(((s - s.mean()) ** 2).sum()) * flat.shape[1]  # the same of s(x) added to every feature
        scales[key] = (share / (1 - share) * own / added) ** 0.5
    return scales


def planted_control(model: nn.Module, inputs: Any, blocks: Sequence[str], *, share: float = 0.8,
                    layers: Any = "blocks", definitions: Mapping[str, BlockDetector] | None = None,
                    batch_size: int = 256, device: Any = None, seed: int = 0) -> ControlResult:
    """Map `model` as it is and with a dominant direction planted through `blocks` (`plant_block`), and
    check each definition against the planted run: the outputs of the named blocks."""
    x = inputs if isinstance(inputs, torch.Tensor) else torch.as_tensor(inputs)
    planted = plant_block(model, blocks, share, calibration=x[: min(len(x), 512)], seed=seed)
    before = heatmap(model, x, layers=layers, batch_size=batch_size, shuffle=False, device=device)
    after = heatmap(planted, x, layers=layers, batch_size=batch_size, shuffle=False, device=device)
    rows = _consecutive_rows(after.layers_a, [f"{name}.relu" for name in blocks], "planted blocks")
    return compare_with_known(before, after, (rows[0], rows[-1]), list(blocks), definitions)


def _consecutive_rows(names: list[str], outputs: list[str], what: str) -> list[int]:
    missing = [o for o in outputs if o not in names]
    if missing:
        raise UserInputError(f"the heatmap's layers leave out the {what}' outputs {missing}; "
                             "map the block outputs (layers='blocks') or name them")
    rows = sorted(names.index(o) for o in outputs)
    if rows != list(range(rows[0], rows[0] + len(rows))):
        raise UserInputError(f"the {what} {[o.removesuffix('.relu') for o in outputs]} are not consecutive in the "
                             "heatmap's layers")
    return rows


def compare_with_known(before: CKAResult, after: CKAResult, true: tuple[int, int], changed: list[str],
                       definitions: Mapping[str, BlockDetector] | None = None) -> ControlResult:
    """Each definition's blocks in the heatmaps `before` and `after` a change that made a block at rows `true`
    (first, last, inclusive), judged against it (`DefinitionOutcome`)."""
    definitions = DEFINITIONS if definitions is None else definitions
    names = after.layers_a
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
    return ControlResult([names[i] for i in range(true[0], true[1] + 1)], changed, before, after, outcomes,
                         in_before, in_after, out_before, out_after, results)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _means(matrix: np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """Mean off-diagonal CKA among the `inside` layers, and over every pair not both inside."""
    off = ~np.eye(len(matrix), dtype=bool)
    both = inside[:, None] & inside[None, :]
    return float(np.nanmean(matrix[both & off])), float(np.nanmean(matrix[~both & off]))


__all__ = ["DEFINITIONS", "ControlResult", "DefinitionOutcome", "compare_with_known", "plant_block", "planted_control",
           "silence_blocks", "silenced_control"]
