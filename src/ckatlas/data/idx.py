"""The IDX format of MNIST, Fashion-MNIST and KMNIST (LeCun et al.), gzipped or not.

An IDX file is a 4-byte magic number ``0x00 0x00 TYPE NDIM``, NDIM big-endian
uint32 dimension sizes, then the values in C order, big-endian. TYPE: 0x08
uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64. Image files
are ``(N, H, W)`` (magic ``0x00000803``), label files ``(N,)`` (``0x00000801``).

A dataset folder holds the four files under their original names,
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
and ``t10k-labels-idx1-ubyte``, each optionally ending in ``.gz`` (as MNIST,
Fashion-MNIST and KMNIST are distributed). Pixels are uint8 0..255 (scaled to
[0, 1] by `load_dataset`).

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 60,000 training and 10,000 test
images of clothing, 28x28 grey, 10 classes. Debian's package
``dataset-fashion-mnist`` installs it into `FASHION_MNIST_DIR`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ckatlas.data.image_data import RawImages
from ckatlas.errors import UserInputError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in one IDX file (gzipped when its name ends in .gz), in native byte order."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserInputError(f"{path}: cannot read it as {'a gzipped ' if path.suffix == '.gz' else 'an '}IDX file "
                             f"({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES or raw[3] == 0:
        raise UserInputError(
            f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'}; expected 0000TTDD with a type "
            "code TT such as 08 for uint8 and DD dimensions)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserInputError(f"{path}: the IDX header is cut short ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise UserInputError(
            f"{path}: holds {len(raw)} bytes but its header ({shape}, {dtype.name}) says {expected}: "
            "a truncated or corrupt file"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx_folder(folder: str | Path, class_names: tuple[str, ...] | None = None, *, what: str = "IDX") -> RawImages:
    """The four IDX files of an MNIST-style folder (names in the module docstring) as `RawImages`.

    Args:
        folder: the folder holding the files.
        class_names: one name per class (None: "0".."K-1").
        what: the dataset's name, for messages.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserInputError(f"{folder} is not a folder; expected the {what} folder holding {_expected()}")
    paths = {key: _find(folder, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise UserInputError(f"{folder} lacks {', '.join(missing)} (optionally .gz): expected {_expected()}")
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserInputError(
                f"{folder}: the {split} images must be (N, H, W) and the labels (N,), got {x.shape} and {y.shape}"
            )
    labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    if labels.min() < 0 or (class_names is not None and labels.max() >= len(class_names)):
        raise UserInputError(f"{folder}: labels run from {labels.min()} to {labels.max()}; expected 0..K-1")
    return RawImages(
        arrays["x_train"][:, None],
        arrays["y_train"].astype(np.int64),
        arrays["x_test"][:, None],
        arrays["y_test"].astype(np.int64),
        class_names,
    )


def _expected() -> str:
    return ", ".join(IDX_FILES.values()) + " (each optionally .gz)"


def read_fashion_mnist(folder: str | Path | None = None) -> RawImages:
    """Fashion-MNIST from `folder` (None: Debian's `FASHION_MNIST_DIR`)."""
    if folder is None:
        folder = FASHION_MNIST_DIR
        if not folder.is_dir():
            raise UserInputError(
                f"Fashion-MNIST is not in {folder}: install Debian's package (sudo apt-get install "
                "dataset-fashion-mnist; `make` does it), or pass --data-dir with a folder holding the four original "
                "files from https://github.com/zalandoresearch/fashion-mnist"
            )
    return read_idx_folder(folder, FASHION_MNIST_CLASSES, what="Fashion-MNIST")


__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "IDX_FILES", "read_fashion_mnist", "read_idx",
           "read_idx_folder"]
