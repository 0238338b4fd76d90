"""The CPU thread policy for training narrow models; the settled memory allocator."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ckatlas.cpu import is_narrow, training_threads
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


_FAULTS = """
import resource, sys, torch
if sys.argv[1] != "default":
    from ckatlas.cpu import settle_allocator
    assert settle_allocator() == (sys.argv[1] == "settled")
from ckatlas.models import create_model
model = create_model("resnet8", width=1.0).eval()
x = torch.randn(256, 3, 32, 32)
faults = []
with torch.inference_mode():
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        model(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is Linux's")
def test_settled_allocator_stops_page_faults_after_the_first_batch() -> None:
    # By default glibc returns each batch's freed activations to the OS and the next batch
    # faults their pages in again (about 47,000 faults per forward pass here); settled, the
    # process keeps them. Page faults are counted, not timed.
    faults = {}
    for mode in ("default", "settled", "opted-out"):
        env = {**os.environ, "CKATLAS_DEFAULT_ALLOCATOR": "1" if mode == "opted-out" else ""}
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True, env=env)
        faults[mode] = [int(v) for v in out.stdout.split()]
    # Batches 2 to 4 (the first one faults its pages in either way); a worker thread's scratch
    # memory can still fault a few thousand pages when settled.
    later = {mode: sum(counts[1:]) for mode, counts in faults.items()}
    assert later["default"] > 60_000, faults
    assert later["settled"] * 5 < later["default"], faults
    assert later["opted-out"] * 5 > later["default"] * 4, faults
