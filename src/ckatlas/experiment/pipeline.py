"""`run_experiment`: train a grid, map it with CKA, analyse it, summarise it; resumable.

    config = load_config("demo")                         # or a TOML file
    result = run_experiment(config, "out/demo")          # local, in this process
    result = run_experiment(config, "out/demo", executor="ray", address="auto")

Running the same experiment into the same directory again computes only what is
missing: finished steps are skipped, a training run interrupted mid-way resumes
from its last finished epoch, and anything computed from a piece that had to be
recomputed is recomputed too. Everything is checked before any work starts: the
config, the dataset (a CIFAR folder is read once), the device and, for Ray, that
Ray is installed.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckatlas.errors import UserInputError
from ckatlas.experiment.config import ExperimentConfig, load_config
from ckatlas.experiment.executors import EXECUTORS, import_ray, run_local, run_ray
from ckatlas.experiment.plan import Step, pending, plan
from ckatlas.experiment.registry import step_kind
from ckatlas.experiment.steps import StepContext, test_inputs
from ckatlas.experiment.store import SUMMARY_FILE, ExperimentStore
from ckatlas.runtime.devices import resolve_device


@dataclass
class ExperimentRun:
    """What one call of `run_experiment` did.

    Attributes:
        root: the experiment directory.
        computed: keys of the steps computed by this call, in the order they finished.
        skipped: keys of the steps that were already done.
        seconds: wall-clock time of the call.
        step_seconds: seconds of each computed step.
    """

    root: Path
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def summary_path(self) -> Path:
        return self.root / SUMMARY_FILE

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "computed": self.computed, "skipped": self.skipped, "seconds": self.seconds,
                "step_seconds": self.step_seconds}


def run_experiment(
    config: ExperimentConfig | str | Path,
    out_dir: str | Path,
    *,
    executor: str = "local",
    address: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    jobs: int = 1,
    cpus_per_task: int = 1,
    gpus_per_task: float | None = None,
    quiet: bool = False,
) -> ExperimentRun:
    """Compute every missing piece of an experiment in `out_dir` (layout: `ckatlas.experiment.store`).

    Args:
        config: an `ExperimentConfig`, a TOML file or a preset name.
        out_dir: the experiment directory; created if missing. It must be empty or
            hold this same experiment.
        executor: "local" (this process, step by step) or "ray" (Ray tasks;
            `ckatlas.experiment.executors`).
        address: the Ray cluster to join (e.g. "auto" or "ray://host:10001"); None
            starts a local one unless this process is already connected.
        device: where models train and run with the local executor: "cpu",
            "cuda", "cuda:N", or None for CUDA when present.
        threads: PyTorch threads with the local executor (None: PyTorch's default), in
            each worker process when `jobs` > 1.
        jobs: worker processes of the local executor computing independent steps side
            by side (1: everything in this process, one step after another). They are
            spawned: a script must call this under ``if __name__ == "__main__":``.
        cpus_per_task: CPUs each Ray task that runs models declares (and its threads).
        gpus_per_task: GPUs each such Ray task declares; None: 1 when the cluster has GPUs.
        quiet: print nothing.

    Returns:
        An `ExperimentRun`; the results are in `out_dir`, summed up in summary.json.

    Raises:
        UserInputError: a bad config, missing data, an unknown executor or device,
            Ray missing, or an `out_dir` holding something else.
    """
    started = time.perf_counter()
    if not isinstance(config, ExperimentConfig):
        config = load_config(config)
    if executor not in EXECUTORS:
        raise UserInputError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")
    if executor == "ray":
        import_ray()
    if isinstance(cpus_per_task, bool) or not isinstance(cpus_per_task, int) or cpus_per_task < 1:
        raise UserInputError(f"cpus_per_task must be a positive integer, got {cpus_per_task!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UserInputError(f"threads must be a positive integer, got {threads!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserInputError(f"jobs must be a positive integer, got {jobs!r}")
    if device is not None:
        resolve_device(device)
    check_ready(config)

    store = ExperimentStore(out_dir)
    store.claim(config)
    store.remove_strays()
    steps = plan(config)
    todo = pending(steps, store)
    for step in todo:  # outputs downstream of a missing piece are stale: never leave them to be trusted
        if not step_kind(step.kind).resumable:
            for output in step.outputs:
                store.path(output).unlink(missing_ok=True)
    result = ExperimentRun(store.root, skipped=[s.key for s in steps if s not in todo])
    log = _Log(len(todo), quiet)
    how = f"local, {jobs} processes" if executor == "local" and jobs > 1 else executor
    log.line(f"experiment {config.name!r} in {store.root}: {len(steps)} steps, {len(result.skipped)} already done, "
             f"{len(todo)} to compute ({how})")

    def on_done(step: Step, seconds: float) -> None:
        result.computed.append(step.key)
        result.step_seconds[step.key] = seconds
        store.record_timings({step.key: seconds}, ended=time.time())
        log.done(step, seconds)

    ctx = StepContext(str(store.root), config, device, quiet)
    if executor == "local":
        run_local(todo, ctx, log.start, on_done, threads=threads, jobs=jobs)
    else:
        run_ray(todo, ctx, log.start, on_done, address=address, cpus_per_task=cpus_per_task,
                gpus_per_task=gpus_per_task)
    result.seconds = time.perf_counter() - started
    log.line(f"done in {result.seconds:.1f} s: {store.path(SUMMARY_FILE)}")
    return result


def check_ready(config: ExperimentConfig) -> None:
    """Check what needs the data: the dataset loads, and holds the test examples CKA asks for.

    Raises:
        UserInputError: a missing or unreadable dataset, too few test examples, a run
            whose training settings `ckatlas.train.TrainConfig` rejects.
    """
    for run in config.runs:
        config.train_config(run)
    x = test_inputs(config)
    wanted = config.cka.num_examples
    if wanted is not None and len(x) < wanted:
        raise UserInputError(
            f"num_examples in [cka] is {wanted}, but the {config.dataset.name} test split has {len(x)} examples"
        )


def experiment_status(config: ExperimentConfig, out_dir: str | Path) -> list[tuple[Step, bool]]:
    """Each step of the experiment and whether `out_dir` holds it finished (no work is done)."""
    steps = plan(config)
    todo = {s.key for s in pending(steps, ExperimentStore(out_dir))}
    return [(s, s.key not in todo) for s in steps]


class _Log:
    """One line per finished step on stderr, "[3/12] cka/resnet20-w1-s0 (4.2 s)"."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet, self.count = total, quiet, 0

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def start(self, step: Step) -> None:
        kind = step_kind(step.kind)
        if kind.resumable:  # the long steps (training): say what is under way
            self.line(f"  {kind.description or kind.kind}: {step.key} ...")

    def done(self, step: Step, seconds: float) -> None:
        self.count += 1
        self.line(f"[{self.count}/{self.total}] {step.key} ({seconds:.1f} s)")


__all__ = ["ExperimentRun", "check_ready", "experiment_status", "run_experiment"]
