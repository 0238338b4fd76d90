"""One way to save and load result objects: JSON with a format tag, or .npz arrays with a JSON header.

A result class declares what it is and how its fields become plain values; this module
writes them atomically, tagged with the kind's format version (`ckatlas.formats`), and reads
them back through `ckatlas.formats.upgrade` (a file of an earlier version is brought forward
first), with one clear `UserInputError` on a file that is missing, truncated, of another kind,
of a newer version, or missing a field.

    @dataclass
    class ProbeResult(JsonResult):
        FORMAT = "ckatlas.ProbeResult"
        WHAT = "a probe result"
        def fields(self) -> dict: ...                 # JSON-able values
        @classmethod
        def from_fields(cls, data: dict) -> ProbeResult: ...

`NpzResult` is the same for results with large arrays: `arrays()` returns the NumPy
arrays, `fields()` the rest (stored as one JSON string array named "header"). `from_fields`
and `from_parts` see the current version's fields only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ckatlas.errors import UserInputError
from ckatlas.files import atomic_open, atomic_write_json, read_json, read_npz_arrays
from ckatlas.formats import check_kind, tag, upgrade

R = TypeVar("R", bound="JsonResult")
N = TypeVar("N", bound="NpzResult")

_FIELD_ERRORS = (KeyError, TypeError, ValueError, IndexError)


class JsonResult:
    """A result saved as one JSON object with a ``"format"`` tag (module docstring)."""

    FORMAT: ClassVar[str]
    WHAT: ClassVar[str]

    def fields(self) -> dict[str, Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @classmethod
    def from_fields(cls: type[R], data: dict[str, Any]) -> R:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-able values, with the format tag and version."""
        return {**tag(self.FORMAT), **self.fields()}

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        """The result `to_dict` gave (of this or an earlier version); one clear error for another kind of
        data, a newer version or a missing field."""
        if not isinstance(data, dict):
            raise UserInputError(f"not {cls.WHAT}: expected format {cls.FORMAT!r}, got {type(data).__name__!r}")
        check_kind(cls.FORMAT, data, cls.WHAT)
        try:
            return cls.from_fields(upgrade(cls.FORMAT, data, cls.WHAT))
        except UserInputError:  # a version this release cannot read: said as it is
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

    def fields(self) -> dict[str, Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @classmethod
    def from_parts(cls: type[N], header: dict[str, Any], arrays: dict[str, np.ndarray]) -> N:  # pragma: no cover
        raise NotImplementedError

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
            check_kind(cls.FORMAT, header, cls.WHAT)
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


__all__ = ["JsonResult", "NpzResult", "read_result_npz"]
