"""Subcommands on single models: train, cka, info."""

from __future__ import annotations

import argparse

from ckatlas._version import __version__
from ckatlas.cli._common import (
    add_detector_options,
    command,
    detector_from_args,
    fraction,
    layer_spec,
    positive_float,
    positive_int,
    write_png,
)
from ckatlas.cka.measures import MEASURES, measures_help
from ckatlas.tokens import TOKEN_MODES
from ckatlas.train.config import PRECISIONS


def add_train(sub: argparse._SubParsersAction) -> None:
    p = command(
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

        Datasets: digits (built in, 16x16 by default), fashion-mnist (28x28; Debian's package
        dataset-fashion-mnist, or --data-dir: a folder with its four IDX files), mnist and kmnist
        (--data-dir: such a folder), cifar10 and cifar100 (--data-dir: the
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
            "ckatlas train --arch resnet20 --dataset fashion-mnist --recipe paper --epochs 30 --out runs/r20_paper",
        ],
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the run directory")
    p.add_argument("--arch", default="resnet20", help="model name: resnet<depth>, cnn<depth>, ... (resnet20)")
    p.add_argument("--width", type=positive_float, default=1.0, help="channel multiplier (default 1)")
    p.add_argument("--dataset", default="digits", help="digits, fashion-mnist, mnist, kmnist, cifar10, cifar100, folder or npz (digits)")
    p.add_argument("--data-dir", metavar="PATH", help="where the dataset is (not for digits)")
    p.add_argument("--fraction", type=fraction, default=1.0, help="share of each training class, e.g. 1/4 (1)")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the --fraction subset (default 0)")
    p.add_argument("--epochs", type=positive_int, help="passes over the training set (15 digits, 200 otherwise)")
    p.add_argument("--batch-size", type=positive_int, help="examples per step (default 128)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default 0.1; paper recipe 0.01)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    p.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], help="sgd (default) or adamw (transformers)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default 5e-4; paper recipe 2e-4 on kernels)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing (default 0)")
    p.add_argument("--no-augment", action="store_true", help="no pad-and-crop or flips")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, data order and augmentation (0)")
    p.add_argument("--eval-every", type=int, default=1, help="test every this many epochs; 0: at the end (1)")
    _add_model_recipe_options(p)
    p.add_argument("--lr-schedule", choices=("cosine-step", "cosine-epoch"), help="cosine per step (default) or epoch")
    p.add_argument("--decay-scope", choices=("all", "kernels"), help="weight decay on all parameters (default) or "
                                                                      "conv/linear kernels only")
    p.add_argument("--pad-mode", choices=("zeros", "reflect"), help="padding of the random crop (default zeros)")
    p.add_argument("--keep", choices=("final", "best-val"),
                   help="final weights (default) or the epoch best on a held-out validation split")
    p.add_argument("--val-fraction", type=fraction, help="share of each class held out for --keep best-val (0.1)")
    p.add_argument("--bn-momentum", type=fraction, help="BatchNorm momentum (0.1; the paper recipe 0.01)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, help="arithmetic of the training steps: auto (default: bfloat16 "
                   "autocast where the device has it natively, else float32), float32 or bfloat16")
    p.add_argument("--resume", action="store_true", help="finish the interrupted run in --out")
    p.add_argument("--dynamics", action="store_true",
                   help="record the heatmap, blocks and first-PC variance at some epochs (dynamics.npz)")
    p.add_argument("--dynamics-epochs", type=_epoch_list, metavar="LIST",
                   help="epochs to record, e.g. 0,1,5,15 (0: initialisation; default 0, 1, 2, 4, ... and the last)")
    p.add_argument("--dynamics-examples", type=positive_int, default=256, metavar="N",
                   help="probe images: the first N of the test split (default 256)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    p.set_defaults(func=_run_train, on_interrupt="resume-flag")


def _add_model_recipe_options(p: argparse.ArgumentParser) -> None:
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


def _recipe_settings(args: argparse.Namespace) -> dict[str, object]:
    """The recipe options given on the command line (None: the recipe's value)."""
    given = {
        "model_style": args.model_style,
        "normalize": None if args.no_normalize is None else False,
        "resize": args.resize,
    }
    return {k: v for k, v in given.items() if v is not None}


def _epoch_list(text: str) -> tuple[int, ...]:
    try:
        epochs = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs as integers separated by commas (e.g. 0,1,5,15), got {text!r}")
    if any(e < 0 for e in epochs):
        raise argparse.ArgumentTypeError(f"epochs must be >= 0 (0: initialisation), got {text!r}")
    return epochs


def add_dynamics(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "dynamics",
        "show how a run's block structure arose during training",
        """
        Read the dynamics.npz that 'ckatlas train --dynamics' recorded in a run directory
        (the heatmap over every layer of the model on the first test images, its blocks and
        each layer's first-PC variance, at each recorded epoch; 0 is the initialisation) and
        print one line per epoch: block fraction, block strength, blocks (first-last layer),
        mean first-PC variance. The blocks are found again in the recorded heatmaps with the
        detector options below (their defaults are the detector's), so a record made with
        another detector can be read with this one. --png draws the block fraction against
        epoch beside the heatmap of each recorded epoch.
        """,
        [
            "ckatlas train --arch resnet20 --width 2 --epochs 30 --dynamics --out runs/r20w2",
            "ckatlas dynamics runs/r20w2 --png runs/r20w2/dynamics.png",
        ],
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory trained with --dynamics")
    p.add_argument("--png", metavar="FILE", help="draw the record into this PNG")
    add_detector_options(p)
    p.set_defaults(func=_run_dynamics)


def _run_dynamics(args: argparse.Namespace) -> int:
    from ckatlas.analysis.dynamics import BlockDynamics
    from ckatlas.errors import UserInputError
    from ckatlas.files import check_writable_file
    from ckatlas.rundir import RunDir

    path = RunDir(args.run_dir).dynamics
    if not path.is_file():
        raise UserInputError(f"{args.run_dir} holds no dynamics.npz; train it with 'ckatlas train ... --dynamics'")
    if args.png:
        check_writable_file(args.png, "the figure", ".png")
    detector = detector_from_args(args)  # checked before the record is read
    record = BlockDynamics.load(path).redetect(detector)
    print(record.summary())
    if args.png:
        from ckatlas.report.dynamics_figures import plot_dynamics

        print(f"wrote {plot_dynamics(record, args.png)}")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from ckatlas.files import check_writable_dir
    from ckatlas.train import TrainConfig, train

    check_writable_dir(args.out, "the run")
    given = {  # options left at None fall back to the recipe's value
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "momentum": args.momentum,
        "nesterov": args.nesterov,
        "optimizer": args.optimizer,
        "weight_decay": args.weight_decay,
        "lr_schedule": args.lr_schedule,
        "decay_scope": args.decay_scope,
        "pad_mode": args.pad_mode,
        "keep": args.keep,
        "val_fraction": args.val_fraction,
        "bn_momentum": args.bn_momentum,
        "precision": args.precision,
    }
    config = TrainConfig.from_recipe(
        args.recipe,
        arch=args.arch,
        width=args.width,
        dataset=args.dataset,
        data_dir=args.data_dir,
        fraction=args.fraction,
        subset_seed=args.subset_seed,
        label_smoothing=args.label_smoothing,
        augment=not args.no_augment,
        seed=args.seed,
        eval_every=args.eval_every,
        **{k: v for k, v in given.items() if v is not None},
        **_recipe_settings(args),
    )
    dynamics = None
    if args.dynamics or args.dynamics_epochs is not None:
        from ckatlas.analysis.dynamics import DynamicsSettings

        dynamics = DynamicsSettings(epochs=args.dynamics_epochs, examples=args.dynamics_examples,
                                    batch_size=min(256, args.dynamics_examples))
        dynamics.check()
        dynamics.resolved_epochs(config.resolved().epochs)
    result = train(config, args.out, resume=args.resume, quiet=args.quiet, device=args.device, dynamics=dynamics)
    if not args.quiet:
        final = result.metrics["final"]
        print(
            f"{result.run_dir}: test accuracy {final['test_accuracy']:.2%} after {final['epochs']} epochs "
            f"({final['train_seconds']:.0f} s of training)"
        )
    return 0


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
    _add_model_recipe_options(p)
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
                   help="how a transformer layer's tokens become one example (ckatlas.tokens): auto (default: "
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
    from ckatlas.seeding import make_generator
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
                                     data_dir=args.data_dir, **_recipe_settings(args)).resolved()
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

    from ckatlas.files import check_writable_file, output_group
    from ckatlas.heatmap import heatmap
    from ckatlas.report import plot_heatmap
    from ckatlas.devices import resolve_device

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


def add_info(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "info",
        "versions, devices and threads (paste it into a bug report)",
        "Print the versions of ckatlas and its main dependencies, the devices PyTorch sees and the thread count.",
        ["ckatlas info", "ckatlas info --json > env.json"],
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(func=_run_info)


def _training_precision() -> str:
    """What `precision = "auto"` trains in here, on the default device, and why."""
    from ckatlas.train.predict import cpu_has_bf16, resolve_device, resolve_precision

    device = resolve_device(None)
    precision = resolve_precision("auto", device)
    if device.type == "cpu":
        why = "the CPU has AVX-512 BF16 or AMX" if cpu_has_bf16() else "the CPU has no native bfloat16"
    else:
        why = f"{device} {'supports' if precision == 'bfloat16' else 'lacks'} bfloat16"
    return f"{precision} on {device} (precision 'auto': {why}; --precision float32 to change)"


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
        "training": _training_precision(),
    }
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:>13}: {value}")
    return 0

