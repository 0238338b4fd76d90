"""The CUDA path (bfloat16 autocast, channels_last, data on the device), on a GPU.

Skipped where there is none (the CPU machines this project is built on); run by
benchmarks/device_check.sh on a machine with one. CKATLAS_TEST_DEVICE=cpu runs the same
checks on the CPU (the comparisons then hold trivially): a way to see that the tests
themselves work before a GPU is at hand.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import transformers  # a dev dependency: a missing one fails here, never skips

from ckatlas import heatmap
from ckatlas.analysis.dynamics import BlockDynamics, DynamicsSettings
from ckatlas.models import create_model
from ckatlas.train import TrainConfig, load_run, train

DEVICE = os.environ.get("CKATLAS_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_heatmap_on_the_device_equals_the_cpus() -> None:
    model = create_model("resnet20", width=1, in_channels=3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(512, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cpu = heatmap(model, x, layers="all", batch_size=128, seed=0, device="cpu", progress=False)
    dev = heatmap(model, x, layers="all", batch_size=128, seed=0, device=DEVICE, progress=False)
    assert dev.metadata["device"].startswith(DEVICE)
    ok = np.isfinite(cpu.matrix)
    np.testing.assert_allclose(dev.matrix[ok], cpu.matrix[ok], rtol=1e-4, atol=1e-4)


def test_a_training_epoch_on_the_device_learns_and_records_dynamics(tmp_path) -> None:
    config = TrainConfig(arch="resnet8", width=0.5, dataset="digits", epochs=3, eval_every=0)
    settings = DynamicsSettings(epochs=(0, 3), examples=128)
    run = train(config, tmp_path / "run", device=DEVICE, quiet=True, dynamics=settings)
    assert run.metrics["final"]["test_accuracy"] > 0.5  # chance is 0.1
    record = BlockDynamics.load(tmp_path / "run" / "dynamics.npz")
    assert record.epochs.tolist() == [0, 3] and np.isfinite(record.variance_explained).all()
    again = load_run(tmp_path / "run")  # the weights saved from the device load on the CPU
    assert again.model.training is False


def test_layer_removal_on_the_device_equals_the_cpus() -> None:
    from ckatlas.hf import layer_redundancy, removal_curves

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                                      num_attention_heads=4, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 120, (32, 16), generator=torch.Generator().manual_seed(1))
    results = []
    for device in ("cpu", DEVICE):
        model.to(device)
        found = layer_redundancy(model, ids[:16], batch_size=8, max_remove=2, progress=False)
        results.append(removal_curves(model, found, ids[16:], batch_size=8, progress=False))
    cpu, dev = results
    assert cpu.removals == dev.removals
    for name in cpu.curves:
        np.testing.assert_allclose(dev.curves[name], cpu.curves[name], rtol=1e-3)
