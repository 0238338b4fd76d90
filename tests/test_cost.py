"""What an experiment costs: FLOPs counted on the model, and the estimate `ckatlas presets` prints."""

from __future__ import annotations

import pytest
from torch import nn

from ckatlas.cli import main
from ckatlas.experiment import config_from_dict, list_presets
from ckatlas.experiment.cost import GPU_FLOPS, estimate_cost, forward_flops
from ckatlas.models import create_model


def test_forward_flops_count_multiply_adds_twice() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    assert forward_flops(net, (3, 8, 8)) == 2 * (8 * 8 * 3 * 3 * 3 * 8 + 8 * 8 * 8 * 10)


@pytest.mark.parametrize("name, millions", [("resnet20", 41), ("resnet56", 126), ("resnet110", 253)])
def test_cifar_resnets_cost_what_he_et_al_report(name: str, millions: float) -> None:
    # multiply-adds of one 32x32 image: ResNet-20 41M, ResNet-56 126M, ResNet-110 253M
    model = create_model(name, style="torchvision", device="meta")
    assert forward_flops(model, (3, 32, 32)) / 2 / 1e6 == pytest.approx(millions, rel=0.01)


def test_an_experiments_cost_multiplies_out() -> None:
    table = {"name": "c", "dataset": {"name": "cifar10"}, "grid": {"depths": [20], "seeds": [0, 1]},
             "train": {"epochs": 10}, "cka": {"num_examples": 1000, "passes": 2}}
    cost = estimate_cost(config_from_dict(table))
    per_image = forward_flops(create_model("resnet20", style="torchvision", device="meta"), (3, 32, 32))
    assert cost.train_flops == pytest.approx(2 * 10 * 3 * 50_000 * per_image)
    assert cost.cka_flops == pytest.approx(2 * 1000 * 2 * per_image)
    assert cost.gpu_hours == pytest.approx(cost.total_flops / GPU_FLOPS / 3600)
    folder = {**table, "dataset": {"name": "folder", "data_dir": "/nowhere"}}
    assert estimate_cost(config_from_dict(folder)) is None


def test_presets_lists_each_with_what_it_needs(capsys) -> None:
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in list_presets():
        assert name in out
    assert out.count("GPU-hours") == len(list_presets())
    assert out.count("needs --data-dir (cifar10)") == sum(name.startswith("paper-") for name in list_presets())


@pytest.mark.slow
def test_the_gpu_preset_benchmark_runs_on_the_cpu() -> None:
    """benchmarks/bench_gpu_presets.py (device_check.sh's timing) kept working where no GPU is at hand."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_gpu_presets.py"), "--device", "cpu",
                           "--examples", "32", "--presets", "paper-depth"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("paper-depth"))
    assert "resnet164" in row and float(row.split()[-1]) > 0  # the largest run, and finite hours
