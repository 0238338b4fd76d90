"""Linear probes: how linearly decodable the classes are at each layer.

Nguyen, Raghu & Kornblith (2021, Section 5) train a linear classifier on the
representation before and after each residual sum. Inside a block structure the
accuracy of the post-residual probes barely moves while the pre-residual (branch)
ones stay lower: the residual stream carries the representation through the block.

Layers (`default_probe_layers`): for each residual block of a ckatlas model, in
forward order, the output of its residual branch before the sum
(``stage{s}.{i}.branch.bn2`` for a basic block; the branch's last module), kind
"pre-residual", then the residual sum (``stage{s}.{i}.add``), kind
"post-residual". A block without a residual sum (the plain CNN) gives its output
(``stage{s}.{i}.relu``), kind "block output", in place of the sum.

Features: each layer's activations on the training and test splits (eval mode),
flattened. A 4-D feature map (N, C, H, W) with more than ``max_features`` values
per example is average-pooled first (``adaptive_avg_pool2d``) to an s x s grid
with s = max(1, floor(sqrt(max_features / C))) (at most H x W), i.e. the finest
square grid that keeps C * s^2 <= max_features (or global average pooling when C
alone exceeds it). Other shapes are only flattened. Features are standardised with
the mean and standard deviation of the examples the probe is fitted on.

Probe: multinomial logistic regression with an L2 penalty (scikit-learn's
`LogisticRegression`, lbfgs). Its inverse penalty strength C is chosen from
``c_grid`` on a validation split carved from the training split (per class, a
seeded random ``val_fraction`` of the examples; `validation_split`): the C of the
highest validation accuracy, the smallest such C on a tie. The probe is then refit
on the whole training split with that C and scored on the test split, which plays
no part in the choice.

Memory: the features of a group of layers are held for all training and test
examples at once (4 bytes per value); layers are put into groups of at most
``feature_memory_gb`` each, one pass over the data per group.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from torch import nn

from ckatlas.capture import LayerSpec, capture_activations, resolve_layers
from ckatlas.runtime.devices import run_device
from ckatlas.data.subsets import validation_split
from ckatlas.errors import UserInputError
from ckatlas.io.results import JsonResult

DEFAULT_C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
DEFAULT_MAX_FEATURES = 4096


@dataclass(frozen=True)
class ProbeSettings:
    """How `linear_probes` fits its probes: the one place of these settings and their defaults
    (`[analyses.probes]` is this class with a run selection; `ckatlas probes` makes its options from it)."""

    c_grid: tuple[float, ...] = field(default=DEFAULT_C_GRID,
                                      metadata={"help": "inverse L2 penalty strengths to choose from"})
    val_fraction: float = field(default=0.2, metadata={"help": "share of each training class held out to choose C"})
    max_features: int = field(default=DEFAULT_MAX_FEATURES,
                              metadata={"help": "pool feature maps down to at most this many values per example"})
    seed: int = field(default=0, metadata={"help": "seed of the validation split"})

    def check(self, where: str = "") -> None:
        """One clear error for a setting `linear_probes` cannot use (`where`: e.g. " in [analyses.probes]")."""
        c_grid = self.c_grid
        if isinstance(c_grid, (str, bytes)) or not c_grid or any(
                isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0 for c in c_grid):
            raise UserInputError(f"c_grid{where} must be a non-empty list of positive numbers, got {c_grid!r}")
        if not isinstance(self.val_fraction, (int, float)) or not 0 < self.val_fraction < 1:
            raise UserInputError(f"val_fraction{where} must be in (0, 1), got {self.val_fraction!r}")
        if isinstance(self.max_features, bool) or not isinstance(self.max_features, int) or self.max_features < 1:
            raise UserInputError(f"max_features{where} must be a positive integer, got {self.max_features!r}")


@dataclass
class ProbeResult(JsonResult):
    """Test accuracy of a linear probe on each layer.

    Attributes:
        layers: the probed layers, input to output.
        kinds: "pre-residual", "post-residual", "block output" or "layer", per layer.
        num_features: features per example after pooling, per layer.
        test_accuracy: (L,) accuracy on the test split of the probe refit with the chosen C.
        val_accuracy: (L, len(c_grid)) validation accuracy of each C.
        chosen_c: (L,) the chosen inverse penalty strength.
        converged: per layer, whether the final fit converged within ``max_iter``.
        c_grid: the candidate C values.
        num_train, num_val, num_test: examples fitted on (during selection: num_train
            - num_val), validated on and tested on.
        majority_accuracy: test accuracy of always predicting the most frequent test class.
        metadata: settings (seed, val_fraction, max_features, max_iter).
    """

    FORMAT = "ckatlas.ProbeResult"
    WHAT = "a probe result"

    layers: list[str]
    kinds: list[str]
    num_features: list[int]
    test_accuracy: np.ndarray
    val_accuracy: np.ndarray
    chosen_c: np.ndarray
    converged: list[bool]
    c_grid: list[float]
    num_train: int
    num_val: int
    num_test: int
    majority_accuracy: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.test_accuracy = np.asarray(self.test_accuracy, dtype=np.float64)
        self.val_accuracy = np.asarray(self.val_accuracy, dtype=np.float64).reshape(len(self.layers), len(self.c_grid))
        self.chosen_c = np.asarray(self.chosen_c, dtype=np.float64)

    @property
    def best_val_accuracy(self) -> np.ndarray:
        """(L,) validation accuracy of the chosen C."""
        return self.val_accuracy.max(axis=1)

    def summary(self) -> str:
        """One line per layer."""
        width = max(len(name) for name in self.layers)
        lines = [f"linear probes on {len(self.layers)} layers ({self.num_train} train / {self.num_val} of them "
                 f"for validation / {self.num_test} test; majority class {self.majority_accuracy:.3f})"]
        for i, name in enumerate(self.layers):
            lines.append(f"  {name:<{width}}  {self.kinds[i]:<13}  test {self.test_accuracy[i]:.3f}  "
                         f"val {self.best_val_accuracy[i]:.3f}  C={self.chosen_c[i]:g}")
        return "\n".join(lines)


# -- layers and features ---------------------------------------------------------------------
def default_probe_layers(model: nn.Module) -> list[tuple[str, str]]:
    """(layer name, kind) of the pre- and post-residual layers of every block (module docstring)."""
    if not callable(getattr(model, "residual_blocks", None)):
        raise UserInputError(
            f"{type(model).__name__} has no residual_blocks(): name the layers to probe (layers=[...])"
        )
    out = []
    for ref in model.residual_blocks():
        leaves = [n for n, m in ref.block.branch.named_modules() if n and not list(m.children())]
        out.append((f"{ref.name}.branch.{leaves[-1]}", "pre-residual"))
        if ref.block.add is not None:
            out.append((f"{ref.name}.add", "post-residual"))
        else:
            out.append((f"{ref.name}.relu", "block output"))
    if not out:
        raise UserInputError(f"{type(model).__name__} has no residual blocks: name the layers to probe (layers=[...])")
    return out


def _known_kinds(model: nn.Module) -> dict[str, str]:
    try:
        return dict(default_probe_layers(model))
    except UserInputError:  # not a model with residual blocks: every layer is just a "layer"
        return {}


def pool_features(acts: torch.Tensor, max_features: int = DEFAULT_MAX_FEATURES) -> torch.Tensor:
    """Flatten activations (N, ...) to (N, F), average-pooling large feature maps (module docstring)."""
    if acts.ndim == 4:
        c, h, w = acts.shape[1:]
        if c * h * w > max_features:
            side = max(1, math.isqrt(max_features // c)) if c <= max_features else 1
            acts = F.adaptive_avg_pool2d(acts, (min(side, h), min(side, w)))
    return acts.reshape(acts.shape[0], -1)


def _features(
    model: nn.Module, names: list[str], x: torch.Tensor, batch_size: int, device: torch.device, max_features: int
) -> dict[str, np.ndarray]:
    feats = capture_activations(model, names, x, batch_size=batch_size, device=device, to=None,  # pooled where made
                                reduce=lambda act: pool_features(act.float(), max_features).cpu())
    return {name: feats[name].numpy() for name in names}


def _feature_sizes(
    model: nn.Module, names: list[str], x: torch.Tensor, device: torch.device, max_features: int
) -> list[int]:
    feats = _features(model, names, x[:2], 2, device, max_features)
    return [feats[n].shape[1] for n in names]


def _layer_groups(sizes: list[int], num_examples: int, budget_gb: float) -> list[list[int]]:
    """Consecutive groups of layers whose float32 features for all examples fit the budget."""
    budget = budget_gb * 2**30
    groups: list[list[int]] = [[]]
    used = 0.0
    for i, size in enumerate(sizes):
        need = 4.0 * size * num_examples
        if groups[-1] and used + need > budget:
            groups.append([])
            used = 0.0
        groups[-1].append(i)
        used += need
    return groups


# -- probes ------------------------------------------------------------------------------------
def _standardised(fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean = fit.mean(axis=0)
    std = fit.std(axis=0)
    std[std < 1e-12] = 1.0
    return [(a - mean) / std for a in (fit, *others)]


def fit_probe(x: np.ndarray, y: np.ndarray, c: float, max_iter: int = 1000) -> tuple[LogisticRegression, bool]:
    """One L2 logistic-regression probe (lbfgs) and whether it converged, fitted on one BLAS thread.

    On one thread the fit's sums come out the same whatever the process's thread
    setting (with several, lbfgs stops at slightly other coefficients and a probe run's
    chosen C could change with the thread count), and no pool of busy-waiting BLAS
    threads competes with PyTorch's or another process's (the products are small).
    """
    probe = LogisticRegression(C=c, max_iter=max_iter, tol=1e-4)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(x, y)
    return probe, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def _accuracy(probe: LogisticRegression, x: np.ndarray, y: np.ndarray) -> float:
    with threadpool_limits(limits=1, user_api="blas"):  # as the fit: the same scores on any thread setting
        return float((probe.predict(x) == y).mean())


def _probe_layer(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    split: tuple[np.ndarray, np.ndarray],
    c_grid: Sequence[float],
    max_iter: int,
) -> tuple[list[float], float, float, bool]:
    """(validation accuracy per C, chosen C, test accuracy, converged) for one layer."""
    fit_idx, val_idx = split
    x_fit, x_val = _standardised(x_train[fit_idx], x_train[val_idx])
    val_acc = []
    for c in c_grid:
        probe, _ = fit_probe(x_fit, y_train[fit_idx], c, max_iter)
        val_acc.append(_accuracy(probe, x_val, y_train[val_idx]))
    chosen = min(c for c, acc in zip(c_grid, val_acc) if acc == max(val_acc))
    x_all, x_te = _standardised(x_train, x_test)
    probe, converged = fit_probe(x_all, y_train, chosen, max_iter)
    return val_acc, float(chosen), _accuracy(probe, x_te, y_test), converged


def _data_arrays(data: Any) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    try:
        x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    except AttributeError:
        raise UserInputError(
            f"probes need data with x_train, y_train, x_test, y_test (an ImageData), got {type(data).__name__}"
        ) from None
    y_train, y_test = (np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y) for y in (y_train, y_test))
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise UserInputError("the data hold different numbers of images and labels")
    return torch.as_tensor(x_train), y_train, torch.as_tensor(x_test), y_test


def linear_probes(
    model: nn.Module,
    data: Any,
    layers: LayerSpec | None = None,
    *,
    c_grid: Sequence[float] = ProbeSettings.c_grid,
    val_fraction: float = ProbeSettings.val_fraction,
    max_features: int = ProbeSettings.max_features,
    max_iter: int = 1000,
    batch_size: int = 256,
    seed: int = ProbeSettings.seed,
    device: torch.device | str | None = None,
    feature_memory_gb: float = 2.0,
) -> ProbeResult:
    """Fit a linear probe on each layer and score it on the test split (module docstring).

    Args:
        model: the model (eval mode during capture; its flags are restored).
        data: an `ImageData` (or any object with x_train, y_train, x_test, y_test).
        layers: the layers to probe (names, globs, classes); None: `default_probe_layers`.
        c_grid: candidate inverse L2 penalty strengths.
        val_fraction: share of each training class held out to choose C.
        max_features: pool 4-D feature maps down to at most this many values per example.
        max_iter: lbfgs iterations per fit.
        batch_size: examples per forward pass.
        seed: seed of the validation split.
        device: where the model runs; None means the device of its parameters.
        feature_memory_gb: features held in memory at once (decides the passes over the data).

    Returns:
        A `ProbeResult`.

    Raises:
        UserInputError: a layer that does not exist, a model without residual blocks
            and no layers named, bad settings.
    """
    ProbeSettings(tuple(c_grid) if isinstance(c_grid, (list, tuple)) else c_grid, val_fraction, max_features,
                  seed).check()
    x_train, y_train, x_test, y_test = _data_arrays(data)
    split = validation_split(y_train, val_fraction, seed)  # before any work: bad settings fail fast
    if layers is None:
        pairs = default_probe_layers(model)
        names, kinds = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        names = resolve_layers(model, layers)
        kinds = [_known_kinds(model).get(n, "layer") for n in names]
    device = run_device(model, device)
    sizes = _feature_sizes(model, names, x_train, device, max_features)
    val_acc, chosen, test_acc, converged = [], [], [], []
    for group in _layer_groups(sizes, len(x_train) + len(x_test), feature_memory_gb):
        group_names = [names[i] for i in group]
        train_feats = _features(model, group_names, x_train, batch_size, device, max_features)
        test_feats = _features(model, group_names, x_test, batch_size, device, max_features)
        for name in group_names:
            v, c, t, ok = _probe_layer(train_feats[name], y_train, test_feats[name], y_test, split, c_grid, max_iter)
            val_acc.append(v)
            chosen.append(c)
            test_acc.append(t)
            converged.append(ok)
    if not all(converged):
        late = [n for n, ok in zip(names, converged) if not ok]
        warnings.warn(
            f"the probes of {late[:5]} did not converge in {max_iter} iterations", RuntimeWarning, stacklevel=2
        )
    counts = np.bincount(y_test)
    return ProbeResult(
        layers=names,
        kinds=kinds,
        num_features=sizes,
        test_accuracy=np.array(test_acc),
        val_accuracy=np.array(val_acc),
        chosen_c=np.array(chosen),
        converged=converged,
        c_grid=[float(c) for c in c_grid],
        num_train=len(y_train),
        num_val=len(split[1]),
        num_test=len(y_test),
        majority_accuracy=float(counts.max() / counts.sum()),
        metadata={"seed": seed, "val_fraction": val_fraction, "max_features": max_features, "max_iter": max_iter},
    )


__all__ = [
    "DEFAULT_C_GRID",
    "DEFAULT_MAX_FEATURES",
    "ProbeResult",
    "ProbeSettings",
    "default_probe_layers",
    "fit_probe",
    "linear_probes",
    "pool_features",
    "validation_split",
]
