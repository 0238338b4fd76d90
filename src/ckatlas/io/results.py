"""One way to save and load result objects: JSON with a format tag, or .npz arrays with a JSON header.

A result class declares what it is and how its fields become plain values; this module
writes them atomically, tagged with the kind's format version (`ckatlas.io.formats`), and reads
them back through `ckatlas.io.formats.upgrade` (a file of an earlier version is brought forward
first), with one clear `UserInputError` on a file that is missing, truncated, of another kind,
of a newer version, or missing a field.

    @dataclass
    class ProbeResult(JsonResult):
        FORMAT = "ckatlas.ProbeResult"
        WHAT = "a probe result"
        layers: list[str]
        test_accuracy: np.ndarray                     # __post_init__ makes arrays of lists

A dataclass result is serialised generically: `fields()` is every field as plain values
(`plain`: arrays as nested lists, NumPy scalars as numbers, nested dataclasses as objects), and
`from_fields` calls the class with every field by name (its ``__post_init__`` turns lists back
into arrays). A result whose file holds more (derived values) or other shapes overrides both.

`NpzResult` is the same for results with large arrays: the fields named in ``ARRAYS`` are stored
as NumPy arrays, the rest as one JSON string array named "header" (`fields()`, `arrays()` and
`from_parts` by default). `from_fields` and `from_parts` see the current version's fields only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ckatlas.errors import UserInputError
from ckatlas.io.files import atomic_open, atomic_write_json, read_json, read_npz_arrays
from ckatlas.io.formats import tag, upgrade

R = TypeVar("R", bound="JsonResult")
N = TypeVar("N", bound="NpzResult")

_FIELD_ERRORS = (KeyError, TypeError, ValueError, IndexError)


def plain(value: Any) -> Any:
    """`value` as JSON-able plain data: arrays as nested lists (NaN stays float NaN), NumPy scalars as Python
    numbers, tuples as lists, dataclasses as objects of their fields; dicts and lists item by item."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def _names(cls: Any) -> list[str]:
    """The names of a dataclass result's fields set when it is made."""
    if not dataclasses.is_dataclass(cls):  # pragma: no cover - a result class that is no dataclass overrides
        raise TypeError(f"{getattr(cls, '__name__', cls)} is no dataclass: define fields() and from_fields()")
    return [f.name for f in dataclasses.fields(cls) if f.init]


class JsonResult:
    """A result saved as one JSON object with a ``"format"`` tag (module docstring)."""

    FORMAT: ClassVar[str]
    WHAT: ClassVar[str]

    def fields(self) -> dict[str, Any]:
        """Every field as plain values (a result with derived values or other shapes overrides it)."""
        return {name: plain(getattr(self, name)) for name in _names(self)}

    @classmethod
    def from_fields(cls: type[R], data: dict[str, Any]) -> R:
        """The result made of every field by name (a KeyError for a missing one)."""
        return cls(**{name: data[name] for name in _names(cls)})

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-able values, with the format tag and version."""
        return {**tag(self.FORMAT), **self.fields()}

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        """The result `to_dict` gave (of this or an earlier version); one clear error for another kind of
        data, a newer version or a missing field."""
        if not isinstance(data, dict):
            raise UserInputError(f"not {cls.WHAT}: expected format {cls.FORMAT!r}, got {type(data).__name__!r}")
        try:
            return cls.from_fields(upgrade(cls.FORMAT, data, cls.WHAT))
        except UserInputError:  # another kind, or a version this release cannot read: said as it is
            raise
        except _FIELD_ERRORS as exc:
            raise UserInputError(f"{cls.WHAT} with a missing or malformed field ({type(exc).__name__}: {exc})") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON, atomically."""
        atomic_write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls: type[R], path: str | os.PathLike) -> R:
        """Read what `save` wrote."""
        data = read_json(path, f"{cls.WHAT} saved as JSON")
        try:
            return cls.from_dict(data)
        except UserInputError as exc:
            raise UserInputError(f"{path}: {exc}") from None


class NpzResult:
    """A result saved as an .npz: its arrays, and its other fields as a JSON "header" (module docstring)."""

    WHAT: ClassVar[str]
    FORMAT: ClassVar[str]  # the header's format tag
    ARRAYS: ClassVar[tuple[str, ...]] = ()  # arrays every file of this kind holds (at any version)

    def fields(self) -> dict[str, Any]:
        """Every field not in ``ARRAYS``, as plain values."""
        return {name: plain(getattr(self, name)) for name in _names(self) if name not in self.ARRAYS}

    def arrays(self) -> dict[str, np.ndarray]:
        """The fields named in ``ARRAYS``, as NumPy arrays."""
        return {name: np.asarray(getattr(self, name)) for name in self.ARRAYS}

    @classmethod
    def from_parts(cls: type[N], header: dict[str, Any], arrays: dict[str, np.ndarray]) -> N:
        """The result made of every field by name: the arrays from the file's arrays, the rest from its header."""
        return cls(**{name: (arrays if name in cls.ARRAYS else header)[name] for name in _names(cls)})

    def header(self) -> dict[str, Any]:
        """The fields stored as JSON, with the format tag and version."""
        return {**tag(self.FORMAT), **self.fields()}

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-able values (arrays as nested lists; NaN stays float NaN)."""
        return {**self.header(), **{k: v.tolist() for k, v in self.arrays().items()}}

    def save(self, path: str | os.PathLike) -> Path:
        """Write an .npz (arrays plus a JSON header; loadable without pickle), atomically."""
        path = Path(path)
        with atomic_open(path, "wb") as fh:
            np.savez(fh, header=np.array(json.dumps(self.header())), **self.arrays())
        return path

    @classmethod
    def load(cls: type[N], path: str | os.PathLike) -> N:
        """Read what `save` wrote (this or an earlier version)."""
        arrays = read_result_npz(path, ("header", *cls.ARRAYS), cls.WHAT)
        try:
            header = json.loads(str(arrays.pop("header")))
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{path}: {cls.WHAT} with a malformed header ({exc})") from None
        if not isinstance(header, dict):
            raise UserInputError(f"{path} is not {cls.WHAT}: its header is no JSON object")
        try:
            fields = upgrade(cls.FORMAT, {**header, **arrays}, cls.WHAT)
            return cls.from_parts({k: v for k, v in fields.items() if not isinstance(v, np.ndarray)},
                                  {k: v for k, v in fields.items() if isinstance(v, np.ndarray)})
        except UserInputError as exc:  # another kind, or a version this release cannot read
            raise UserInputError(f"{path}: {exc}") from None
        except _FIELD_ERRORS as exc:
            raise UserInputError(f"{path}: {cls.WHAT} with a missing or malformed field ({exc})") from None


def read_result_npz(path: str | os.PathLike, keys: tuple[str, ...] | list[str], what: str) -> dict[str, np.ndarray]:
    """The arrays of a result saved as .npz (no pickle); one clear error if it is not `what`."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path} does not exist; expected {what} saved as .npz")
    arrays = read_npz_arrays(path)
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise UserInputError(f"{path} is not {what}: arrays {missing} are missing")
    return arrays


__all__ = ["JsonResult", "NpzResult", "plain", "read_result_npz"]
