"""Atomic file writes, and reads of the files ckatlas writes that fail in one clear line.

Every file ckatlas writes goes through here: write to a temporary file in the
same directory, flush and fsync, then `os.replace` onto the final name. A reader
sees the old file or the new one, never half of one. `read_json` and
`read_npz_arrays` read results back (never with pickle); a missing, truncated or
foreign file is a `UserInputError` naming it. `check_writable_file` and
`check_writable_dir` tell before any long computation whether an output location
can be written. `safetensors_intact` and `npz_intact` tell whether a file was
written whole (a copy cut short, a disk that filled up).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ckatlas.errors import UserInputError


_PENDING: contextvars.ContextVar[list[tuple[str, Path]] | None] = contextvars.ContextVar("ckatlas_pending", default=None)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on clean exit it replaces `path`.

    On an exception the temporary file is removed and `path` is left untouched. A write the
    system refuses (a full disk, a read-only or special file system) is one `UserInputError`
    naming the file and the reason. Inside `output_group` the rename waits for the group's end.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    pending = _PENDING.get()
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if pending is None:
            os.replace(tmp, path)
        else:
            pending.append((tmp, path))
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise UserInputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


@contextlib.contextmanager
def output_group() -> Iterator[None]:
    """The files written inside (through `atomic_open`) appear together when the block ends cleanly, or
    not at all: on an error every one of them is removed and nothing it would have replaced is touched.
    For a command that writes several outputs (a heatmap and its figure), so that a failure half-way
    leaves no partial set."""
    pending: list[tuple[str, Path]] = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        _PENDING.reset(token)
    for tmp, path in pending:
        os.replace(tmp, path)


def is_stray(path: str | os.PathLike) -> bool:
    """Whether `path` is a temporary file that an interrupted `atomic_open` left behind."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(".tmp")


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


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive with members / an empty one
_NPY_MAGIC = b"\x93NUMPY"


def read_npz_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of the .npz file `path` (which must exist), read without pickle."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read it ({exc.strerror or exc}); expected an .npz file") from None
    if not magic.startswith(_ZIP_MAGIC):
        what = "an .npy array" if magic == _NPY_MAGIC else "not an .npz file at all"
        raise UserInputError(f"{path}: {what} (an .npz is a zip archive of .npy arrays, as numpy.savez writes it)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except ValueError as exc:  # object arrays, or not an .npz at all: either would need pickle, which is refused
        raise UserInputError(
            f"{path}: not a readable .npz file without pickle ({exc}); expected plain numeric arrays"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:  # missing, truncated or corrupt
        raise UserInputError(f"{path}: not a readable .npz file ({exc})") from None


def check_writable_file(path: str | os.PathLike, what: str = "the output", suffix: str | None = None) -> Path:
    """`path` if a file can be written there, else one clear error (call it before long work).

    The path must not be a folder, and the nearest folder that exists on its way must
    be one this process may write into (not a file, not read-only). With `suffix` (".npz",
    ".png", ...), its name must end in it: what is written is of that kind, and a file of
    another kind (a figure given where an archive goes) is never replaced by it.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserInputError(f"{p} is a folder; expected a file name for {what}")
    if suffix is not None and p.suffix.lower() != suffix:
        raise UserInputError(f"{p}: {what} is written as {suffix}; give a file name ending in {suffix}"
                             + (f" (got {p.suffix!r})" if p.suffix else ""))
    _check_parent(p.parent, p, what)  # files are written beside their final name, then renamed
    return p


#: Suffixes of the files ckatlas writes: a folder to be made with one of them is almost surely a mistake.
FILE_SUFFIXES = (".npz", ".json", ".png", ".html", ".md", ".safetensors", ".pt", ".csv", ".txt", ".toml")


def check_writable_dir(path: str | os.PathLike, what: str = "the output") -> Path:
    """`path` if a folder can be written (or made) there, else one clear error (call it before long work).
    A folder still to be made whose name ends like a file (``out/pca.npz``) is refused."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserInputError(f"{p} is a file; expected a folder for {what}")
    if not p.exists() and p.suffix.lower() in FILE_SUFFIXES:
        raise UserInputError(f"{p} looks like a file name ({p.suffix}), and {what} needs a folder there; "
                             f"give a folder name, e.g. {p.with_suffix('')}")
    _check_parent(p, p, what)
    return p


def _check_parent(folder: Path, target: Path, what: str) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link cannot be made into a folder
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f"cannot write {what} to {target}: {existing} is a file, not a folder")
    if not _may_write(existing):
        raise UserInputError(f"cannot write {what} to {target}: the folder {existing} is not writable")
    try:  # the permission bits are not the whole story (/proc, a read-only mount, a full disk): try it
        fd, probe = tempfile.mkstemp(prefix=".ckatlas-probe-", suffix=".tmp", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserInputError(f"cannot write {what} to {target}: {existing} takes no new files "
                             f"({exc.strerror or exc})") from None


def _may_write(folder: Path) -> bool:
    """Whether this process may create files in `folder` (by its effective user, as the kernel decides)."""
    if os.access in os.supports_effective_ids:
        return os.access(folder, os.W_OK | os.X_OK, effective_ids=True)
    return os.access(folder, os.W_OK | os.X_OK)


def safetensors_intact(path: str | os.PathLike) -> bool:
    """Whether `path` is a whole safetensors file: its header parses and the file is as long as it says."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return False
            length = int.from_bytes(head, "little")
            if length <= 0 or 8 + length > size:
                return False
            header = json.loads(fh.read(length))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(header, dict):
        return False
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return False
        end = max(end, int(offsets[1]))
    return size == 8 + length + end


def npz_intact(path: str | os.PathLike) -> bool:
    """Whether `path` is a whole .npz (zip) file whose members all pass their checksums."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


__all__ = ["FILE_SUFFIXES", "atomic_open", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "check_writable_dir", "check_writable_file", "is_stray", "npz_intact", "output_group", "read_json",
           "read_npz_arrays", "safetensors_intact"]
