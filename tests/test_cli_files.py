"""The CLI's promise for files: a bad input file or an output that cannot be written is one line,
exit code 2, before any long work, and nothing is half-written."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ckatlas import heatmap
from ckatlas.cli import build_parser, main


def _error(capsys, argv: list[str], command: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ckatlas {command}: error: "), err
    return err


@pytest.fixture
def cka_file(tmp_path) -> Path:
    mlp = nn.Sequential(*[nn.Linear(16, 16) for _ in range(6)])
    return heatmap(mlp, torch.randn(64, 16), layers="all", batch_size=32).save(tmp_path / "cka.npz")


def test_a_truncated_npz_is_one_line(cka_file, tmp_path, capsys) -> None:
    cut = tmp_path / "t.npz"
    cut.write_bytes(cka_file.read_bytes()[:300])
    err = _error(capsys, ["blocks", str(cut)], "blocks")
    assert "t.npz" in err and "not a readable .npz" in err


def test_a_text_file_named_npz_or_npy_says_what_it_is(tmp_path, capsys) -> None:
    for name in ("notes.npz", "notes.npy"):
        (tmp_path / name).write_text("layer,cka\n0,1.0\n")
        err = _error(capsys, ["blocks", str(tmp_path / name)], "blocks")
        assert "pickle" not in err and f"not an {Path(name).suffix} file" in err


def test_an_all_nan_matrix_is_an_error_and_dead_layers_a_warning(tmp_path, capsys) -> None:
    np.save(tmp_path / "nan.npy", np.full((6, 6), np.nan))
    err = _error(capsys, ["blocks", str(tmp_path / "nan.npy")], "blocks")
    assert "no finite value" in err
    partly = np.ones((6, 6))
    partly[2, :] = partly[:, 2] = np.nan
    np.save(tmp_path / "dead.npy", partly)
    assert main(["blocks", str(tmp_path / "dead.npy"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ckatlas blocks: warning: 1 of 6 layers have no finite CKA")


@contextlib.contextmanager
def _as_normal_user() -> Iterator[None]:
    """Run the body with the permissions of a normal user (root may write into any folder)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)  # nobody
    try:
        yield
    finally:
        os.seteuid(0)


def test_outputs_that_cannot_be_written_fail_before_any_computation(tmp_path, capsys, monkeypatch) -> None:
    def no_computation(*args, **kwargs):
        raise AssertionError("the output location must be checked before the heatmap is computed")

    monkeypatch.setattr(importlib.import_module("ckatlas.heatmap"), "heatmap", no_computation)
    regular = tmp_path / "a_file"
    regular.write_text("x")
    fresh = ["--arch", "resnet8", "--width", "0.25", "--random-inputs", "8"]
    err = _error(capsys, ["cka", *fresh, "--out", str(regular / "cka.npz")], "cka")
    assert f"{regular} is a file, not a folder" in err
    err = _error(capsys, ["cka", *fresh, "--out", str(tmp_path / "ok.npz"), "--png", str(regular / "x" / "c.png")],
                 "cka")
    assert "the heatmap figure" in err and not (tmp_path / "ok.npz").exists()
    err = _error(capsys, ["cka", *fresh, "--out", str(tmp_path)], "cka")
    assert "is a folder; expected a file name" in err

    shared = Path(tempfile.mkdtemp())  # a folder a normal user can reach (pytest's tmp_path is root's own)
    try:
        shared.chmod(0o755)
        readonly = shared / "readonly"
        readonly.mkdir(mode=0o555)
        readonly.chmod(0o555)
        with _as_normal_user():
            err = _error(capsys, ["cka", *fresh, "--out", str(readonly / "sub" / "cka.npz")], "cka")
            assert f"the folder {readonly} is not writable" in err
            np_file = shared / "m.npy"
            err = _error(capsys, ["blocks", str(np_file), "--out", str(readonly / "b.json")], "blocks")
            assert "not writable" in err
        assert list(readonly.iterdir()) == []
    finally:
        (shared / "readonly").chmod(stat.S_IRWXU)
        for path in sorted(shared.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        shared.rmdir()


def test_an_output_of_another_kind_is_refused_and_not_replaced(tmp_path, capsys, monkeypatch) -> None:
    def no_computation(*args, **kwargs):
        raise AssertionError("the output's kind must be checked before the heatmap is computed")

    monkeypatch.setattr(importlib.import_module("ckatlas.heatmap"), "heatmap", no_computation)
    figure = tmp_path / "plot.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n a figure")
    fresh = ["--arch", "resnet8", "--width", "0.25", "--random-inputs", "8"]
    err = _error(capsys, ["cka", *fresh, "--out", str(figure)], "cka")
    assert "the CKA result is written as .npz; give a file name ending in .npz (got '.png')" in err
    assert figure.read_bytes() == b"\x89PNG\r\n\x1a\n a figure"  # untouched
    err = _error(capsys, ["cka", *fresh, "--out", str(tmp_path / "c.npz"), "--png", str(tmp_path / "c.npz")], "cka")
    assert "the heatmap figure is written as .png" in err
    np.save(tmp_path / "m.npy", np.eye(4))
    err = _error(capsys, ["blocks", str(tmp_path / "m.npy"), "--out", str(tmp_path / "blocks.npz")], "blocks")
    assert "the block result is written as .json" in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a folder that refuses new files whatever its modes (/proc)")
