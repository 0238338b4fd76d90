"""The stack of a transformer's layers, and taking layers out of it.

A Hugging Face model keeps its decoder (or encoder) layers in one ``nn.ModuleList``
(``model.layers`` of Llama/Mistral/Qwen, ``transformer.h`` of GPT-2,
``bert.encoder.layer``, ``vit.layers``, ...), and its config says how many there are
(``num_hidden_layers``, which GPT-2's ``n_layer`` aliases). `layer_stack` finds that list:
the longest ``ModuleList`` of modules of one class whose length is the config's count (any
model without a config: the longest such list). Removing layers replaces the list by the
kept ones and updates the config (its count, per-layer lists such as ``layer_types``, and
each attention module's ``layer_idx``, which indexes the KV cache).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.io.formats import tag

_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


@dataclass(frozen=True)
class LayerStack:
    """Where a model's layers are: ``path`` (dotted name of the ModuleList) and how many."""

    path: str
    count: int

    def names(self) -> list[str]:
        """The dotted module name of each layer, in order."""
        return [f"{self.path}.{i}" for i in range(self.count)]


def layer_stack(model: nn.Module, path: str | None = None) -> LayerStack:
    """The model's stack of layers (module docstring); `path` names it when the guess would be wrong.

    Raises:
        UserInputError: no such ModuleList, or none that looks like the layer stack.
    """
    if path is not None:
        try:
            found = model.get_submodule(path)
        except AttributeError:
            raise UserInputError(f"the model has no module {path!r}; expected the ModuleList of its layers") from None
        if not isinstance(found, nn.ModuleList) or len(found) < 1:
            raise UserInputError(f"{path!r} is a {type(found).__name__}, not a non-empty ModuleList of layers")
        return LayerStack(path, len(found))
    count = _config_count(model)
    candidates = [
        (name, len(module)) for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) >= 2 and len({type(m) for m in module}) == 1
        and (count is None or len(module) == count)
    ]
    if not candidates:
        raise UserInputError(
            f"cannot find the layer stack of {type(model).__name__}: no ModuleList of "
            f"{count if count is not None else 'two or more'} layers of one class; name it (layers_path='model.layers')"
        )
    longest = max(n for _, n in candidates)
    chosen = [name for name, n in candidates if n == longest]
    if len(chosen) > 1:
        raise UserInputError(f"{type(model).__name__} has several layer stacks ({', '.join(chosen)}); name one "
                             f"(layers_path=...)")
    return LayerStack(chosen[0], longest)


