"""`ImageData`: a labelled image dataset held as tensors, normalised and ready to train on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ckatlas.data.augment import NO_AUGMENTATION, Augmentation
from ckatlas.data.subsets import subset_fraction
from ckatlas.errors import UserInputError


class RawImages(NamedTuple):
    """What a dataset reader returns: arrays as stored, before scaling and normalisation.

    Images are `(N, C, H, W)`; labels integers 0..K-1; `class_names` None means
    "0".."K-1".
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] | None


@dataclass(frozen=True, eq=False)
class ImageData:
    """A train/test image classification dataset held in memory as tensors.

    Images are float32 `(N, C, H, W)`, normalised per channel with the mean and
    standard deviation of the *full* training split (before any `fraction` is
    taken, so every subset of one dataset sees identical test inputs). Labels are
    int64 `(N,)` in 0..num_classes-1. The test split is always complete and in the
    dataset's own order.

    Attributes:
        name: the dataset's name ("digits", "cifar10", ...).
        x_train, y_train: the training images and labels (after `fraction`).
        x_test, y_test: the test images and labels.
        class_names: one name per class.
        mean, std: per-channel statistics used for normalisation, of pixel values
            scaled to [0, 1].
        augmentation: the augmentation that suits this data (applied in training).
        train_indices: which examples of the full training split were kept
            (None when all of them were).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: Augmentation = field(default=NO_AUGMENTATION)
    train_indices: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])

    def to(self, device: str | torch.device) -> ImageData:
        """The same data with its tensors on `device`."""
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (no tensors)."""
        return {
            "name": self.name,
            "num_train": int(self.x_train.shape[0]),
            "num_test": int(self.x_test.shape[0]),
            "image_shape": list(self.x_train.shape[1:]),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
            "augmentation": self.augmentation.to_dict(),
        }

    @classmethod
    def from_arrays(
        cls,
        name: str,
        x_train: Any,
        y_train: Any,
        x_test: Any,
        y_test: Any,
        class_names: Sequence[str] | None = None,
        *,
        scale: float | None = None,
        resize: int | tuple[int, int] | None = None,
        fraction: float = 1.0,
        seed: int = 0,
        augmentation: Augmentation = NO_AUGMENTATION,
        source: str = "the arrays",
        normalize_pixels: bool = True,
    ) -> ImageData:
        """Build an `ImageData` from raw `(N, C, H, W)` arrays.

        Args:
            name: the dataset's name.
            x_train, x_test: images, `(N, C, H, W)`, integer or float.
            y_train, y_test: integer labels in 0..K-1.
            class_names: one per class; by default "0".."K-1" with K = max label + 1.
            scale: pixel values are divided by this to land in [0, 1]; by default
                255 for uint8 images and 1 otherwise.
            resize: output size (one int for square images, or (H, W)); bilinear
                with antialiasing. None keeps the size.
            fraction: share of each training class to keep (see `subset_fraction`).
            seed: seed of the training subset.
            augmentation: what suits this data.
            source: the file or folder the arrays came from, for error messages.
            normalize_pixels: normalise each channel with the training split's mean and
                std (False: pixels stay in [0, 1], as the paper's code feeds them;
                `mean` and `std` are then 0 and 1).
        """
        xs = [_as_float_images(x, f"{source} ({part} images)") for x, part in ((x_train, "train"), (x_test, "test"))]
        ys = [_as_labels(y, f"{source} ({part} labels)") for y, part in ((y_train, "train"), (y_test, "test"))]
        for x, y, part in zip(xs, ys, ("train", "test")):
            if x.shape[0] != y.shape[0]:
                raise UserInputError(f"{source}: {x.shape[0]} {part} images but {y.shape[0]} {part} labels")
            if x.shape[0] == 0:
                raise UserInputError(f"{source}: the {part} split is empty")
        if xs[0].shape[1:] != xs[1].shape[1:]:
            raise UserInputError(
                f"{source}: train images are {tuple(xs[0].shape[1:])} but test images are {tuple(xs[1].shape[1:])}"
            )
        num_classes = int(max(ys[0].max(), ys[1].max())) + 1
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        class_names = tuple(str(c) for c in class_names)
        if len(class_names) < num_classes:
            raise UserInputError(
                f"{source}: labels go up to {num_classes - 1} but only {len(class_names)} class names are given"
            )
        if scale is None:
            scale = 255.0 if _is_uint8(x_train) else 1.0
        x_tr, x_te = (x / scale for x in xs)
        if resize is not None:
            x_tr, x_te = resize_images(x_tr, resize), resize_images(x_te, resize)
        if normalize_pixels:
            mean, std = channel_stats(x_tr)
            x_tr, x_te = normalize(x_tr, mean, std), normalize(x_te, mean, std)
        else:
            mean, std = (0.0,) * x_tr.shape[1], (1.0,) * x_tr.shape[1]
        y_tr = ys[0]
        indices = None
        if fraction != 1.0:
            indices = subset_fraction(y_tr, fraction, seed)
            x_tr, y_tr = x_tr[indices].contiguous(), y_tr[indices]
        return cls(
            name=name,
            x_train=x_tr,
            y_train=y_tr,
            x_test=x_te,
            y_test=ys[1],
            class_names=class_names,
            mean=mean,
            std=std,
            augmentation=augmentation,
            train_indices=indices,
        )


