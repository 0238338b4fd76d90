"""Any labelled image set saved as a NumPy `.npz` file (read without pickle).

Arrays, by name:
    x_train, y_train, x_test, y_test   a given split; or
    x, y                               split like digits: within each class, every
                                       4th example is a test example
    class_names (optional)             one string per class

Images are `(N, H, W)` (one channel), `(N, C, H, W)`, or `(N, H, W, C)` when the
last axis has 1, 3 or 4 entries and the second does not. uint8 pixels are scaled
by 1/255; other types are taken as they are. Labels are integers 0..K-1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ckatlas.data.image_data import RawImages
from ckatlas.data.subsets import fixed_split
from ckatlas.errors import UserInputError
from ckatlas.io.files import read_npz_arrays

NPZ_TEST_EVERY = 4
_LAYOUT = "arrays x_train, y_train, x_test, y_test (or x, y), optionally class_names"


def _images(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x
    raise UserInputError(f"{where}: images must be (N, H, W), (N, C, H, W) or (N, H, W, C), got shape {x.shape}")


def read_npz(path: str | Path) -> RawImages:
    """Read images and labels from an `.npz` file (layout in the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"npz file {path} does not exist (expected a .npz with {_LAYOUT})")
    arrays = read_npz_arrays(path)
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        x_train, y_train = _images(arrays["x_train"], f"{path}:x_train"), arrays["y_train"]
        x_test, y_test = _images(arrays["x_test"], f"{path}:x_test"), arrays["y_test"]
    elif {"x", "y"} <= arrays.keys():
        x, y = _images(arrays["x"], f"{path}:x"), arrays["y"]
        if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise UserInputError(f"{path}: y must be {x.shape[0]} integer labels, got {y.dtype} {y.shape}")
        train, test = (idx.numpy() for idx in fixed_split(y, NPZ_TEST_EVERY))
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    else:
        raise UserInputError(f"{path}: found arrays {sorted(arrays)}; expected {_LAYOUT}")
    names = arrays.get("class_names")
    class_names = None  # "0".."K-1"
    if names is not None:
        class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in np.ravel(names).tolist())
    return RawImages(x_train, y_train, x_test, y_test, class_names)


__all__ = ["NPZ_TEST_EVERY", "read_npz"]
