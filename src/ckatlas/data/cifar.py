"""CIFAR-10 and CIFAR-100 from the archives a user already has (nothing is downloaded).

Accepted, for CIFAR-10 (CIFAR-100 alike, with its own names):

    cifar-10-python.tar.gz   or its folder  cifar-10-batches-py/
        data_batch_1 .. data_batch_5, test_batch, batches.meta   (pickled dicts)
    cifar-10-binary.tar.gz   or its folder  cifar-10-batches-bin/
        data_batch_1.bin .. data_batch_5.bin, test_batch.bin, batches.meta.txt

    cifar-100-python.tar.gz  or  cifar-100-python/   train, test, meta
    cifar-100-binary.tar.gz  or  cifar-100-binary/   train.bin, test.bin, fine_label_names.txt

`path` may be the archive, the extracted folder, or a folder holding either.
Pickled batches are read with `restricted_loads` (NumPy arrays only, no code).
A binary record is 1 label byte (CIFAR-100: coarse then fine label byte) and
3,072 pixel bytes: 1,024 red, then green, then blue, each 32x32 row-major.
CIFAR-100 is read with its 100 fine labels.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ckatlas.data.image_data import RawImages
from ckatlas.data.restricted_pickle import restricted_loads
from ckatlas.errors import UserInputError

_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class _Layout:
    format: str  # "python" or "binary"
    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, *self.test, self.meta)

    def describe(self) -> str:
        train = f"{self.train[0]}..{self.train[-1]}" if len(self.train) > 1 else self.train[0]
        return f"{self.archive} or a folder ({self.folder}/) holding {train}, {', '.join((*self.test, self.meta))}"


_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_LAYOUTS: dict[int, tuple[_Layout, ...]] = {
    10: (
        _Layout("python", "cifar-10-batches-py", "cifar-10-python.tar.gz", _BATCHES, ("test_batch",), "batches.meta"),
        _Layout(
            "binary",
            "cifar-10-batches-bin",
            "cifar-10-binary.tar.gz",
            tuple(f"{b}.bin" for b in _BATCHES),
            ("test_batch.bin",),
            "batches.meta.txt",
        ),
    ),
    100: (
        _Layout("python", "cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",), "meta"),
        _Layout(
            "binary",
            "cifar-100-binary",
            "cifar-100-binary.tar.gz",
            ("train.bin",),
            ("test.bin",),
            "fine_label_names.txt",
        ),
    ),
}


class _Files:
    """The needed files of one layout, from a folder or a tar archive, as bytes."""

    def __init__(self, layout: _Layout, contents: dict[str, bytes], where: str) -> None:
        self.layout = layout
        self.contents = contents
        self.where = where

    def read(self, name: str) -> bytes:
        return self.contents[name]

    def describe(self, name: str) -> str:
        return f"{self.where}/{name}"


def _tar_members(path: Path) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise UserInputError(f"{path}: not a readable tar archive ({exc})") from None
    members = {}
    for m in tar.getmembers():
        base = m.name.rsplit("/", 1)[-1]
        if m.isfile() and not base.startswith("._"):
            members[base] = m
    return tar, members


def _from_tar(path: Path, layouts: tuple[_Layout, ...]) -> _Files | None:
    tar, members = _tar_members(path)
    with tar:
        for layout in layouts:
            if all(name in members for name in layout.files):
                contents = {}
                try:
                    # One pass in archive order: seeking backwards in a .tar.gz decompresses again.
                    for member in sorted((members[n] for n in layout.files), key=lambda m: m.offset):
                        fh = tar.extractfile(member)
                        contents[member.name.rsplit("/", 1)[-1]] = fh.read() if fh is not None else b""
                except (tarfile.TarError, OSError, EOFError) as exc:
                    raise UserInputError(f"{path}: the archive is truncated or corrupt ({exc})") from None
                return _Files(layout, contents, f"{path}:{layout.folder}")
    return None


def _from_folder(path: Path, layouts: tuple[_Layout, ...]) -> _Files | None:
    for layout in layouts:
        if all((path / name).is_file() for name in layout.files):
            return _Files(layout, {name: (path / name).read_bytes() for name in layout.files}, str(path))
    return None


def _expected(num_classes: int) -> str:
    return "; or ".join(layout.describe() for layout in _LAYOUTS[num_classes])


def _locate(path: str | Path, num_classes: int) -> _Files:
    root = Path(path).expanduser()
    layouts = _LAYOUTS[num_classes]
    name = f"CIFAR-{num_classes}"
    if not root.exists():
        raise UserInputError(f"{name} data not found: {root} does not exist (expected {_expected(num_classes)})")
    if root.is_file():
        if not tarfile.is_tarfile(root):
            raise UserInputError(f"{root}: not a tar archive (expected {_expected(num_classes)})")
        found = _from_tar(root, layouts)
        if found is None:
            raise UserInputError(f"{root}: the archive does not contain {name} (expected {_expected(num_classes)})")
        return found
    candidates: list[tuple[Path, bool]] = [(root, False)]
    for layout in layouts:
        candidates += [(root / layout.folder, False), (root / layout.archive, True)]
    for candidate, is_archive in candidates:
        if is_archive and candidate.is_file():
            found = _from_tar(candidate, layouts)
        elif not is_archive and candidate.is_dir():
            found = _from_folder(candidate, layouts)
        else:
            continue
        if found is not None:
            return found
    raise UserInputError(f"no {name} data in {root}: expected {_expected(num_classes)}")


def _str_keys(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise UserInputError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _python_batch(files: _Files, name: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    where = files.describe(name)
    batch = _str_keys(restricted_loads(files.read(name), source=where), where)
    label_key = "labels" if num_classes == 10 else "fine_labels"
    for key in ("data", label_key):
        if key not in batch:
            raise UserInputError(f"{where}: the batch has no {key!r} entry (keys: {sorted(batch)})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        shape = getattr(data, "shape", type(data).__name__)
        raise UserInputError(f"{where}: 'data' must be a uint8 array of shape (N, 3072), got {shape}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError):
        raise UserInputError(f"{where}: {label_key!r} must be a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise UserInputError(f"{where}: {data.shape[0]} images but {labels.size} labels in {label_key!r}")
    return data.reshape(-1, 3, 32, 32), labels


def _binary_batch(files: _Files, name: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    where = files.describe(name)
    label_bytes = 1 if num_classes == 10 else 2
    record = label_bytes + _PIXELS
    raw = np.frombuffer(files.read(name), dtype=np.uint8)
    if raw.size == 0 or raw.size % record:
        layout = "1 label byte" if num_classes == 10 else "2 label bytes (coarse, fine)"
        raise UserInputError(
            f"{where}: {raw.size} bytes is not a whole number of {record}-byte records ({layout} + 3072 pixel bytes)"
        )
    rows = raw.reshape(-1, record)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), rows[:, label_bytes - 1].astype(np.int64)


def _class_names(files: _Files, num_classes: int) -> tuple[str, ...]:
    meta = files.layout.meta
    where = files.describe(meta)
    if files.layout.format == "binary":
        names = [line.strip() for line in files.read(meta).decode("utf-8", "replace").splitlines() if line.strip()]
    else:
        entries = _str_keys(restricted_loads(files.read(meta), source=where), where)
        key = "label_names" if num_classes == 10 else "fine_label_names"
        if key not in entries:
            raise UserInputError(f"{where}: the meta file has no {key!r} entry (keys: {sorted(entries)})")
        names = [_text(v) for v in entries[key]]
    if len(names) != num_classes:
        raise UserInputError(f"{where}: expected {num_classes} class names, found {len(names)}")
    return tuple(names)


def read_cifar(path: str | Path, num_classes: int = 10) -> RawImages:
    """Read CIFAR-10 (`num_classes=10`) or CIFAR-100 (100) as uint8 arrays.

    Args:
        path: the archive (python or binary version), its extracted folder, or a
            folder holding either (see the module docstring for the layouts).
        num_classes: 10 or 100.

    Returns:
        `RawImages` with `(N, 3, 32, 32)` uint8 images, in the files' order.

    Raises:
        UserInputError: the files are missing, malformed, or (pickles) name
            anything other than NumPy arrays.
    """
    if num_classes not in _LAYOUTS:
        raise UserInputError(f"CIFAR comes with 10 or 100 classes, got num_classes={num_classes!r}")
    files = _locate(path, num_classes)
    read = _python_batch if files.layout.format == "python" else _binary_batch
    splits = []
    for names in (files.layout.train, files.layout.test):
        parts = [read(files, name, num_classes) for name in names]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        for name, (_, labels) in zip(names, parts):
            bad = labels[(labels < 0) | (labels >= num_classes)]
            if bad.size:
                raise UserInputError(
                    f"{files.describe(name)}: labels must lie in 0..{num_classes - 1}, found {int(bad[0])}"
                )
        splits.append((x, y))
    (x_train, y_train), (x_test, y_test) = splits
    return RawImages(x_train, y_train, x_test, y_test, _class_names(files, num_classes))


__all__ = ["read_cifar"]
