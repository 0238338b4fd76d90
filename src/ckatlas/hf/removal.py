"""Which layers of a transformer are redundant, and what removing them costs.

`layer_redundancy(model, inputs)` runs the model once over calibration inputs and
measures, between the L + 1 *boundaries* of its layer stack (boundary 0: the input of
the first layer; boundary i: the output of layer i - 1, the input of layer i):

* ``cka``: the minibatch CKA heatmap (the paper's unbiased estimator) of the boundaries,
  each example one vector (the mean over its valid tokens), and the blocks in it
  (`BlockDetector`);
* ``angular``: the angular distance ``arccos(cos(x_a, x_b)) / pi`` between boundaries a
  and b at each example's last valid token, averaged over examples (Gromov et al. 2024,
  "The Unreasonable Ineffectiveness of the Deeper Layers");
* ``block_influence``: each layer's ``1 - cos(input, output)``, averaged over every valid
  token (ShortGPT's Block Influence, Men et al. 2024).

Each criterion gives, for n = 1, 2, ... layers removed, the layers to remove:

* ``cka``: one at a time, the layers inside blocks first (both their input and output
  boundary in one block: the paper's redundant layers), each group in order of the CKA of
  the layer's input with its output, highest first; nested (n + 1 adds one layer to n);
* ``angular``: the n consecutive layers ``l .. l+n-1`` whose span has the smallest
  angular distance between boundaries l and l + n (Gromov et al.'s choice; not nested);
* ``block_influence``: the n layers of lowest Block Influence (ShortGPT; nested).

`removal_curves` then measures held-out quality after each removal: the mean
next-token loss and perplexity of a causal language model, or the accuracy of a
classifier (inputs with ``labels``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ckatlas.analysis.blocks import BlockDetector
from ckatlas.capture.calls import call_model, inference, pick_tensor
from ckatlas.capture.minibatches import MIN_BATCH
from ckatlas.cka import MinibatchCKA
from ckatlas.data.batches import even_batch_count
from ckatlas.runtime.devices import run_device
from ckatlas.errors import UserInputError
from ckatlas.hf.data import batches, num_examples, without_labels
from ckatlas.hf.stack import LayerStack, layer_stack, layers_removed
from ckatlas.io.results import JsonResult
from ckatlas.capture.tokens import attention_mask, reduce_tokens

CRITERIA = ("cka", "angular", "block_influence")


@dataclass
class LayerRemoval(JsonResult):
    """The redundancy of a model's layers and, once measured, its removal curves (module docstring).

    Attributes:
        layers: the L layer names (``model.layers.0`` ...).
        cka: (L+1, L+1) CKA between the boundaries.
        angular: (L+1, L+1) mean angular distance between the boundaries (last token).
        block_influence: (L,) each layer's Block Influence.
        blocks: blocks of the boundary heatmap, [first, last] boundary (inclusive).
        removals: per criterion, the layers removed for n = 1, 2, ... (a list per n).
        curves: per criterion, the held-out metric after each n (index 0: nothing removed);
            empty until `removal_curves`.
        metric: "loss" (causal LM: mean next-token loss; perplexity is its exp) or "accuracy".
        metadata: examples, num_tokens (real tokens seen), seconds, detector settings (in heatmaps
            `metadata["tokens"]` is the token reduction; here a count has its own key).
        healing: after `heal` (``ckatlas layers --heal``): the criterion and n healed, the steps,
            learning rate, and the held-out loss before and after; empty otherwise.
    """

    FORMAT = "ckatlas.LayerRemoval"
    WHAT = "a layer removal result (removal.json)"

    layers: list[str]
    cka: np.ndarray
    angular: np.ndarray
    block_influence: np.ndarray
    blocks: list[list[int]]
    removals: dict[str, list[list[int]]]
    curves: dict[str, list[float]] = field(default_factory=dict)
    metric: str = "loss"
    metadata: dict[str, Any] = field(default_factory=dict)
    healing: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        size = len(self.layers) + 1
        self.cka = np.asarray(self.cka, dtype=np.float64).reshape(size, size)
        self.angular = np.asarray(self.angular, dtype=np.float64).reshape(size, size)
        self.block_influence = np.asarray(self.block_influence, dtype=np.float64).reshape(size - 1)

    def fields(self) -> dict[str, Any]:
        return {"layers": self.layers, "cka": _nan_to_none(self.cka), "angular": _nan_to_none(self.angular),
                "block_influence": _nan_to_none(self.block_influence), "blocks": self.blocks,
                "removals": self.removals, "curves": self.curves, "metric": self.metric, "metadata": self.metadata,
                "healing": self.healing}

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> LayerRemoval:
        arr = lambda v: np.array(v, dtype=np.float64)  # noqa: E731  (None -> NaN)
        return cls(data["layers"], arr(data["cka"]), arr(data["angular"]), arr(data["block_influence"]),
                   data["blocks"], data["removals"], data["curves"], data["metric"], data["metadata"], data["healing"])

    def removed(self, criterion: str, n: int) -> list[int]:
        """The layers `criterion` removes when n are removed."""
        if criterion not in self.removals:
            raise UserInputError(f"unknown criterion {criterion!r}; expected one of {', '.join(self.removals)}")
        sets = self.removals[criterion]
        if not 1 <= n <= len(sets):
            raise UserInputError(f"n must be in [1, {len(sets)}] (the removals measured), got {n}")
        return sets[n - 1]

    def _order(self, criterion: str, shown: int) -> str:
        """The layers in the order `criterion` removes them ("11 (model.layers.11), 3 (...), ...")."""
        order: list[int] = []
        for removed in self.removals[criterion]:
            order += [i for i in removed if i not in order]
        text = ", ".join(f"{i} ({self.layers[i]})" for i in order[:shown])
        return text + (" ..." if len(order) > shown else "")

    def summary(self) -> str:
        """The blocks, each criterion's first removals and, when measured, the curves."""
        lines = [f"{len(self.layers)} layers; blocks of the boundary heatmap: "
                 + (", ".join(f"{a}-{b}" for a, b in self.blocks) or "none")]
        for name in self.removals:
            lines.append(f"  {name:<16} removes, in order: {self._order(name, 4)}")
        if self.healing:
            h = self.healing
            lines.append(f"healed the model without {h['n']} layers ({h['criterion']}) for {h['steps']} steps: held-out "
                         f"perplexity {math.exp(h['loss_before']):.2f} -> {math.exp(h['loss_after']):.2f}")
        if self.curves:
            label = "perplexity" if self.metric == "loss" else "accuracy"
            show = (lambda v: f"{math.exp(v):10.2f}") if self.metric == "loss" else (lambda v: f"{v:10.4f}")
            lines.append(f"held-out {label} after n layers removed:")
            lines.append("  n   " + "".join(f"{name:>18}" for name in self.curves))
            for n in range(max(len(c) for c in self.curves.values())):
                lines.append(f"  {n:<4}" + "".join(f"{show(c[n]):>18}" if n < len(c) else " " * 18
                                                 for c in self.curves.values()))
        return "\n".join(lines)


