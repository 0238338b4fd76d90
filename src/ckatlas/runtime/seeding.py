"""The one place that seeds global random state (for scripts and tests).

Library code never relies on global state: it takes a seed or a generator.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh `torch.Generator` on `device`, seeded with `seed`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


__all__ = ["set_seed", "make_generator"]
