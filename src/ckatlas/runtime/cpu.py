"""How many CPU threads a model should train with, how many cores this process may use, the
thread policy of every ckatlas command and worker (`command_threads`), and how the memory
allocator should behave (`settle_allocator`).

PyTorch 2.13's oneDNN convolutions corrupt the heap at random when a model with
narrow convolutions (fewer than 16 output channels, e.g. ResNets at width 0.25 or
0.5) is trained with more than one intra-op thread; such models are also faster
on one thread, where thread start-up would dominate their tiny kernels (resnet14
at width 0.5 on 16x16 digits: 1 thread 1,759 img/s, 2 threads 345 img/s). So CPU
training of narrow models runs on one thread; everything else is left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator

import torch
from torch import nn

#: Convolutions narrower than this train on one CPU thread.
NARROW_CHANNELS = 16


def is_narrow(model: nn.Module) -> bool:
    """True when any convolution of `model` has fewer than `NARROW_CHANNELS` output channels."""
    return any(
        isinstance(m, nn.modules.conv._ConvNd) and m.out_channels < NARROW_CHANNELS for m in model.modules()
    )


@contextlib.contextmanager
def training_threads(model: nn.Module, device: torch.device | str | None) -> Iterator[int]:
    """Run the body with the thread count suited to training `model` on `device`.

    Yields the number of intra-op threads in force; restores the previous count after.
    """
    before = torch.get_num_threads()
    on_cpu = device is None or torch.device(device).type == "cpu"
    threads = 1 if on_cpu and is_narrow(model) else before
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def command_threads(threads: int | None = None) -> Iterator[int]:
    """`threads` PyTorch threads, and at most as many in every BLAS and OpenMP pool, for the body.

    The policy of every `ckatlas` command and of each experiment worker. NumPy's, SciPy's
    and scikit-learn's pools otherwise start a thread per core beside PyTorch's, and their
    busy-waiting threads on a shared or small machine slow everything down many times
    (two probe runs side by side: 129 s vs 8.5 s). None: PyTorch's count as it is (one per
    core by default). Yields the count; PyTorch's count is restored after.
    """
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    threads = before if threads is None else threads
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield threads
    finally:
        torch.set_num_threads(before)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # the most glibc accepts on 64-bit systems
_TRIM_THRESHOLD = 512 << 20


@functools.lru_cache(maxsize=1)
def settle_allocator() -> bool:
    """Keep freed memory in this process for the next tensor (glibc's malloc; a no-op elsewhere).

    By default glibc serves blocks of 128 KiB and more with fresh memory maps and
    hands the top of its heap back to the OS once a few MiB are free. A forward pass
    allocates and frees every activation, so each batch faults all its pages in
    again and the kernel zeroes them: ResNet-56 forward passes on 2 cores took
    0.46 s per batch of 256 that way and 0.25 s with this setting (blocks up to
    32 MiB from the heap, which keeps up to 512 MiB free before trimming); training
    steps 15-20% less. Peak memory is unchanged; memory freed after the peak is
    kept by the process (up to 512 MiB) instead of returned.

    Process-wide, so the library never calls it on import: the `ckatlas` command,
    its worker processes and the benchmarks do. Call it once at the start of a
    script for the same effect. The environment variable
    ``CKATLAS_DEFAULT_ALLOCATOR=1`` turns it into a no-op (to compare, or to hand
    memory back eagerly). Returns True when the setting is in force.
    """
    if os.environ.get("CKATLAS_DEFAULT_ALLOCATOR", "") not in ("", "0"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # raises AttributeError when the C library is not glibc
        mallopt = libc.mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Both or neither: setting either turns glibc's own adjustment of both off, and the trim
    # threshold alone would leave every block over 128 KiB to a memory map (2x slower).
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))


__all__ = ["NARROW_CHANNELS", "available_cores", "command_threads", "is_narrow", "settle_allocator", "training_threads"]
