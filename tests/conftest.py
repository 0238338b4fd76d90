"""Shared test settings: every test starts from the same seeds, on the CPU."""

from __future__ import annotations

import os

import pytest
import torch

from ckatlas.runtime.seeding import set_seed

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    set_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    # Small tensors: extra threads only add overhead on a 2-core machine.
    torch.set_num_threads(min(2, torch.get_num_threads()))