def _config_count(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in _COUNT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


@contextlib.contextmanager
def layers_removed(model: nn.Module, remove: Sequence[int], stack: LayerStack | None = None) -> Iterator[nn.Module]:
    """The model, for the duration, without the layers at indices `remove` (no copy; restored after).

    Raises:
        UserInputError: an index outside the stack, or every layer removed.
    """
    stack = stack or layer_stack(model)
    keep = kept_layers(stack.count, remove)
    parent_name, _, attr = stack.path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    original = getattr(parent, attr)
    config = getattr(model, "config", None)
    saved_config = _config_state(config)
    saved_idx = [(m, m.layer_idx) for m in original.modules() if isinstance(getattr(m, "layer_idx", None), int)]
    try:
        setattr(parent, attr, nn.ModuleList([original[i] for i in keep]))
        _update_config(config, keep, stack.count)
        for new, old in enumerate(keep):
            for m in original[old].modules():
                if isinstance(getattr(m, "layer_idx", None), int):
                    m.layer_idx = new
        yield model
    finally:
        setattr(parent, attr, original)
        _restore_config(config, saved_config)
        for m, idx in saved_idx:
            m.layer_idx = idx


def remove_layers(model: nn.Module, remove: Sequence[int], stack: LayerStack | None = None) -> nn.Module:
    """A copy of the model without the layers at indices `remove` (its config updated)."""
    stack = stack or layer_stack(model)
    with layers_removed(model, remove, stack):
        return copy.deepcopy(model)


def kept_layers(count: int, remove: Sequence[int]) -> list[int]:
    """The indices left when `remove` are taken out of `count` layers (checked)."""
    remove = [int(i) for i in remove]
    bad = [i for i in remove if not 0 <= i < count]
    if bad:
        raise UserInputError(f"layer indices {bad} are outside the model's {count} layers (0 to {count - 1})")
    keep = [i for i in range(count) if i not in set(remove)]
    if not keep:
        raise UserInputError(f"cannot remove all {count} layers")
    return keep


def _config_state(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    return {k: copy.deepcopy(v) for k, v in vars(config).items() if k in _COUNT_KEYS or isinstance(v, (list, tuple))}


def _update_config(config: Any, keep: list[int], count: int) -> None:
    if config is None:
        return
    for key in _COUNT_KEYS:
        if isinstance(getattr(config, key, None), int):
            setattr(config, key, len(keep))
    for key, value in list(vars(config).items()):
        if isinstance(value, (list, tuple)) and len(value) == count and "layer" in key:
            setattr(config, key, type(value)(value[i] for i in keep))


def _restore_config(config: Any, state: dict[str, Any]) -> None:
    for key, value in state.items():
        setattr(config, key, value)


REMOVAL_FILE = "ckatlas-removal.json"  # beside a pruned model's weights: which layers were cut
MERGEKIT_FILE = "mergekit.yml"  # the same removal as a mergekit passthrough config


def kept_ranges(count: int, remove: Sequence[int]) -> list[tuple[int, int]]:
    """The kept layers of a stack of `count` as half-open ranges [start, end), in order."""
    ranges: list[tuple[int, int]] = []
    for i in kept_layers(count, remove):
        if ranges and ranges[-1][1] == i:
            ranges[-1] = (ranges[-1][0], i + 1)
        else:
            ranges.append((i, i + 1))
    return ranges


def passthrough_config(count: int, remove: Sequence[int], source: str) -> str:
    """The removal as a mergekit "passthrough" merge (YAML): slices of the source model's kept layer
    ranges, end-exclusive as mergekit's ``layer_range``. ``mergekit-yaml`` on it rebuilds the pruned
    model from the source."""
    removed = sorted(int(i) for i in remove)
    lines = [f"# {source} without layers {removed} (0-based) of its {count}: ckatlas layers --save",
             "slices:"]
    for start, end in kept_ranges(count, remove):
        lines += ["  - sources:", f"      - model: {json.dumps(source)}", f"        layer_range: [{start}, {end}]"]
    lines.append("merge_method: passthrough")
    return "\n".join(lines) + "\n"


def removal_record(stack: LayerStack, remove: Sequence[int], source: str | None = None) -> dict[str, Any]:
    """Which layers were cut: 0-based indices and module names, the kept ones, the source's layer count."""
    removed = sorted(int(i) for i in remove)
    names = stack.names()
    return {**tag("ckatlas.Removal"), "source": source, "source_layers": stack.count, "layers_path": stack.path,
            "removed": removed, "removed_modules": [names[i] for i in removed],
            "kept": kept_layers(stack.count, removed),
            "kept_ranges": [list(r) for r in kept_ranges(stack.count, removed)]}


def save_pruned(model: nn.Module, remove: Sequence[int], out: str, tokenizer: Any = None,
                stack: LayerStack | None = None, source: str | None = None) -> nn.Module:
    """Save the model without the layers `remove` so that ``from_pretrained(out)`` loads it; returns that model.

    Beside the weights: `REMOVAL_FILE` (the removed layers' 0-based indices and module names,
    the kept ones) and `MERGEKIT_FILE` (the same removal as a mergekit passthrough config over
    `source`, the source model's folder or hub name; default: the model's ``name_or_path``).
    The folder is written next to its final place and renamed into it, so that an
    interrupted save leaves no half model.

    Raises:
        UserInputError: the model cannot ``save_pretrained`` (not a Hugging Face model), or `out` exists.
    """
    stack = stack or layer_stack(model)
    _check_target(model, out)
    pruned = remove_layers(model, remove, stack)
    source = source or str(getattr(getattr(model, "config", None), "name_or_path", "") or "SOURCE_MODEL")
    save_removed(pruned, out, stack, remove, tokenizer, source)
    return pruned


def save_removed(pruned: nn.Module, out: str, stack: LayerStack, remove: Sequence[int], tokenizer: Any = None,
                 source: str = "SOURCE_MODEL") -> Path:
    """Save `pruned`, a model from which the layers `remove` of the source's `stack` were taken out
    (and perhaps healed since), as `save_pruned` does: weights, tokenizer, `REMOVAL_FILE` and
    `MERGEKIT_FILE`, staged and renamed into `out`."""
    target = _check_target(pruned, out)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        pruned.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        (staging / REMOVAL_FILE).write_text(json.dumps(removal_record(stack, remove, source), indent=2) + "\n",
                                            encoding="utf-8")
        (staging / MERGEKIT_FILE).write_text(passthrough_config(stack.count, remove, source), encoding="utf-8")
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _check_target(model: nn.Module, out: str) -> Path:
    if not hasattr(model, "save_pretrained"):
        raise UserInputError(f"{type(model).__name__} has no save_pretrained: only Hugging Face models are saved")
    target = Path(out).expanduser()
    if target.exists():
        raise UserInputError(f"{target} exists; expected a new folder for the pruned model")
    return target


__all__ = ["MERGEKIT_FILE", "REMOVAL_FILE", "LayerStack", "kept_layers", "kept_ranges", "layer_stack", "layers_removed",
           "passthrough_config", "remove_layers", "removal_record", "save_pruned", "save_removed"]
