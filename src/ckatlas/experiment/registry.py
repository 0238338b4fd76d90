"""The step registry: every kind of experiment step, declared once beside its code.

A step kind (`StepKind`) says what it is called, which settings table turns it on
(``[analyses.<kind>]``: a frozen dataclass that *is* the table), which steps of a
config it makes (`plan`: their outputs, what they read, which runs they concern),
and how one step is computed (`compute`). The config parser, the plan, the executors,
the summary and the report loop over the registry; nothing else spells step kinds.

Adding an analysis is one module and one call:

    @dataclass(frozen=True)
    class MeanActivationConfig:           # [analyses.mean_activation]
        layer: str = "pool"

    def _plan(config, earlier):           # one step per run, after its training
        return [Step("mean_activation", f"mean_activation/{r.name}", (f"analysis/mean_activation/{r.name}.json",),
                     (f"train/{r.name}",), (r,)) for r in config.runs]

    def _compute(step, ctx, store): ... write step.outputs[0] atomically ...

    register_step(StepKind("mean_activation", _plan, _compute, settings=MeanActivationConfig, uses_models=True,
                           after=("train",)))

An analysis without a section of its own in the report gets the report's generic
section (its result file of each model). Worker processes (``jobs > 1``, Ray) import
ckatlas afresh: register steps in a module they import, or run with ``jobs=1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ckatlas.experiment.config import ExperimentConfig, RunSpec


@dataclass(frozen=True)
class Step:
    """One piece of an experiment.

    Attributes:
        kind: the registered kind ("train", "cka", "pca", ...).
        key: unique name, "<kind>/<what>" (or the kind alone).
        outputs: the files it writes, relative to the experiment directory ("train": the run folder).
        needs: keys of the steps whose outputs it reads.
        runs: the models it concerns.
    """

    kind: str
    key: str
    outputs: tuple[str, ...]
    needs: tuple[str, ...] = ()
    runs: tuple[RunSpec, ...] = ()

    @property
    def uses_models(self) -> bool:
        """Whether it trains or runs models (a GPU helps) rather than reading results."""
        return step_kind(self.kind).uses_models


@dataclass(frozen=True)
class StepKind:
    """A kind of step (module docstring).

    Attributes:
        kind: its name, also the key of its settings table in ``[analyses]``.
        plan: the steps of this kind, ``plan(config, earlier_steps)`` (called only when it is
            on; `earlier_steps` are those of the kinds before it).
        compute: computes one step: ``compute(step, ctx, store)`` writes the step's outputs.
        settings: the dataclass of its ``[analyses.<table>]`` table; None when the kind has
            no table and always runs (train, cka, summary, ...).
        table: the name of that table (default: `kind`).
        default_on: with a table, whether it runs when the table is absent (blocks).
        uses_models: it runs models (placed on a GPU when there is one).
        driver: it reads everything the others wrote and runs in the driver process, last.
        done: whether one of its steps is finished, ``done(step, store)`` (None: every
            output file exists).
        resumable: a recomputed step keeps what it wrote before and resumes from it
            (training); for other kinds a stale output is deleted before recomputing.
        description: one line, for listings.
        after: the kinds whose steps this kind's steps read: the plan puts its steps after
            theirs (`step_kinds`), whatever the order of registration.
    """

    kind: str
    plan: Callable[[ExperimentConfig, list[Step]], list[Step]]
    compute: Callable[[Step, Any, Any], None]
    settings: type | None = None
    table: str | None = None
    default_on: bool = False
    uses_models: bool = False
    driver: bool = False
    done: Callable[[Step, Any], bool] | None = None
    resumable: bool = False
    description: str = ""
    after: tuple[str, ...] = ()

    @property
    def table_name(self) -> str:
        """The key of its settings table in ``[analyses]``."""
        return self.table or self.kind


_KINDS: dict[str, StepKind] = {}


def register_step(kind: StepKind, *, replace: bool = False) -> StepKind:
    """Add a step kind. Its steps come after those of the kinds it names in `after` (driver kinds,
    the summary, the claims and the report, always last). With `replace`, it takes the place of the
    registered kind of its name (e.g. another computation of a built-in analysis)."""
    if not isinstance(kind, StepKind):
        raise TypeError(f"register_step takes a StepKind, got {type(kind).__name__}")
    if (kind.kind in _KINDS) != replace:
        raise ValueError(f"a step kind {kind.kind!r} is already registered" if not replace
                         else f"no step kind {kind.kind!r} is registered to replace")
    if kind.kind in kind.after:
        raise ValueError(f"step kind {kind.kind!r} cannot come after itself")
    _KINDS[kind.kind] = kind
    return kind


def unregister_step(kind: str) -> None:
    """Remove a step kind (for tests that register one of their own)."""
    _KINDS.pop(kind, None)


def step_kinds() -> list[StepKind]:
    """Every registered kind, in plan order: each after the kinds it names in `after` (ties in
    registration order), the driver kinds after every other kind.

    Raises:
        ValueError: a kind comes after one that is not registered, or the `after`s make a circle.
    """
    for k in _KINDS.values():
        missing = [name for name in k.after if name not in _KINDS]
        if missing:
            raise ValueError(f"step kind {k.kind!r} comes after {', '.join(map(repr, missing))}, which is not "
                             f"registered; registered: {', '.join(_KINDS)}")
        drivers = [name for name in k.after if _KINDS[name].driver and not k.driver]
        if drivers:
            raise ValueError(f"step kind {k.kind!r} cannot come after the driver kind(s) {', '.join(drivers)}: "
                             "those run last")
    order: list[StepKind] = []
    for group in ([k for k in _KINDS.values() if not k.driver], [k for k in _KINDS.values() if k.driver]):
        waiting = list(group)
        while waiting:
            names = {w.kind for w in waiting}
            ready = next((k for k in waiting if not names.intersection(k.after)), None)
            if ready is None:
                raise ValueError("the step kinds' 'after' make a circle: " + ", ".join(
                    f"{k.kind} after {'/'.join(k.after)}" for k in waiting))
            order.append(ready)
            waiting.remove(ready)
    return order


def step_kind(kind: str) -> StepKind:
    """The registered kind named `kind`."""
    try:
        return _KINDS[kind]
    except KeyError:
        raise KeyError(f"no step kind {kind!r} is registered; known: {', '.join(_KINDS)}") from None


def analysis_kinds() -> dict[str, StepKind]:
    """The kinds with a settings table, by table name (what ``[analyses]`` may hold)."""
    return {k.table_name: k for k in step_kinds() if k.settings is not None}


def analysis_catalogue() -> dict[str, dict[str, Any]]:
    """What summary.json records of every registered analysis, by table name: its step kind (the
    key of its file in each model's "paths"), description and whether it runs by default. The
    report reads it there, so that it needs no import of the experiment's registry."""
    return {table: {"kind": k.kind, "description": k.description, "default_on": k.default_on}
            for table, k in analysis_kinds().items()}


__all__ = ["Step", "StepKind", "analysis_catalogue", "analysis_kinds", "register_step", "step_kind", "step_kinds", "unregister_step"]