def test_a_folder_that_takes_no_files_is_found_by_trying_before_any_computation(tmp_path, capsys, monkeypatch) -> None:
    def no_computation(*args, **kwargs):
        raise AssertionError("the output location must be proven writable before the heatmap is computed")

    monkeypatch.setattr(importlib.import_module("ckatlas.heatmap"), "heatmap", no_computation)
    fresh = ["--arch", "resnet8", "--width", "0.25", "--random-inputs", "8"]
    # /proc looks writable to root by its modes, but takes no new file: a probe file finds out
    err = _error(capsys, ["cka", *fresh, "--out", "/proc/m.npz"], "cka")
    assert "cannot write the CKA result to /proc/m.npz: /proc takes no new files" in err
    err = _error(capsys, ["cka", *fresh, "--out", str(tmp_path / "ok.npz"), "--png", "/proc/x.png"], "cka")
    assert "/proc/x.png" in err and not (tmp_path / "ok.npz").exists()
    np.save(tmp_path / "m.npy", np.eye(4))
    err = _error(capsys, ["blocks", str(tmp_path / "m.npy"), "--out", "/proc/b.json"], "blocks")
    assert "/proc takes no new files" in err
    err = _error(capsys, ["pca", str(tmp_path / "run"), "--out", "/proc/dir"], "pca")
    assert "/proc takes no new files" in err
    assert [p.name for p in tmp_path.iterdir()] == ["m.npy"]  # no probe or output left behind


def test_a_write_that_fails_late_is_one_line_and_leaves_no_partial_set(tmp_path, capsys, monkeypatch) -> None:
    from matplotlib.figure import Figure

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)  # the figure is written after the heatmap
    out, png = tmp_path / "cka.npz", tmp_path / "cka.png"
    err = _error(capsys, ["cka", "--arch", "resnet8", "--width", "0.25", "--random-inputs", "8", "--batch-size", "4",
                          "--out", str(out), "--png", str(png), "--quiet"], "cka")
    assert f"cannot write {png}: No space left on device" in err
    assert list(tmp_path.iterdir()) == []  # neither the heatmap nor a temporary file: all or nothing


def test_a_folder_output_named_like_a_file_is_refused(tmp_path, capsys) -> None:
    err = _error(capsys, ["pca", str(tmp_path / "run"), "--out", str(tmp_path / "pca.npz")], "pca")
    assert "looks like a file name (.npz)" in err and f"e.g. {tmp_path / 'pca'}" in err
    assert not (tmp_path / "pca.npz").exists()


def test_run_analyses_check_their_output_folder_first(tmp_path, capsys) -> None:
    regular = tmp_path / "a_file"
    regular.write_text("x")
    for command in ("pca", "probes", "prune"):
        err = _error(capsys, [command, str(tmp_path / "no_such_run"), "--out", str(regular / "out")], command)
        assert "is a file, not a folder" in err  # reported before the (missing) run is even opened
    err = _error(capsys, ["errors", "--a", "x", "y", "--b", "z", "w", "--out", str(regular)], "errors")
    assert "is a file; expected a folder" in err
    err = _error(capsys, ["train", "--out", str(regular / "run")], "train")
    assert "is a file, not a folder" in err


