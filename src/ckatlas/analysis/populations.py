"""Populations of models for the errors analysis: their predictions on one test set, and class groups.

A run's ``predictions.npz`` holds ``logits`` (N, C) or ``predictions`` (N,), and
``labels`` (N,), in dataset order. `load_predictions` reads several runs into a
`Population` (their test sets must be the same); `load_class_groups` reads a JSON
mapping ``{group: [classes]}`` for group-level tests.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ckatlas.errors import UserInputError
from ckatlas.io.files import read_json, read_npz_arrays
from ckatlas.io.rundir import RunDir


@dataclass
class Population:
    """Predictions of several models on one test set.

    Attributes:
        predictions: (M, N) int, the class each model predicts for each test example.
        labels: (N,) int, the true classes, in dataset order.
        num_classes: number of classes.
        sources: where each model's predictions came from (for reports).
        name: the population's name (e.g. "wide").
    """

    predictions: np.ndarray
    labels: np.ndarray
    num_classes: int
    sources: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        self.predictions = np.asarray(self.predictions, dtype=np.int64)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.predictions.ndim != 2 or self.labels.ndim != 1 or self.predictions.shape[1] != len(self.labels):
            raise UserInputError(
                f"predictions must be (models, examples) and labels (examples,), got {self.predictions.shape} "
                f"and {self.labels.shape}"
            )
        if len(self.sources) != self.predictions.shape[0]:
            raise UserInputError(f"{len(self.sources)} sources for {self.predictions.shape[0]} models")
        for what, values in (("labels", self.labels), ("predictions", self.predictions)):
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                raise UserInputError(
                    f"{what} must be class indices in [0, {self.num_classes}), got {values.min()}..{values.max()}"
                )

    @classmethod
    def from_logits(cls, logits: Sequence[np.ndarray], labels: np.ndarray, name: str = "") -> Population:
        """A population from each model's (N, C) logits and the (N,) labels."""
        arrays = [np.asarray(x) for x in logits]
        if not arrays or any(a.ndim != 2 or a.shape != arrays[0].shape for a in arrays):
            raise UserInputError("logits must be one (examples, classes) array per model, all of one shape")
        preds = np.stack([a.argmax(axis=1) for a in arrays])
        return cls(preds, labels, arrays[0].shape[1], [f"model {i}" for i in range(len(arrays))], name)

    @property
    def num_models(self) -> int:
        return self.predictions.shape[0]

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> np.ndarray:
        """(M, N) bool: whether each model classifies each example correctly."""
        return self.predictions == self.labels[None, :]

    @property
    def model_accuracy(self) -> np.ndarray:
        """(M,) test accuracy of each model."""
        return self.correct.mean(axis=1)


def load_predictions(paths: Sequence[str | os.PathLike], name: str = "") -> Population:
    """Read one population from run directories (holding ``predictions.npz``) or ``.npz`` files.

    Each file holds ``labels`` (N,) and either ``logits`` (N, C) or ``predictions`` (N,).

    Raises:
        UserInputError: a missing file or key, or files for different test sets.
    """
    if not paths:
        raise UserInputError(f"population {name or '?'} has no prediction files")
    preds, sources = [], []
    labels, first, classes = None, "", 0
    for raw in paths:
        path = Path(raw)
        file = RunDir(path).predictions if path.is_dir() else path
        file_labels, pred, file_classes = _read_prediction_file(file)
        if classes and file_classes and file_classes != classes:
            raise UserInputError(
                f"{first} and {file} have logits for {classes} and {file_classes} classes; "
                "all models must solve the same task"
            )
        classes = classes or file_classes
        if labels is None:
            labels, first = file_labels, str(file)
        else:
            check_same_test_set(labels, file_labels, first, str(file))
        preds.append(pred)
        sources.append(str(path))
    stacked = np.stack(preds)
    classes = max(classes, int(labels.max(initial=-1)) + 1, int(stacked.max(initial=-1)) + 1)
    return Population(stacked, labels, classes, sources, name)


def _read_prediction_file(file: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(labels, predicted classes, number of logit columns or 0) of one predictions file."""
    if not file.is_file():
        raise UserInputError(f"{file}: no such file (expected a run directory with predictions.npz, or an .npz file)")
    arrays = read_npz_arrays(file)
    if "labels" not in arrays or not ({"logits", "predictions"} & arrays.keys()):
        raise UserInputError(
            f"{file}: expected arrays 'labels' and 'logits' (or 'predictions'), found {sorted(arrays)}"
        )
    labels = np.asarray(arrays["labels"]).astype(np.int64).reshape(-1)
    if "logits" not in arrays:
        pred = np.asarray(arrays["predictions"]).astype(np.int64).reshape(-1)
        if len(pred) != len(labels):
            raise UserInputError(f"{file}: {len(pred)} predictions for {len(labels)} labels")
        return labels, pred, 0
    logits = np.asarray(arrays["logits"])
    if logits.ndim != 2 or logits.shape[0] != len(labels):
        raise UserInputError(f"{file}: logits must be (examples, classes) = ({len(labels)}, C), got {logits.shape}")
    return labels, logits.argmax(axis=1), logits.shape[1]


def check_same_test_set(labels_a: np.ndarray, labels_b: np.ndarray, where_a: str, where_b: str) -> None:
    if len(labels_a) != len(labels_b):
        raise UserInputError(
            f"{where_a} and {where_b} are predictions on different test sets ({len(labels_a)} vs {len(labels_b)} "
            "examples); all models must be evaluated on the same test set, in the same order"
        )
    differ = int((labels_a != labels_b).sum())
    if differ:
        raise UserInputError(
            f"{where_a} and {where_b} are predictions on different test sets (labels differ on {differ} of "
            f"{len(labels_a)} examples); all models must be evaluated on the same test set, in the same order"
        )


def load_class_groups(path: str | os.PathLike) -> dict[str, list[int | str]]:
    """Read class groups from a JSON object ``{group: [class index or class name, ...]}``."""
    p = Path(path)
    data = read_json(p, "a JSON object {group: [classes]}")
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise UserInputError(f"{p}: expected a JSON object mapping each group name to a list of classes")
    return data
