"""The one device resolver: `run_device` checks every model against the device work runs on."""

import pytest
import torch
from torch import nn

from ckatlas import heatmap
from ckatlas.runtime.devices import model_device, run_device
from ckatlas.errors import UserInputError


def test_run_device_is_the_first_models_unless_asked() -> None:
    assert run_device([nn.Linear(2, 2), nn.Linear(2, 2)]) == torch.device("cpu")
    assert run_device(nn.Linear(2, 2), "cpu") == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU


def test_a_model_elsewhere_is_named_before_any_work() -> None:
    on_meta = nn.Linear(2, 2).to("meta")
    with pytest.raises(UserInputError, match=r"model 'b' is on meta but the work runs on cpu"):
        run_device([nn.Linear(2, 2), on_meta], None, ["a", "b"])
    with pytest.raises(UserInputError, match="must be a torch.nn.Module"):
        run_device([nn.Linear(2, 2), "not a model"], None, ["a", "b"])
    # the heatmap checks the same way, before it runs a batch
    with pytest.raises(UserInputError, match="is on meta"):
        heatmap(nn.Sequential(nn.Linear(2, 2)), torch.randn(8, 2), model_b=nn.Sequential(on_meta), layers=["0"])
