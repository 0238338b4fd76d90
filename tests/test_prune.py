"""Block deletion: order, a naive manual deletion, a zeroed branch, the caller's model untouched."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ckatlas.analysis.blocks import find_blocks
from ckatlas.analysis.prune import PruneResult, deletion_order, mark_blocks, prune_blocks
from ckatlas.data import load_dataset
from ckatlas.errors import UserInputError
from ckatlas.models import create_model
from ckatlas.train import predict


@pytest.fixture(scope="module")
def digits() -> SimpleNamespace:
    data = load_dataset("digits")
    return SimpleNamespace(x_train=data.x_train[:300], y_train=data.y_train[:300], x_test=data.x_test[:200],
                           y_test=data.y_test[:200], augmentation=data.augmentation)


@pytest.fixture(scope="module")
def trained(digits: SimpleNamespace) -> nn.Module:
    """resnet20 at width 0.25 after 40 SGD steps: above chance, so deletions matter."""
    # BN momentum 0.1: the paper's 0.01 would leave the running statistics a third of the way after 40 steps
    model = create_model("resnet20", width=0.25, num_classes=10, in_channels=1, generator=torch.Generator().manual_seed(0),
                         bn_momentum=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        idx = torch.randint(0, len(digits.x_train), (32,), generator=gen)
        loss = F.cross_entropy(model(digits.x_train[idx]), digits.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _manual_accuracy(model: nn.Module, names: list[str], data: SimpleNamespace) -> float:
    pruned = copy.deepcopy(model)
    for name in names:
        setattr(pruned.get_submodule(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1], nn.Identity())
    with torch.no_grad():
        pruned.eval()
        return (pruned(data.x_test).argmax(1) == data.y_test).double().mean().item()


def test_deletion_order_is_from_the_end_of_each_stage() -> None:
    model = create_model("resnet20", width=0.25, num_classes=10, in_channels=1)
    assert deletion_order(model) == {
        1: ["stage1.2", "stage1.1", "stage1.0"],
        2: ["stage2.2", "stage2.1"],  # stage2.0 has a projection shortcut
        3: ["stage3.2", "stage3.1"],
    }


def test_accuracies_match_a_manual_deletion(trained: nn.Module, digits: SimpleNamespace) -> None:
    res = prune_blocks(trained, digits, batch_size=64)
    base = (predict(trained, digits.x_test).argmax(1) == digits.y_test).double().mean().item()
    assert res.unpruned_accuracy == pytest.approx(base) and base > 0.2
    assert [(s.stage, s.num_removed) for s in res.steps] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1), (3, 2)]
    assert res.steps[2].removed == ("stage1.2", "stage1.1", "stage1.0") and res.steps[2].block == "stage1.0"
    assert res.steps[2].output_layer == "stage1.0.relu"
    for step in res.steps:
        assert step.accuracy == pytest.approx(_manual_accuracy(trained, list(step.removed), digits), abs=1e-12)
        assert step.delta == pytest.approx(step.accuracy - base)
        assert step.in_block is None
    assert any(s.delta != 0 for s in res.steps)
    removed, accuracy = res.curve(2)
    assert removed.tolist() == [0, 1, 2] and accuracy[0] == res.unpruned_accuracy


def test_deleting_a_zeroed_branch_changes_nothing(trained: nn.Module, digits: SimpleNamespace) -> None:
    model = copy.deepcopy(trained)
    bn = model.get_submodule("stage3.2.branch.bn2")
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()
    res = prune_blocks(model, digits, stages=[3])
    assert res.steps[0].block == "stage3.2" and res.steps[0].delta == 0.0
    assert res.steps[1].delta != 0.0  # deleting a live block does change it


def test_the_callers_model_is_untouched(trained: nn.Module, digits: SimpleNamespace) -> None:
    model = copy.deepcopy(trained).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prune_blocks(model, digits, stages=[3], finetune_epochs=1)
    assert model.training and all(m.training for m in model.modules())
    assert len(model.residual_blocks()) == 9
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_finetuning_is_seeded_and_changes_the_result(trained: nn.Module, digits: SimpleNamespace) -> None:
    plain = prune_blocks(trained, digits, stages=[2])
    tuned = prune_blocks(trained, digits, stages=[2], finetune_epochs=1, seed=1)
    again = prune_blocks(trained, digits, stages=[2], finetune_epochs=1, seed=1)
    assert [s.accuracy for s in tuned.steps] == [s.accuracy for s in again.steps]
    assert [s.accuracy for s in tuned.steps] != [s.accuracy for s in plain.steps]
    assert tuned.finetune_epochs == 1 and tuned.unpruned_accuracy == plain.unpruned_accuracy


def test_steps_inside_a_detected_block_are_marked(trained: nn.Module, digits: SimpleNamespace) -> None:
    names = trained.layer_names("blocks")  # stem.relu, 9 block outputs, pool, fc
    matrix = np.full((len(names), len(names)), 0.3)
    late = [names.index(n) for n in ("stage3.0.relu", "stage3.1.relu", "stage3.2.relu", "pool")]
    matrix[np.ix_(late, late)] = 0.95
    np.fill_diagonal(matrix, 1.0)
    blocks = find_blocks(matrix, layer_names=names)
    res = prune_blocks(trained, digits, stages=[1, 3], block_result=blocks)
    assert [(s.block, s.in_block) for s in res.steps] == [
        ("stage1.2", False), ("stage1.1", False), ("stage1.0", False), ("stage3.2", True), ("stage3.1", True),
    ]
    assert "inside a block" in res.summary()
    with pytest.raises(UserInputError, match="does not cover layer"):
        mark_blocks(res, find_blocks(matrix[:5, :5], layer_names=names[:5]))
    with pytest.raises(UserInputError, match="no layer names"):
        mark_blocks(res, find_blocks(matrix))


def test_save_and_load_round_trip(trained: nn.Module, digits: SimpleNamespace, tmp_path) -> None:
    res = prune_blocks(trained, digits, stages=[3])
    back = PruneResult.load(res.save(tmp_path / "prune.json"))
    assert back == res


def test_bad_input_is_one_clear_error(digits: SimpleNamespace) -> None:
    with pytest.raises(UserInputError, match="no deletable residual block"):
        prune_blocks(create_model("cnn8", width=0.25, num_classes=10, in_channels=1), digits)
    with pytest.raises(UserInputError, match="residual_blocks"):
        prune_blocks(nn.Sequential(nn.Flatten(), nn.Linear(256, 10)), digits)
    model = create_model("resnet14", width=0.25, num_classes=10, in_channels=1)
    with pytest.raises(UserInputError, match="prunable stages are"):
        prune_blocks(model, digits, stages=[4])
    with pytest.raises(UserInputError, match="finetune_epochs"):
        prune_blocks(model, digits, finetune_epochs=-1)
    with pytest.raises(UserInputError, match="x_test"):
        prune_blocks(model, (digits.x_test, digits.y_test))


def test_figure_draws_a_curve_per_stage_and_rings_block_deletions() -> None:
    from ckatlas.analysis.prune import PruneStep
    from ckatlas.report.analysis_figures import plot_pruning

    steps = [PruneStep(1, 1, "stage1.1", ("stage1.1",), "stage1.1.relu", 0.8, -0.1, False),
             PruneStep(3, 1, "stage3.2", ("stage3.2",), "stage3.2.relu", 0.89, -0.01, True),
             PruneStep(3, 2, "stage3.1", ("stage3.2", "stage3.1"), "stage3.1.relu", 0.88, -0.02, True)]
    ax = plot_pruning(PruneResult(0.9, steps, 0, 100))
    lines = {line.get_label(): line for line in ax.lines}
    assert lines["stage 1"].get_ydata().tolist() == [0.9, 0.8]
    assert lines["stage 3"].get_xdata().tolist() == [0, 1, 2]
    assert lines["inside a block"].get_xdata().tolist() == [1, 2]


# -- command line -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    from ckatlas.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "r14"
    train(TrainConfig(arch="resnet14", width=0.25, dataset="digits", epochs=1, fraction=0.05, batch_size=32), out, quiet=True)
    return str(out)


def test_cli_writes_the_result_and_figure(run_dir, tmp_path, capsys) -> None:
    from ckatlas.cli import main
    from ckatlas.train import load_run

    names = load_run(run_dir).model.layer_names("blocks")
    matrix = np.full((len(names), len(names)), 0.2)
    matrix[-4:, -4:] = 0.95  # stage3.0.relu, stage3.1.relu, pool, fc
    np.fill_diagonal(matrix, 1.0)
    find_blocks(matrix, layer_names=names).save(tmp_path / "blocks.json")
    out = tmp_path / "prune"
    code = main(["prune", run_dir, "--out", str(out), "--device", "cpu", "--blocks", str(tmp_path / "blocks.json")])
    assert code == 0
    assert "unpruned test accuracy" in capsys.readouterr().out
    res = PruneResult.load(out / "prune.json")
    assert [(s.block, s.in_block) for s in res.steps] == [
        ("stage1.1", False), ("stage1.0", False), ("stage2.1", False), ("stage3.1", True),
    ]
    assert (out / "prune.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--stages", "5"], "prunable stages are"), (["--blocks", "missing.json"], "no such file"),
     (["--finetune-epochs", "-2"], "finetune_epochs")],
)
def test_cli_user_errors_are_one_line(run_dir, tmp_path, capsys, extra, message) -> None:
    from ckatlas.cli import main

    assert main(["prune", run_dir, "--out", str(tmp_path / "o"), "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("ckatlas prune: error:")
    assert not (tmp_path / "o").exists()
