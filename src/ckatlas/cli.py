"""The `ckatlas` command line: a thin layer that parses arguments and calls the API.

Every mistake a user can make (bad value, missing file, unknown key) ends in one
line on stderr and exit code 2; a bug keeps its traceback. Each subcommand is a
pair of functions: `_add_<name>(subparsers)` builds its parser and `_run_<name>(args)`
calls the library. Imports of heavy modules happen inside `_run_*` so that
`ckatlas --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
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


def _add_blocks(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "blocks",
        "find the block structure in a CKA matrix (and its stability across seeds)",
        """
        Find blocks: contiguous runs of layers whose CKA with one another is uniformly high
        (each layer at or above --threshold with all but a --tolerance share of the others),
        at least max(--min-size, --min-fraction x layers) long. The residual checkerboard is
        not a block. With several matrices (e.g. one per seed) it also reports how stable the
        blocks' positions are. A MATRIX is a within-model CKAResult (.npz, as `ckatlas
        heatmap` saves it), a .npy (L, L) array, or an .npz with a 'matrix' array (and
        optionally 'layers_a', the layer names).

        Writes --out (JSON: the blocks, or with several matrices the stability and every
        model's blocks) and a figure beside it with the suffix .png.
        """,
        [
            "ckatlas blocks cka/resnet56_w4.npy",
            "ckatlas blocks cka/resnet56_w4.npz --threshold 0.9 --out analysis/blocks_w4.json",
            "ckatlas blocks cka/seed*.npy --out analysis/block_stability.json",
            "ckatlas blocks cka/resnet56_w4.npz --layers stage3.0 stage3.1 stage3.2 stage3.3",
        ],
    )
    p.add_argument("matrices", nargs="+", metavar="MATRIX", help=".npy or .npz CKA matrix of one model")
    p.add_argument("--threshold", type=positive_float, default=0.85, help="CKA that counts as similar (default 0.85)")
    p.add_argument("--tolerance", type=float, default=0.1, help="share of a layer's partners allowed below it (0.1)")
    p.add_argument("--min-size", type=positive_int, default=3, help="smallest block, in layers (default 3)")
    p.add_argument("--min-fraction", type=float, default=0.1, help="smallest block, share of layers (default 0.1)")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="analyse only these layers (names or row indices)")
    p.add_argument("--out", metavar="FILE", help="write the result as JSON here, and a .png figure beside it")
    p.set_defaults(func=_run_blocks)


def _load_cka_matrix(path: str) -> tuple[object, list[str] | None]:
    """A CKA matrix file: a .npy array, a saved `CKAResult`, or an .npz with 'matrix' (and 'layers_a')."""
    from pathlib import Path

    import numpy as np

    from ckatlas.errors import UserInputError

    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"{file}: no such file (expected a .npy or .npz CKA matrix)")
    if file.suffix not in (".npy", ".npz"):
        raise UserInputError(f"{file}: expected a .npy matrix or an .npz with a 'matrix' array")
    try:
        data = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{file}: not a readable NumPy file ({exc})") from None
    if file.suffix == ".npy":
        return data, None
    with data:
        if "header" in data.files:
            from ckatlas.heatmap import CKAResult

            return CKAResult.load(file), None
        if "matrix" not in data.files:
            raise UserInputError(f"{file}: expected an array named 'matrix', found {sorted(data.files)}")
        names = [str(n) for n in data["layers_a"]] if "layers_a" in data.files else None
        return data["matrix"], names


def _run_blocks(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ckatlas.analysis import block_stability, find_blocks
    from ckatlas.files import atomic_open
    from ckatlas.report import plot_block_frequency, plot_blocks

    layers = None if args.layers is None else [int(x) if x.isdigit() else x for x in args.layers]
    matrices, results = [], []
    for path in args.matrices:
        matrix, names = _load_cka_matrix(path)
        result = find_blocks(
            matrix,
            threshold=args.threshold,
            tolerance=args.tolerance,
            min_size=args.min_size,
            min_fraction=args.min_fraction,
            layers=layers,
            layer_names=names,
        )
        print(f"{path}: {result.summary()}")
        matrices.append(matrix)
        results.append(result)
    stability = None
    if len(results) > 1:
        stability = block_stability(results, labels=list(args.matrices))
        print(f"stability: {stability.summary()}")
    if args.out:
        out = Path(args.out)
        figure_path = out.with_suffix(".png")
        if stability is None:
            results[0].save(out)
            ax = plot_blocks(matrices[0], results[0])
        else:
            stability.save(out)
            ax = plot_block_frequency(stability)
        with atomic_open(figure_path, "wb") as fh:
            ax.figure.savefig(fh, format="png", dpi=150, bbox_inches="tight")
        print(f"wrote {out} and {figure_path}")
    return 0


def _add_errors(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "errors",
        "do two populations of models (e.g. wide vs deep) make different errors?",
        """
        Compare the test-set errors of two populations of models (several seeds each, at
        least 2 models per population, all on the same test set). Each model is a run
        directory holding predictions.npz, or an .npz file with 'labels' and 'logits' (or
        'predictions').

        Example level: per-example accuracy of each population, and a permutation test over
        models of D = mean (acc_A - acc_B)^2 (do A and B differ more than two groups of
        the same models would?), beside a control split of A into two halves.
        Class level: per-class accuracy difference, Welch t-test per class, Holm-Sidak
        correction; the same for class groups given as JSON {group: [class index or name]}.

        Writes to --out: errors.json, classes.md (and groups.md), example_scatter.png,
        class_differences.png (and group_differences.png).
        """,
        [
            "ckatlas errors --a runs/wide_s0 runs/wide_s1 runs/wide_s2 --b runs/deep_s0 runs/deep_s1 runs/deep_s2",
            "ckatlas errors --a runs/wide_s* --b runs/deep_s* --name-a wide --name-b deep --out analysis/errors",
            "ckatlas errors --a w0.npz w1.npz --b d0.npz d1.npz --groups superclasses.json --class-names classes.txt",
        ],
    )
    p.add_argument("--a", nargs="+", required=True, metavar="RUN_OR_NPZ", help="models of population A")
    p.add_argument("--b", nargs="+", required=True, metavar="RUN_OR_NPZ", help="models of population B")
    p.add_argument("--name-a", default="A", help="name of population A in tables and figures")
    p.add_argument("--name-b", default="B", help="name of population B in tables and figures")
    p.add_argument("--groups", metavar="JSON", help="class groups, {group: [class index or name, ...]}")
    p.add_argument("--class-names", metavar="FILE", help="class names, one per line (or a JSON list)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the control split and sampled permutations")
    p.add_argument("--permutations", type=positive_int, default=10_000, help="permutation budget (default 10000)")
    p.add_argument("--out", metavar="DIR", help="write the results and figures into this directory")
    p.set_defaults(func=_run_errors)


def _read_class_names(path: str) -> list[str]:
    import json
    from pathlib import Path

    from ckatlas.errors import UserInputError

    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"{file}: no such file (expected class names, one per line, or a JSON list)")
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{file}: not valid JSON ({exc})") from None
        if not isinstance(names, list):
            raise UserInputError(f"{file}: expected a JSON list of class names")
        return [str(n) for n in names]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _run_errors(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ckatlas.analysis import compare_populations, load_class_groups, load_predictions
    from ckatlas.files import atomic_open, atomic_write_text
    from ckatlas.report import plot_class_differences, plot_example_scatter

    pop_a = load_predictions(args.a, name=args.name_a)
    pop_b = load_predictions(args.b, name=args.name_b)
    result = compare_populations(
        pop_a,
        pop_b,
        alpha=args.alpha,
        seed=args.seed,
        num_permutations=args.permutations,
        class_groups=None if args.groups is None else load_class_groups(args.groups),
        class_names=None if args.class_names is None else _read_class_names(args.class_names),
    )
    print(result.summary())
    if args.out:
        out = Path(args.out)
        result.save(out / "errors.json")
        atomic_write_text(out / "classes.md", result.class_table_markdown("classes"))
        figures = {
            "example_scatter.png": plot_example_scatter(result)[0],
            "class_differences.png": plot_class_differences(result, level="classes"),
        }
        if result.groups is not None:
            atomic_write_text(out / "groups.md", result.class_table_markdown("groups"))
            figures["group_differences.png"] = plot_class_differences(result, level="groups")
        for name, ax in figures.items():
            with atomic_open(out / name, "wb") as fh:
                ax.figure.savefig(fh, format="png", dpi=150, bbox_inches="tight")
        print(f"wrote {out}/: errors.json, classes.md, {', '.join(figures)}")
    return 0


def _fraction(text: str) -> float:
    """argparse type: a share 0 < f <= 1, as a decimal (0.25) or a ratio (1/4)."""
    from fractions import Fraction

    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.25 or 1/4, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction with 0 < f <= 1, got {text!r}")
    return value


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "train",
        "train one model into a run directory (resumable)",
        """
        Train one model with SGD (momentum 0.9, cosine learning-rate schedule, weight decay)
        and write its run directory: config.json, model.safetensors, metrics.json (per epoch
        and final), predictions.npz (test-set logits and labels, in dataset order) and state/
        (written each epoch). If the run is interrupted (even killed), --resume with the same
        settings and --out finishes it; on the CPU the result equals an uninterrupted run's
        bit for bit. --out must be empty or hold the same run.

        Datasets: digits (built in, 16x16 by default), cifar10 and cifar100 (--data-dir: the
        python or binary archive, or its extracted folder), folder (--data-dir: ROOT with
        train/<class>/ and val/<class>/ images; 224x224 by default), npz (--data-dir: a .npz
        with x_train, y_train, x_test, y_test or x, y). Defaults: 15 epochs for digits, 200
        otherwise; lr 0.1 for batch 128, weight decay 5e-4. On CUDA: bfloat16 autocast and
        channels_last.
        """,
        [
            "ckatlas train --arch resnet20 --width 2 --dataset digits --epochs 30 --seed 0 --out runs/r20w2",
            "ckatlas train --arch resnet56 --dataset cifar10 --data-dir ~/data/cifar-10-batches-py "
            "--fraction 0.25 --out runs/r56_quarter",
            "ckatlas train --arch resnet56 --dataset cifar10 --data-dir ~/data/cifar-10-batches-py "
            "--fraction 0.25 --out runs/r56_quarter --resume",
            "ckatlas train --arch cnn20 --dataset npz --data-dir my_images.npz --device cpu --quiet --out runs/cnn",
        ],
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the run directory")
    p.add_argument("--arch", default="resnet20", help="model name: resnet<depth>, cnn<depth>, ... (resnet20)")
    p.add_argument("--width", type=positive_float, default=1.0, help="channel multiplier (default 1)")
    p.add_argument("--dataset", default="digits", help="digits, cifar10, cifar100, folder or npz (digits)")
    p.add_argument("--data-dir", metavar="PATH", help="where the dataset is (not for digits)")
    p.add_argument("--fraction", type=_fraction, default=1.0, help="share of each training class, e.g. 1/4 (1)")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the --fraction subset (default 0)")
    p.add_argument("--resize", type=positive_int, help="image side in pixels (default: the dataset's)")
    p.add_argument("--epochs", type=positive_int, help="passes over the training set (15 digits, 200 otherwise)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="examples per step (default 128)")
    p.add_argument("--lr", type=positive_float, default=0.1, help="peak learning rate (default 0.1)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (default 5e-4)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing (default 0)")
    p.add_argument("--no-augment", action="store_true", help="no pad-and-crop or flips")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, data order and augmentation (0)")
    p.add_argument("--eval-every", type=int, default=1, help="test every this many epochs; 0: at the end (1)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="finish the interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from ckatlas.train import TrainConfig, train

    config = TrainConfig(
        arch=args.arch,
        width=args.width,
        dataset=args.dataset,
        data_dir=args.data_dir,
        fraction=args.fraction,
        subset_seed=args.subset_seed,
        resize=args.resize,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        nesterov=args.nesterov,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        augment=not args.no_augment,
        seed=args.seed,
        eval_every=args.eval_every,
    )
    result = train(config, args.out, resume=args.resume, quiet=args.quiet, device=args.device)
    if not args.quiet:
        final = result.metrics["final"]
        print(
            f"{result.run_dir}: test accuracy {final['test_accuracy']:.2%} after {final['epochs']} epochs "
            f"({final['train_seconds']:.0f} s of training)"
        )
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "run",
        "run an experiment: train a grid, map it with CKA, analyse it (resumable)",
        """
        Run an experiment described by a TOML file or a preset (`ckatlas presets`): train
        every model of its grid, compute each model's CKA heatmap (and cross-seed ones),
        find the block structure, run the analyses it asks for and write summary.json,
        all under --out. Run the same command again after a crash or Ctrl-C: only the
        missing pieces are computed. --out must be empty or hold this same experiment.

        With --executor ray the training runs, heatmaps and analyses are Ray tasks spread
        over a Ray cluster (pip install 'ckatlas[ray]'); --out must then be on a file
        system that every node sees.
        """,
        [
            "ckatlas run demo --out out/demo",
            "ckatlas run my_grid.toml --out out/grid --device cuda",
            "ckatlas run paper-depth --out out/depth --data-dir ~/data/cifar-10-batches-py",
            "ckatlas run paper-width --out out/width --data-dir /shared/cifar10 --executor ray --address auto",
            "ckatlas run demo --out out/demo --dry-run",
            "ckatlas run tiny --out out/tiny --jobs 2 --threads 1",
        ],
    )
    p.add_argument("experiment", metavar="EXPERIMENT", help="a TOML file, or a preset name (see 'ckatlas presets')")
    p.add_argument("--out", required=True, metavar="DIR", help="the experiment directory")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this machine, one step after another or --jobs at once (default); ray: Ray tasks")
    p.add_argument("--address", metavar="ADDR", help="Ray cluster to join (e.g. auto); default: start a local one")
    p.add_argument("--data-dir", metavar="DIR", help="where the dataset is (overrides [dataset] data_dir)")
    p.add_argument("--device", metavar="DEV", help="cpu, cuda or cuda:N (default: CUDA when present; local executor)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="PyTorch threads (local executor; per job)")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="local executor: N processes computing independent steps side by side (default 1)")
    p.add_argument("--cpus-per-task", type=positive_int, default=1, metavar="N",
                   help="CPUs each Ray task that trains or runs a model declares (default 1)")
    p.add_argument("--gpus-per-task", type=positive_float, metavar="G",
                   help="GPUs each such Ray task declares (default: 1 when the cluster has GPUs)")
    p.add_argument("--dry-run", action="store_true", help="list the steps and which are done; compute nothing")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=_run_run)


def _run_run(args: argparse.Namespace) -> int:
    import json

    from ckatlas.experiment import experiment_status, load_config, run_experiment

    config = load_config(args.experiment)
    if args.data_dir is not None:
        config = config.with_data_dir(args.data_dir)
    if args.dry_run:
        for step, done in experiment_status(config, args.out):
            print(f"{'done' if done else 'todo'}  {step.key}")
        return 0
    result = run_experiment(
        config,
        args.out,
        executor=args.executor,
        address=args.address,
        device=args.device,
        threads=args.threads,
        jobs=args.jobs,
        cpus_per_task=args.cpus_per_task,
        gpus_per_task=args.gpus_per_task,
        quiet=args.quiet,
    )
    if not args.quiet:
        summary = json.loads(result.summary_path.read_text(encoding="utf-8"))
        width = max(len(m["name"]) for m in summary["models"])
        print(f"{'model':<{width}}  test acc  block fraction")
        for m in summary["models"]:
            print(f"{m['name']:<{width}}  {m['test_accuracy']:8.3f}  {m['block_fraction']:14.2f}")
        print(f"summary: {result.summary_path}")
    return 0


def _add_presets(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "presets",
        "list the experiments shipped with ckatlas (or print one)",
        """
        List the preset experiments that 'ckatlas run PRESET' accepts, one line each, or
        print one preset's TOML file (--show) to start your own experiment from it.
        """,
        ["ckatlas presets", "ckatlas presets --show demo > my_grid.toml"],
    )
    p.add_argument("--show", metavar="PRESET", help="print this preset's TOML file")
    p.set_defaults(func=_run_presets)


def _run_presets(args: argparse.Namespace) -> int:
    from ckatlas.experiment import list_presets, preset_description, preset_path

    if args.show is not None:
        print(preset_path(args.show).read_text(encoding="utf-8"), end="")
        return 0
    names = list_presets()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {preset_description(name)}")
    return 0


def _add_run_analysis_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the analyses of one saved run (pca, probes, prune)."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory ('ckatlas train --out')")
    p.add_argument("--out", required=True, metavar="DIR", help="write the result and its figures into this directory")
    p.add_argument("--data-dir", metavar="PATH", help="where the run's dataset is now (default: as in its config.json)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per forward pass (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the analysis' randomness (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")


def _open_run(args: argparse.Namespace) -> tuple[object, object]:
    """The run's model (on --device) and its dataset, loaded with the run's own settings."""
    from ckatlas.train import load_run

    run = load_run(args.run_dir, device=args.device)
    return run.model, run.config.load_data(args.data_dir)


def _layer_spec(layers: list[str] | None, default: object) -> object:
    if not layers:
        return default
    return layers[0] if len(layers) == 1 and layers[0] in ("blocks", "all") else layers


def _write_png(ax: object, path: object) -> None:
    from ckatlas.files import atomic_open

    figure = ax.figure if hasattr(ax, "figure") else ax
    with atomic_open(path, "wb") as fh:
        figure.savefig(fh, format="png", dpi=150, bbox_inches="tight")


def _add_pca(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "pca",
        "first principal components of a run's layers: the make-up of the block structure",
        """
        One pass over the test split with Gram taps on the chosen layers. Per layer: the
        fraction of its variance explained by the first principal component; per pair of
        layers: the squared cosine of their first PCs, and CKA with every layer's first PC
        removed (per minibatch). Inside a block structure PC1 carries most of the variance,
        the first PCs agree, and the block vanishes from CKA without PC1. Also a scatter of
        the test examples on the first two PCs of one layer (--scatter-layer; default: the
        layer with the largest PC1 share), coloured by class.

        Writes to --out: pca.npz (PCAResult), pc_variance.png, pc_heatmaps.png, pc_scatter.png.
        """,
        [
            "ckatlas pca runs/r20w8 --out analysis/pca_r20w8",
            "ckatlas pca runs/r56 --layers all --batch-size 512 --out analysis/pca_r56",
            "ckatlas pca runs/r20w8 --layers 'stage3.*.relu' --scatter-layer stage3.2.relu --out analysis/pca_s3",
        ],
    )
    _add_run_analysis_options(p)
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="blocks (default), all, or module names / glob patterns")
    p.add_argument("--scatter-layer", metavar="LAYER", help="layer of the PC scatter (default: largest PC1 share)")
    p.add_argument("--scatter-examples", type=positive_int, default=2000,
                   help="test examples in the scatter (default 2000; its PCs use all of them at once)")
    p.set_defaults(func=_run_pca)


def _run_pca(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ckatlas.analysis import pc_scatter, principal_components
    from ckatlas.capture import resolve_layers
    from ckatlas.report import plot_pc_heatmaps, plot_pc_scatter, plot_pc_variance
    from ckatlas.train import resolve_device

    model, data = _open_run(args)
    if args.scatter_layer is not None:
        resolve_layers(model, [args.scatter_layer])  # a wrong name fails before the pass over the data
    result = principal_components(model, data.x_test, _layer_spec(args.layers, "blocks"), batch_size=args.batch_size,
                                  seed=args.seed, device=resolve_device(args.device))
    print(result.summary())
    layer = args.scatter_layer or result.layers[int(np.nanargmax(result.variance_explained))]
    count = min(args.scatter_examples, len(data.x_test))
    scatter = pc_scatter(model, data.x_test[:count], layer, data.y_test[:count], batch_size=args.batch_size,
                         device=resolve_device(args.device))
    out = Path(args.out)
    result.save(out / "pca.npz")
    _write_png(plot_pc_variance(result), out / "pc_variance.png")
    _write_png(plot_pc_heatmaps(result)[0], out / "pc_heatmaps.png")
    _write_png(plot_pc_scatter(scatter, class_names=list(data.class_names)), out / "pc_scatter.png")
    print(f"wrote {out}/: pca.npz, pc_variance.png, pc_heatmaps.png, pc_scatter.png ({layer})")
    return 0


def _add_probes(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "probes",
        "linear probes on the pre- and post-residual layers of a run",
        """
        Fit a multinomial logistic-regression probe (L2 penalty) on each layer's features of
        the training split and report its test accuracy. Layers: by default each residual
        block's branch output before the sum (pre-residual) and the sum (post-residual).
        Feature maps larger than --max-features values are average-pooled to the finest
        s x s grid that fits. The penalty is chosen from --c-grid on a stratified validation
        split (--val-fraction of each class) of the training data, never on the test set.

        Writes to --out: probes.json (ProbeResult) and probes.png.
        """,
        [
            "ckatlas probes runs/r20w8 --out analysis/probes_r20w8",
            "ckatlas probes runs/r56 --max-features 2048 --c-grid 0.01 0.1 1 --out analysis/probes_r56",
            "ckatlas probes runs/r20w8 --layers 'stage3.*.add' --out analysis/probes_s3",
        ],
    )
    _add_run_analysis_options(p)
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="module names / glob patterns (default: pre- and post-residual of every block)")
    p.add_argument("--c-grid", nargs="+", type=positive_float, metavar="C",
                   help="inverse penalty strengths to choose from (default 0.001 0.01 0.1 1 10)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class held out (default 0.2)")
    p.add_argument("--max-features", type=positive_int, default=4096, help="pool feature maps to at most this (4096)")
    p.set_defaults(func=_run_probes)


def _run_probes(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ckatlas.analysis import linear_probes
    from ckatlas.analysis.probes import DEFAULT_C_GRID
    from ckatlas.report import plot_probe_accuracy
    from ckatlas.train import resolve_device

    model, data = _open_run(args)
    result = linear_probes(
        model, data, _layer_spec(args.layers, None), c_grid=args.c_grid or DEFAULT_C_GRID,
        val_fraction=args.val_fraction, max_features=args.max_features, batch_size=args.batch_size, seed=args.seed,
        device=resolve_device(args.device),
    )
    print(result.summary())
    out = Path(args.out)
    result.save(out / "probes.json")
    _write_png(plot_probe_accuracy(result), out / "probes.png")
    print(f"wrote {out}/: probes.json, probes.png")
    return 0


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "prune",
        "delete residual blocks from the end of each stage and test what is left",
        """
        For each stage on its own, delete its last block, then its last two, ... (a deleted
        block becomes the identity; the skip connection stays) while the next block from
        the end has an identity shortcut, and test each pruned model, by default without
        fine-tuning (--finetune-epochs: SGD on the training split after each deletion).
        With --blocks (a block result from 'ckatlas blocks' on this run's CKA heatmap of
        its "blocks" layers) each deletion is marked inside or outside the block structure.

        Writes to --out: prune.json (PruneResult) and prune.png.
        """,
        [
            "ckatlas prune runs/r20w8 --out analysis/prune_r20w8",
            "ckatlas prune runs/r56 --blocks analysis/blocks_r56.json --out analysis/prune_r56",
            "ckatlas prune runs/r56 --stages 3 --finetune-epochs 2 --out analysis/prune_r56_ft",
        ],
    )
    _add_run_analysis_options(p)
    p.add_argument("--stages", nargs="+", type=positive_int, metavar="S", help="stages to prune (default: all)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tuning epochs after each deletion (0)")
    p.add_argument("--finetune-lr", type=positive_float, default=0.01, help="peak fine-tuning learning rate (0.01)")
    p.add_argument("--blocks", metavar="JSON", help="block result of this run (ckatlas blocks --out)")
    p.set_defaults(func=_run_prune)


def _run_prune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ckatlas.analysis import BlockResult, prune_blocks
    from ckatlas.report import plot_pruning
    from ckatlas.train import resolve_device

    block_result = BlockResult.load(args.blocks) if args.blocks else None
    model, data = _open_run(args)
    result = prune_blocks(
        model, data, stages=args.stages, finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
        batch_size=args.batch_size, seed=args.seed, device=resolve_device(args.device), block_result=block_result,
    )
    print(result.summary())
    out = Path(args.out)
    result.save(out / "prune.json")
    _write_png(plot_pruning(result), out / "prune.png")
    print(f"wrote {out}/: prune.json, prune.png")
    return 0


def _add_cka(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "cka",
        "CKA heatmap of one model's layers, or of two models' layers, on a dataset",
        """
        Minibatch CKA (Nguyen, Raghu & Kornblith, 2021) between the layers of one model, or
        between the layers of two models on the same batches, in inference mode. The models
        are saved runs (RUN_DIR, as 'ckatlas train --out' writes them; the data are the test
        split of the run's own dataset) or registry models with fresh random weights (--arch,
        --width; data from --dataset, or --random-inputs). --passes > 1 reshuffles the data
        each pass (the paper uses 10).

        Layers: blocks (stem, each block's output, pooled features, logits), all (every conv,
        norm, activation and residual sum), or module names / glob patterns ('stage3.*.add';
        '*' stays inside one dotted part, '**' crosses parts).

        Writes --out (.npz CKAResult: matrix, standard errors, layer names, settings) and,
        with --png, the heatmap (layer index from input to output, origin lower left).
        """,
        [
            "ckatlas cka runs/r56 --out cka/r56.npz --png cka/r56.png",
            "ckatlas cka runs/r56_w1 runs/r56_w4 --layers all --passes 10 --out cka/w1_vs_w4.npz",
            "ckatlas cka --arch resnet20 --width 1 --dataset digits --layers blocks --out cka.npz --png cka.png",
            "ckatlas cka --arch resnet20 --arch-b resnet56 --width-b 2 --random-inputs 512 --out cross.npz",
            "ckatlas cka runs/r20 --layers 'stage3.*.add' stage3.2.relu --batch-size 128 --out cka/s3.npz",
        ],
    )
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="one or two finished run directories")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the CKAResult (.npz)")
    p.add_argument("--png", metavar="FILE", help="also draw the heatmap into this PNG")
    p.add_argument("--layer-ticks", action="store_true", help="label the figure's ticks with layer names")
    p.add_argument("--arch", help="registry model with fresh weights (instead of RUN_DIR), e.g. resnet20")
    p.add_argument("--width", type=positive_float, default=1.0, help="its channel multiplier (default 1)")
    p.add_argument("--arch-b", help="a second registry model to compare with --arch")
    p.add_argument("--width-b", type=positive_float, default=1.0, help="its channel multiplier (default 1)")
    p.add_argument("--model-seed", type=int, default=0, help="seed of the fresh weights (default 0)")
    p.add_argument("--dataset", default="digits", help="data for --arch: digits, cifar10, cifar100, folder, npz")
    p.add_argument("--data-dir", metavar="PATH", help="where the dataset is (for runs: default as in config.json)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="which split to use (default test)")
    p.add_argument("--examples", type=positive_int, metavar="N", help="use only the first N examples of the split")
    p.add_argument("--random-inputs", type=positive_int, metavar="N",
                   help="for --arch: N random Gaussian images instead of a dataset")
    p.add_argument("--image-size", type=positive_int, default=32, help="side of the random images (default 32)")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="blocks (default), all, or names / glob patterns")
    p.add_argument("--layers-b", nargs="+", metavar="LAYER", help="layers of the second model (default: --layers)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per minibatch (default 256)")
    p.add_argument("--passes", type=positive_int, default=1, help="passes over the data (default 1)")
    p.add_argument("--no-shuffle", action="store_true", help="consecutive batches instead of a random permutation")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch permutations (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=_run_cka)


def _cka_models(args: argparse.Namespace, device: object) -> tuple[list[object], list[str], object]:
    """The model(s) to compare, their names, and the inputs (see `ckatlas cka --help`)."""
    from pathlib import Path

    import torch

    from ckatlas.data import load_dataset
    from ckatlas.errors import UserInputError
    from ckatlas.models import create_model
    from ckatlas.seeding import make_generator
    from ckatlas.train import load_run

    if args.runs and args.arch:
        raise UserInputError("give RUN_DIR(s) or --arch, not both")
    if len(args.runs) > 2:
        raise UserInputError(f"at most two run directories can be compared, got {len(args.runs)}")
    if args.runs:
        for flag in ("arch_b", "random_inputs"):
            if getattr(args, flag) is not None:
                raise UserInputError(f"--{flag.replace('_', '-')} is for registry models (--arch), not for runs")
        runs = [load_run(run, device=device) for run in args.runs]
        shapes = {tuple(run.info["data"]["image_shape"]) for run in runs}
        if len({run.config.dataset for run in runs}) > 1 or len(shapes) > 1:
            raise UserInputError("the two runs were trained on different data; compare runs of the same dataset")
        data = runs[0].config.load_data(args.data_dir)
        return [run.model for run in runs], [Path(run.run_dir).name for run in runs], _cka_split(data, args.split)
    if not args.arch:
        raise UserInputError("name the model(s): one or two RUN_DIRs, or --arch (a registry model such as resnet20)")
    if args.random_inputs is not None:
        inputs = torch.randn(args.random_inputs, 3, args.image_size, args.image_size, generator=make_generator(args.seed))
        num_classes, channels = 10, 3
    else:
        data = load_dataset(args.dataset, args.data_dir)
        inputs, num_classes, channels = _cka_split(data, args.split), data.num_classes, data.in_channels
    specs = [(args.arch, args.width)] + ([(args.arch_b, args.width_b)] if args.arch_b else [])
    models = [
        create_model(arch, width=width, num_classes=num_classes, in_channels=channels, device=device,
                     generator=make_generator(args.model_seed + i))
        for i, (arch, width) in enumerate(specs)
    ]
    names = [f"{arch}_w{width:g}" for arch, width in specs]
    if len(names) == 2 and names[0] == names[1]:
        names = [f"{names[0]}_seed{args.model_seed}", f"{names[1]}_seed{args.model_seed + 1}"]
    return models, names, inputs


def _cka_split(data: object, split: str) -> object:
    return data.x_test if split == "test" else data.x_train


def _run_cka(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ckatlas.heatmap import heatmap
    from ckatlas.report import plot_heatmap
    from ckatlas.train import resolve_device

    device = resolve_device(args.device)
    models, names, inputs = _cka_models(args, device)
    if args.examples is not None:
        inputs = inputs[: args.examples]
    if args.layers_b and len(models) == 1:
        from ckatlas.errors import UserInputError

        raise UserInputError("--layers-b needs a second model (a second RUN_DIR or --arch-b)")
    result = heatmap(
        models[0],
        inputs,
        models[1] if len(models) > 1 else None,
        layers=_layer_spec(args.layers, "blocks"),
        layers_b=_layer_spec(args.layers_b, None),
        batch_size=args.batch_size,
        passes=args.passes,
        shuffle=not args.no_shuffle,
        seed=args.seed,
        device=device,
        progress=False if args.quiet else None,
        model_names=(names[0], names[-1]),
    )
    out = result.save(Path(args.out))
    if args.png:
        _write_png(plot_heatmap(result, layer_ticks=args.layer_ticks), Path(args.png))
    if not args.quiet:
        la, lb = result.shape
        what = names[0] if len(names) == 1 else f"{names[0]} ({la} layers) vs {names[1]} ({lb} layers)"
        print(f"CKA of {what}: {la} x {lb}, {result.n} examples x {result.passes} pass(es), "
              f"{result.num_batches} batches")
        print(f"wrote {out}" + (f" and {args.png}" if args.png else ""))
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "report",
        "write an experiment's HTML report (one self-contained file)",
        """
        Write the report of a finished experiment ('ckatlas run ... --out DIR') as one
        HTML file with every figure embedded: the depth x width table of block fraction
        and accuracy with the finding in words, the heatmap grid with blocks outlined,
        the block table, block stability, first-PC, probe and pruning panels,
        cross-seed heatmaps and the error analysis, each from the saved results.
        'ckatlas run' already writes it to DIR/report/index.html; use this command to
        write it again or elsewhere.
        """,
        [
            "ckatlas report out/demo",
            "ckatlas report out/depth --out depth-report.html",
        ],
    )
    p.add_argument("experiment_dir", metavar="EXPERIMENT_DIR",
                   help="a finished experiment directory (it holds summary.json)")
    p.add_argument("--out", metavar="FILE", help="where to write the HTML (default: EXPERIMENT_DIR/report/index.html)")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from ckatlas.report.html import write_report

    print(f"wrote {write_report(args.experiment_dir, args.out)}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "demo",
        "the main job: train a depth x width grid on digits, map it, analyse it, write the report",
        """
        Run the 'demo' preset end to end on the built-in digits (no download): train a
        small depth x width grid of ResNets (two seeds of the widest), compute every
        model's CKA heatmap, find the blocks, run the PCA, pruning, cross-seed and error
        analyses and write DIR/report/index.html. About five minutes on a 2-core CPU;
        --quick runs the 'tiny' preset instead (under a minute). Interrupted? Run the
        same command again: only the missing pieces are computed.
        """,
        [
            "ckatlas demo --out demo-out",
            "ckatlas demo --out /tmp/quick --quick",
            "ckatlas demo --out demo-out --jobs 1",
        ],
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the experiment directory to write")
    p.add_argument("--quick", action="store_true", help="the 'tiny' preset: a 2 x 2 grid, 1 epoch")
    p.add_argument("--device", metavar="DEV", help="cpu, cuda or cuda:N (default: CUDA when present)")
    # The demo's models are small: one thread each is faster than two fighting over a
    # 2-core CPU, and one process per core keeps every core busy (BENCHMARKS.md).
    p.add_argument("--threads", type=positive_int, metavar="N", default=1,
                   help="PyTorch threads per process (default 1: fastest for the demo's small models)")
    p.add_argument("--jobs", type=positive_int, metavar="N", default=None,
                   help="processes training and analysing models side by side (default: one per CPU core, at most 4)")
    p.add_argument("--quiet", action="store_true", help="print only where the report is")
    p.set_defaults(func=_run_demo)


def default_jobs() -> int:
    """One process per CPU core this process may use, at most 4 (the demo's default --jobs)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _run_demo(args: argparse.Namespace) -> int:
    import json

    from ckatlas.experiment import run_experiment
    from ckatlas.report.headline import headline_text
    from ckatlas.report.html import REPORT_FILE, write_report

    jobs = args.jobs if args.jobs is not None else default_jobs()
    result = run_experiment("tiny" if args.quick else "demo", args.out, device=args.device, threads=args.threads,
                            jobs=jobs, quiet=args.quiet)
    report = result.root / REPORT_FILE
    if not report.is_file():  # the pipeline writes it; a directory from before the report existed may lack it
        write_report(result.root)
    if not args.quiet:
        print(headline_text(json.loads(result.summary_path.read_text(encoding="utf-8"))))
    print(f"report: {report}")
    return 0


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    # the main job first, then the pipeline from left to right
    _add_demo, _add_run, _add_presets, _add_train, _add_cka, _add_blocks, _add_pca, _add_probes, _add_prune,
    _add_errors, _add_report, _add_info,
]


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
