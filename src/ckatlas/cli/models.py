"""Subcommands on single models: train, dynamics, info (`ckatlas cka`: heatmaps.py)."""

from __future__ import annotations

import argparse

from ckatlas._version import __version__
from ckatlas.analysis.dynamics import DynamicsSettings
from ckatlas.cli._common import (
    add_detector_options,
    add_model_recipe_options,
    command,
    detector_from_args,
    fraction,
    positive_float,
    positive_int,
    recipe_settings,
)
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
    add_model_recipe_options(p)
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
    p.add_argument("--dynamics-examples", type=positive_int, default=DynamicsSettings.examples, metavar="N",
                   help=f"probe images: the first N of the test split (default {DynamicsSettings.examples})")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    p.set_defaults(func=_run_train, on_interrupt="resume-flag")


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
    from ckatlas.io.files import check_writable_file
    from ckatlas.io.rundir import RunDir

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
    from ckatlas.io.files import check_writable_dir
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
        **recipe_settings(args),
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

