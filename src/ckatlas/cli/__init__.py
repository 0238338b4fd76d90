"""The `ckatlas` command line: a thin layer that parses arguments and calls the API.

Every mistake a user can make (bad value, missing file, unknown key) ends in one
line on stderr and exit code 2; a bug keeps its traceback. Each subcommand is a
pair of functions in one of the modules below: `add_<name>(subparsers)` builds its
parser and `_run_<name>(args)` calls the library. Imports of heavy modules happen
inside `_run_*` so that `ckatlas --help` stays fast.

    experiments.py   demo, run, presets, claims, report
    models.py        train, dynamics, info
    heatmaps.py      cka
    analyses.py      blocks, pca, probes, prune, errors
    layers.py        layers (Hugging Face layer removal)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence

from ckatlas._version import __version__
from ckatlas.cli._common import Parser, one_line_warnings, positive_float, positive_int
from ckatlas.cli.analyses import add_blocks, add_errors, add_pca, add_probes, add_prune
from ckatlas.cli.experiments import add_claims, add_demo, add_presets, add_report, add_run, default_jobs
from ckatlas.cli.layers import add_layers
from ckatlas.cli.heatmaps import add_cka
from ckatlas.cli.models import add_dynamics, add_info, add_train
from ckatlas.runtime.cpu import command_threads, settle_allocator
from ckatlas.errors import USER_ERRORS

_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    # the main job first, then the pipeline from left to right
    add_demo, add_run, add_presets, add_train, add_dynamics, add_cka, add_blocks, add_pca, add_probes, add_prune,
    add_errors, add_layers, add_claims, add_report, add_info,
]


def build_parser() -> argparse.ArgumentParser:
    """The full `ckatlas` parser."""
    parser = Parser(
        prog="ckatlas",
        description="Do wide and deep networks learn the same things? Train depth x width families, "
        "map their layers with CKA, find and test the block structure, compare their errors.",
        epilog="Run 'ckatlas COMMAND --help' for a command's options and worked examples.",
    )
    parser.add_argument("--version", action="version", version=f"ckatlas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ckatlas` console script; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    settle_allocator()
    try:
        with command_threads(), one_line_warnings(f"ckatlas {args.command}"):
            return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"ckatlas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ckatlas {args.command}: interrupted{_resume_hint(args, argv)}", file=sys.stderr)
        return 130


def _resume_hint(args: argparse.Namespace, argv: list[str]) -> str:
    """How to finish an interrupted command, for those that resume (`on_interrupt` in their
    defaults): "resume-flag" (the same command with --resume) or "again" (the same command)."""
    how = getattr(args, "on_interrupt", None)
    if how not in ("resume-flag", "again"):
        return ""
    again = argv + (["--resume"] if how == "resume-flag" and "--resume" not in argv else [])
    return f"; to finish it, run: ckatlas {shlex.join(again)}"


__all__ = ["build_parser", "default_jobs", "main", "positive_float", "positive_int"]
