"""`ckatlas cka`: the CKA heatmap (or another measure's) of a run, of two runs, or of registry models."""

from __future__ import annotations

import argparse

from ckatlas.cli._common import (
    add_model_recipe_options,
    command,
    layer_spec,
    positive_float,
    positive_int,
    recipe_settings,
    write_png,
)
from ckatlas.cka.measures import MEASURES, measures_help
from ckatlas.capture.tokens import TOKEN_MODES
from ckatlas.train.config import PRECISIONS


def add_cka(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "cka",
        "CKA heatmap of one model's layers, or of two models' layers, on a dataset",
        """
        Minibatch CKA (Nguyen, Raghu & Kornblith, 2021) between the layers of one model, or
        between the layers of two models on the same batches, in inference mode. The models
        are saved runs (RUN_DIR, as 'ckatlas train --out' writes them; the data are the test
        split of the run's own dataset) or registry models with fresh random weights (--arch,
        --width; data from --dataset, or --random-inputs). A registry model is built as
        'ckatlas train' builds it from the same words (--recipe, --model-style; ckatlas's
        recipe: torchvision-style ResNets) and sees the images training would (--resize,
        --no-normalize), so fresh weights are of the model a run trains. --passes > 1
        reshuffles the data each pass (the paper uses 10).

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
    p.add_argument("--own-range", action="store_true",
                   help="colour the figure over this heatmap's own off-diagonal range, not 0..1 (shows what stands "
                        "out in a heatmap whose values all lie in a narrow band)")
    p.add_argument("--arch", help="registry model with fresh weights (instead of RUN_DIR), e.g. resnet20")
    p.add_argument("--width", type=positive_float, help="its channel multiplier (default 1)")
    p.add_argument("--arch-b", help="a second registry model to compare with --arch")
    p.add_argument("--width-b", type=positive_float, help="its channel multiplier (default 1)")
    p.add_argument("--model-seed", type=int, help="seed of the fresh weights (default 0)")
    add_model_recipe_options(p)
    p.add_argument("--dataset", help="data for --arch: digits (default), fashion-mnist, mnist, kmnist, cifar10, cifar100, "
                   "folder, npz (a run is mapped on its own data)")
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
    p.add_argument("--tokens", choices=TOKEN_MODES, default="auto",
                   help="how a transformer layer's tokens become one example (ckatlas.capture.tokens): auto (default: "
                        "flattened for images), flatten, mean, first or last")
    p.add_argument("--measure", choices=tuple(MEASURES), default="cka",
                   help="the similarity of each layer pair (default cka; ckatlas.cka.measures): "
                        + measures_help().replace("%", "%%"))
    p.add_argument("--no-shuffle", action="store_true", help="consecutive batches instead of a random permutation")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch permutations (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, help="arithmetic of the training steps: auto (default: bfloat16 "
                   "autocast where the device has it natively, else float32), float32 or bfloat16")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=_run_cka)


def _cka_models(args: argparse.Namespace, device: object) -> tuple[list[object], list[str], object]:
    """The model(s) to compare, their names, and the inputs (see `ckatlas cka --help`)."""
    from pathlib import Path

    import torch

    from dataclasses import replace

    from ckatlas.errors import UserInputError
    from ckatlas.runtime.seeding import make_generator
    from ckatlas.train import TrainConfig, build_model, load_run

    if args.runs and args.arch:
        raise UserInputError("give RUN_DIR(s) or --arch, not both")
    if len(args.runs) > 2:
        raise UserInputError(f"at most two run directories can be compared, got {len(args.runs)}")
    if args.runs:
        for flag in ("arch_b", "random_inputs", "model_style", "resize", "no_normalize", "dataset", "width", "width_b",
                     "model_seed"):
            if getattr(args, flag) is not None:
                raise UserInputError(f"--{flag.replace('_', '-')} is for registry models (--arch), not for runs: a run "
                                     "is mapped with its own model and data (its config.json)")
        runs = [load_run(run, device=device) for run in args.runs]
        _same_data(runs)
        data = runs[0].config.load_data(args.data_dir)
        return [run.model for run in runs], [Path(run.run_dir).name for run in runs], _cka_split(data, args.split)
    if not args.arch:
        raise UserInputError("name the model(s): one or two RUN_DIRs, or --arch (a registry model such as resnet20)")
    width, width_b = args.width or 1.0, args.width_b or 1.0
    model_seed = args.model_seed or 0
    config = TrainConfig.from_recipe(args.recipe, arch=args.arch, width=width, dataset=args.dataset or "digits",
                                     data_dir=args.data_dir, **recipe_settings(args)).resolved()
    if args.random_inputs is not None:
        inputs = torch.randn(args.random_inputs, 3, args.image_size, args.image_size, generator=make_generator(args.seed))
        num_classes, channels = 10, 3
    else:
        data = config.load_data()
        inputs, num_classes, channels = _cka_split(data, args.split), data.num_classes, data.in_channels
    specs = [(args.arch, width)] + ([(args.arch_b, width_b)] if args.arch_b else [])
    models = [
        build_model(replace(config, arch=arch, width=w), num_classes, channels,
                    generator=make_generator(model_seed + i)).to(device)
        for i, (arch, w) in enumerate(specs)
    ]
    names = [f"{arch}_w{w:g}" for arch, w in specs]
    if len(names) == 2 and names[0] == names[1]:
        names = [f"{names[0]}_seed{model_seed}", f"{names[1]}_seed{model_seed + 1}"]
    return models, names, inputs


def _same_data(runs: list) -> None:
    """Two runs are compared on one set of images: refuse runs of different data, naming what differs."""
    from ckatlas.errors import UserInputError

    if len(runs) < 2:
        return
    a, b = runs
    settings = {
        "dataset": (a.config.dataset, b.config.dataset),
        "image shape": (tuple(a.info["data"]["image_shape"]), tuple(b.info["data"]["image_shape"])),
        "pixel normalisation": (a.config.normalize, b.config.normalize),
    }
    differs = [f"{name} {x} ({a.run_dir.name}) vs {y} ({b.run_dir.name})" for name, (x, y) in settings.items() if x != y]
    if differs:
        raise UserInputError("the two runs were trained on different data: " + "; ".join(differs)
                             + "; compare runs of the same dataset and image size")


def _cka_split(data: object, split: str) -> object:
    return data.x_test if split == "test" else data.x_train


def _run_cka(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ckatlas.io.files import check_writable_file, output_group
    from ckatlas.heatmap import heatmap
    from ckatlas.report import plot_heatmap
    from ckatlas.runtime.devices import resolve_device

    check_writable_file(args.out, "the CKA result", ".npz")
    if args.png:
        check_writable_file(args.png, "the heatmap figure", ".png")
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
        layers=layer_spec(args.layers, "blocks"),
        layers_b=layer_spec(args.layers_b, None),
        batch_size=args.batch_size,
        passes=args.passes,
        shuffle=not args.no_shuffle,
        seed=args.seed,
        device=device,
        progress=False if args.quiet else None,
        model_names=(names[0], names[-1]),
        tokens=args.tokens,
        measure=args.measure,
    )
    with output_group():  # the heatmap and its figure appear together or not at all
        out = result.save(Path(args.out))
        if args.png:
            write_png(plot_heatmap(result, layer_ticks=args.layer_ticks,
                                   value_range="own" if args.own_range else (0.0, 1.0)), Path(args.png))
    if not args.quiet:
        la, lb = result.shape
        what = names[0] if len(names) == 1 else f"{names[0]} ({la} layers) vs {names[1]} ({lb} layers)"
        label = "CKA" if args.measure == "cka" else MEASURES[args.measure].label
        print(f"{label} of {what}: {la} x {lb}, {result.n} examples x {result.passes} pass(es), "
              f"{result.num_batches} batches")
        print(f"wrote {out}" + (f" and {args.png}" if args.png else ""))
    return 0
