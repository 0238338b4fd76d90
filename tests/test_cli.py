"""The command line as a whole: help, examples, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ckatlas.cli import build_parser, main


def _subcommands() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in _subcommands():
        assert name in out


@pytest.mark.parametrize("name", sorted(_subcommands()) or ["(none)"])
def test_every_subcommand_help_ends_with_worked_examples(name, capsys):
    assert name != "(none)", "the CLI has no subcommands"
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"ckatlas {name}" in out.split("examples:")[1]


def test_unknown_command_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice" in err


def test_console_script_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "ckatlas.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("ckatlas ")
