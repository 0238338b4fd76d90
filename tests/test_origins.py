"""Where a block comes from (`ckatlas.analysis.origins`): a block planted by a few examples with huge
activations is traced to exactly those examples, and falls without them or with normalised activations;
a block that every example carries does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ckatlas.analysis import find_blocks
from ckatlas.analysis.origins import BlockOrigins, block_origins
from ckatlas.errors import UserInputError
from ckatlas.heatmap import heatmap

DOMINANT = [3, 40, 77, 150, 201]  # examples whose first feature marks them


class View(nn.Module):
    """A layer's output: the chain's state, plus (inside the block) a spike along one direction."""

    def __init__(self, width: int, spike: float, generator: torch.Generator) -> None:
        super().__init__()
        self.spike = spike
        self.register_buffer("direction", torch.randn(width, generator=generator))

    def forward(self, h: torch.Tensor, marked: torch.Tensor) -> torch.Tensor:
        return h + self.spike * marked[:, None] * self.direction


class Toy(nn.Module):
    """12 layers of a drifting random chain; layers 4..8 add a large spike for the marked examples only
    (`shared`: for every example, scaled by its own random amount, instead)."""

    def __init__(self, shared: bool = False, width: int = 24) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.shared = shared
        self.chain = nn.ModuleList(nn.Linear(width, width) for _ in range(12))
        for layer in self.chain:
            with torch.no_grad():
                layer.weight.copy_(torch.randn(width, width, generator=g) / width**0.5)
        self.views = nn.ModuleList(View(width, 8.0 if 4 <= i <= 8 else 0.0, g) for i in range(12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marked = (x[:, 0] > 10).double() if not self.shared else x[:, 1]
        h, out = x, []
        for chain, view in zip(self.chain, self.views):
            h = torch.tanh(chain(h))
            out.append(view(h, marked.to(h.dtype)))
        return out[-1]


def _inputs(shared: bool = False) -> torch.Tensor:
    x = torch.randn(256, 24, generator=torch.Generator().manual_seed(1))
    if shared:
        x[:, 1] = 2.0 * torch.rand(256, generator=torch.Generator().manual_seed(2))  # every example spikes a little
    else:
        x[DOMINANT, 0] = 20.0
    return x


LAYERS = [f"views.{i}" for i in range(12)]


def test_a_block_carried_by_a_few_examples_is_traced_to_them_and_falls_without_them(tmp_path):
    model, x = Toy(), _inputs()
    blocks = find_blocks(heatmap(model, x, layers=LAYERS, batch_size=64, shuffle=False))
    spans = [(b.start, b.end) for b in blocks.blocks]
    assert (4, 8) in spans
    b = spans.index((4, 8))
    result = block_origins(model, x, blocks, layers=LAYERS, batch_size=64, remove=0.02, show=3)
    assert result.blocks[b] == [4, 8]
    assert sorted(result.dominant[b, :5].tolist()) == DOMINANT  # k = ceil(0.02 * 256) = 6: the five first
    np.testing.assert_allclose(result.cka, heatmap(model, x, layers=LAYERS, batch_size=64, shuffle=False).matrix,
                               atol=1e-6)
    scores = result.scores()
    assert scores["cka"][b] > 0.8
    assert scores["cka_without"][b] < 0.3 < scores["cka_random"][b]  # not any six examples: these
    assert scores["cka_normalised"][b] < 0.3
    assert result.dominant_share()[b] > 0.9 and result.images.shape == (len(spans), 3, 24)
    assert "without them" in result.summary()
    result.save(tmp_path / "origins.npz")
    back = BlockOrigins.load(tmp_path / "origins.npz")
    assert back.blocks == result.blocks and np.array_equal(back.dominant, result.dominant)
    np.testing.assert_array_equal(back.cka_without, result.cka_without)


def test_a_block_every_example_carries_does_not_fall_without_a_few():
    model, x = Toy(shared=True), _inputs(shared=True)
    blocks = find_blocks(heatmap(model, x, layers=LAYERS, batch_size=64, shuffle=False))
    assert blocks.blocks
    scores = block_origins(model, x, blocks, layers=LAYERS, batch_size=64).scores()
    assert abs(scores["cka_without"][0] - scores["cka"][0]) < 0.1
    assert abs(scores["cka_without"][0] - scores["cka_random"][0]) < 0.1


def test_no_block_and_bad_input():
    model, x = Toy(), torch.randn(64, 24)
    blocks = find_blocks(heatmap(model, x, layers=LAYERS, batch_size=32, shuffle=False), min_score=1.0)
    result = block_origins(model, x, blocks, layers=LAYERS, batch_size=32)
    assert result.blocks == [] and len(result.removed) == 0 and result.summary() == "no block: nothing to trace"
    with pytest.raises(UserInputError, match="remove"):
        block_origins(model, x, blocks, layers=LAYERS, remove=0.6)
    with pytest.raises(UserInputError, match="one Tensor"):
        block_origins(model, [x], blocks, layers=LAYERS)
