"""Training one model into a run directory, resumable after any interruption.

    result = train(TrainConfig(arch="resnet20", width=2, dataset="digits"), "runs/r20w2")
    run = load_run("runs/r20w2")          # model (eval mode), config, metrics
    logits = predict(run.model, run.config.load_data().x_test)

A run directory (DESIGN.md):

    config.json          resolved settings, data summary, versions, seed
    model.safetensors    final weights
    metrics.json         per-epoch loss/accuracy, final test accuracy ("final" is null until done)
    predictions.npz      test-set logits and labels, in dataset order
    state/checkpoint.safetensors   model, optimizer and generator state after the last
                         finished epoch, its bookkeeping as JSON in the file's metadata

Every file is written atomically (`ckatlas.io.files`), so a killed run leaves at most
a stray hidden `.tmp` file, never a half-written file under a final name. The
checkpoint is one file, so its tensors and its bookkeeping always agree. On the
CPU with a fixed seed, a resumed run ends with the same weights, bit for bit, as
one that was never interrupted.

Defaults follow the usual CIFAR ResNet recipe: SGD with momentum 0.9, learning
rate 0.1 for batch size 128 (He et al. 2016), weight decay 5e-4 (Zagoruyko &
Komodakis 2016), a cosine schedule to zero over all steps (Loshchilov & Hutter
2017), 200 epochs. Digits default to 15 epochs at 16x16, which reaches >= 97%
test accuracy with ResNet-20 in under two minutes on two CPU cores
(BENCHMARKS.md).
"""

from ckatlas.train.config import DEFAULT_EPOCHS, RECIPES, TrainConfig, build_model
from ckatlas.train.loop import cosine_lr, fit, initial_model, learning_rate, parameter_groups, train
from ckatlas.train.predict import predict, resolve_device
from ckatlas.train.runs import LoadedRun, TrainResult, load_run, run_is_finished

__all__ = [
    "DEFAULT_EPOCHS",
    "LoadedRun",
    "RECIPES",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "cosine_lr",
    "fit",
    "initial_model",
    "learning_rate",
    "load_run",
    "parameter_groups",
    "predict",
    "resolve_device",
    "run_is_finished",
    "train",
]
