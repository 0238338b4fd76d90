"""The vision transformer family (`vit<depth>`): its layers, its widths, training, and its grids."""

from __future__ import annotations

import pytest
import torch

from ckatlas import heatmap
from ckatlas.errors import UserInputError
from ckatlas.experiment import config_from_dict, plan
from ckatlas.models import create_model
from ckatlas.models.vit import VisionTransformer, token_dim
from ckatlas.train import TrainConfig, train


def test_depth_is_blocks_and_width_scales_the_tokens() -> None:
    for width, dim in ((0.5, 32), (1, 64), (2, 128), (0.1, 16)):
        assert token_dim(width) == dim
    model = create_model("vit3", width=2, num_classes=5, in_channels=1)
    assert isinstance(model, VisionTransformer) and len(model.blocks) == 3 and model.dim == 128
    assert model.blocks[0].attn.heads == 8
    assert model.layer_names("blocks") == ["embed.tokens", "blocks.0.add2", "blocks.1.add2", "blocks.2.add2",
                                           "pool", "fc"]
    assert len(model.layer_names("all")) == 2 + 9 * 3 + 3
    with pytest.raises(UserInputError, match="number of blocks"):
        create_model("vit0")


def test_one_seed_gives_the_same_weights_and_token_layers_enter_a_heatmap() -> None:
    a = create_model("vit2", width=0.5, in_channels=1, generator=torch.Generator().manual_seed(4))
    b = create_model("vit2", width=0.5, in_channels=1, generator=torch.Generator().manual_seed(4))
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    x = torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    result = heatmap(a, x, layers="all", batch_size=8)
    assert result.matrix.shape == (len(a.layer_names("all")),) * 2
    assert result.metadata["tokens"] == "flatten"  # (n, 16 tokens, 32) outputs, each example one flat vector


def test_too_many_patches_is_one_clear_error() -> None:
    model = create_model("vit1", width=0.5, in_channels=1)
    with pytest.raises(UserInputError, match="patches exceed the 256 positions"):
        model(torch.zeros(1, 1, 68, 68))


def test_a_small_vit_learns_digits_with_adamw(tmp_path) -> None:
    config = TrainConfig(arch="vit2", width=0.5, dataset="digits", resize=16, epochs=4, batch_size=64,
                         optimizer="adamw", lr=3e-3, weight_decay=0.05, eval_every=0)
    run = train(config, tmp_path / "vit", quiet=True)
    assert run.metrics["final"]["test_accuracy"] > 0.5  # chance is 0.1


def test_an_experiment_grid_of_vision_transformers() -> None:
    base = {"name": "v", "dataset": {"name": "digits"}, "train": {"epochs": 1},
            "grid": [{"family": "vit", "depths": [2, 4], "widths": [0.5, 1]},
                     {"depths": [8], "widths": [1]}],
            "analyses": {"prune": True}}
    config = config_from_dict(base)
    names = [r.name for r in config.runs]
    assert names == ["resnet8-w1-s0", "vit2-w0.5-s0", "vit2-w1-s0", "vit4-w0.5-s0", "vit4-w1-s0"]
    assert config.train_config(config.runs[1]).arch == "vit2"
    pruned = [s.runs[0].name for s in plan(config) if s.kind == "prune"]
    assert pruned == ["resnet8-w1-s0"]  # deleting residual blocks is for the ResNets
    bad = {**base, "grid": [{"family": "vit", "depths": [2], "residual": [False]}]}
    with pytest.raises(UserInputError, match="residual = \\[false\\].*vision transformer"):
        config_from_dict(bad)
    with pytest.raises(UserInputError, match="family in \\[grid\\] must be one of 'resnet', 'vit'"):
        config_from_dict({**base, "grid": [{"family": "mlp", "depths": [2]}]})
