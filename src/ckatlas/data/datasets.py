"""`load_dataset(name, ...)`: every dataset ckatlas reads, behind one call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ckatlas.data.augment import NO_AUGMENTATION, Augmentation
from ckatlas.data.cifar import read_cifar
from ckatlas.data.digits import DIGITS_SCALE, read_digits
from ckatlas.data.folder import read_folder
from ckatlas.data.idx import FASHION_MNIST_DIR, read_fashion_mnist, read_idx_folder
from ckatlas.data.image_data import ImageData, RawImages
from ckatlas.data.npz import read_npz
from ckatlas.data.subsets import check_fraction
from ckatlas.errors import UserInputError


@dataclass(frozen=True)
class _Dataset:
    read: Callable[[Path | None, int | None], RawImages]
    needs_path: str | None  # what data_dir must point at; None: built in
    augmentation: Callable[[int], Augmentation]  # of the image side after resizing
    scale: float | None = None
    default_resize: int | None = None
    resize_on_read: bool = False  # the reader resizes (folder): no tensor resize afterwards
    default_dir: Path | None = None  # where the data are when no data_dir is given (the reader knows it)


_DATASETS: dict[str, _Dataset] = {
    # Digits are 8x8; 16x16 (bilinear) gives the ResNets' three stages room (16 -> 8 -> 4).
    # ResNet-20, 10 epochs, one seed: 99.6% test accuracy at 16x16, 98.2% at 8x8.
    "digits": _Dataset(
        lambda path, size: read_digits(),
        None,
        lambda side: NO_AUGMENTATION,  # a mirrored or shifted digit on an 8x8 grid is often another digit
        scale=DIGITS_SCALE,
        default_resize=16,
    ),
    "cifar10": _Dataset(
        lambda path, size: read_cifar(path, 10),
        "a CIFAR-10 archive (python or binary version) or its extracted folder",
        lambda side: Augmentation(pad=side // 8, flip=True),  # 4 px at 32x32 (He et al. 2016)
    ),
    "cifar100": _Dataset(
        lambda path, size: read_cifar(path, 100),
        "a CIFAR-100 archive (python or binary version) or its extracted folder",
        lambda side: Augmentation(pad=side // 8, flip=True),
    ),
    "folder": _Dataset(
        lambda path, size: read_folder(path, size=size if size is not None else 224),
        "a folder holding train/<class>/ and val/<class>/ (or test/<class>/) image folders",
        lambda side: Augmentation(pad=side // 8, flip=True),
        default_resize=224,
        resize_on_read=True,
    ),
    # 28x28 grey clothing; pad-and-crop (3 px, as 4 px on 32x32) and flips: a mirrored
    # garment is the same garment. Pixels 0..255.
    "fashion-mnist": _Dataset(
        lambda path, size: read_fashion_mnist(path),
        "a folder holding Fashion-MNIST's four IDX files (train-images-idx3-ubyte.gz, ...)",
        lambda side: Augmentation(pad=side // 8, flip=True),
        default_dir=FASHION_MNIST_DIR,
    ),
    # Handwriting: shifts, but no flips (a mirrored digit or character is often another one).
    "mnist": _Dataset(
        lambda path, size: read_idx_folder(path, tuple(str(i) for i in range(10)), what="MNIST"),
        "a folder holding MNIST's four IDX files (train-images-idx3-ubyte[.gz], ...)",
        lambda side: Augmentation(pad=side // 8, flip=False),
    ),
    "kmnist": _Dataset(
        lambda path, size: read_idx_folder(path, None, what="KMNIST"),
        "a folder holding KMNIST's four IDX files (train-images-idx3-ubyte[.gz], ...)",
        lambda side: Augmentation(pad=side // 8, flip=False),
    ),
    "npz": _Dataset(
        lambda path, size: read_npz(path),
        "a .npz file with arrays x_train, y_train, x_test, y_test (or x, y)",
        lambda side: NO_AUGMENTATION,  # unknown content: no flips or shifts unless asked
    ),
}

DATASETS: tuple[str, ...] = tuple(_DATASETS)


def default_resize(name: str) -> int | None:
    """The image side `load_dataset` uses for `name` when `resize` is None (None: as stored)."""
    return _spec(name).default_resize


def _spec(name: str) -> _Dataset:
    if name not in _DATASETS:
        raise UserInputError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return _DATASETS[name]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    resize: int | None = None,
    fraction: float = 1.0,
    seed: int = 0,
    normalize: bool = True,
    pad_mode: str = "zeros",
) -> ImageData:
    """Load a dataset by name as normalised tensors with its fixed train/test split.

    Args:
        name: "digits" (built in), "fashion-mnist", "mnist", "kmnist", "cifar10",
            "cifar100", "folder" or "npz".
        data_dir: where the data is: an IDX folder, a CIFAR archive or folder, an
            image-folder root, or an .npz file. Not used by digits; fashion-mnist
            defaults to Debian's /usr/share/datasets/fashion-mnist.
        resize: side of the square images; None uses the dataset's default
            (digits: 16, folder: 224, otherwise as stored).
        fraction: share of each training class to keep, 0 < fraction <= 1.
        seed: seed of the training subset (see `subset_fraction`).
        normalize: normalise each channel with the training split's mean and std
            (False: pixels in [0, 1], as the paper's code).
        pad_mode: how the augmentation pads before its random crop, "zeros" or
            "reflect" (the paper's).

    Returns:
        An `ImageData` on the CPU, its `augmentation` set to what suits the data.

    Raises:
        UserInputError: an unknown name, a missing or malformed file, a bad value.
    """
    spec = _spec(name)
    fraction = check_fraction(fraction)
    if resize is not None and (isinstance(resize, bool) or not isinstance(resize, int) or resize < 1):
        raise UserInputError(f"resize must be a positive integer (pixels), got {resize!r}")
    if spec.needs_path is None and data_dir is not None:
        raise UserInputError(f"the {name} dataset is built in and takes no data directory (got {data_dir})")
    if spec.needs_path is not None and data_dir is None and spec.default_dir is None:
        raise UserInputError(f"the {name} dataset needs a data directory: {spec.needs_path}")
    size = resize if resize is not None else spec.default_resize
    raw = spec.read(Path(data_dir).expanduser() if data_dir is not None else None, size)
    side = size if size is not None else min(raw.x_train.shape[-2:])
    augmentation = spec.augmentation(side)
    if augmentation.pad:
        augmentation = Augmentation(augmentation.pad, augmentation.flip, pad_mode)
    return ImageData.from_arrays(
        name,
        *raw,
        scale=spec.scale,
        resize=None if spec.resize_on_read else size,
        fraction=fraction,
        seed=seed,
        augmentation=augmentation,
        source=str(data_dir) if data_dir is not None else name,
        normalize_pixels=normalize,
    )


def list_datasets() -> list[str]:
    """Names `load_dataset` accepts."""
    return list(DATASETS)


__all__ = ["DATASETS", "default_resize", "list_datasets", "load_dataset"]
