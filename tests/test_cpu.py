"""The CPU thread policy for training narrow models."""

from __future__ import annotations

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
