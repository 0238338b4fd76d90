"""What the subcommands share: the one-line-error parser, help with examples, argument types."""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
import warnings
from collections.abc import Iterator, Sequence


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


@contextlib.contextmanager
def one_line_warnings(prefix: str) -> Iterator[None]:
    """Warnings printed as one line each, ``PREFIX: warning: message``, once per message."""
    seen: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        text = " ".join(str(message).split())
        if text not in seen:
            seen.add(text)
            print(f"{prefix}: warning: {text}", file=sys.stderr)

    before = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = before


def command(
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


def fraction(text: str) -> float:
    """argparse type: a share 0 < f <= 1, as a decimal (0.25) or a ratio (1/4)."""
    from fractions import Fraction

    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.25 or 1/4, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction with 0 < f <= 1, got {text!r}")
    return value


def add_run_analysis_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the analyses of one saved run (pca, probes, prune)."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory ('ckatlas train --out')")
    p.add_argument("--out", required=True, metavar="DIR", help="write the result and its figures into this directory")
    p.add_argument("--data-dir", metavar="PATH", help="where the run's dataset is now (default: as in its config.json)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per forward pass (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the analysis' randomness (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="print only where the results are")


def check_outputs(args: argparse.Namespace) -> object:
    """The --out folder of a run analysis, checked to be writable before any work."""
    from ckatlas.files import check_writable_dir

    return check_writable_dir(args.out, f"the results of 'ckatlas {args.command}'")


def open_run(args: argparse.Namespace) -> tuple[object, object]:
    """The run's model (on --device) and its dataset, loaded with the run's own settings."""
    from ckatlas.train import load_run

    run = load_run(args.run_dir, device=args.device)
    return run.model, run.config.load_data(args.data_dir)


def layer_spec(layers: list[str] | None, default: object) -> object:
    if not layers:
        return default
    return layers[0] if len(layers) == 1 and layers[0] in ("blocks", "all") else layers


def write_png(ax: object, path: object) -> None:
    from ckatlas.files import atomic_open

    figure = ax.figure if hasattr(ax, "figure") else ax
    with atomic_open(path, "wb") as fh:
        figure.savefig(fh, format="png", dpi=150, bbox_inches="tight")

