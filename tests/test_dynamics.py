"""Block structure through training (`ckatlas.analysis.dynamics`): what a run records at its
chosen epochs is the heatmap of the model as it was then, and recording changes no weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from ckatlas.analysis import BlockDetector, find_blocks
from ckatlas.analysis.dynamics import BlockDynamics, DynamicsRecorder, DynamicsSettings, default_epochs
from ckatlas.cli import main
from ckatlas.errors import UserInputError
from ckatlas.heatmap import heatmap
from ckatlas.models import create_model
from ckatlas.runtime.seeding import make_generator
from ckatlas.train import TrainConfig, load_run, train

TINY = TrainConfig(arch="resnet8", width=0.25, dataset="digits", fraction=0.25, epochs=3, batch_size=32, seed=1)
SETTINGS = DynamicsSettings(epochs=(0, 1, 3), examples=64, batch_size=32)


def test_default_epochs_are_a_handful_from_initialisation_to_the_end():
    assert default_epochs(15) == (0, 1, 2, 4, 8, 15)
    assert default_epochs(1) == (0, 1)
    assert default_epochs(200) == (0, 1, 2, 4, 8, 16, 32, 64, 128, 200)


def test_a_run_records_the_heatmap_of_each_chosen_epoch_and_trains_the_same(tmp_path: Path):
    plain, recorded = tmp_path / "plain", tmp_path / "recorded"
    train(TINY, plain, quiet=True)
    train(TINY, recorded, quiet=True, dynamics=SETTINGS)
    a, b = load_file(str(plain / "model.safetensors")), load_file(str(recorded / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # recording changes no weight

    record = BlockDynamics.load(recorded / "dynamics.npz")
    run = load_run(recorded)
    probe = TINY.resolved().load_data().x_test[:64]
    assert record.epochs.tolist() == [0, 1, 3]
    assert record.layers == run.model.layer_names("all")
    size = len(record.layers)
    assert record.cka.shape == (3, size, size) and record.variance_explained.shape == (3, size)
    # the last record is the finished model's heatmap on the probe images, and its blocks
    final = heatmap(run.model, probe, layers="all", batch_size=32, shuffle=False)
    np.testing.assert_allclose(record.cka[-1], final.matrix, atol=1e-5, equal_nan=True)
    again = find_blocks(final.matrix)
    assert record.block_fraction[-1] == pytest.approx(again.block_fraction)
    assert record.block_strength[-1] == pytest.approx(again.block_strength)
    assert record.block_area[-1] == pytest.approx(again.block_area)
    # a record of a release without block area finds it from its heatmaps, by its own detector
    older = BlockDynamics(record.epochs, record.layers, record.cka, record.variance_explained,
                          record.block_fraction, record.blocks, record.metadata, record.block_strength)
    np.testing.assert_allclose(older.block_area, [find_blocks(m).block_area for m in record.cka])
    # the record can be read with another detector: its blocks found again in the stored heatmaps
    threshold = BlockDetector(method="threshold")
    other = record.redetect(threshold)
    assert other.block_fraction[-1] == pytest.approx(threshold.find(record.cka[-1]).block_fraction)
    assert other.metadata["detector"]["method"] == "threshold" and np.array_equal(other.cka, record.cka)
    # the first record is the untrained model: its heatmap differs from the trained one
    assert not np.allclose(record.cka[0], record.cka[-1], equal_nan=True)
    assert all((0 <= v <= 1) for v in record.variance_explained[np.isfinite(record.variance_explained)])
    assert len(record.metadata["seconds"]) == 3 and all(t > 0 for t in record.metadata["seconds"])


def test_a_resumed_recorder_keeps_what_it_has(tmp_path: Path):
    model = create_model("resnet8", width=0.25, num_classes=10, in_channels=1, generator=make_generator(0))
    probe = TINY.resolved().load_data().x_test[:32]
    path = tmp_path / "dynamics.npz"
    first = DynamicsRecorder(DynamicsSettings(epochs=(0, 2), examples=32, batch_size=16), probe, 2, path)
    first(model, 0)
    first(model, 1)  # not a chosen epoch: nothing
    assert BlockDynamics.load(path).epochs.tolist() == [0]
    second = DynamicsRecorder(DynamicsSettings(epochs=(0, 2), examples=32, batch_size=16), probe, 2, path)
    assert not second.wants(0) and second.wants(2)
    second(model, 2)
    record = BlockDynamics.load(path)
    assert record.epochs.tolist() == [0, 2]
    np.testing.assert_allclose(record.cka[0], record.cka[1], equal_nan=True)  # the same weights both times


def test_bad_dynamics_settings_are_one_clear_error(tmp_path: Path):
    probe = TINY.resolved().load_data().x_test[:8]
    with pytest.raises(UserInputError, match=r"dynamics epochs must be integers in \[0, 3\]"):
        DynamicsRecorder(DynamicsSettings(epochs=(0, 5)), probe, 3, tmp_path / "d.npz")
    with pytest.raises(UserInputError, match="dynamics examples must be >= 4"):
        DynamicsRecorder(DynamicsSettings(examples=2), probe, 3, tmp_path / "d.npz")
    with pytest.raises(UserInputError, match="threshold"):
        DynamicsRecorder(DynamicsSettings(detector=BlockDetector(threshold=1.5)), probe, 3, tmp_path / "d.npz")


def test_cli_train_records_dynamics_and_dynamics_prints_them(tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--arch", "resnet8", "--width", "0.25", "--dataset", "digits", "--fraction", "0.25",
                 "--epochs", "2", "--batch-size", "32", "--out", str(out), "--quiet",
                 "--dynamics", "--dynamics-epochs", "0,2", "--dynamics-examples", "32"]) == 0
    assert BlockDynamics.load(out / "dynamics.npz").epochs.tolist() == [0, 2]
    capsys.readouterr()
    assert main(["dynamics", str(out), "--png", str(tmp_path / "d.png")]) == 0
    printed = capsys.readouterr().out
    assert "epoch    0" in printed and "epoch    2" in printed and "block fraction" in printed
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["dynamics", str(tmp_path)]) == 2
    assert "no dynamics.npz" in capsys.readouterr().err


def test_first_pc_share_is_the_pca_analysis_one_and_the_top_eigenvalue_is_exact():
    import torch

    from ckatlas.analysis.dynamics import measure, top_eigenvalue
    from ckatlas.analysis.pca import principal_components

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 40, 30, generator=g, dtype=torch.float64)
    x[0] *= torch.linspace(3.0, 0.1, 30, dtype=torch.float64)  # one dominant direction, one flat spectrum
    grams = x @ x.transpose(1, 2)
    np.testing.assert_allclose(top_eigenvalue(grams).numpy(), torch.linalg.eigvalsh(grams)[:, -1].numpy(), rtol=1e-4)

    model = create_model("resnet8", width=0.25, num_classes=10, in_channels=1, generator=make_generator(0))
    probe = TINY.resolved().load_data().x_test[:64]
    layers, cka, variance, _ = measure(model, probe, DynamicsSettings(examples=64, batch_size=64))
    pca = principal_components(model, probe, layers="all", batch_size=64, shuffle=False)
    assert layers == pca.layers
    np.testing.assert_allclose(variance, pca.variance_explained, rtol=1e-4, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(cka, pca.cka, atol=1e-6, equal_nan=True)
