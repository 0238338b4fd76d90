"""Atomic file writes, and reads of the files ckatlas writes that fail in one clear line.

Every file ckatlas writes goes through here: write to a temporary file in the
same directory, flush and fsync, then `os.replace` onto the final name. A reader
sees the old file or the new one, never half of one. `read_json` and
`read_npz_arrays` read results back (never with pickle); a missing, truncated or
foreign file is a `UserInputError` naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ckatlas.errors import UserInputError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on clean exit it replaces `path`.

    On an exception the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The JSON value in `path`; `what` ("a probe result saved as JSON") names what was expected."""
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"{p}: no such file (expected {what})")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{p}: not valid JSON ({exc}); expected {what}") from None


def read_npz_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of the .npz file `path` (which must exist), read without pickle."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except ValueError as exc:  # object arrays, or not an .npz at all: either would need pickle, which is refused
        raise UserInputError(
            f"{path}: not a readable .npz file without pickle ({exc}); expected plain numeric arrays"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:  # missing, truncated or corrupt
        raise UserInputError(f"{path}: not a readable .npz file ({exc})") from None


__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "read_json",
           "read_npz_arrays"]
