"""`ckatlas cka`, in process: fresh registry models, saved runs, one-line user errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ckatlas.cli import main
from ckatlas.data import load_dataset
from ckatlas.heatmap import CKAResult, heatmap
from ckatlas.models import create_model
from ckatlas.seeding import make_generator
from ckatlas.train import TrainConfig, load_run, train

FRESH = ["--arch", "resnet8", "--width", "0.25", "--dataset", "digits", "--examples", "64", "--batch-size", "32"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("runs") / "r8"
    config = TrainConfig(arch="resnet8", width=0.25, dataset="digits", fraction=0.1, epochs=1, batch_size=32, seed=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # oneDNN heap corruption in training with 2 threads (/work/notes/onednn_crash.md)
    try:
        train(config, out, quiet=True, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return str(out)


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ckatlas cka: error: ")
    return err


def test_fresh_registry_model_equals_the_api(tmp_path, capsys) -> None:
    out, png = tmp_path / "cka.npz", tmp_path / "cka.png"
    assert main(["cka", *FRESH, "--out", str(out), "--png", str(png)]) == 0
    assert "wrote" in capsys.readouterr().out and png.stat().st_size > 0
    saved = CKAResult.load(out)
    data = load_dataset("digits")
    model = create_model("resnet8", width=0.25, num_classes=data.num_classes, in_channels=data.in_channels,
                         generator=make_generator(0))
    expected = heatmap(model, data.x_test[:64], batch_size=32, progress=False)
    np.testing.assert_allclose(saved.matrix, expected.matrix, atol=1e-12)
    assert saved.layers_a == model.layer_names("blocks") and saved.is_square
    assert saved.model_a == "resnet8_w0.25"


def test_two_fresh_models_and_all_layers(tmp_path) -> None:
    out = tmp_path / "cross.npz"
    argv = ["cka", *FRESH, "--arch-b", "resnet14", "--layers", "all", "--layers-b", "stage*.*.relu", "--passes", "2",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    res = CKAResult.load(out)
    a, b = create_model("resnet8", width=0.25), create_model("resnet14")
    assert res.layers_a == a.layer_names("all") and res.layers_b == [f"stage{s}.{i}.relu" for s in (1, 2, 3) for i in (0, 1)]
    assert (res.model_a, res.model_b, res.passes, res.num_batches) == ("resnet8_w0.25", "resnet14_w1", 2, 4)
    assert len(b.layer_names("all")) > len(res.layers_b)


def test_random_inputs(tmp_path) -> None:
    out = tmp_path / "r.npz"
    assert main(["cka", "--arch", "resnet8", "--width", "0.25", "--random-inputs", "40", "--image-size", "16",
                 "--batch-size", "20", "--no-shuffle", "--out", str(out), "--quiet"]) == 0
    assert CKAResult.load(out).n == 40


def test_saved_runs_use_their_own_test_data(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "run.npz"
    assert main(["cka", run_dir, "--examples", "96", "--batch-size", "32", "--out", str(out)]) == 0
    assert "CKA of r8" in capsys.readouterr().out
    run = load_run(run_dir)
    data = run.config.load_data()
    expected = heatmap(run.model, data.x_test[:96], batch_size=32, progress=False)
    np.testing.assert_allclose(CKAResult.load(out).matrix, expected.matrix, atol=1e-12)
    cross = tmp_path / "cross.npz"
    assert main(["cka", run_dir, run_dir, "--examples", "64", "--batch-size", "32", "--out", str(cross), "--quiet"]) == 0
    res = CKAResult.load(cross)
    assert not res.is_square
    np.testing.assert_allclose(np.diag(res.matrix), 1.0, atol=1e-6)


def test_user_errors_are_one_line_exit_2(run_dir, tmp_path, capsys) -> None:
    out = str(tmp_path / "x.npz")
    assert "close matches: stage1.0.relu" in _error(capsys, ["cka", *FRESH, "--layers", "stage1.0.relux", "--out", out])
    assert "not both" in _error(capsys, ["cka", run_dir, *FRESH, "--out", out])
    assert "name the model" in _error(capsys, ["cka", "--out", out])
    assert "no finished ckatlas run" in _error(capsys, ["cka", str(tmp_path), "--out", out])
    assert "--layers-b needs a second model" in _error(capsys, ["cka", *FRESH, "--layers-b", "fc", "--out", out])
    assert "--random-inputs is for registry models" in _error(capsys, ["cka", run_dir, "--random-inputs", "8", "--out", out])
    with pytest.raises(SystemExit) as exc:
        main(["cka", *FRESH, "--batch-size", "0", "--out", out])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "x.npz").exists()
