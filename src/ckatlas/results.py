"""One way to save and load result objects: JSON with a format tag, or .npz arrays with a JSON header.

A result class declares what it is and how its fields become plain values; this module
writes them atomically and reads them back with one clear `UserInputError` on a file that
is missing, truncated, of another kind, or missing a field.

    @dataclass
    class ProbeResult(JsonResult):
        FORMAT = "ckatlas.ProbeResult"
        WHAT = "a probe result"
        def fields(self) -> dict: ...                 # JSON-able values
        @classmethod
        def from_fields(cls, data: dict) -> ProbeResult: ...

`NpzResult` is the same for results with large arrays: `arrays()` returns the NumPy
arrays, `fields()` the rest (stored as one JSON string array named "header").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ckatlas.errors import UserInputError
from ckatlas.files import atomic_open, atomic_write_json, read_json, read_npz_arrays

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
        """Everything as JSON-able values, with the format tag."""
        return {"format": self.FORMAT, **self.fields()}

    @classmethod
    def from_dict(cls: type[R], data: Any) -> R:
        """The result `to_dict` gave; one clear error for another kind of data or a missing field."""
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        if found != cls.FORMAT:
            raise UserInputError(f"not {cls.WHAT}: expected format {cls.FORMAT!r}, got {found!r}")
        try:
            return cls.from_fields(data)
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
    FORMAT: ClassVar[str | None] = None  # the header's format tag (None: files without one)
    ARRAYS: ClassVar[tuple[str, ...]] = ()  # arrays every file of this kind holds

    def fields(self) -> dict[str, Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @classmethod
    def from_parts(cls: type[N], header: dict[str, Any], arrays: dict[str, np.ndarray]) -> N:  # pragma: no cover
        raise NotImplementedError

    def header(self) -> dict[str, Any]:
        """The fields stored as JSON, with the format tag (if the kind has one)."""
        return {**({"format": self.FORMAT} if self.FORMAT else {}), **self.fields()}

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
        """Read what `save` wrote."""
        arrays = read_result_npz(path, ("header", *cls.ARRAYS), cls.WHAT)
        try:
            header = json.loads(str(arrays.pop("header")))
            if cls.FORMAT is not None and header.pop("format", None) != cls.FORMAT:
                raise UserInputError(f"{path} is not {cls.WHAT} (format {cls.FORMAT!r} expected)")
            return cls.from_parts(header, arrays)
        except (*_FIELD_ERRORS, json.JSONDecodeError) as exc:
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