def _subparsers() -> dict:
    action = next(a for a in build_parser()._actions if a.dest == "command")
    return dict(action.choices)


def test_help_names_only_commands_that_exist_and_every_writer_has_quiet() -> None:
    commands = _subparsers()
    for name, parser in commands.items():
        text = parser.format_help()
        cited = set(re.findall(r"(?:[`']|^\s*)ckatlas ([a-z][a-z-]*)", text, flags=re.MULTILINE))
        assert cited <= set(commands) | {"COMMAND"}, (name, cited - set(commands))
        options = {s for a in parser._actions for s in a.option_strings}
        if "--out" in options and name not in ("presets", "report", "demo", "info"):
            assert "--quiet" in options, name


def test_every_option_of_every_command_says_what_it_does() -> None:
    import argparse

    for name, parser in _subparsers().items():
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help and action.help != argparse.SUPPRESS, (name, action.option_strings or action.dest)


def test_every_analysis_option_defaults_to_its_settings_dataclass() -> None:
    import dataclasses

    from ckatlas.analysis import BlockDetector, ErrorSettings, ProbeSettings, PruneSettings

    commands = _subparsers()
    for command, settings in (("probes", ProbeSettings), ("prune", PruneSettings), ("blocks", BlockDetector),
                              ("errors", ErrorSettings)):
        for f in dataclasses.fields(settings):
            assert commands[command].get_default(f.name) == getattr(settings(), f.name), (command, f.name)
    probes = commands["probes"].parse_args(["RUN", "--out", "x", "--c-grid", "0.5", "2", "--max-features", "64"])
    assert (probes.c_grid, probes.max_features, probes.val_fraction) == ([0.5, 2.0], 64, ProbeSettings().val_fraction)


def test_an_analysis_setting_out_of_range_is_one_line_before_any_work(tmp_path, capsys) -> None:
    for argv, expected in ((["probes", "--val-fraction", "1.5"], "val_fraction must be in (0, 1), got 1.5"),
                           (["probes", "--c-grid", "0"], "c_grid must be a non-empty list of positive numbers"),
                           (["prune", "--finetune-lr", "0"], "finetune_lr must be a positive number, got 0.0")):
        err = _error(capsys, [argv[0], str(tmp_path / "no-run"), *argv[1:], "--out", str(tmp_path / "o")], argv[0])
        assert expected in err and not (tmp_path / "o").exists()


def test_options_that_do_not_apply_and_missing_runs_are_named(tmp_path, capsys) -> None:
    from ckatlas.train import TrainConfig, train

    run = tmp_path / "r8"
    train(TrainConfig(arch="resnet8", width=0.25, fraction=0.1, epochs=1, resize=8), run, quiet=True, device="cpu")
    for option in (["--dataset", "fashion-mnist"], ["--width", "2"], ["--model-seed", "3"]):
        err = _error(capsys, ["cka", str(run), *option, "--out", str(tmp_path / "c.npz")], "cka")
        assert f"{option[0]} is for registry models (--arch), not for runs" in err
    err = _error(capsys, ["cka", str(tmp_path / "r9"), "--out", str(tmp_path / "c.npz")], "cka")
    assert f"{tmp_path / 'r9'}: no such run folder; close matches: {run}" in err and "--resume" not in err
    (tmp_path / "empty").mkdir()
    err = _error(capsys, ["cka", str(tmp_path / "empty"), "--out", str(tmp_path / "c.npz")], "cka")
    assert "holds no ckatlas run" in err and "--resume" not in err
    other = tmp_path / "r8-16"
    train(TrainConfig(arch="resnet8", width=0.25, fraction=0.1, epochs=1, resize=16), other, quiet=True, device="cpu")
    err = _error(capsys, ["cka", str(run), str(other), "--out", str(tmp_path / "c.npz")], "cka")
    assert "different data: image shape (1, 8, 8) (r8) vs (1, 16, 16) (r8-16)" in err


def test_a_list_of_single_vectors_gets_the_advice_to_stack_them() -> None:
    from ckatlas.errors import UserInputError

    mlp = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(UserInputError, match=r"50 batches, each a single 1-d example.*torch\.stack\(inputs\)"):
        heatmap(mlp, [torch.randn(64)] * 50)
    assert heatmap(mlp, [torch.randn(16, 64) for _ in range(3)]).matrix.shape == (3, 3)  # batches are batches