def _nan_to_none(a: np.ndarray) -> Any:
    return [_nan_to_none(x) for x in a] if a.ndim > 1 else [None if not np.isfinite(v) else float(v) for v in a]


# -- one pass: the three criteria's statistics -----------------------------------------------------
class _Boundaries:
    """Hooks that keep, for one forward pass, the input of the first layer and every layer's output."""

    def __init__(self, model: nn.Module, stack: LayerStack) -> None:
        self.layers = [model.get_submodule(name) for name in stack.names()]
        self.states: list[torch.Tensor | None] = [None] * (len(self.layers) + 1)
        self.handles: list[Any] = []

    def __enter__(self) -> _Boundaries:
        def first(module: nn.Module, args: Any, kwargs: Any) -> None:
            x = args[0] if args else kwargs.get("hidden_states")
            self.states[0] = pick_tensor(x)

        self.handles.append(self.layers[0].register_forward_pre_hook(first, with_kwargs=True))
        for i, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_hook(
                lambda module, args, output, i=i: self.states.__setitem__(i + 1, pick_tensor(output))))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()

    def take(self, n: int) -> list[torch.Tensor]:
        states = self.states
        self.states = [None] * len(states)
        missing = [i for i, s in enumerate(states) if s is None]
        if missing:
            raise UserInputError(f"boundaries {missing[:5]} of the layer stack were not reached in the forward pass")
        if any(s.ndim != 3 or s.shape[0] != n for s in states):
            raise UserInputError(f"the layers' outputs are {tuple(states[1].shape)}; expected (batch {n}, tokens, width)")
        return [s.float() for s in states]


