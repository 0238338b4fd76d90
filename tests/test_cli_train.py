"""`ckatlas train`, run in-process: a tiny run, resuming, and one-line user errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ckatlas.cli import main

TINY = ["--arch", "resnet8", "--width", "0.25", "--fraction", "1/4", "--epochs", "2", "--batch-size", "32"]


def exit_code(argv: list[str]) -> int:
    """main's return value, or the code argparse exits with for a bad option value."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_writes_a_run_and_resume_reuses_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: test accuracy" in printed and "after 2 epochs" in printed
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["fraction"] == 0.25 and config["seed"] == 3 and config["arch"] == "resnet8"
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and metrics["final"]["test_accuracy"] > 0
    model_bytes = (out / "model.safetensors").read_bytes()

    assert main(["train", *TINY, "--seed", "3", "--out", str(out), "--resume", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert (out / "model.safetensors").read_bytes() == model_bytes

    assert main(["train", *TINY, "--seed", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds this run (finished); pass --resume" in err and len(err.splitlines()) == 1

    assert main(["train", *TINY, "--seed", "4", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a different run (seed: 3 there, 4 now)" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "resnet7"], "depth must be 6n+2"),
        (["--arch", "vgg16"], "unknown model 'vgg16'"),
        (["--fraction", "0"], "argument --fraction: expected a fraction with 0 < f <= 1"),
        (["--fraction", "a/4"], "argument --fraction: expected a fraction such as 0.25 or 1/4"),
        (["--width", "-1"], "argument --width: expected a positive number"),
        (["--width", "0"], "argument --width: expected a positive number"),
        (["--dataset", "cifar10"], "the cifar10 dataset needs a data directory"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "/nonexistent/cifar does not exist"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--momentum", "1.5"], "momentum must be in [0, 1)"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    out = tmp_path / "run"
    assert exit_code(["train", "--out", str(out), "--quiet", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("ckatlas train")
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_help_ends_with_worked_examples(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "ckatlas train --arch resnet20 --width 2 --dataset digits --epochs 30 --seed 0 --out runs/r20w2" in text
    assert "--data-dir ~/data/cifar-10-batches-py" in text and "--fraction 0.25" in text


def test_an_interrupted_train_says_how_to_finish_it(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) during training: one line that gives the command that finishes the
    run, and that command does."""
    import os
    import shlex
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    argv = ["train", "--arch", "resnet8", "--width", "0.25", "--fraction", "1/4", "--epochs", "40",
            "--batch-size", "32", "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as the other tests here (oneDNN with two)
    child = subprocess.Popen([sys.executable, "-m", "ckatlas.cli", *argv], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "state").is_dir() or not any((out / "state").iterdir()):  # an epoch checkpointed
            assert child.poll() is None and time.monotonic() < deadline, "training made no progress"
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        err = child.communicate(timeout=60)[1]
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert err.count("\n") == 1 and err.startswith("ckatlas train: interrupted; to finish it, run: ckatlas train ")
    hinted = shlex.split(err.split("run: ", 1)[1])
    assert hinted[0] == "ckatlas" and hinted[1:] == [*argv, "--resume"]
    assert not (out / "metrics.json").exists() or json.loads((out / "metrics.json").read_text())["final"] is None
    assert main(hinted[1:]) == 0
    assert json.loads((out / "metrics.json").read_text())["final"]["epochs"] == 40
