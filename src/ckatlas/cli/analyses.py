"""Subcommands that analyse trained models or heatmaps: blocks, pca, probes, prune, errors."""

from __future__ import annotations

import argparse
import dataclasses

from ckatlas.analysis.error_compare import ErrorSettings
from ckatlas.analysis.probes import ProbeSettings
from ckatlas.analysis.prune import PruneSettings
from ckatlas.cli._common import (
    add_detector_options,
    add_settings_options,
    add_run_analysis_options,
    check_outputs,
    command,
    detector_from_args,
    layer_spec,
    open_run,
    positive_int,
    settings_from_args,
    write_png,
)


def add_blocks(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "blocks",
        "find the block structure in a CKA matrix (and its stability across seeds)",
        """
        Find blocks: contiguous runs of layers, at least max(--min-size, --min-fraction x
        layers) long, that stand out: their CKA with one another exceeds their CKA with the
        layers around them (compared at equal distances from the diagonal) by a score of at
        least --min-score (the gap relative to the dissimilarity across the border; the
        heatmap's overall level does not move it) and a CKA gap of at least --min-gap. The
        smooth decay away from the diagonal and the residual checkerboard are not blocks.
        --method threshold is the rule of earlier releases (every pair at CKA >= --threshold
        but a --tolerance share), for comparison. With several matrices (e.g. one per seed)
        it also reports how stable the blocks' positions are. A MATRIX is a within-model
        CKAResult (.npz, as `ckatlas cka` saves it), a .npy (L, L) array, or an .npz with a
        'matrix' array (and optionally 'layers_a', the layer names).

        Writes --out (JSON: the blocks, or with several matrices the stability and every
        model's blocks) and a figure beside it with the suffix .png.
        """,
        [
            "ckatlas blocks cka/resnet56_w4.npy",
            "ckatlas blocks cka/resnet56_w4.npz --min-score 0.6 --out analysis/blocks_w4.json",
            "ckatlas blocks cka/resnet56_w4.npz --method threshold --threshold 0.9   # the rule of earlier releases",
            "ckatlas blocks cka/seed*.npy --out analysis/block_stability.json",
            "ckatlas blocks cka/resnet56_w4.npz --layers stage3.0 stage3.1 stage3.2 stage3.3",
        ],
    )
    p.add_argument("matrices", nargs="+", metavar="MATRIX", help=".npy or .npz CKA matrix of one model")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="analyse only these layers (names or row indices)")
    p.add_argument("--out", metavar="FILE", help="write the result as JSON here, and a .png figure beside it")
    p.add_argument("--quiet", action="store_true", help="print only where the results are")
    add_detector_options(p)
    p.set_defaults(func=_run_blocks)


def _load_cka_matrix(path: str) -> tuple[object, list[str] | None]:
    """A CKA matrix file: a .npy array, a saved `CKAResult`, or an .npz with 'matrix' (and 'layers_a')."""
    from pathlib import Path

    import numpy as np

    from ckatlas.errors import UserInputError
    from ckatlas.io.files import read_npz_arrays

    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"{file}: no such file (expected a .npy or .npz CKA matrix)")
    if file.suffix not in (".npy", ".npz"):
        raise UserInputError(f"{file}: expected a .npy matrix or an .npz with a 'matrix' array")
    if file.suffix == ".npy":
        with open(file, "rb") as fh:
            if fh.read(6) != b"\x93NUMPY":
                raise UserInputError(f"{file}: not an .npy file (as numpy.save writes it); expected a CKA matrix")
        try:
            return np.load(file, allow_pickle=False), None
        except (OSError, ValueError, EOFError) as exc:
            raise UserInputError(f"{file}: not a readable .npy array ({exc})") from None
    data = read_npz_arrays(file)
    if "header" in data:
        from ckatlas.heatmap import CKAResult

        return CKAResult.load(file), None
    if "matrix" not in data:
        raise UserInputError(f"{file}: expected an array named 'matrix', found {sorted(data)}")
    names = [str(n) for n in data["layers_a"]] if "layers_a" in data else None
    return data["matrix"], names


