"""Training runs: the run directory, resuming after SIGKILL bit for bit, refusals."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ckatlas.data import load_dataset
from ckatlas.errors import UserInputError
from ckatlas.models import create_model
from ckatlas.io.rundir import STATE_FILE
from ckatlas.train import (
    TrainConfig,
    cosine_lr,
    load_run,
    predict,
    resolve_device,
    train,
)
from ckatlas.train.predict import resolve_precision

# Tiny: ResNet-8 at width 0.25 on a quarter of the digits at 16x16 (339 training images).
TINY = TrainConfig(arch="resnet8", width=0.25, dataset="digits", fraction=0.25, epochs=3, batch_size=32, seed=1)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model.safetensors")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny convolutions: a second OpenMP thread only adds waiting on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(TINY, run_dir, quiet=True)
    return run_dir


# -- config ------------------------------------------------------------------------------------


def test_config_defaults_resolve() -> None:
    config = TrainConfig().resolved()
    assert (config.epochs, config.resize, config.arch, config.dataset) == (15, 16, "resnet20", "digits")
    cifar = TrainConfig(dataset="cifar10", data_dir="~/data").resolved()
    assert cifar.epochs == 200 and cifar.resize is None and not cifar.data_dir.startswith("~")
    assert TrainConfig.from_dict(asdict(TINY)) == TINY


@pytest.mark.parametrize(
    "change, message",
    [
        ({"width": 0}, "width must be a number > 0"),
        ({"fraction": 1.5}, "0 < fraction <= 1"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1"),
        ({"lr": -0.1}, "lr must be a number > 0"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"label_smoothing": 1}, "label_smoothing must be"),
        ({"momentum": 0.0, "nesterov": True}, "nesterov momentum needs momentum > 0"),
        ({"augment": "yes"}, "augment must be true or false"),
        ({"arch": ""}, "arch must be a model name"),
    ],
)
def test_config_rejects_bad_values(change: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        TrainConfig(**change)


def test_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(UserInputError, match="unknown training setting.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_cosine_schedule() -> None:
    assert cosine_lr(0, 100, 0.1) == 0.1
    assert math.isclose(cosine_lr(50, 100, 0.1), 0.05)
    lrs = [cosine_lr(s, 10, 1.0) for s in range(10)]
    assert all(a > b > 0 for a, b in zip(lrs, lrs[1:]))


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(UserInputError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="sees no CUDA device"):
            resolve_device("cuda")


# -- the run directory ---------------------------------------------------------------------------


def test_run_directory_contents(finished_run: Path) -> None:
    assert sorted(p.name for p in finished_run.iterdir()) == [
        "config.json", "metrics.json", "model.safetensors", "predictions.npz", "state",
    ]
    info = json.loads((finished_run / "config.json").read_text())
    assert info["config"] == asdict(TINY.resolved())
    assert info["data"]["num_train"] == 339 and info["data"]["image_shape"] == [1, 16, 16]
    assert {"python", "torch", "ckatlas", "device"} <= info["environment"].keys()
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert all(0 <= e["train_accuracy"] <= 1 and e["train_loss"] > 0 for e in metrics["epochs"])
    # the loaded model reproduces the saved logits, which are in dataset order
    run = load_run(finished_run)
    data = load_dataset("digits", fraction=0.25, seed=0)
    with np.load(finished_run / "predictions.npz", allow_pickle=False) as saved:
        np.testing.assert_array_equal(saved["labels"], data.y_test.numpy())
        logits = predict(run.model, data.x_test, batch_size=32)
        np.testing.assert_array_equal(saved["logits"], logits.numpy())
        accuracy = float((saved["logits"].argmax(1) == saved["labels"]).mean())
    assert metrics["final"]["test_accuracy"] == pytest.approx(accuracy)
    assert metrics["epochs"][-1]["test_accuracy"] == pytest.approx(accuracy)
    assert run.config == TINY.resolved() and not run.model.training


def test_training_learns(finished_run: Path) -> None:
    # Three short epochs of the tiny model: the loss falls and test accuracy is well above chance (10%).
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["epochs"][-1]["train_loss"] < metrics["epochs"][0]["train_loss"]
    assert metrics["final"]["test_accuracy"] > 0.2


def test_predict_matches_forward_in_eval_mode() -> None:
    model = create_model("resnet8", width=0.25, num_classes=10, in_channels=1)
    x = torch.randn(10, 1, 16, 16)
    logits = predict(model, x, batch_size=3)
    with torch.no_grad():
        expected = torch.cat([model(x[i : i + 1]) for i in range(10)])
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert not model.training


# -- resuming -------------------------------------------------------------------------------------


def _state_epoch(run_dir: Path) -> int:
    path = run_dir / STATE_FILE
    try:
        data = path.read_bytes()
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        return json.loads(header["__metadata__"]["ckatlas.state"])["epoch"]
    except (FileNotFoundError, ValueError, KeyError):
        return 0


_CHILD = (
    "import json, sys, torch\n"
    "torch.set_num_threads(int(sys.argv[1]))\n"
    "from ckatlas.train import TrainConfig, train\n"
    "train(TrainConfig(**json.loads(sys.argv[2])), sys.argv[3], resume=sys.argv[4] == 'resume', quiet=True)\n"
)


def _train_and_kill(config: TrainConfig, run_dir: Path, kill_after_epoch: int, resume: bool = False) -> None:
    """Train in a subprocess and SIGKILL it once `kill_after_epoch` epochs are checkpointed."""
    args = [sys.executable, "-c", _CHILD, str(torch.get_num_threads()), json.dumps(asdict(config)), str(run_dir),
            "resume" if resume else "fresh"]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _state_epoch(run_dir) < kill_after_epoch:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the training subprocess made no progress"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL


RESUME = TrainConfig(arch="resnet8", width=0.25, fraction=0.25, epochs=12, batch_size=32, seed=2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "whole"
    train(RESUME, run_dir, quiet=True)
    return run_dir


def _check_resumed_equals(run_dir: Path, reference: Path, config: TrainConfig = RESUME) -> None:
    metrics_file = run_dir / "metrics.json"  # a kill right after the first checkpoint leaves none
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {"final": None}
    assert metrics["final"] is None, "the run finished before it was killed: nothing was resumed"
    result = train(config, run_dir, resume=True, quiet=True)
    assert_same_weights(weights(run_dir), weights(reference))
    with np.load(run_dir / "predictions.npz") as a, np.load(reference / "predictions.npz") as b:
        np.testing.assert_array_equal(a["logits"], b["logits"])
    ref_metrics = json.loads((reference / "metrics.json").read_text())
    timing = ("seconds", "images_per_second")
    strip = lambda epochs: [{k: v for k, v in e.items() if k not in timing} for e in epochs]  # noqa: E731
    assert strip(result.metrics["epochs"]) == strip(ref_metrics["epochs"])
    assert not [p for p in run_dir.rglob(".*.tmp")]


def test_sigkill_then_resume_is_bit_exact(tmp_path: Path, uninterrupted: Path) -> None:
    run_dir = tmp_path / "killed"
    _train_and_kill(RESUME, run_dir, kill_after_epoch=1)
    assert 1 <= _state_epoch(run_dir) < RESUME.epochs
    _check_resumed_equals(run_dir, uninterrupted)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_sigkill_then_resume_is_bit_exact_in_each_precision(tmp_path: Path, precision: str) -> None:
    config = replace(RESUME, epochs=4, precision=precision)
    reference = tmp_path / "whole"
    train(config, reference, quiet=True)
    assert json.loads((reference / "config.json").read_text())["environment"]["precision"] == precision
    run_dir = tmp_path / "killed"
    _train_and_kill(config, run_dir, kill_after_epoch=1)
    _check_resumed_equals(run_dir, reference, config)


def test_the_two_precisions_train_differently_and_auto_follows_the_device(tmp_path: Path) -> None:
    config = replace(RESUME, epochs=1)
    for precision in ("float32", "bfloat16"):
        train(replace(config, precision=precision), tmp_path / precision, quiet=True)
    assert not torch.equal(weights(tmp_path / "float32")["fc.weight"], weights(tmp_path / "bfloat16")["fc.weight"])
    train(config, tmp_path / "auto", quiet=True)  # precision "auto"
    recorded = json.loads((tmp_path / "auto" / "config.json").read_text())["environment"]["precision"]
    assert recorded == resolve_precision("auto", torch.device("cpu"))
    assert_same_weights(weights(tmp_path / "auto"), weights(tmp_path / recorded))


def test_a_run_from_before_the_precision_setting_resumes_in_float32(tmp_path: Path) -> None:
    # Runs written before `precision` existed trained in float32 on the CPU; "auto" may now mean bfloat16
    # here, but such a run must finish in the arithmetic it began in.
    config = replace(RESUME, epochs=4)
    reference = tmp_path / "whole"
    train(replace(config, precision="float32"), reference, quiet=True)
    run_dir = tmp_path / "old"
    _train_and_kill(replace(config, precision="float32"), run_dir, kill_after_epoch=1)
    info = json.loads((run_dir / "config.json").read_text())
    del info["config"]["precision"], info["environment"]["precision"]  # as an earlier release wrote it
    del info["format"], info["version"]
    info["environment"]["amp"] = None
    (run_dir / "config.json").write_text(json.dumps(info))
    _check_resumed_equals(run_dir, reference, config)  # config: precision "auto"


@pytest.mark.slow
def test_sigkill_twice_then_resume_is_bit_exact(tmp_path: Path, uninterrupted: Path) -> None:
    run_dir = tmp_path / "killed"
    _train_and_kill(RESUME, run_dir, kill_after_epoch=2)
    _train_and_kill(RESUME, run_dir, kill_after_epoch=_state_epoch(run_dir) + 3, resume=True)  # killed again
    _check_resumed_equals(run_dir, uninterrupted)


def test_resume_ignores_stray_temporary_files(tmp_path: Path, finished_run: Path) -> None:
    run_dir = tmp_path / "strays"
    train(TINY, run_dir, quiet=True)
    # Make it an unfinished run, with what kills during atomic writes leave behind: hidden
    # .tmp files (a half-written model, a half-written checkpoint), never a final name.
    (run_dir / "model.safetensors").unlink()
    (run_dir / "predictions.npz").unlink()
    (run_dir / ".model.safetensors.x1y2.tmp").write_bytes(b"half a file")
    (run_dir / "state" / ".checkpoint.safetensors.abcd.tmp").write_bytes(b"\x00" * 10)
    with pytest.raises(UserInputError, match="holds an unfinished ckatlas run.*--resume"):
        load_run(run_dir)
    train(TINY, run_dir, resume=True, quiet=True)
    assert_same_weights(weights(run_dir), weights(finished_run))
    assert not list(run_dir.rglob("*.tmp"))


def test_a_folder_with_only_stray_files_counts_as_empty(tmp_path: Path, finished_run: Path) -> None:
    (tmp_path / ".config.json.k3j2.tmp").write_text("{")  # killed while writing the first file
    train(TINY, tmp_path, quiet=True)
    assert_same_weights(weights(tmp_path), weights(finished_run))


def test_finished_run_is_detected_and_resume_is_a_no_op(finished_run: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}
    result = train(TINY, finished_run, resume=True, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()} == before
    assert result.test_accuracy == json.loads((finished_run / "metrics.json").read_text())["final"]["test_accuracy"]


def test_unfinished_outputs_are_completed_from_the_checkpoint(tmp_path: Path, finished_run: Path) -> None:
    # Killed after the last checkpoint but before the final files: the checkpoint finishes it.
    run_dir = tmp_path / "late"
    train(TINY, run_dir, quiet=True)
    (run_dir / "model.safetensors").unlink()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "final": None}))
    train(TINY, run_dir, resume=True, quiet=True)
    assert_same_weights(weights(run_dir), weights(finished_run))
    assert load_run(run_dir).metrics["final"] is not None


# -- refusals -------------------------------------------------------------------------------------


def test_refuses_a_different_run(finished_run: Path) -> None:
    for resume in (False, True):
        with pytest.raises(UserInputError, match=r"holds a different run \(epochs: 3 there, 4 now\)"):
            train(TrainConfig(**{**asdict(TINY), "epochs": 4}), finished_run, resume=resume, quiet=True)
    with pytest.raises(UserInputError, match="already holds this run \\(finished\\); pass --resume"):
        train(TINY, finished_run, quiet=True)


def test_refuses_folders_that_hold_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not empty and holds no ckatlas run"):
        train(TINY, tmp_path, quiet=True)
    with pytest.raises(UserInputError, match="is a file"):
        train(TINY, tmp_path / "notes.txt", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_user_errors_write_nothing(tmp_path: Path) -> None:
    for config, message in (
        (TrainConfig(arch="resnet7"), "depth must be 6n\\+2"),
        (TrainConfig(dataset="cifar10", data_dir=str(tmp_path / "none")), "does not exist"),
    ):
        with pytest.raises(UserInputError, match=message):
            train(config, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_an_unreadable_checkpoint_is_an_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "bad"
    train(TINY, run_dir, quiet=True)
    (run_dir / "model.safetensors").unlink()
    (run_dir / STATE_FILE).write_bytes(b"garbage that is not safetensors")
    with pytest.raises(UserInputError, match="unreadable checkpoint.*delete the state/ folder"):
        train(TINY, run_dir, resume=True, quiet=True)


def test_load_run_refuses_unfinished_runs(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="holds no ckatlas run \\(no config.json\\)"):
        load_run(tmp_path)
