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


def test_a_transformer_experiment_chooses_how_tokens_become_an_example(tmp_path) -> None:
    """[cka] tokens reaches the heatmaps, PCA and dynamics of an experiment, as `tokens=` does in the API."""
    from ckatlas.analysis.dynamics import BlockDynamics
    from ckatlas.analysis.pca import PCAResult, principal_components
    from ckatlas.experiment import run_experiment
    from ckatlas.experiment.steps import test_inputs
    from ckatlas.heatmap import CKAResult
    from ckatlas.train import load_run

    table = {"name": "t", "dataset": {"name": "digits"}, "train": {"epochs": 1, "optimizer": "adamw", "lr": 1e-3},
             "grid": [{"family": "vit", "depths": [2], "widths": [0.5]}],
             "cka": {"layers": "blocks", "num_examples": 64, "batch_size": 32, "tokens": "mean"},
             "analyses": {"pca": {}, "dynamics": {"examples": 32, "epochs": [0, 1]}}}
    config = config_from_dict(table)
    run_experiment(config, tmp_path / "exp", quiet=True, threads=1)
    root, name = tmp_path / "exp", config.runs[0].name
    model, x = load_run(root / "runs" / name).model, test_inputs(config)
    saved = CKAResult.load(root / "cka" / f"{name}.npz")
    mean = heatmap(model, x, layers="blocks", batch_size=32, seed=0, tokens="mean")
    flat = heatmap(model, x, layers="blocks", batch_size=32, seed=0, tokens="flatten")
    assert saved.metadata["tokens"] == "mean"
    torch.testing.assert_close(torch.tensor(saved.matrix), torch.tensor(mean.matrix), rtol=0, atol=1e-10)
    assert abs(saved.matrix - flat.matrix).max() > 1e-3  # the choice matters: it is not the default's answer
    pca = PCAResult.load(root / "analysis" / "pca" / f"{name}.npz")
    again = principal_components(model, x, layers="blocks", batch_size=32, seed=0, tokens="mean")
    torch.testing.assert_close(torch.tensor(pca.variance_explained), torch.tensor(again.variance_explained),
                               rtol=0, atol=1e-10)
    record = BlockDynamics.load(root / "runs" / name / "dynamics.npz")
    last = heatmap(model, x[:32], layers="blocks", batch_size=32, shuffle=False, tokens="mean")
    assert record.epochs.tolist() == [0, 1]
    torch.testing.assert_close(torch.tensor(record.cka[1]), torch.tensor(last.matrix), rtol=0, atol=1e-6)
    with pytest.raises(UserInputError, match="tokens in \\[cka\\] must be one of auto, flatten, mean"):
        config_from_dict({**table, "cka": {"tokens": "average"}})
