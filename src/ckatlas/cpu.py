"""How many CPU threads a model should train with, and how many cores this process may use.

PyTorch 2.13's oneDNN convolutions corrupt the heap at random when a model with
narrow convolutions (fewer than 16 output channels, e.g. ResNets at width 0.25 or
0.5) is trained with more than one intra-op thread; such models are also faster
on one thread, where thread start-up would dominate their tiny kernels (resnet14
at width 0.5 on 16x16 digits: 1 thread 1,759 img/s, 2 threads 345 img/s). So CPU
training of narrow models runs on one thread; everything else is left alone.
"""

from __future__ import annotations

import contextlib
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


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


__all__ = ["NARROW_CHANNELS", "available_cores", "is_narrow", "training_threads"]
