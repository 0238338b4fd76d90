"""Executors: who computes the steps of an experiment.

`local`: this process, one step after another, each with the whole machine (or
`threads` PyTorch threads). With ``jobs > 1``, that many worker processes compute
steps side by side (each with `threads` threads, in PyTorch and in the BLAS pools;
default: its share of the cores), a step starting once the steps
it reads from are done; the summary and the report are then written here. Small
models use one core badly, so on a few cores ``jobs`` = cores, ``threads`` = 1 is
the fast setting (the demo's). Results are the same as one step after another.

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
import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from ckatlas.runtime.cpu import available_cores, command_threads, settle_allocator
from ckatlas.errors import USER_ERRORS, UserInputError
from ckatlas.experiment.plan import Step, is_driver
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
              threads: int | None = None, jobs: int = 1) -> None:
    """Compute `steps` in order in this process, or in `jobs` worker processes (module docstring)."""
    workers = [s for s in steps if not is_driver(s)]
    if jobs > 1 and len(workers) > 1:
        _run_pool(workers, ctx, on_start, on_done, threads, jobs)
        steps = [s for s in steps if is_driver(s)]
    with torch_threads(threads):
        for step in steps:
            on_start(step)
            on_done(step, execute(step, ctx))


def _run_pool(steps: Sequence[Step], ctx: StepContext, on_start: OnStart, on_done: OnDone,
              threads: int | None, jobs: int) -> None:
    """`steps` (no driver steps) in `jobs` processes, in plan order as their inputs get done."""
    todo = {s.key for s in steps}
    done: set[str] = set()
    waiting = list(steps)
    running: dict[Future[float], Step] = {}
    if threads is None:  # a fair share of the cores each
        threads = max(1, available_cores() // jobs)
    task_ctx = dataclasses.replace(ctx, quiet=True)  # progress bars of several processes would interleave
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with ProcessPoolExecutor(max_workers=min(jobs, len(steps)), mp_context=spawn) as pool, _sigterm_raises():
        try:
            while waiting or running:
                for step in [s for s in waiting if all(k in done or k not in todo for k in s.needs)]:
                    if len(running) >= jobs:
                        break
                    waiting.remove(step)
                    on_start(step)
                    running[pool.submit(_limited, step, task_ctx, threads)] = step
                if not running:
                    raise RuntimeError(f"steps wait on steps that are not planned: {[s.key for s in waiting]}")
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    step = running.pop(future)
                    try:
                        seconds = future.result()  # a step's error is raised here
                    except BrokenProcessPool:
                        raise UserInputError(
                            f"a worker process died while computing {step.key} (killed, out of memory, or a script "
                            "that calls run_experiment(jobs=N) outside an `if __name__ == \"__main__\":` block); "
                            "nothing finished is lost: run again, with jobs=1 to see the step's own error"
                        ) from None
                    done.add(step.key)
                    on_done(step, seconds)
        except BaseException:
            for future in running:
                future.cancel()
            if not isinstance(sys.exc_info()[1], Exception):  # interrupted (Ctrl-C, kill): stop the workers now
                _terminate_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)
            raise


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the workers run, SIGTERM (`kill`, a batch system's time limit) raises SystemExit in
    this process, so that the workers are stopped with it; by default SIGTERM would end this
    process at once and leave them computing. Only in the main thread (where signals arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's worker processes without waiting for their steps: every step writes its
    results atomically and training resumes from its last checkpoint, so nothing finished is lost.
    (`ProcessPoolExecutor.terminate_workers` does this from Python 3.14.)"""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


def _limited(step: Step, ctx: StepContext, threads: int) -> float:
    """`execute(step)` in a worker, with `threads` threads in PyTorch and in every BLAS and OpenMP pool.

    Processes side by side must each stay within their share of the cores: NumPy's,
    SciPy's and scikit-learn's pools (the probes' logistic regressions) otherwise start
    a thread per core in every process, and busy-waiting pools on too few cores ran
    the demo's probes 15x slower (measured: two probe runs at once, 129 s vs 8.5 s).
    """
    settle_allocator()
    with command_threads(threads):
        return execute(step, ctx)


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
            if is_driver(step):
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
        if is_driver(step):
            on_start(step)
            on_done(step, execute(step, ctx))


def _ray_task(step: Step, ctx: StepContext, threads: int, *needs: float) -> float:
    """A step in a Ray worker; `needs` (the seconds of the steps it reads from) only order it."""
    return _limited(step, ctx, threads)


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
