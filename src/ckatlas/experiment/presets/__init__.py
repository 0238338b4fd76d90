"""Experiment files shipped with ckatlas: `ckatlas run PRESET --out DIR`.

Each preset is a TOML file in this folder; its `description` is the one line that
`ckatlas presets` shows.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from ckatlas.errors import UserInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _folder() -> Path:
    return Path(str(resources.files(__name__)))


def list_presets() -> list[str]:
    """Names of the shipped presets, sorted ("demo", "paper-depth", ...)."""
    return sorted(p.stem for p in _folder().glob("*.toml"))


def preset_path(name: str) -> Path:
    """The TOML file of preset `name`."""
    path = _folder() / f"{name}.toml"
    if not path.is_file():
        raise UserInputError(f"unknown preset {name!r}; expected one of {', '.join(list_presets())}")
    return path


def preset_description(name: str) -> str:
    """The one-line `description` of preset `name`."""
    table = tomllib.loads(preset_path(name).read_text(encoding="utf-8"))
    return str(table.get("description", ""))


__all__ = ["list_presets", "preset_description", "preset_path"]
