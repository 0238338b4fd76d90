"""The `ckatlas` command line: a thin layer that parses arguments and calls the API.

Every mistake a user can make (bad value, missing file, unknown key) ends in one
line on stderr and exit code 2; a bug keeps its traceback. Each subcommand is a
pair of functions: `_add_<name>(subparsers)` builds its parser and `_run_<name>(args)`
calls the library. Imports of heavy modules happen inside `_run_*` so that
`ckatlas --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Sequence

from ckatlas import __version__
from ckatlas.errors import USER_ERRORS


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _command(
    sub: argparse._SubParsersAction, name: str, summary: str, description: str, examples: Sequence[str]
) -> argparse.ArgumentParser:
    """Add a subcommand whose help ends with worked examples."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    return sub.add_parser(
        name,
        help=summary,
        description=textwrap.dedent(description).strip(),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# -- subcommands --------------------------------------------------------------------------
# Each `_add_*` function registers one subcommand; `_COMMANDS` lists them in help order.


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "info",
        "versions, devices and threads (paste it into a bug report)",
        "Print the versions of ckatlas and its main dependencies, the devices PyTorch sees and the thread count.",
        ["ckatlas info", "ckatlas info --json > env.json"],
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    import json
    import platform

    import numpy
    import torch

    info = {
        "ckatlas": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:>13}: {value}")
    return 0


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_info]


def build_parser() -> argparse.ArgumentParser:
    """The full `ckatlas` parser."""
    parser = _Parser(
        prog="ckatlas",
        description="Do wide and deep networks learn the same things? Train depth x width families, "
        "map their layers with CKA, find and test the block structure, compare their errors.",
        epilog="Run 'ckatlas COMMAND --help' for a command's options and worked examples.",
    )
    parser.add_argument("--version", action="version", version=f"ckatlas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ckatlas` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"ckatlas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ckatlas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
