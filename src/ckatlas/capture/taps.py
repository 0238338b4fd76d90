"""Forward hooks on named modules (`_Taps`), and activations kept whole (`ActivationTaps`,
`capture_activations`); see `ckatlas.capture`."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.capture.calls import batch_len, call_model, inference, pick_tensor
from ckatlas.runtime.devices import run_device
from ckatlas.capture.layers import LayerSpec, _resolve, uncompiled
from ckatlas.capture.tokens import attention_mask, check_token_mode, is_token_output, reduce_tokens, resolve_token_mode



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

        `mask`: the batch's attention mask, bool (n, seq) (`ckatlas.capture.tokens.attention_mask`).
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
            (see `ckatlas.capture.tokens`; the batch's attention_mask is honoured).
        reduce: applied to each layer's activations of each batch before they are kept
            (e.g. pooling large feature maps), so that memory holds only its output.

    Returns:
        {layer name: (N, ...) tensor}, in forward order for globs and classes
        (token outputs reduced as `tokens` says).
    """
    device = run_device(model, device)
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
