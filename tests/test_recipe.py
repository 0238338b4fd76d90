"""The paper's training recipe, selectable as a whole, and each of its pieces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ckatlas.cli import main
from ckatlas.data import load_dataset, random_crop_flip
from ckatlas.errors import UserInputError
from ckatlas.experiment import config_from_dict
from ckatlas.experiment.executors import torch_threads
from ckatlas.models import create_model
from ckatlas.train import RECIPES, TrainConfig, learning_rate, load_run, parameter_groups, predict, train

TINY = dict(arch="resnet8", width=0.25, dataset="digits", fraction=0.25, batch_size=32, seed=1, eval_every=0)


def test_the_paper_recipe_is_the_official_codes_settings() -> None:
    paper = TrainConfig.from_recipe("paper", arch="resnet20")
    # cifar_train.py: SGD(0.01, momentum 0.9), batch 128, 300 epochs, CosineDecay per epoch, l2(1e-4) on kernels
    assert (paper.lr, paper.momentum, paper.batch_size, paper.epochs) == (0.01, 0.9, 128, 300)
    assert (paper.weight_decay, paper.decay_scope, paper.lr_schedule) == (2e-4, "kernels", "cosine-epoch")
    assert (paper.normalize, paper.pad_mode, paper.keep, paper.model_style, paper.bn_momentum) == (
        False, "reflect", "best-val", "paper", 0.01)
    assert TrainConfig.from_recipe("paper", epochs=12).epochs == 12  # explicit settings win
    assert TrainConfig.from_recipe("ckatlas") == TrainConfig() and RECIPES["ckatlas"] == {}
    with pytest.raises(UserInputError, match="unknown recipe 'keras'"):
        TrainConfig.from_recipe("keras")
    with pytest.raises(UserInputError, match="lr_schedule must be one of cosine-step, cosine-epoch"):
        TrainConfig(lr_schedule="step")


def test_per_epoch_cosine_holds_each_epoch_at_kerass_value() -> None:
    config = TrainConfig(lr=0.01, epochs=4, lr_schedule="cosine-epoch")
    lrs = [learning_rate(config, step, per_epoch=3) for step in range(12)]
    keras = [0.01 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]  # CosineDecay(0.01, 4)(epoch)
    assert lrs == [v for v in keras for _ in range(3)]
    per_step = TrainConfig(lr=0.01, epochs=4)
    assert learning_rate(per_step, 6, per_epoch=3) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 6 / 12)))


def test_kernel_decay_leaves_biases_and_norms_alone() -> None:
    model = create_model("resnet8", width=0.25, in_channels=1)  # the paper style: convs with biases
    groups = parameter_groups(model, TrainConfig(weight_decay=2e-4, decay_scope="kernels"))
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert names == {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                     for n in [f"{n}.weight"]}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    everything = parameter_groups(model, TrainConfig(weight_decay=5e-4))
    assert len(everything) == 1 and everything[0]["weight_decay"] == 5e-4


def test_reflect_padding_matches_a_loop() -> None:
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    gen = torch.Generator().manual_seed(3)
    out = random_crop_flip(x, 2, False, gen, pad_mode="reflect")
    gen = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 5, (2, 2), generator=gen)
    for i in range(2):
        padded = np.pad(x[i, 0].numpy(), 2, mode="reflect")
        r, c = offsets[i].tolist()
        np.testing.assert_array_equal(out[i, 0].numpy(), padded[r : r + 5, c : c + 5])


def test_unnormalised_pixels_stay_in_zero_one() -> None:
    data = load_dataset("digits", normalize=False, pad_mode="reflect")
    assert float(data.x_train.min()) >= 0 and float(data.x_train.max()) <= 1 and data.mean == (0.0,)
    assert data.augmentation.pad_mode == "zeros" or not data.augmentation.pad  # digits: no augmentation


def test_best_validation_epoch_is_kept_and_never_trained_on(tmp_path: Path) -> None:
    config = TrainConfig(**TINY, epochs=4, keep="best-val", val_fraction=0.25, lr=0.05)
    with torch_threads(1):  # oneDNN with 2 threads corrupts the heap training narrow nets (ckatlas.runtime.cpu)
        result = train(config, tmp_path / "run", quiet=True, device="cpu")
    metrics = result.metrics
    vals = [e["val_accuracy"] for e in metrics["epochs"]]
    best = max(range(4), key=lambda i: (vals[i], i)) + 1
    assert metrics["final"]["kept_epoch"] == best and metrics["final"]["val_accuracy"] == vals[best - 1]
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    full = config.load_data()
    assert info["data"]["num_train"] + info["data"]["num_val"] == len(full.y_train)
    run = load_run(tmp_path / "run")
    accuracy = (predict(run.model, full.x_test).argmax(1) == full.y_test).double().mean().item()
    assert accuracy == pytest.approx(metrics["final"]["test_accuracy"])


def test_a_run_from_before_the_options_loads_as_it_was_trained(tmp_path: Path) -> None:
    config = TrainConfig(**TINY, epochs=1, model_style="torchvision")
    with torch_threads(1):
        train(config, tmp_path / "old", quiet=True, device="cpu")
    path = tmp_path / "old" / "config.json"
    info = json.loads(path.read_text())
    for key in ("model_style", "lr_schedule", "decay_scope", "normalize", "pad_mode", "keep", "val_fraction",
                "bn_momentum"):
        del info["config"][key]  # config.json as the code before these options wrote it
    path.write_text(json.dumps(info))
    run = load_run(tmp_path / "old")
    assert "stage2.0.shortcut.bn.weight" in run.model.state_dict()
    assert run.config.model_style == "torchvision"
    train(config, tmp_path / "old", resume=True, quiet=True)  # the same run: resumable, not "different"


def test_experiment_train_table_takes_a_recipe() -> None:
    table = {"name": "r", "grid": {"depths": [8]}, "train": {"recipe": "paper", "epochs": 3}}
    config = config_from_dict(table)
    run = config.train_config(config.runs[0])
    assert (run.lr, run.epochs, run.keep, run.pad_mode) == (0.01, 3, "best-val", "reflect")
    with pytest.raises(UserInputError, match="unknown recipe 'fast'"):
        config_from_dict({**table, "train": {"recipe": "fast"}})


def test_cli_train_with_the_paper_recipe(tmp_path: Path) -> None:
    out = tmp_path / "r8"
    argv = ["train", "--arch", "resnet8", "--width", "0.25", "--fraction", "1/4", "--recipe", "paper", "--epochs", "1",
            "--batch-size", "64", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["lr"], config["epochs"], config["batch_size"], config["keep"]) == (0.01, 1, 64, "best-val")
    assert config["decay_scope"] == "kernels" and config["normalize"] is False


def test_the_paper_imagenet_recipe_zero_inits_each_blocks_last_norm(tmp_path: Path) -> None:
    config = TrainConfig.from_recipe("paper-imagenet", arch="bottleneck_tiny", dataset="digits", epochs=1)
    assert (config.lr, config.epochs, config.batch_size, config.weight_decay) == (0.1, 1, 256, 1e-4)
    from ckatlas.train import build_model  # the model a run starts from

    model = build_model(config, 10, 1)
    for ref in model.residual_blocks():
        last = [m for m in ref.block.branch if isinstance(m, nn.BatchNorm2d)][-1]
        assert torch.count_nonzero(last.weight) == 0
    assert all(m.momentum == 0.01 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
