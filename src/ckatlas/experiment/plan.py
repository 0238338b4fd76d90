"""The plan of an experiment: its steps, what each one writes and what it reads.

    train/<run>          runs/<run>/                     (ckatlas.train)
    cka/<run>            cka/<run>.npz                   <- train/<run>
    cross/<a>__<b>       cka/<a>__<b>.npz                <- train/<a>, train/<b>      [analyses.cross_seed]
    blocks/<run>         analysis/blocks/<run>.json      <- cka/<run>
    stability/<group>    analysis/stability/<group>.json <- blocks/<run> of the group's seeds
    pca/<run>            analysis/pca/<run>.npz          <- train/<run>               [analyses.pca]
    probes/<run>         analysis/probes/<run>.json      <- train/<run>               [analyses.probes]
    prune/<run>          analysis/prune/<run>.json       <- train/<run>, blocks/<run> [analyses.prune] (residual)
    errors               analysis/errors.json            <- train/<run> of both populations  [analyses.errors]
    summary              summary.json                    <- every other step
    report               report/index.html               <- summary    (once ckatlas.report.html exists)

Steps are listed so that each comes after the steps it reads from. `pending`
picks the steps to compute: those whose outputs are missing and, transitively,
every step that reads from one of them (its result would be stale).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ckatlas.experiment.config import ExperimentConfig, RunSpec
from ckatlas.experiment.store import SUMMARY_FILE, ExperimentStore

# Steps that run models (and so want a GPU when there is one); the others only read results.
MODEL_STEPS = ("train", "cka", "cross", "pca", "probes", "prune")
# Steps that run in the driver (they read everything the others wrote).
DRIVER_STEPS = ("summary", "report")
REPORT_MODULE = "ckatlas.report.html"  # provides write_report(experiment_dir), writing report/index.html


@dataclass(frozen=True)
class Step:
    """One piece of an experiment.

    Attributes:
        kind: "train", "cka", "cross", "blocks", "stability", "pca", "probes", "prune", "errors",
            "summary" or "report".
        key: unique name, "<kind>/<what>" (or the kind alone).
        outputs: what it writes, relative to the experiment directory.
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
        return self.kind in MODEL_STEPS


def plan(config: ExperimentConfig) -> list[Step]:
    """Every step of `config`'s experiment, each after the steps it needs."""
    store = ExperimentStore
    runs = config.runs
    steps = [Step("train", f"train/{r.name}", (store.run_dir(r.name),), (), (r,)) for r in runs]
    for r in runs:
        steps.append(Step("cka", f"cka/{r.name}", (store.cka_file(r.name),), (f"train/{r.name}",), (r,)))
    if config.analyses.cross_seed is not None:
        for a, b in cross_seed_pairs(config):
            key = f"{a.name}__{b.name}"
            steps.append(Step("cross", f"cross/{key}", (store.cka_file(a.name, b.name),),
                              (f"train/{a.name}", f"train/{b.name}"), (a, b)))
    for r in runs:
        steps.append(Step("blocks", f"blocks/{r.name}", (store.blocks_file(r.name),), (f"cka/{r.name}",), (r,)))
    for group, members in config.groups.items():
        if len(members) >= 2:
            steps.append(Step("stability", f"stability/{group}", (store.stability_file(group),),
                              tuple(f"blocks/{r.name}" for r in members), tuple(members)))
    if config.analyses.pca is not None:
        for r in runs:
            steps.append(Step("pca", f"pca/{r.name}", (store.pca_file(r.name),), (f"train/{r.name}",), (r,)))
    if config.analyses.probes is not None:
        for r in runs:
            if config.analyses.probes.wants(r):
                steps.append(Step("probes", f"probes/{r.name}", (store.probes_file(r.name),), (f"train/{r.name}",),
                                  (r,)))
    if config.analyses.prune is not None:
        for r in runs:
            if r.residual:
                steps.append(Step("prune", f"prune/{r.name}", (store.prune_file(r.name),),
                                  (f"train/{r.name}", f"blocks/{r.name}"), (r,)))
    errors = config.analyses.errors
    if errors is not None:
        members = tuple(r for pop in (errors.population_a, errors.population_b) for r in config.groups[pop.label])
        steps.append(Step("errors", "errors", (store.errors_file(),), tuple(f"train/{r.name}" for r in members), members))
    steps.append(Step("summary", "summary", (SUMMARY_FILE,), tuple(s.key for s in steps), tuple(runs)))
    if importlib.util.find_spec(REPORT_MODULE) is not None:
        steps.append(Step("report", "report", ("report/index.html",), ("summary",), tuple(runs)))
    return steps


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
    """Whether every output of `step` is on disk, whole."""
    if step.kind == "train":
        return store.is_finished_run(step.runs[0].name)
    return all(store.path(p).is_file() for p in step.outputs)


def pending(steps: list[Step], store: ExperimentStore) -> list[Step]:
    """The steps to compute: unfinished ones and every step downstream of one (in plan order)."""
    todo: set[str] = set()
    for step in steps:
        if not is_done(step, store) or any(n in todo for n in step.needs):
            todo.add(step.key)
    return [s for s in steps if s.key in todo]


__all__ = ["DRIVER_STEPS", "MODEL_STEPS", "REPORT_MODULE", "Step", "cross_seed_pairs", "is_done", "pending", "plan"]
