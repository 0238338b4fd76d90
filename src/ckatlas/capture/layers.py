"""Which modules a layer spec names (`resolve_layers`); see `ckatlas.capture`."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any, Union

from torch import nn

from ckatlas.errors import UserInputError


LayerSpec = Union[str, type, Sequence[Union[str, type]]]
LAYER_KINDS = ("blocks", "all")


# -- which modules -------------------------------------------------------------------------
def resolve_layers(model: nn.Module, spec: LayerSpec) -> list[str]:
    """Names (for `model.get_submodule`) of the modules a layer spec selects.

    Args:
        model: any module.
        spec: "auto" ("blocks" for a model with `layer_names`, else "all": every leaf
            module), "blocks", "all", a name, a glob, a module class, or a list of them.

    Returns:
        Module names; for globs and classes in registration order (`GramTaps`
        puts them in forward order), otherwise in the order given.

    Raises:
        UserInputError: a name or pattern matches no module (close matches are
            listed), or "blocks" on a model without `layer_names`.
    """
    return _resolve(model, spec)[0]


def uncompiled(model: nn.Module) -> nn.Module:
    """The module that computes: the one a ``torch.compile`` model wraps (run eagerly, hooks see every
    layer), or a ``DistributedDataParallel`` / ``DataParallel`` model's ``module`` (its layers by their
    own names); other models as they are."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return uncompiled(model.module)
    inner = getattr(model, "_orig_mod", None)
    return uncompiled(inner) if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule" else model


_COMPILED_PREFIX = "_orig_mod."


def _without_compiled_prefix(spec: LayerSpec) -> LayerSpec:
    """Layer names and patterns of a compiled model as those of the module it wraps."""
    def strip(item: Any) -> Any:
        if isinstance(item, str) and item.startswith(_COMPILED_PREFIX):
            return item[len(_COMPILED_PREFIX):]
        if item == "_orig_mod":
            return ""
        return item

    if isinstance(spec, (str, type)):
        return strip(spec)
    return [strip(item) for item in spec]


def _resolve(model: nn.Module, spec: LayerSpec) -> tuple[list[str], bool, bool]:
    """(names, put them in forward order?, drop modules unusable as layers?)."""
    model = uncompiled(model)
    if not hasattr(model, "_orig_mod"):  # names as a compiled model spells them
        spec = _without_compiled_prefix(spec)
    model_name = type(model).__name__
    if isinstance(spec, str) and spec == "auto":  # the default: a model's own blocks, else every leaf module
        spec = "blocks" if callable(getattr(model, "layer_names", None)) else "all"
    if isinstance(spec, str) and spec in LAYER_KINDS:
        if callable(getattr(model, "layer_names", None)):
            return _checked_names(model, list(model.layer_names(spec))), False, False
        if spec == "all":
            names = [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
            if not names:
                names = [""]  # a model that is a single module
            return names, True, True
        hint = _longest_container(model)
        example = f" (for this model perhaps layers={hint!r})" if hint else ""
        raise UserInputError(
            f"layers='blocks' needs a model with a layer_names() method and {model_name} has none: "
            f"pass module names, glob patterns or module classes instead{example}"
        )
    items = [spec] if isinstance(spec, (str, type)) else list(spec)
    if not items:
        raise UserInputError("the layer list is empty: name at least one module, pattern or class")
    named = dict(model.named_modules())
    all_names = [n for n in named if n]
    names: list[str] = []
    ordered = False
    for item in items:
        if isinstance(item, type):
            if not issubclass(item, nn.Module):
                raise UserInputError(f"layer class {item.__name__} is not an nn.Module subclass")
            found = [n for n in all_names if isinstance(named[n], item)]
            if not found:
                present = sorted({type(m).__name__ for m in named.values()})
                raise UserInputError(
                    f"no module of {model_name} is a {item.__name__}; its module classes are {present}"
                )
            ordered = True
        elif isinstance(item, str):
            if item in named:
                found = [item]
            elif _is_glob(item):
                regex = _glob_regex(item)
                found = [n for n in all_names if regex.fullmatch(n)]
                if not found:
                    raise UserInputError(
                        f"layer pattern {item!r} matches no module of {model_name}{_close(item, all_names)}"
                    )
                ordered = True
            else:
                raise UserInputError(f"{model_name} has no module named {item!r}{_close(item, all_names)}")
        else:
            raise UserInputError(
                f"a layer must be a module name, a glob pattern or an nn.Module class, got {type(item).__name__}"
            )
        names.extend(n for n in found if n not in names)
    return names, ordered, False


def _checked_names(model: nn.Module, names: list[str]) -> list[str]:
    named = dict(model.named_modules())
    for name in names:
        if name not in named:
            raise UserInputError(
                f"{type(model).__name__}.layer_names() lists {name!r}, which is not a submodule"
                f"{_close(name, list(named))}"
            )
    return names


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """`*` within one dotted part, `**` across parts, `?` one character, `[...]` a class."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**.", i):
            out.append(r"(?:.*\.)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(r".*")
            i += 2
        elif pattern[i] == "*":
            out.append(r"[^.]*")
            i += 1
        elif pattern[i] == "?":
            out.append(r"[^.]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", r"\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _close(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, [c for c in candidates if c], n=5, cutoff=0.5)
    return f"; close matches: {', '.join(close)}" if close else "; see model.named_modules() for the names"


def _longest_container(model: nn.Module) -> str | None:
    best, size = None, 1
    for name, module in model.named_modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > size:
            best, size = name, len(module)
    if best is None:
        return None
    return f"{best}.*" if best else "*"
