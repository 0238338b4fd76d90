"""TOML tables to frozen dataclasses and back, with one clear error for any mistake.

`from_table(cls, table, where)` builds `cls` from a parsed TOML table. The
dataclass's fields are the allowed keys, its type hints the allowed values:

    bool, int, float (an int is accepted), str   the scalar itself
    Literal["a", "b"]                             one of the listed strings
    tuple[X, ...]                                 a non-empty list of X
    a dataclass                                   a sub-table
    Optional[a dataclass]                         a sub-table, or true (defaults) / false (off)
    X | None                                      X, or the key left out (TOML has no null)

An unknown key, a missing required key or a value of the wrong type raises a
`UserInputError` naming the key and its table (`where`, e.g. "[grid]"), with the
allowed keys and a close match. `to_table` is the inverse: None values are left
out, tuples become lists, so `from_table(cls, to_table(obj), ...) == obj`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from ckatlas.errors import UserInputError

T = TypeVar("T")


def from_table(cls: type[T], table: Any, where: str) -> T:
    """Build the dataclass `cls` from a TOML table (a dict); `where` names it in errors."""
    if not isinstance(table, Mapping):
        raise UserInputError(f"{where} must be a table (key = value lines), got {_describe(table)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(table, fields, where)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name in table:
            values[name] = convert(table[name], hints[name], f"{name} in {where}", f"{where[:-1]}.{name}]")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise UserInputError(f"missing key {name!r} in {where}")
    return cls(**values)


def check_keys(table: Mapping[str, Any], allowed: typing.Iterable[str], where: str) -> None:
    """Raise a `UserInputError` for the first key of `table` not in `allowed`."""
    allowed = list(allowed)
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserInputError(f"unknown key {key!r} in {where}{hint} (allowed keys: {', '.join(allowed)})")


def convert(value: Any, hint: Any, what: str, where: str) -> Any:
    """Check `value` against the type `hint` and return it in that type.

    Args:
        value: a parsed TOML value.
        hint: the field's type.
        what: the key in words, for errors ("depths in [grid]").
        where: the table name a sub-table gets ("[grid.depths]").
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported type {hint!r}")
        (inner_hint,) = inner
        if dataclasses.is_dataclass(inner_hint) and isinstance(value, bool):
            return inner_hint() if value else None
        return convert(value, inner_hint, what, where)
    if origin is Literal:
        if value not in args:
            raise UserInputError(f"{what} must be one of {', '.join(repr(a) for a in args)}, got {_describe(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not value:
            raise UserInputError(f"{what} must be a non-empty list, got {_describe(value)}")
        return tuple(convert(v, args[0], f"each entry of {what}", where) for v in value)
    if dataclasses.is_dataclass(hint):
        return from_table(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserInputError(f"{what} must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"{what} must be an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserInputError(f"{what} must be a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserInputError(f"{what} must be a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported type {hint!r}")


def to_table(obj: Any) -> Any:
    """A dataclass (or value) as a TOML-ready dict: None left out, tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if value is not None:
                out[field.name] = to_table(value)
        return out
    if isinstance(obj, (tuple, list)):
        return [to_table(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_table(v) for k, v in obj.items() if v is not None}
    return obj


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return f"a list {value!r}" if len(repr(value)) < 60 else "a list"
    return f"{value!r}"


def toml_text(top: Mapping[str, Any], sections: list[tuple[str, Mapping[str, Any]]]) -> str:
    """TOML text: the `top` keys, then each section, a header as written ("[train]", "[[grid]]") and its keys."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for header, table in sections:
        lines += ["", header] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


__all__ = ["check_keys", "convert", "from_table", "to_table", "toml_text"]