def layer_redundancy(
    model: nn.Module,
    inputs: Any,
    *,
    batch_size: int = 16,
    layers_path: str | None = None,
    detector: BlockDetector | None = None,
    max_remove: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> LayerRemoval:
    """The three criteria on `inputs` (module docstring); `removal_curves` adds the held-out curves.

    Args:
        model: a transformer (a Hugging Face model, or any module with a ModuleList of layers).
        inputs: calibration data: token ids (N, seq), a dict of tensors (``input_ids``,
            ``attention_mask``, ``pixel_values``, ...; ``labels`` are left out), N >= 4.
        batch_size: examples per forward pass (at least 4: the unbiased CKA estimator).
        layers_path: the ModuleList of layers, when `layer_stack` would guess wrong.
        detector: the block detector on the boundary heatmap (default: `BlockDetector()`).
        max_remove: removals listed per criterion (default: half the layers).
        progress: a progress bar over the calibration batches (None: when stderr is a terminal).
    """
    stack = layer_stack(model, layers_path)
    count = stack.count
    max_remove = count // 2 if max_remove is None else max_remove
    if isinstance(max_remove, bool) or not isinstance(max_remove, int) or not 1 <= max_remove < count:
        raise UserInputError(f"max_remove must be an integer in [1, {count - 1}] (the model has {count} layers), "
                             f"got {max_remove!r}")
    if batch_size < MIN_BATCH:
        raise UserInputError(f"batch_size must be >= {MIN_BATCH} (the unbiased CKA estimator), got {batch_size}")
    device = run_device(model, device)
    started = time.perf_counter()
    acc = MinibatchCKA(count + 1, device=device)
    bi_sum = torch.zeros(count, dtype=torch.float64, device=device)
    ang_sum = torch.zeros(count + 1, count + 1, dtype=torch.float64, device=device)
    tokens = examples = 0
    total = even_batch_count(num_examples(inputs), batch_size, MIN_BATCH)
    with _Boundaries(model, stack) as hooks, inference(model), \
            _bar(total, "calibration", progress) as bar:
        for batch in bar(batches(without_labels(inputs), batch_size, min_size=MIN_BATCH, even=True)):
            n = num_examples(batch)
            call_model(model, batch, device)
            states = hooks.take(n)
            mask = _mask(batch, states[0], device)
            acc.update([reduce_tokens(s, "mean", mask) for s in states])  # ckatlas.capture.tokens: the mean over real tokens
            for i in range(count):
                cos = torch.nn.functional.cosine_similarity(states[i], states[i + 1], dim=-1)
                bi_sum[i] += (1 - cos.double())[mask].sum()
            ends = torch.stack([reduce_tokens(s, "last", mask) for s in states])  # (L+1, n, d): last real token
            ends = torch.nn.functional.normalize(ends.double(), dim=-1)
            cos = torch.einsum("and,bnd->abn", ends, ends).clamp(-1, 1)
            ang_sum += torch.arccos(cos).sum(-1) / math.pi
            tokens += int(mask.sum())
            examples += n
    if not examples:
        raise UserInputError(f"no batch of at least {MIN_BATCH} examples: give more calibration inputs")
    cka = acc.compute().cpu().numpy()
    bi = (bi_sum / tokens).cpu().numpy()
    angular = (ang_sum / examples).cpu().numpy()
    detector = detector or BlockDetector()
    found = detector.find(cka)
    blocks = [[int(b.start), int(b.end)] for b in found.blocks]
    order, ranks = _cka_order(cka, blocks), np.argsort(bi, kind="stable").tolist()
    counts = range(1, max_remove + 1)
    removals = {"cka": [sorted(order[:n]) for n in counts], "angular": [_best_span(angular, n) for n in counts],
                "block_influence": [sorted(ranks[:n]) for n in counts]}
    return LayerRemoval(stack.names(), cka, angular, bi, blocks, removals, metadata={
        "examples": examples, "num_tokens": tokens, "layers_path": stack.path, "detector": detector.to_dict(),
        "seconds": time.perf_counter() - started})


@contextlib.contextmanager
def _bar(total: int, desc: str, progress: bool | None) -> Iterator[Callable[[Iterable[Any]], Iterable[Any]]]:
    """A tqdm bar of `total` steps (shown when `progress`; None: when stderr is a terminal), as a
    wrapper of the iterable it counts."""
    from tqdm.auto import tqdm

    disable = None if progress is None else not progress
    with tqdm(total=total, desc=desc, unit="step", disable=disable, leave=False, dynamic_ncols=True) as bar:
        def counted(items: Iterable[Any]) -> Iterator[Any]:
            for item in items:
                yield item
                bar.update(1)
        yield counted


def _mask(batch: Any, state: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Which tokens count: the batch's attention mask (`ckatlas.capture.tokens.attention_mask`) when it covers
    the layers' tokens, else all of them."""
    mask = attention_mask(batch)
    if mask is not None and tuple(mask.shape) == tuple(state.shape[:2]):
        return mask.to(device)
    return torch.ones(state.shape[:2], dtype=torch.bool, device=device)


def _cka_order(cka: np.ndarray, blocks: Sequence[Sequence[int]]) -> list[int]:
    """Layers inside blocks first, then the others; each group by the CKA of input and output, highest first."""
    count = cka.shape[0] - 1
    inside = {i for a, b in blocks for i in range(a, b)}  # layer i maps boundary i to i + 1
    score = [cka[i, i + 1] if np.isfinite(cka[i, i + 1]) else -np.inf for i in range(count)]
    return sorted(range(count), key=lambda i: (i not in inside, -score[i], i))


def _best_span(angular: np.ndarray, n: int) -> list[int]:
    """Layers l .. l+n-1 with the smallest angular distance between boundaries l and l + n."""
    count = angular.shape[0] - 1
    distances = [angular[start, start + n] for start in range(count - n + 1)]
    start = int(np.nanargmin(distances))
    return list(range(start, start + n))


# -- held-out quality after removals ---------------------------------------------------------------
def removal_curves(
    model: nn.Module,
    result: LayerRemoval,
    inputs: Any,
    *,
    batch_size: int = 16,
    criteria: Sequence[str] = CRITERIA,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> LayerRemoval:
    """`result` with its curves: the held-out metric of `model` with each criterion's layers removed.

    `inputs` are held-out data (not those `result` was computed on): token ids or a dict;
    with ``labels`` the metric is accuracy, otherwise the mean next-token loss. `progress`: a
    progress bar over the models evaluated (None: when stderr is a terminal).
    """
    unknown = [c for c in criteria if c not in result.removals]
    if unknown:
        raise UserInputError(f"unknown criteria {unknown}; expected some of {', '.join(result.removals)}")
    stack = layer_stack(model, result.metadata.get("layers_path"))
    if stack.names() != result.layers:
        raise UserInputError(f"the result was computed on other layers ({len(result.layers)}) than the model's "
                             f"({stack.count})")
    device = run_device(model, device)
    metric = "accuracy" if isinstance(inputs, Mapping) and "labels" in inputs else "loss"
    cache: dict[tuple[int, ...], float] = {}

    def measure(removed: Sequence[int]) -> float:
        key = tuple(sorted(removed))
        if key not in cache:
            with layers_removed(model, key, stack):
                cache[key] = evaluate(model, inputs, batch_size=batch_size, device=device)
        return cache[key]

    started = time.perf_counter()
    wanted = [()] + [tuple(sorted(r)) for c in criteria for r in result.removals[c]]
    with _bar(len(set(wanted)), "held-out models", progress) as bar:
        for key in bar(list(dict.fromkeys(wanted))):  # each distinct removal once
            measure(key)
    curves = {c: [measure(())] + [measure(r) for r in result.removals[c]] for c in criteria}
    return replace(result, curves=curves, metric=metric, metadata={
        **result.metadata, "curve_seconds": time.perf_counter() - started, "held_out_examples": num_examples(inputs)})


def evaluate(model: nn.Module, inputs: Any, *, batch_size: int = 16, device: torch.device | str | None = None) -> float:
    """Accuracy (inputs with ``labels``) or mean next-token loss (token ids; padding left out)."""
    device = run_device(model, device)
    total = count = 0.0
    with inference(model):
        for batch in batches(inputs, batch_size, min_size=1):
            labels = batch.get("labels") if isinstance(batch, Mapping) else None
            logits = output_logits(call_model(model, without_labels(batch), device))
            if labels is not None:
                total += float((logits.argmax(-1).cpu() == labels.cpu()).sum())
                count += len(labels)
                continue
            losses, mask = token_losses(batch, logits, device)
            total += float(losses[mask].double().sum())
            count += int(mask.sum())
    if not count:
        raise UserInputError("no held-out token or example to evaluate on")
    return total / count


def token_losses(batch: Any, logits: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each position's next-token loss (batch, seq-1) and which count: a prediction counts when it
    and its target are real tokens (padding left out)."""
    ids = (batch["input_ids"] if isinstance(batch, Mapping) else batch).to(device)
    valid = _mask(batch, logits, device)
    mask = valid[:, 1:] & valid[:, :-1]
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(),
                                               reduction="none").view(mask.shape)
    return losses, mask


def output_logits(output: Any) -> torch.Tensor:
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None:
        logits = pick_tensor(output)
    if not isinstance(logits, torch.Tensor):
        raise UserInputError(f"the model's output ({type(output).__name__}) holds no logits")
    return logits


__all__ = ["CRITERIA", "LayerRemoval", "evaluate", "layer_redundancy", "removal_curves"]
