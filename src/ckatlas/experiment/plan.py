"""The plan of an experiment: its steps (from the registered step kinds, `ckatlas.experiment.registry`;
the built-in ones and what each writes and reads: `ckatlas.experiment.steps`), in an order where
each step comes after the steps it reads from. `pending` picks the steps to compute: those
not finished and, transitively, every step that reads from one of them (its result would be
stale).
"""

from __future__ import annotations

from ckatlas.experiment.config import ExperimentConfig, RunSpec
from ckatlas.experiment.registry import Step, step_kind, step_kinds
from ckatlas.experiment.store import ExperimentStore


def plan(config: ExperimentConfig) -> list[Step]:
    """Every step of `config`'s experiment, each after the steps it needs (registry order).

    A kind with a settings table makes steps only when ``[analyses]`` turns it on; the
    driver kinds (summary, report) come last.
    """
    steps: list[Step] = []
    for kind in step_kinds():
        if kind.settings is not None and getattr(config.analyses, kind.table_name) is None:
            continue
        steps += kind.plan(config, list(steps))
    planned: set[str] = set()
    keys = {s.key for s in steps}
    for step in steps:
        later = [n for n in step.needs if n not in planned and n in keys]
        if later:
            raise ValueError(f"step {step.key} reads {', '.join(later)}, planned after it: its kind "
                             f"{step.kind!r} must name {', '.join(sorted({n.split('/')[0] for n in later}))} in `after`")
        planned.add(step.key)
    return steps


def is_driver(step: Step) -> bool:
    """Whether `step` runs in the driver process, after every other step (summary, report)."""
    return step_kind(step.kind).driver


def cross_seed_pairs(config: ExperimentConfig) -> list[tuple[RunSpec, RunSpec]]:
    """Pairs of runs that differ only in their seed, as `[analyses.cross_seed]` asks."""
    settings = config.analyses.cross_seed
    if settings is None:
        return []
    pairs = []
    for members in config.groups.values():
        if len(members) < 2:
            continue
        if settings.pairs == "first":
            pairs.append((members[0], members[1]))
        else:
            pairs += [(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
    return pairs


def is_done(step: Step, store: ExperimentStore) -> bool:
    """Whether `step` is finished: its kind's own test, or every output file on disk."""
    done = step_kind(step.kind).done
    if done is not None:
        return done(step, store)
    return all(store.path(p).is_file() for p in step.outputs)


def pending(steps: list[Step], store: ExperimentStore) -> list[Step]:
    """The steps to compute: unfinished ones and every step downstream of one (in plan order)."""
    todo: set[str] = set()
    for step in steps:
        if not is_done(step, store) or any(n in todo for n in step.needs):
            todo.add(step.key)
    return [s for s in steps if s.key in todo]


__all__ = ["Step", "cross_seed_pairs", "is_done", "is_driver", "pending", "plan"]
