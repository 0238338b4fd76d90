"""The CPU thread policy for training narrow models; the settled memory allocator."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ckatlas.runtime.cpu import is_narrow, training_threads
from ckatlas.models import create_model


def test_narrow_models_train_on_one_cpu_thread_and_the_count_is_restored():
    narrow = create_model("resnet8", width=0.5, num_classes=10, in_channels=1)
    wide = create_model("resnet8", width=1, num_classes=10, in_channels=1)
    assert is_narrow(narrow) and not is_narrow(wide)
    before = torch.get_num_threads()
    with training_threads(narrow, "cpu") as threads:
        assert threads == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with training_threads(wide, "cpu") as threads:
        assert threads == before
    with training_threads(narrow, "meta") as threads:  # not the CPU: left alone
        assert threads == before


def test_thread_count_is_restored_on_error():
    before = torch.get_num_threads()
    narrow = create_model("resnet8", width=0.25, num_classes=10, in_channels=1)
    try:
        with training_threads(narrow, "cpu"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before


_ALLOCATION = """
import ctypes, sys
class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2 (malloc.h)
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] != "default":
    from ckatlas.runtime.cpu import settle_allocator
    print(settle_allocator())
else:
    print(None)
before = libc.mallinfo2().hblkhd  # bytes in blocks that glibc served with their own memory map
block = libc.malloc(4 << 20)
print(libc.mallinfo2().hblkhd - before)
libc.free(block)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is Linux's")
def test_settled_allocator_serves_activation_sized_blocks_from_the_heap() -> None:
    # By default glibc serves a block of 128 KiB or more (a layer's activations) with a fresh
    # memory map, handed back to the OS when freed, so every batch faults its pages in again.
    # Settled, such a block comes from the heap, which the process keeps. What glibc did with
    # one 4 MiB block is read from mallinfo2 (exact bookkeeping, not a count that load moves);
    # the speed this buys is measured by benchmarks/bench_heatmap.py (BENCHMARKS.md).
    mapped = {}
    for mode in ("default", "settled", "opted-out"):
        env = {**os.environ, "CKATLAS_DEFAULT_ALLOCATOR": "1" if mode == "opted-out" else ""}
        out = subprocess.run([sys.executable, "-c", _ALLOCATION, mode], capture_output=True, text=True, check=True,
                             env=env)
        in_force, grew = out.stdout.split()
        mapped[mode] = (in_force, int(grew))
    assert mapped["default"] == ("None", mapped["default"][1]) and mapped["default"][1] >= 4 << 20, mapped
    assert mapped["settled"] == ("True", 0), mapped
    assert mapped["opted-out"][0] == "False" and mapped["opted-out"][1] >= 4 << 20, mapped


def test_command_threads_caps_torch_and_every_blas_pool_and_restores_torch() -> None:
    from threadpoolctl import threadpool_info

    from ckatlas.runtime.cpu import command_threads

    before = torch.get_num_threads()
    with command_threads(1) as threads:
        assert threads == 1 == torch.get_num_threads()
        pools = threadpool_info()
        assert pools and all(pool["num_threads"] == 1 for pool in pools)
    assert torch.get_num_threads() == before
    with command_threads() as threads:
        assert threads == before
