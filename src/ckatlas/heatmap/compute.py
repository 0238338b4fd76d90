"""CKA heatmaps over data: `heatmap` (one model or two) and `population_heatmaps` (many).

Representations are measured in inference mode: models are put in eval mode
for the duration (their training flags restored after, also on error) and run
under `torch.inference_mode()`. The paper's minibatch estimator is used: each
layer's Gram is computed in a forward hook (`ckatlas.capture.GramTaps`) and fed
to `ckatlas.cka.MinibatchCKA`; with `passes` > 1 the data are reshuffled each
pass (the paper uses 10 passes).

Batches: a Tensor or NumPy array `inputs` (N, ...), or a dict of them (a
tokenizer's ``BatchEncoding``: ``input_ids``, ``attention_mask``, ... each (N, ...)),
is cut into batches of near-equal size around `batch_size` (at least 4, the unbiased
estimator's minimum; 11 for k-NN): N examples make round(N / batch_size) batches whose
sizes differ by at most one, so every example is used and no short leftover batch
weighs as much as a full one in the minibatch sums (a multiple of `batch_size` gives
batches of exactly `batch_size`). They are consecutive slices with `shuffle=False`,
slices of a fresh permutation each pass (from a generator seeded with `seed`)
otherwise. An iterable of batches (Tensors, arrays, dicts or ``(inputs, labels)``
tuples) is used as it comes (`batch_size`, `shuffle` and `seed` do not apply; it must
be re-iterable for `passes` > 1): a batch under the measure's minimum is skipped with
a warning, and one under half the largest is warned about (it moves the estimate).
The result's metadata records the examples, the batches per pass and the smallest
and largest batch.
Floating-point inputs take the model's parameter dtype (float64 arrays into a
float32 model).

Tokens: a transformer layer's ``(n, seq, d)`` output becomes one representation
per example as `tokens` says, the batch's ``attention_mask`` honoured (padding
never enters a Gram); the default "auto" is the mean over valid tokens for a
masked batch, the flattened tokens otherwise (`ckatlas.capture.tokens`). The mode used
is recorded in the result's metadata.

Device: `device=None` means the device of model A's parameters. Models are not
moved (every model must already be on `device`); each batch is moved there, and
the Grams stay there.

Measures: `measure=` picks what each layer pair's cell holds, all from the same Grams
(`ckatlas.cka.measures`): the paper's minibatch linear CKA by default, or RBF or
debiased CKA, orthogonal Procrustes, mutual k-NN or RSA. The result records it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ckatlas.capture import LayerSpec, uncompiled
from ckatlas.capture.gram_passes import GramPasses
from ckatlas.capture.minibatches import Minibatches
from ckatlas.cka.measures import accumulator, check_all_examples_memory, measure_info
from ckatlas.errors import UserInputError
from ckatlas.heatmap.result import CKAResult, PopulationResult


# -- the API -------------------------------------------------------------------------------
def heatmap(
    model_a: nn.Module,
    inputs: Any,
    model_b: nn.Module | None = None,
    layers: LayerSpec = "auto",
    layers_b: LayerSpec | None = None,
    batch_size: int = 256,
    passes: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
    *,
    progress: bool | None = None,
    model_names: tuple[str, str] | None = None,
    tokens: str = "auto",
    distributed: bool | None = None,
    measure: str = "cka",
) -> CKAResult:
    """Minibatch CKA between the layers of one model, or of two models on the same batches.

    Args:
        model_a: the model of the rows.
        inputs: a Tensor (N, ...) or an iterable of batches (see the module docstring).
        model_b: the model of the columns; None compares `model_a` with itself.
        layers: layers of model A: "auto" (the default: "blocks" for a model that
            defines them with `layer_names`, as ckatlas's models do, else every leaf
            module), "blocks", "all", names, glob patterns or module classes (see
            `ckatlas.capture.resolve_layers`).
        layers_b: layers of model B; None uses `layers`.
        batch_size: the target examples per minibatch (Tensor inputs): the examples are cut into the
            nearest whole number of batches of this size, of near-equal sizes.
        passes: passes over the data, reshuffled each time when `shuffle`.
        shuffle: draw batches from a random permutation (Tensor inputs).
        seed: seed of the permutations.
        device: where the models run; None means model A's parameter device.
        progress: show a progress bar (None: when stderr is a terminal).
        model_names: names stored in the result (default: the class names).
        tokens: how a layer's token sequence (n, seq, d) becomes one example's
            representation: "auto" (mean over valid tokens for a batch with an
            attention_mask, else flatten), "flatten", "mean", "first" or "last"
            (see `ckatlas.capture.tokens`); padding never enters a Gram.
        distributed: inside a ``torch.distributed`` process group (torchrun, DDP), each rank
            passes its own shard of the data and every rank gets the heatmap of all of it (the
            estimator's sums are reduced across ranks). None: when a group of more than one
            rank is initialised. Every rank must call it, with at least one batch.
        measure: the similarity of each layer pair, a name in `ckatlas.cka.measures.MEASURES` (the
            built-ins and any added with `register_measure`): "cka", the paper's minibatch linear
            CKA, by default. A measure that needs all examples in one batch takes Tensor inputs and
            N^2 memory per layer, refused above a limit before any forward pass. Recorded in the
            result's metadata.

    Returns:
        A `CKAResult`; `matrix[i, j]` compares layer i of A with layer j of B.
    """
    models = [model_a] if model_b is None else [model_a, model_b]
    specs = [layers] if model_b is None else [layers, layers if layers_b is None else layers_b]
    if model_names is None:
        model_names = tuple(type(uncompiled(m)).__name__ for m in (model_a, model_b if model_b is not None else model_a))
    names = [model_names[0]] if model_b is None else list(model_names)
    pair = (0, 0) if model_b is None else (0, 1)
    batch_size, passes = _batching(measure, models, specs, inputs, batch_size, passes)
    loop = GramPasses(models, names, specs, inputs, batch_size, passes, shuffle, seed, device, progress, tokens,
                      **_minimum(measure))
    return _population(loop, [pair], distributed, measure)[pair]


def population_heatmaps(
    models: Mapping[str, nn.Module] | Sequence[nn.Module],
    inputs: Any,
    layers: LayerSpec | Mapping[str, LayerSpec] = "auto",
    batch_size: int = 256,
    passes: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
    *,
    progress: bool | None = None,
    tokens: str = "auto",
    distributed: bool | None = None,
    measure: str = "cka",
) -> PopulationResult:
    """Every within- and cross-model heatmap of a set of models, one forward per model per batch.

    Args:
        models: {name: model}, or a list (named "model_0", "model_1", ...).
        inputs, batch_size, passes, shuffle, seed, device, progress, tokens, distributed, measure: as in `heatmap`.
        layers: one layer spec for every model, or {name: spec}.

    Returns:
        A `PopulationResult` holding a `CKAResult` for each pair (a, b), a at or before b.
    """
    if isinstance(models, Mapping):
        names, mods = [str(k) for k in models], list(models.values())
    else:
        mods = list(models)
        names = [f"model_{i}" for i in range(len(mods))]
    if not mods:
        raise UserInputError("population_heatmaps needs at least one model")
    if isinstance(layers, Mapping):
        unknown = sorted(set(layers) - set(names))
        if unknown or len(layers) != len(names):
            raise UserInputError(f"layers must name every model exactly once: models are {names}, got {sorted(layers)}")
        specs = [layers[name] for name in names]
    else:
        specs = [layers] * len(mods)
    pairs = [(i, j) for i in range(len(mods)) for j in range(i, len(mods))]
    batch_size, passes = _batching(measure, mods, specs, inputs, batch_size, passes)
    loop = GramPasses(mods, names, specs, inputs, batch_size, passes, shuffle, seed, device, progress, tokens,
                      **_minimum(measure))
    out = _population(loop, pairs, distributed, measure)
    return PopulationResult(names, {(names[i], names[j]): res for (i, j), res in out.items()})


def _ranks(distributed: bool | None) -> int:
    """How many torch.distributed ranks share the work (1: this process alone)."""
    import torch.distributed as dist

    initialised = dist.is_available() and dist.is_initialized()
    if distributed and not initialised:
        raise UserInputError("distributed=True needs an initialised torch.distributed process group "
                             "(torch.distributed.init_process_group, or run under torchrun)")
    if distributed is False or not initialised:
        return 1
    return dist.get_world_size()


def _batching(measure: str, models: Sequence[nn.Module], specs: Sequence[LayerSpec], inputs: Any,
              batch_size: int, passes: int) -> tuple[int, int]:
    """The batch size and passes `measure` runs with: as given for a minibatch measure; one batch of every
    example for an all-examples one (its memory checked before any forward pass)."""
    info = measure_info(measure)
    if not info.all_examples:
        return batch_size, passes
    from ckatlas.capture import resolve_layers
    from ckatlas.capture.minibatches import count_examples

    if not isinstance(inputs, (torch.Tensor, np.ndarray, Mapping)):
        raise UserInputError(f"measure {measure!r} needs all examples in one batch: pass the inputs as one "
                             f"Tensor or array (or a dict of them), not an iterable of batches")
    n = count_examples(torch.as_tensor(inputs) if isinstance(inputs, np.ndarray) else inputs)
    layers = sum(len(resolve_layers(uncompiled(m), spec)) for m, spec in {id(m): (m, s) for m, s in zip(models, specs)}.values())
    check_all_examples_memory(measure, n, layers)
    return max(n, 1), 1


def _minimum(measure: str) -> dict[str, Any]:
    """The fewest examples a batch of `measure` needs, and what needs them (for `GramPasses`' messages)."""
    info = measure_info(measure)
    return {"min_batch": info.min_batch, "needs": "minibatch CKA" if measure == "cka" else f"measure {measure!r}",
            "float64": info.float64_grams}


def _population(loop: GramPasses, pairs: list[tuple[int, int]], distributed: bool | None = None,
                measure: str = "cka") -> dict[tuple[int, int], CKAResult]:
    """Run each distinct model once per batch and feed every requested pair's accumulator; with several
    torch.distributed ranks, sum the accumulators over them (each rank saw its own shard)."""
    ranks = _ranks(distributed)
    names = loop.model_names
    if measure_info(measure).all_examples and ranks > 1:
        raise UserInputError(f"measure {measure!r} needs all examples in one process; under torch.distributed "
                             f"use a minibatch measure, or distributed=False")
    accs: dict[tuple[int, int], Any] = {}
    for grams in loop:
        for i, j in pairs:
            if (i, j) not in accs:  # layer counts are known after the first batch
                lb = None if i == j else grams[j].shape[0]
                accs[(i, j)] = accumulator(measure, grams[i].shape[0], lb, device=loop.device)
            accs[(i, j)].update_grams(grams[i], None if i == j else grams[j])
    meta, layer_names, token_layers, n_per_pass = loop.metadata(), loop.names, loop.token_layers, loop.n_per_pass
    meta["measure"] = measure
    if ranks > 1:
        for key in pairs:  # the same order on every rank
            accs[key].all_reduce()
        n_per_pass = accs[pairs[0]].num_examples // loop.passes
        meta["ranks"] = ranks
    results = {}
    for (i, j), acc in accs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # dead layers: reported once below
            matrix, se = acc.compute(), acc.standard_error()
        results[(i, j)] = CKAResult(
            matrix.cpu().numpy(), layer_names[i], layer_names[j], se.cpu().numpy(), n_per_pass, acc.num_batches,
            loop.passes, names[i], names[j], i == j,
            {**meta, "token_layers_a": list(token_layers[i]), "token_layers_b": list(token_layers[j])},
        )
    _warn_dead(results, names)
    return results


def _warn_dead(results: dict[tuple[int, int], CKAResult], names: list[str]) -> None:
    dead: dict[str, list[str]] = {}
    for (i, j), res in results.items():
        nan = np.isnan(res.matrix)
        sides = ((names[i], res.layers_a, nan.all(axis=1)), (names[j], res.layers_b, nan.all(axis=0)))
        for name, layers, flags in sides:
            for k in np.flatnonzero(flags):
                if layers[k] not in dead.setdefault(name, []):
                    dead[name].append(layers[k])
    dead = {name: layers for name, layers in dead.items() if layers}
    if dead:
        text = "; ".join(f"{name}: {layers[:5]}" for name, layers in dead.items())
        warnings.warn(f"layers with zero variance across examples have NaN CKA: {text}", RuntimeWarning, stacklevel=3)


__all__ = ["heatmap", "population_heatmaps"]
