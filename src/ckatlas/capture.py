"""Taps on named modules of any `nn.Module`: Grams computed inside forward hooks.

Which modules (`resolve_layers`): a layer spec is "blocks", "all", a module name,
a glob pattern, a module class, or a list mixing them.

* "blocks" / "all" call `model.layer_names(kind)` when the model has it (the
  ckatlas families do). For other models "all" means every leaf module whose
  output holds a tensor with the batch as first dimension, except modules that
  return their input unchanged in eval mode (Dropout, Identity: their CKA with
  the layer before is 1 and would show as a spurious block) and modules called
  more than once per forward (left out with a warning); "blocks" is an error that
  suggests a glob for the model's longest `ModuleList`/`Sequential`.
* Glob patterns match dotted names part by part: ``*`` is any text inside one
  part, ``**`` any number of parts (``stage3.*.add``, ``encoder.layer.*``, ``**.relu``).
* A class selects every submodule that is an instance of it.
* Order: names from `layer_names` and lists of plain names keep their order; a
  spec with a glob, a class or the generic "all" is put in forward order (the
  order in which the modules are first called).

Which tensor (`pick_tensor`): a Tensor output as is; a dict or a Hugging Face
`ModelOutput`: its ``last_hidden_state`` if present, else its first Tensor
value; a tuple or list: its first Tensor element (searched depth first).

Which input (`call_model`): a Tensor batch is passed as ``model(x)``; a dict (or a
tokenizer's ``BatchEncoding``) as ``model(**batch)``; a tuple or list (e.g.
``(images, labels)`` from a DataLoader) passes only its first element. NumPy arrays
become tensors, and floating-point inputs take the dtype of the model's floating
parameters (float64 arrays into a float32 model); integer inputs (token ids) are
left alone.

Token sequences (transformers): a 3-D output ``(n, seq, d)`` becomes one
representation per example as `tokens` says ("auto", "flatten", "mean", "first",
"last"), with the batch's ``attention_mask`` honoured; see `ckatlas.tokens`.

Compiled models: a ``torch.compile`` model is measured through the module it wraps
(``_orig_mod``), run eagerly: hooks need every tapped layer's output, which a
compiled graph does not hand out, and the result equals the plain model's. Layer
names may be given with or without the ``_orig_mod.`` prefix.

Every tapped module must run exactly once per forward pass; a second call in one
pass is an error naming it.
"""

from __future__ import annotations

import contextlib
import difflib
import platform
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.tokens import attention_mask, check_token_mode, is_token_output, reduce_tokens, resolve_token_mode

LayerSpec = Union[str, type, Sequence[Union[str, type]]]
LAYER_KINDS = ("blocks", "all")


# -- which modules -------------------------------------------------------------------------
def resolve_layers(model: nn.Module, spec: LayerSpec) -> list[str]:
    """Names (for `model.get_submodule`) of the modules a layer spec selects.

    Args:
        model: any module.
        spec: "blocks", "all", a name, a glob, a module class, or a list of them.

    Returns:
        Module names; for globs and classes in registration order (`GramTaps`
        puts them in forward order), otherwise in the order given.

    Raises:
        UserInputError: a name or pattern matches no module (close matches are
            listed), or "blocks" on a model without `layer_names`.
    """
    return _resolve(model, spec)[0]


def uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` model wraps (run eagerly, hooks see every layer); other models as they are."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule" else model


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


# -- which tensor, which input ---------------------------------------------------------------
def pick_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a layer's output stands for (see the module docstring), or None."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        hidden = output.get("last_hidden_state")
        if isinstance(hidden, torch.Tensor):
            return hidden
        values = list(output.values())
    elif isinstance(output, (tuple, list)):
        values = list(output)
    else:
        return None
    for value in values:
        found = pick_tensor(value)
        if found is not None:
            return found
    return None


def batch_inputs(batch: Any) -> Any:
    """What the model is called with: the batch, or its first element for a tuple/list (arrays as tensors)."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise UserInputError("a batch is an empty tuple; expected a Tensor, a dict or (inputs, labels)")
        batch = batch[0]
    if isinstance(batch, np.ndarray):
        return as_tensor(batch)
    if isinstance(batch, Mapping):
        return {k: as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
    return batch


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A NumPy array as a Tensor (sharing memory where it can); one clear error for object arrays."""
    if array.dtype == object or array.dtype.kind in "USV":
        raise UserInputError(
            f"inputs hold a NumPy array of dtype {array.dtype}; expected numbers (float images, integer token ids)"
        )
    return torch.from_numpy(np.ascontiguousarray(array))


def batch_len(batch: Any) -> int:
    """Number of examples in a batch (first dimension of its tensor, or of a dict's first tensor)."""
    x = batch_inputs(batch)
    if isinstance(x, torch.Tensor) and x.ndim > 0:
        return x.shape[0]
    if isinstance(x, Mapping):
        for value in x.values():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                return value.shape[0]
    raise UserInputError(
        f"cannot tell the batch size of a {type(x).__name__}: a batch must be a Tensor (n, ...), "
        "a dict of Tensors (n, ...) or a tuple whose first element is one"
    )


def call_model(model: nn.Module, batch: Any, device: torch.device | str | None = None) -> Any:
    """Run `model` on one batch (see the module docstring), moving tensors to `device`.

    Floating-point inputs take the dtype of the model's floating parameters; a
    ``torch.compile`` model runs as the module it wraps.
    """
    model = uncompiled(model)
    x = batch_inputs(batch)
    dtype = _float_dtype(model)
    if isinstance(x, Mapping):
        return model(**{k: _to(v, device, dtype) for k, v in x.items()})
    return model(_to(x, device, dtype))


def _float_dtype(model: nn.Module) -> torch.dtype | None:
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return None


def _to(value: Any, device: torch.device | str | None, dtype: torch.dtype | None = None) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    if dtype is not None and value.is_floating_point() and value.dtype != dtype:
        value = value.to(dtype)
    if device is not None:
        return value.to(device, non_blocking=True)
    return value


@contextlib.contextmanager
def inference(*models: nn.Module) -> Iterator[None]:
    """Eval mode and `torch.inference_mode` for the duration; training flags restored after.

    Each submodule's own flag is restored (also when an error is raised), so a
    model with some submodules deliberately in eval mode comes back as it was.
    """
    models = tuple(uncompiled(m) for m in models)
    flags = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        with torch.inference_mode():
            yield
    finally:
        for module, training in flags:
            module.training = training


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    model = uncompiled(model)
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


# -- taps --------------------------------------------------------------------------------------
class _Taps:
    """Forward hooks on named modules that process each output as it is produced.

    Subclasses define `_process(name, tensor, module, args)`. Before each forward call
    `expect(n, mask)`; after it `take()` returns {name: result} in layer order. Token
    outputs are reduced (`tokens`, with the batch's attention `mask`) before `_process`.
    """

    def __init__(self, model: nn.Module, layers: LayerSpec, *, what: str = "model", tokens: str = "auto") -> None:
        self.tokens = check_token_mode(tokens)
        self.model = uncompiled(model)
        self.what = what
        names, self._forward_order, self._lenient = _resolve(self.model, layers)
        self._names = names
        self._settled = False
        self._n: int | None = None
        self._mask: torch.Tensor | None = None
        self.token_layers: list[str] = []  # layers whose token sequences were reduced (or their padding zeroed)
        self._results: dict[str, Any] = {}
        self._calls: list[str] = []
        self._dropped: dict[str, str] = {}
        self._handles: list[Any] = []

    @property
    def names(self) -> list[str]:
        """The tapped layers, in the order results are returned (final after the first batch)."""
        return list(self._names)

    def __enter__(self) -> _Taps:
        for name in self._names:
            module = self.model.get_submodule(name)
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._results.clear()

    def expect(self, n: int | None, mask: torch.Tensor | None = None) -> None:
        """Start a forward pass over a batch of `n` examples (None: the first tapped output's).

        `mask`: the batch's attention mask, bool (n, seq) (`ckatlas.tokens.attention_mask`).
        """
        if mask is not None and n is not None and mask.shape[0] != n:
            raise UserInputError(f"attention_mask holds {mask.shape[0]} examples but the batch {n}")
        self._n = n
        self._mask = mask
        self._results.clear()
        self._calls.clear()

    def expect_batch(self, batch: Any) -> None:
        """`expect` the examples and attention mask of `batch` (as passed to `call_model`)."""
        self.expect(batch_len(batch), attention_mask(batch))

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if name in self._dropped:
                return
            if name in self._results or name in self._calls:
                self._reject(
                    name,
                    "is called more than once per forward pass; tap a module that runs once "
                    "(its parent, or one module per use)",
                )
                return
            self._calls.append(name)
            tensor = pick_tensor(output)
            if self._n is None and tensor is not None and tensor.ndim > 0:
                self._n = tensor.shape[0]
            if tensor is None:
                self._reject(name, f"returns {type(output).__name__} with no tensor in it")
                return
            if tensor.ndim == 0 or tensor.shape[0] != self._n:
                self._reject(
                    name,
                    f"returns shape {tuple(tensor.shape)} whose first dimension is not the batch (n={self._n})",
                )
                return
            if self._lenient and isinstance(args, tuple) and args and output is args[0]:
                self._reject(name, "returns its input unchanged (the identity in eval mode, e.g. Dropout)")
                return
            if is_token_output(tensor, self._mask):
                mode = resolve_token_mode(self.tokens, self._mask is not None)
                if mode != "flatten" or self._mask is not None:
                    tensor = reduce_tokens(tensor, mode, self._mask)
                    if name not in self.token_layers:
                        self.token_layers.append(name)
            self._results[name] = self._process(name, tensor, module, args)

        return hook

    def _reject(self, name: str, why: str) -> None:
        if self._lenient and not self._settled:
            self._dropped[name] = why
            self._results.pop(name, None)
            return
        raise UserInputError(f"layer {name!r} of {self.what} {why}")

    def _process(self, name: str, tensor: torch.Tensor, module: nn.Module, args: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def take(self) -> dict[str, Any]:
        """The results of the forward pass just run, in layer order; resets for the next one."""
        if not self._settled:
            self._settle()
        missing = [n for n in self._names if n not in self._results]
        if missing:
            raise UserInputError(
                f"layer(s) {missing[:5]} of {self.what} were not called in the forward pass; "
                "tap modules that the model's forward uses"
            )
        out = {n: self._results[n] for n in self._names}
        self.expect(None)
        return out

    def _settle(self) -> None:
        """After the first batch: drop unusable modules (generic "all"), fix the order."""
        if self._lenient:
            shared = [n for n, why in self._dropped.items() if "more than once" in why]
            if shared:
                warnings.warn(
                    f"{len(shared)} module(s) of {self.what} run more than once per forward pass and are left out "
                    f"of 'all': {shared[:5]}",
                    UserWarning,
                    stacklevel=4,
                )
            self._names = [n for n in self._names if n in self._results]
            if not self._names:
                raise UserInputError(f"no module of {self.what} returns a tensor with the batch as first dimension")
        if self._forward_order:
            first = {n: i for i, n in enumerate(self._calls)}
            self._names.sort(key=lambda n: first.get(n, len(first)))
        self._settled = True


class GramTaps(_Taps):
    """Context manager: each tapped module's output becomes its (n, n) Gram at once.

    The activation, shifted by the mean of its first 32 examples into a reused
    buffer, is multiplied with itself in its own precision (float32 for
    float32/16 activations) and the product centred exactly (``H G H``); only
    the Gram is kept, so memory is one forward pass plus L Grams. A layer
    constant over the examples gets an exactly zero Gram. On the CPU a layer
    whose mean is small next to its spread (``|X|^2 <= 3 |H X|^2``: every layer
    of a trained ResNet) takes its next Gram from the activation as it is,
    without the shifted copy, while that stays accurate (``<= 6``).

    A tapped eval-mode BatchNorm whose input is the output of the tapped layer
    just before it (conv -> BN) costs no product of its own: the BN is a
    per-channel scale ``a`` once centred, so from per-channel Grams ``G_c`` of
    the input, ``sum_c G_c`` is the input's Gram and ``sum_c a_c^2 G_c`` the BN's
    (the pair is learnt on the first batch; each later batch checks that the BN
    is fed the same, unmodified tensor, else computes its Gram directly).

    Example:
        >>> with GramTaps(model, "encoder.layer.*") as taps:
        ...     taps.expect(len(x)); model(x)
        ...     grams = taps.stacked()  # (L, n, n) float32, in forward order
    """

    def __init__(self, model: nn.Module, layers: LayerSpec, *, what: str = "model", tokens: str = "auto") -> None:
        super().__init__(model, layers, what=what, tokens=tokens)
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._feeds: dict[str, str] = {}  # tapped layer -> the tapped BatchNorm it feeds
        self._last: tuple[str, torch.Tensor] | None = None  # the previous tapped layer's output
        self._stash: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._uncentred: set[str] = set()  # layers whose next Gram is taken without the centring pass

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._buffers.clear()
        self._last = None
        self._stash.clear()

    def expect(self, n: int | None, mask: torch.Tensor | None = None) -> None:
        super().expect(n, mask)
        self._last = None
        self._stash.clear()

    def _process(self, name: str, tensor: torch.Tensor, module: nn.Module, args: Any) -> torch.Tensor:
        source = args[0] if isinstance(args, tuple) and args else None
        last, self._last = self._last, (name, tensor)
        stash = self._stash.pop(name, None)
        if stash is not None:
            fed, sample, gram = stash
            if source is fed and torch.equal(_sample(source), sample):
                return gram
        elif last is not None and source is last[1] and last[0] not in self._feeds:
            if _bn_scale(module, source) is not None:
                self._feeds[last[0]] = name  # used from the next batch on
        bn = self._feeds.get(name)
        if bn is not None:
            scale = _bn_scale(self.model.get_submodule(bn), tensor)
            if scale is not None:
                gram, bn_gram = self._gram(tensor, scale)
                self._stash[bn] = (tensor, _sample(tensor), bn_gram)
                return gram
        return self._gram(tensor, name=name)[0]

    def _gram(
        self, t: torch.Tensor, scale: torch.Tensor | None = None, *, name: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The centred Gram of `t`; with a per-channel `scale`, also that of ``scale * t``.

        With a layer `name` (CPU, no `scale`), the layer's Gram is taken from the
        activation as it is, without the centring pass, while its mean is small next
        to its spread (see `_uncentred_gram`); otherwise from a shifted copy.
        """
        with _full_precision(t.device):
            if name is not None and name in self._uncentred:
                gram = self._uncentred_gram(t)
                if gram is not None:
                    return gram, None
                self._uncentred.discard(name)
            return self._centred_gram(t, scale, name)

    def _uncentred_gram(self, t: torch.Tensor) -> torch.Tensor | None:
        """``H X X' H`` from the product of the activation as it is, or None when that is not accurate.

        Rounding errors of the product scale with ``|x_i| |x_j|``, which the mean inflates
        over the centred entries by about r = |X|^2 / |H X|^2: accepted while r <= 6 (float32
        errors then stay within 6x those of a centred product; a trained ResNet's layers have
        r = 1 to 3); above, the caller takes the centred path and keeps to it.
        """
        t = _memory_order(t.detach())
        if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu":
            return None
        gram = _self_product(t.reshape(t.shape[0], -1))
        total = float(gram.diagonal().sum())
        gram = _double_centred(gram)
        centred = float(gram.diagonal().sum())
        if not (centred > 0 and total <= _UNCENTRED_MAX * centred):
            return None
        return gram

    def _centred_gram(
        self, t: torch.Tensor, scale: torch.Tensor | None, name: str | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = t.detach() if scale is not None else _memory_order(t.detach())
        n = t.shape[0]
        dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else (
            torch.float32 if t.is_floating_point() else torch.float64
        )
        key = (t.device, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < t.numel():
            buf = self._buffers[key] = torch.empty(t.numel(), dtype=dtype, device=t.device)
        # Shift by the mean of the first few examples, then centre the Gram exactly: H (X - 1 s') (X - 1 s')' H
        # = H X X' H for any shift s, and the rounding error stays that of a centred product as long as
        # s is close to the batch mean (|mean - s|^2 is about 1/32 of the spread). Reads 1/8 of the
        # activation instead of all of it for the exact mean.
        k = min(n, _SHIFT_EXAMPLES)
        if t.dtype == dtype and t.is_contiguous():
            # A (1, k) x (k, p) product: about 3x faster than a reduction over dim 0.
            weights = torch.full((1, k), 1.0 / k, dtype=dtype, device=t.device)
            shift = (weights @ t.reshape(n, -1)[:k]).view(1, *t.shape[1:])
        else:
            shift = t[:k].mean(dim=0, keepdim=True, dtype=dtype)
        if scale is None:
            centred = buf[: t.numel()].view(t.shape)
            torch.sub(t, shift, out=centred)
            gram, other = _double_centred(_self_product(centred.view(n, -1))), None
            if name is not None and t.device.type == "cpu" and t.dtype == torch.float32:
                # r = |X|^2 / |H X|^2 = 1 + n |mean|^2 / |H X|^2, with the shift for the mean
                spread = float(gram.diagonal().sum())
                if spread > 0 and 1.0 + n * float(shift.double().square().sum()) / spread <= _UNCENTRED_ENTER:
                    self._uncentred.add(name)
        else:  # channel-major (c, n, rest): one product per channel
            c = t.shape[1]
            centred = buf[: t.numel()].view(c, n, -1)
            torch.sub(t.reshape(n, c, -1), shift.reshape(1, c, -1), out=centred.permute(1, 0, 2))
            weights = torch.stack([torch.ones_like(scale), scale * scale]).to(dtype)
            gram, other = (_double_centred(g) for g in _channel_products(centred, weights))
        if n > 1:
            if t.device.type == "cpu":
                # A layer constant over the examples leaves only the rounding error of its mean.
                if torch.equal(t[0], t[1]) and torch.equal(t, t[:1].expand_as(t)):
                    gram.zero_()
                    if other is not None:
                        other.zero_()
            else:  # no host synchronisation per layer
                constant = (t == t[:1]).all()
                gram = torch.where(constant, torch.zeros_like(gram), gram)
                if other is not None:
                    other = torch.where(constant, torch.zeros_like(other), other)
        return gram, other

    def stacked(self) -> torch.Tensor:
        """The Grams of the forward pass just run, as one (L, n, n) tensor in layer order.

        Raises:
            UserInputError: a layer's activations (or their Gram) hold NaN or Inf.
        """
        grams = self.take()
        stack = torch.stack(list(grams.values()))
        # |K_ij| <= sqrt(K_ii K_jj): a Gram is finite when its diagonal is, and any NaN or
        # Inf activation makes its example's diagonal entry NaN or Inf.
        bad = ~torch.isfinite(stack.diagonal(dim1=1, dim2=2)).all(dim=1)
        if bool(bad.any()):
            first = self._names[int(bad.nonzero()[0, 0])]
            raise UserInputError(
                f"layer {first!r} of {self.what} produced NaN or Inf activations (or their Gram overflowed "
                f"{stack.dtype}); CKA needs finite activations"
            )
        return stack


# Per-channel products with fewer features each are slower than a second Gram of the BN's own
# output (measured: 64 features, 64 channels, n = 256: 3.7 vs 2.0 ms): no pairing below this.
_MIN_CHANNEL_SIZE = 128


_SHIFT_EXAMPLES = 32  # the shift before each Gram product is the mean of this many examples
# A layer whose |X|^2 / |H X|^2 was at most _UNCENTRED_ENTER (centred path) takes its next Gram
# without the centring pass, as long as the ratio stays at most _UNCENTRED_MAX.
_UNCENTRED_ENTER, _UNCENTRED_MAX = 3.0, 6.0


def _double_centred(g: torch.Tensor) -> torch.Tensor:
    """``H g H`` for a symmetric (n, n) `g` (H the centring matrix), in place: subtract the row
    and column means, add back the grand mean."""
    means = g.mean(dim=1, keepdim=True)
    return g.sub_(means).sub_(means.T).add_(means.mean())


def _bn_scale(module: nn.Module, source: Any) -> torch.Tensor | None:
    """The per-channel scale of an eval-mode BatchNorm on `source`, or None when not pairable.

    With running statistics, ``bn(x) = a * x + b`` per channel, ``a = weight / sqrt(var + eps)``.
    """
    if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module.training or module.running_var is None:
        return None
    if not isinstance(source, torch.Tensor) or source.device.type != "cpu":  # a GPU has Gram time to spare
        return None
    if source.ndim < 3 or not source.is_contiguous():
        return None
    if not source.is_floating_point() or source[0, 0].numel() < _MIN_CHANNEL_SIZE:
        return None
    scale = torch.rsqrt(module.running_var.double() + module.eps)
    if module.weight is not None:
        scale = scale * module.weight.detach().double()
    return scale


def _sample(t: torch.Tensor) -> torch.Tensor:
    """A strided sample of `t` (about 4,096 values): shows an in-place change between two hooks."""
    flat = t.detach().reshape(-1)
    return flat[:: max(1, flat.numel() // 4096)].clone()


def _channel_products(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For channel-major (c, n, s) `x`: ``sum_c w_kc x_c x_c^T`` for the two rows k of `weights`.

    On an x86 CPU one oneDNN product per channel (`_product_nt`), then one
    (2, c) x (c, n*n) product; elsewhere one batched product.
    """
    c, n, _ = x.shape
    with _full_precision(x.device):
        if _onednn(x):
            parts = torch.stack([_ONEDNN_LINEAR(x[i], x[i], None, "none", [], "") for i in range(c)])
        else:
            parts = torch.bmm(x, x.transpose(1, 2))
        out = (weights @ parts.view(c, -1)).view(2, n, n)
    return out[0], out[1]


def _self_product(x: torch.Tensor) -> torch.Tensor:
    """``x @ x.T`` for (n, p) `x`; on the CPU block row by block row, skipping the upper blocks.

    PyTorch has no symmetric rank-k product (BLAS syrk). With block rows of 128
    (n = 256: 2 rows, each times the rows up to it, 3 of 4 blocks) the product is
    15% faster than a plain one for p >= 4,096 (measured with oneDNN on 2 cores;
    rows of 64 or 32 are slower); the upper blocks are mirrored.
    """
    n, p = x.shape
    with _full_precision(x.device):
        if x.device.type != "cpu" or n < 256 or p < 1024:
            return _product_nt(x, x)
        h = max(128, -(-n // 4))
        gram = torch.empty(n, n, dtype=x.dtype)
        for start in range(0, n, h):
            stop = min(n, start + h)
            gram[start:stop, :stop] = _product_nt(x[start:stop], x[:stop])
            gram[:start, start:stop] = gram[start:stop, :start].T
        return gram


def _product_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for 2-D `a`, `b`: through oneDNN's own float32 kernel on an x86 CPU.

    PyTorch's CPU matrix product calls MKL, which on AMD processors runs its
    AVX2 code; oneDNN's AVX-512 kernel (the one PyTorch's convolutions use) is
    2.3x faster there (measured: 440 vs 190 GFLOP/s, (256, 16384) Grams, 2 cores)
    and as accurate (IEEE float32 with float32 accumulation: `_full_precision`).
    """
    if _onednn(a) and _onednn(b):
        return _ONEDNN_LINEAR(a, b, None, "none", [], "")
    return a @ b.T


def _find_onednn_linear() -> Any:
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x = torch.linspace(-1.0, 1.0, 320).reshape(8, 40).cos()  # no draw from the global generator
        if torch.allclose(op(x, x[:5], None, "none", [], ""), x @ x[:5].T, rtol=1e-5, atol=1e-5):
            return op
    except Exception:  # a PyTorch build without it (or with another signature): the plain product
        pass
    return None


_ONEDNN_LINEAR = _find_onednn_linear()


def _onednn(x: torch.Tensor) -> bool:
    return (
        _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous()
        and not x.requires_grad
    )


@contextlib.contextmanager
def _full_precision(device: torch.device) -> Iterator[None]:
    """On the CPU, IEEE float32 products for the duration, whatever `torch.set_float32_matmul_precision` says.

    "medium" or "high" lets oneDNN compute float32 products in bf16 on CPUs with
    AMX; a Gram must stay float32 (see BENCHMARKS.md). On CUDA the user's TF32
    settings are left alone (PyTorch's default products there are full float32):
    setting the new-style flag over a legacy ``allow_tf32`` one makes PyTorch raise
    on the next product.
    """
    matmul = getattr(torch.backends.mkldnn, "matmul", None) if device.type == "cpu" else None
    old = getattr(matmul, "fp32_precision", None)
    if old is None or old == "ieee":
        yield
        return
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = old


def _memory_order(t: torch.Tensor) -> torch.Tensor:
    """`t` with its non-batch dimensions permuted into memory order when that makes it contiguous.

    A Gram does not depend on the order of the features, so e.g. a channels_last
    activation is used without a copy.
    """
    if t.ndim <= 2 or t.is_contiguous():
        return t
    dims = sorted(range(1, t.ndim), key=lambda d: -t.stride(d))
    view = t.permute(0, *dims)
    return view if view.is_contiguous() else t


class ActivationTaps(_Taps):
    """Context manager keeping each tapped module's output (detached copies), for probes or PCA."""

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec,
        *,
        to: torch.device | str | None = None,
        what: str = "model",
        tokens: str = "auto",
    ) -> None:
        super().__init__(model, layers, what=what, tokens=tokens)
        self.to = to

    def _process(self, name: str, tensor: torch.Tensor, module: nn.Module, args: Any) -> torch.Tensor:
        # A copy: a later in-place op (ReLU(inplace=True)) must not change what was captured.
        out = tensor.detach()
        return out.to(self.to, copy=True) if self.to is not None else out.clone()


def capture_activations(
    model: nn.Module,
    layers: LayerSpec,
    inputs: Any,
    *,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    to: torch.device | str | None = "cpu",
    tokens: str = "auto",
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Activations of the selected layers for `inputs`, in eval and inference mode.

    Args:
        model: any module (its training flags are restored afterwards).
        layers: a layer spec (see `resolve_layers`).
        inputs: one batch (Tensor, dict or (inputs, labels) tuple), or a Tensor
            (N, ...) to run in slices of `batch_size`.
        batch_size: slice a Tensor `inputs` into batches of this size (None: one batch).
        device: where the model runs; None means the device of its parameters.
        to: where the activations are kept (None: where they were produced).
        tokens: how a token sequence becomes one example's representation
            (see `ckatlas.tokens`; the batch's attention_mask is honoured).
        reduce: applied to each layer's activations of each batch before they are kept
            (e.g. pooling large feature maps), so that memory holds only its output.

    Returns:
        {layer name: (N, ...) tensor}, in forward order for globs and classes
        (token outputs reduced as `tokens` says).
    """
    device = model_device(model) if device is None else torch.device(device)
    if batch_size is not None and isinstance(inputs, torch.Tensor):
        batches = list(inputs.split(batch_size))
    else:
        batches = [inputs]
    parts: dict[str, list[torch.Tensor]] = {}
    with ActivationTaps(model, layers, to=to, tokens=tokens) as taps, inference(model):
        for batch in batches:
            taps.expect_batch(batch)
            call_model(model, batch, device)
            for name, act in taps.take().items():
                parts.setdefault(name, []).append(act if reduce is None else reduce(act))
    return {name: acts[0] if len(acts) == 1 else torch.cat(acts) for name, acts in parts.items()}


__all__ = [
    "ActivationTaps",
    "GramTaps",
    "LAYER_KINDS",
    "LayerSpec",
    "batch_inputs",
    "batch_len",
    "call_model",
    "capture_activations",
    "inference",
    "model_device",
    "pick_tensor",
    "resolve_layers",
    "uncompiled",
]
