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


def add_settings_options(p: argparse.ArgumentParser, settings: type, *, skip: Sequence[str] = ()) -> None:
    """One option per field of a frozen settings dataclass (`ckatlas.analysis.ProbeSettings`, ...):
    ``--field-name`` (or the field's ``metadata["flags"]``), parsed as its default's type (a tuple: one or more values), defaulting to the
    dataclass' default, its help the field's ``metadata["help"]``. The dataclass checks the values
    (`settings_from_args`), so a default is written once, beside the computation."""
    import dataclasses

    for f in dataclasses.fields(settings):
        if f.name in skip:
            continue
        default = f.default
        shown = " ".join(f"{v:g}" for v in default) if isinstance(default, tuple) else (
            f"{default:g}" if isinstance(default, float) else str(default))
        options: dict = {"default": default, "help": f"{f.metadata.get('help', f.name)} (default {shown})"}
        if isinstance(default, tuple):
            options.update(nargs="+", type=type(default[0]) if default else str, metavar=f.name.split("_")[-1].upper())
        else:
            options.update(type=type(default))
        flags = f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),)
        p.add_argument(*flags, dest=f.name, **options)


def settings_from_args(args: argparse.Namespace, settings: type) -> object:
    """The settings dataclass of the options `add_settings_options` (and the shared ones) set, checked
    (its `check`: one clear error)."""
    import dataclasses

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings) if hasattr(args, f.name)}
    made = settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    made.check()
    return made


def add_model_recipe_options(p: argparse.ArgumentParser) -> None:
    """The options that decide which model a name builds and how its data look: `ckatlas
    train` and `ckatlas cka --arch` share them, so fresh weights are of the model training
    builds, on the same images."""
    p.add_argument("--recipe", choices=("ckatlas", "paper", "paper-imagenet"), default="ckatlas",
                   help="named settings: ckatlas (the defaults) or paper (the paper's code: lr 0.01, 300 epochs, "
                        "L2 on kernels, per-epoch cosine, [0, 1] pixels, reflect padding, best validation epoch, "
                        "paper-style models) or paper-imagenet (its ImageNet code: lr 0.1 at batch 256, 120 epochs, "
                        "zero-init last BN); options given explicitly override it")
    p.add_argument("--model-style", choices=("paper", "torchvision"),
                   help="architecture details: torchvision (no conv biases, conv + BN shortcut; the ckatlas "
                        "recipe's) or paper (conv biases, 1x1 conv shortcut without BN, he_normal; the paper "
                        "recipe's)")
    p.add_argument("--resize", type=positive_int, help="image side in pixels (default: the dataset's)")
    p.add_argument("--no-normalize", action="store_true", default=None,
                   help="feed pixels in [0, 1] (default: normalised per channel; the paper recipe: [0, 1])")


def recipe_settings(args: argparse.Namespace) -> dict[str, object]:
    """The recipe options given on the command line (None: the recipe's value)."""
    given = {
        "model_style": args.model_style,
        "normalize": None if args.no_normalize is None else False,
        "resize": args.resize,
    }
    return {k: v for k, v in given.items() if v is not None}


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
    from ckatlas.io.files import check_writable_dir

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
    from ckatlas.io.files import atomic_open

    figure = ax.figure if hasattr(ax, "figure") else ax
    with atomic_open(path, "wb") as fh:
        figure.savefig(fh, format="png", dpi=150, bbox_inches="tight")



def add_detector_options(p: argparse.ArgumentParser, inherit: str | None = None) -> None:
    """The block detector's settings (`ckatlas.analysis.BlockDetector`), each defaulting to the detector's
    own; with `inherit` (e.g. "the experiment's"), an option left out keeps that detector's setting."""
    from ckatlas.analysis.blocks import BlockDetector

    d = BlockDetector()

    def default(value: object) -> object:
        return None if inherit else value

    def shown(value: object) -> str:
        return inherit if inherit else f"{value:g}" if isinstance(value, float) else str(value)

    g = p.add_argument_group("block detector (ckatlas.analysis.BlockDetector)")
    g.add_argument("--method", choices=("contrast", "threshold"), default=default(d.method),
                   help="contrast: a block stands out from the layers around it; threshold: a block is uniformly "
                        f"above --threshold, as in earlier releases ({shown(d.method)})")
    g.add_argument("--min-score", type=float, default=default(d.min_score),
                   help=f"contrast: how much a block must stand out, in (0, 1] ({shown(d.min_score)})")
    g.add_argument("--min-gap", type=float, default=default(d.min_gap),
                   help=f"contrast: smallest CKA difference to the layers around a block ({shown(d.min_gap)})")
    g.add_argument("--threshold", type=positive_float, default=default(d.threshold),
                   help=f"threshold rule: CKA that counts as similar ({shown(d.threshold)})")
    g.add_argument("--tolerance", type=float, default=default(d.tolerance),
                   help=f"threshold rule: share of a layer's partners allowed below it ({shown(d.tolerance)})")
    g.add_argument("--min-size", type=positive_int, default=default(d.min_size),
                   help=f"smallest block, in layers ({shown(d.min_size)})")
    g.add_argument("--min-fraction", type=float, default=default(d.min_fraction),
                   help=f"smallest block, share of the layers ({shown(d.min_fraction)})")
    g.add_argument("--border-fraction", type=float, default=default(d.border_fraction),
                   help="contrast: share of the layers a border needs beyond it to be judged "
                        f"({shown(d.border_fraction)})")


def _detector_options(args: argparse.Namespace) -> dict[str, object]:
    """The detector options given (each a `BlockDetector` field; None: left out)."""
    import dataclasses

    from ckatlas.analysis.blocks import BlockDetector

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(BlockDetector)}
    return {name: value for name, value in values.items() if value is not None}


def detector_from_args(args: argparse.Namespace, base: object = None) -> object:
    """The `BlockDetector` of the options `add_detector_options` added (checked: one clear error); with
    `base`, the options given replace its settings."""
    from ckatlas.analysis.blocks import BlockDetector

    return (base or BlockDetector()).replace(**_detector_options(args))


def detector_options_given(args: argparse.Namespace) -> bool:
    """Whether any detector option was given (for commands whose options inherit a detector)."""
    return bool(_detector_options(args))