def _is_uint8(x: Any) -> bool:
    return (isinstance(x, torch.Tensor) and x.dtype == torch.uint8) or (
        isinstance(x, np.ndarray) and x.dtype == np.uint8
    )


def _as_float_images(x: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 4:
        raise UserInputError(f"{what}: expected images of shape (N, C, H, W), got {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise UserInputError(f"{what}: expected integer or float pixels, got {t.dtype}")
    t = standard_layout(t.to(torch.float32))
    if not torch.isfinite(t).all():
        raise UserInputError(f"{what}: pixel values must be finite (found NaN or inf)")
    return t


def _as_labels(y: Any, what: str) -> torch.Tensor:
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise UserInputError(f"{what}: expected a 1-D array of integer class labels, got {arr.dtype} {arr.shape}")
    if arr.size and arr.min() < 0:
        raise UserInputError(f"{what}: class labels must be >= 0, found {int(arr.min())}")
    return torch.from_numpy(arr.astype(np.int64))


def standard_layout(x: torch.Tensor) -> torch.Tensor:
    """`x` with row-major (NCHW) strides, copied only if needed.

    `Tensor.contiguous()` leaves a one-channel `(N, 1, H, W)` tensor with
    channels-last strides as it is (both layouts count as contiguous), and
    oneDNN's CPU convolutions take their channels-last path for it; with one
    input channel that path corrupts the heap in PyTorch 2.13 (segfaults in
    `mkldnn_convolution_backward`). Images from NumPy views such as
    `images[:, None]` arrive with such strides.
    """
    expected, step = [], 1
    for size in reversed(x.shape):
        expected.append(step)
        step *= size
    if x.stride() == tuple(reversed(expected)):
        return x
    return x.clone(memory_format=torch.contiguous_format)


def resize_images(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize `(N, C, H, W)` float images to `size` (bilinear, antialiased)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in hw):
        raise UserInputError(f"resize must be a positive integer or a pair of them, got {size!r}")
    if tuple(x.shape[2:]) == hw:
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of `(N, C, H, W)` images (float64 sums).

    A constant channel gets std 1, so that normalising it leaves zeros.
    """
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    mean = flat.mean(dim=1)
    std = flat.std(dim=1, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """`(x - mean) / std` per channel, float32."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - m) / s).to(torch.float32)


__all__ = ["ImageData", "RawImages", "channel_stats", "normalize", "resize_images", "standard_layout"]
