"""Executors: who computes the steps of an experiment.

`local`: this process, one step after another, each with the whole machine (or
`threads` PyTorch threads).

`ray`: each step but the summary and the report is a Ray task, submitted with the
tasks it reads from as dependencies, so Ray runs independent steps (all training
runs, then each model's CKA and analyses as soon as its run is done) in
parallel across the cluster. Tasks that run models declare `cpus_per_task` CPUs
and `gpus_per_task` GPUs (default: 1 when the cluster has GPUs), and use as many
PyTorch threads as CPUs; the others declare 1 CPU. Every task writes its results
into the experiment directory itself, so on a multi-machine cluster that
directory must be on a file system every node shares, and ckatlas must be
installed on every node. The summary and the report are written by this process
once every task has finished. Ray is optional: `pip install 'ckatlas[ray]'`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from ckatlas.errors import USER_ERRORS, UserInputError
from ckatlas.experiment.plan import DRIVER_STEPS, Step
from ckatlas.experiment.steps import StepContext, execute

EXECUTORS = ("local", "ray")

OnStart = Callable[[Step], None]
OnDone = Callable[[Step, float], None]


def import_ray() -> Any:
    """The `ray` module, or a `UserInputError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserInputError("--executor ray needs Ray: install it with pip install 'ckatlas[ray]'") from None
    return ray


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` PyTorch threads inside the block (None: leave as is)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_local(steps: Sequence[Step], ctx: StepContext, on_start: OnStart, on_done: OnDone,
              threads: int | None = None) -> None:
    """Compute `steps` in order in this process."""
    with torch_threads(threads):
        for step in steps:
            on_start(step)
            on_done(step, execute(step, ctx))


def run_ray(
    steps: Sequence[Step],
    ctx: StepContext,
    on_start: OnStart,
    on_done: OnDone,
    *,
    address: str | None = None,
    cpus_per_task: int = 1,
    gpus_per_task: float | None = None,
) -> None:
    """Compute `steps` as Ray tasks (see the module docstring), then the driver steps here.

    `on_start` is called for the driver steps only (tasks start when Ray decides);
    `on_done` for every step as it finishes.

    Connects to the Ray cluster at `address` (None: the one this process already
    joined, else a new local one, shut down at the end).
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=not ctx.quiet)
        started = True
    try:
        if gpus_per_task is None:
            gpus_per_task = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        remote = ray.remote(_ray_task)
        refs: dict[str, Any] = {}
        keys: dict[Any, Step] = {}
        for step in steps:
            if step.kind in DRIVER_STEPS:
                continue
            heavy = step.uses_models
            device = ("cuda" if gpus_per_task else "cpu") if heavy else "cpu"
            task_ctx = dataclasses.replace(ctx, device=device, quiet=True)
            options = {"num_cpus": cpus_per_task if heavy else 1, "num_gpus": gpus_per_task if heavy else 0,
                       "name": step.key}
            needs = [refs[k] for k in step.needs if k in refs]
            ref = remote.options(**options).remote(step, task_ctx, cpus_per_task if heavy else 1, *needs)
            refs[step.key] = ref
            keys[ref] = step
        _wait_all(ray, keys, on_done)
    finally:
        if started:
            ray.shutdown()
    for step in steps:
        if step.kind in DRIVER_STEPS:
            on_start(step)
            on_done(step, execute(step, ctx))


def _ray_task(step: Step, ctx: StepContext, threads: int, *needs: float) -> float:
    """A step in a Ray worker; `needs` (the seconds of the steps it reads from) only order it."""
    torch.set_num_threads(threads)
    return execute(step, ctx)


def _wait_all(ray: Any, keys: dict[Any, Step], on_done: OnDone) -> None:
    """Report tasks as they finish; on the first failure cancel the rest and raise its error."""
    pending = list(keys)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                on_done(keys[ref], ray.get(ref))
    except ray.exceptions.RayTaskError as exc:
        _cancel(ray, pending)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, USER_ERRORS):
            raise cause from None
        raise
    except BaseException:
        _cancel(ray, pending)
        raise


def _cancel(ray: Any, refs: list[Any]) -> None:
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref)


__all__ = ["EXECUTORS", "import_ray", "run_local", "run_ray", "torch_threads"]