def _run_blocks(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ckatlas.analysis import block_stability
    from ckatlas.io.files import atomic_open, check_writable_file, output_group
    from ckatlas.report import plot_block_frequency, plot_blocks

    if args.out:
        check_writable_file(args.out, "the block result", ".json")
        check_writable_file(Path(args.out).with_suffix(".png"), "the block figure")
    detector = detector_from_args(args)
    layers = None if args.layers is None else [int(x) if x.isdigit() else x for x in args.layers]
    matrices, results = [], []
    for path in args.matrices:
        matrix, names = _load_cka_matrix(path)
        result = detector.find(matrix, layers=layers, layer_names=names)
        if not args.quiet:
            print(f"{path}: {result.summary()}")
        matrices.append(matrix)
        results.append(result)
    stability = None
    if len(results) > 1:
        stability = block_stability(results, labels=list(args.matrices))
        if not args.quiet:
            print(f"stability: {stability.summary()}")
    if args.out:
        out = Path(args.out)
        figure_path = out.with_suffix(".png")
        with output_group():  # the result and its figure appear together or not at all
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


def add_pca(sub: argparse._SubParsersAction) -> None:
    p = command(
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
    add_run_analysis_options(p)
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="blocks (default), all, or module names / glob patterns")
    p.add_argument("--scatter-layer", metavar="LAYER", help="layer of the PC scatter (default: largest PC1 share)")
    p.add_argument("--scatter-examples", type=positive_int, default=2000,
                   help="test examples in the scatter (default 2000; its PCs use all of them at once)")
    p.set_defaults(func=_run_pca)


def _run_pca(args: argparse.Namespace) -> int:

    import numpy as np

    from ckatlas.analysis import pc_scatter, principal_components
    from ckatlas.capture import resolve_layers
    from ckatlas.runtime.devices import resolve_device
    from ckatlas.io.files import output_group
    from ckatlas.report import plot_pc_heatmaps, plot_pc_scatter, plot_pc_variance

    out = check_outputs(args)
    model, data = open_run(args)
    if args.scatter_layer is not None:
        resolve_layers(model, [args.scatter_layer])  # a wrong name fails before the pass over the data
    result = principal_components(model, data.x_test, layer_spec(args.layers, "blocks"), batch_size=args.batch_size,
                                  seed=args.seed, device=resolve_device(args.device))
    if not args.quiet:
        print(result.summary())
    layer = args.scatter_layer or result.layers[int(np.nanargmax(result.variance_explained))]
    count = min(args.scatter_examples, len(data.x_test))
    scatter = pc_scatter(model, data.x_test[:count], layer, data.y_test[:count], batch_size=args.batch_size,
                         device=resolve_device(args.device))
    with output_group():  # the four files appear together or not at all
        result.save(out / "pca.npz")
        write_png(plot_pc_variance(result), out / "pc_variance.png")
        write_png(plot_pc_heatmaps(result)[0], out / "pc_heatmaps.png")
        write_png(plot_pc_scatter(scatter, class_names=list(data.class_names)), out / "pc_scatter.png")
    print(f"wrote {out}/: pca.npz, pc_variance.png, pc_heatmaps.png, pc_scatter.png ({layer})")
    return 0


def add_probes(sub: argparse._SubParsersAction) -> None:
    p = command(
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
    add_run_analysis_options(p)
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="module names / glob patterns (default: pre- and post-residual of every block)")
    add_settings_options(p, ProbeSettings, skip=("seed",))  # --seed: add_run_analysis_options
    p.set_defaults(func=_run_probes)


def _run_probes(args: argparse.Namespace) -> int:

    from ckatlas.analysis import linear_probes
    from ckatlas.report import plot_probe_accuracy
    from ckatlas.runtime.devices import resolve_device

    settings = settings_from_args(args, ProbeSettings)
    out = check_outputs(args)
    model, data = open_run(args)
    result = linear_probes(model, data, layer_spec(args.layers, None), **dataclasses.asdict(settings),
                           batch_size=args.batch_size, device=resolve_device(args.device))
    if not args.quiet:
        print(result.summary())
    result.save(out / "probes.json")
    write_png(plot_probe_accuracy(result), out / "probes.png")
    print(f"wrote {out}/: probes.json, probes.png")
    return 0


def add_prune(sub: argparse._SubParsersAction) -> None:
    p = command(
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
    add_run_analysis_options(p)
    p.add_argument("--stages", nargs="+", type=positive_int, metavar="S", help="stages to prune (default: all)")
    add_settings_options(p, PruneSettings)
    p.add_argument("--blocks", metavar="JSON", help="block result of this run (ckatlas blocks --out)")
    p.set_defaults(func=_run_prune)


def _run_prune(args: argparse.Namespace) -> int:

    from ckatlas.analysis import BlockResult, prune_blocks
    from ckatlas.report import plot_pruning
    from ckatlas.runtime.devices import resolve_device

    settings = settings_from_args(args, PruneSettings)
    out = check_outputs(args)
    block_result = BlockResult.load(args.blocks) if args.blocks else None
    model, data = open_run(args)
    result = prune_blocks(
        model, data, stages=args.stages, **dataclasses.asdict(settings),
        batch_size=args.batch_size, seed=args.seed, device=resolve_device(args.device), block_result=block_result,
    )
    if not args.quiet:
        print(result.summary())
    result.save(out / "prune.json")
    write_png(plot_pruning(result), out / "prune.png")
    print(f"wrote {out}/: prune.json, prune.png")
    return 0


def add_errors(sub: argparse._SubParsersAction) -> None:
    p = command(
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
    add_settings_options(p, ErrorSettings)
    p.add_argument("--out", metavar="DIR", help="write the results and figures into this directory")
    p.add_argument("--quiet", action="store_true", help="print only where the results are")
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
    from ckatlas.io.files import atomic_open, atomic_write_text, check_writable_dir, output_group
    from ckatlas.report import plot_class_differences, plot_example_scatter

    if args.out:
        check_writable_dir(args.out, "the error analysis")
    settings = settings_from_args(args, ErrorSettings)
    pop_a = load_predictions(args.a, name=args.name_a)
    pop_b = load_predictions(args.b, name=args.name_b)
    result = compare_populations(
        pop_a,
        pop_b,
        **dataclasses.asdict(settings),
        class_groups=None if args.groups is None else load_class_groups(args.groups),
        class_names=None if args.class_names is None else _read_class_names(args.class_names),
    )
    if not args.quiet:
        print(result.summary())
    if args.out:
        out = Path(args.out)
        figures = {
            "example_scatter.png": plot_example_scatter(result)[0],
            "class_differences.png": plot_class_differences(result, level="classes"),
        }
        if result.groups is not None:
            figures["group_differences.png"] = plot_class_differences(result, level="groups")
        with output_group():  # every file appears, or none
            result.save(out / "errors.json")
            atomic_write_text(out / "classes.md", result.class_table_markdown("classes"))
            if result.groups is not None:
                atomic_write_text(out / "groups.md", result.class_table_markdown("groups"))
            for name, ax in figures.items():
                with atomic_open(out / name, "wb") as fh:
                    ax.figure.savefig(fh, format="png", dpi=150, bbox_inches="tight")
        print(f"wrote {out}/: errors.json, classes.md, {', '.join(figures)}")
    return 0

