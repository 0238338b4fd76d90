"""`GramPasses`: the one loop over minibatches behind every heatmap, PCA and training-dynamics record."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ckatlas._version import __version__
from ckatlas.capture.calls import batch_len, call_model, first_call, inference
from ckatlas.capture.gram_taps import GramTaps
from ckatlas.capture.layers import LayerSpec, uncompiled
from ckatlas.capture.minibatches import MIN_BATCH, Minibatches
from ckatlas.runtime.devices import run_device
from ckatlas.errors import UserInputError
from ckatlas.capture.tokens import attention_mask, check_token_mode, resolve_token_mode


class GramPasses:
    """The one loop over minibatches behind every heatmap and PCA: each distinct model runs once
    per batch with Gram taps on its layers; iterating yields, per batch, each model's stacked
    Grams (L, n, n) in the order of `models`.

    After the loop: `names` (each model's layers, in their final order), `n_per_pass`,
    `num_batches`, `masked` (whether any batch carried an attention mask) and `token_layers`
    (per model, the layers whose token sequences were reduced), and `metadata()`.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        names: Sequence[str],
        specs: Sequence[LayerSpec],
        inputs: Any,
        batch_size: int,
        passes: int,
        shuffle: bool,
        seed: int,
        device: torch.device | str | None,
        progress: bool | None = False,
        tokens: str = "auto",
        desc: str = "CKA",
        min_batch: int = MIN_BATCH,
        needs: str = "minibatch CKA",
        float64: bool = False,
    ) -> None:
        self.tokens = check_token_mode(tokens)
        self.models = [uncompiled(m) for m in models]
        self.model_names, self.specs = list(names), list(specs)
        self.device = _checked_device(self.models, self.model_names, batch_size, passes, device)
        self.batches = Minibatches(inputs, batch_size, shuffle, seed, min_batch, needs)
        self.float64 = float64  # Grams in float64 (measures built on their eigenvalues)
        if passes > 1 and self.batches.one_shot:
            raise UserInputError(
                "inputs is a one-shot iterator; passes > 1 needs a Tensor or a re-iterable (a list, a DataLoader)"
            )
        self.batch_size, self.passes, self.shuffle, self.seed = batch_size, passes, shuffle, seed
        self.progress, self.desc = progress, desc
        self.names: list[list[str]] = []
        self.token_layers: list[list[str]] = []
        self.n_per_pass = self.num_batches = 0
        self.batch_sizes: list[int] = []  # of the first pass
        self.masked = False
        self._warned_short = False

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        distinct = list({id(m): m for m in self.models}.values())
        total = self.batches.count * self.passes if self.batches.count is not None else None
        with contextlib.ExitStack() as stack:
            taps = [
                stack.enter_context(GramTaps(m, spec, what=f"model {name!r}", tokens=self.tokens, float64=self.float64))
                for m, spec, name in zip(self.models, self.specs, self.model_names)
            ]
            stack.enter_context(inference(*distinct))
            disable = None if self.progress is None else not self.progress  # None: only on a terminal
            bar = stack.enter_context(tqdm(total=total, desc=self.desc, unit="batch", disable=disable, leave=False))
            for p in range(self.passes):
                for batch in self.batches.epoch():
                    n, mask = batch_len(batch), attention_mask(batch)
                    self.masked = self.masked or mask is not None
                    for t in taps:
                        t.expect(n, mask)
                    for model in distinct:
                        if self.num_batches == 0:  # the first batch: an input the model cannot take is one line
                            first_call(model, batch, self.device, self._name_of(model))
                        else:
                            call_model(model, batch, self.device)
                    grams = [t.stacked() for t in taps]
                    self.names = [t.names for t in taps]  # final after the first batch
                    if p == 0:
                        self._count_batch(n)
                    self.num_batches += 1
                    bar.update(1)
                    yield grams
            self.token_layers = [list(t.token_layers) for t in taps]
        if not self.num_batches:
            raise UserInputError(f"no batch of at least {self.batches.min_size} examples to compute "
                                 f"{self.batches.needs} from: give more inputs")

    def _count_batch(self, n: int) -> None:
        """Record a batch of the first pass; warn once when an iterable's batch is under half the largest
        so far (it weighs as much as a full one in the minibatch sums)."""
        if not self.batches.sliced and self.batch_sizes and n < max(self.batch_sizes) / 2 and not self._warned_short:
            warnings.warn(
                f"a batch of {n} examples counts as much as one of {max(self.batch_sizes)} in the minibatch sums, which "
                f"moves the estimate: pass the examples as one Tensor (ckatlas then cuts batches of near-equal size) "
                f"or leave the short batch out (a DataLoader's drop_last=True)", UserWarning, stacklevel=4)
            self._warned_short = True
        self.batch_sizes.append(n)
        self.n_per_pass += n

    def _name_of(self, model: nn.Module) -> str:
        name = next(n for m, n in zip(self.models, self.model_names) if m is model)
        kind = type(model).__name__
        return f"model {kind!r}" if name in ("model", kind) else f"model {name!r} ({kind})"

    def metadata(self) -> dict[str, Any]:
        """The settings of the loop (JSON-able), for a result's metadata."""
        sliced = self.batches.sliced
        return {
            "batch_size": self.batch_size if sliced else None,
            "examples": self.n_per_pass,
            "batches_per_pass": len(self.batch_sizes),
            "batch_sizes": [min(self.batch_sizes), max(self.batch_sizes)] if self.batch_sizes else None,
            "shuffle": self.shuffle if sliced else None,
            "seed": self.seed if sliced and self.shuffle else None,
            "device": str(self.device),
            "tokens": resolve_token_mode(self.tokens, self.masked),
            "attention_mask": self.masked,
            "ckatlas": __version__,
            "torch": torch.__version__,
        }


def _checked_device(
    models: list[nn.Module], names: list[str], batch_size: int, passes: int, device: torch.device | str | None
) -> torch.device:
    """Validate the arguments; the device to run on (None: model A's)."""
    for label, value in (("batch_size", batch_size), ("passes", passes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"{label} must be a positive integer, got {value!r}")
    return run_device(models, device, names)


__all__ = ["GramPasses"]
