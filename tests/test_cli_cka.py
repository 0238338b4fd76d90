"""`ckatlas cka`, in process: fresh registry models, saved runs, one-line user errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ckatlas.cli import main
from ckatlas.heatmap import CKAResult, heatmap
from ckatlas.models import create_model
from ckatlas.runtime.seeding import make_generator
from ckatlas.train import TrainConfig, build_model, load_run, train

FRESH = ["--arch", "resnet8", "--width", "0.25", "--dataset", "digits", "--examples", "64", "--batch-size", "32"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("runs") / "r8"
    config = TrainConfig(arch="resnet8", width=0.25, dataset="digits", fraction=0.1, epochs=1, batch_size=32, seed=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # oneDNN heap corruption in training with 2 threads (torch 2.13's oneDNN CPU convolutions)
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
    config = TrainConfig(arch="resnet8", width=0.25, dataset="digits").resolved()
    data = config.load_data()
    model = build_model(config, data.num_classes, data.in_channels, generator=make_generator(0))
    expected = heatmap(model, data.x_test[:64], batch_size=32, progress=False)
    np.testing.assert_allclose(saved.matrix, expected.matrix, atol=1e-12)
    assert saved.layers_a == model.layer_names("blocks") and saved.is_square
    assert saved.model_a == "resnet8_w0.25"
    own = tmp_path / "own.png"  # the same heatmap on its own range: other colours
    assert main(["cka", *FRESH, "--out", str(tmp_path / "again.npz"), "--png", str(own), "--own-range", "--quiet"]) == 0
    assert own.stat().st_size > 0 and own.read_bytes() != png.read_bytes()


def test_fresh_weights_are_of_the_model_training_builds(run_dir, tmp_path) -> None:
    """The same words build the same model in `ckatlas train` and `ckatlas cka --arch`: the
    ckatlas recipe's torchvision-style ResNet, on the images training sees; --recipe paper
    and --model-style choose as in training; --resize and --no-normalize shape the data."""
    fresh, trained = tmp_path / "fresh.npz", tmp_path / "trained.npz"
    assert main(["cka", *FRESH, "--layers", "all", "--out", str(fresh), "--quiet"]) == 0
    assert main(["cka", run_dir, "--examples", "64", "--batch-size", "32", "--layers", "all",
                 "--out", str(trained), "--quiet"]) == 0
    assert CKAResult.load(fresh).layers_a == CKAResult.load(trained).layers_a
    torchvision_layers = create_model("resnet8", style="torchvision").layer_names("all")
    paper_layers = create_model("resnet8", style="paper").layer_names("all")
    assert torchvision_layers != paper_layers and CKAResult.load(fresh).layers_a == torchvision_layers
    for flags in (["--recipe", "paper"], ["--model-style", "paper"]):
        out = tmp_path / f"{flags[1]}.npz"
        assert main(["cka", *FRESH, *flags, "--layers", "all", "--out", str(out), "--quiet"]) == 0
        assert CKAResult.load(out).layers_a == paper_layers
    small = tmp_path / "small.npz"
    assert main(["cka", *FRESH, "--resize", "8", "--no-normalize", "--out", str(small), "--quiet"]) == 0
    config = TrainConfig(arch="resnet8", width=0.25, dataset="digits", resize=8, normalize=False).resolved()
    data = config.load_data()
    assert float(data.x_test.min()) >= 0 and data.x_test.shape[-1] == 8
    model = build_model(config, data.num_classes, data.in_channels, generator=make_generator(0))
    expected = heatmap(model, data.x_test[:64], batch_size=32, progress=False)
    np.testing.assert_allclose(CKAResult.load(small).matrix, expected.matrix, atol=1e-12)


def test_two_fresh_models_and_all_layers(tmp_path) -> None:
    out = tmp_path / "cross.npz"
    argv = ["cka", *FRESH, "--arch-b", "resnet14", "--layers", "all", "--layers-b", "stage*.*.relu", "--passes", "2",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    res = CKAResult.load(out)
    a, b = create_model("resnet8", width=0.25, style="torchvision"), create_model("resnet14", style="torchvision")
    assert res.layers_a == a.layer_names("all") and res.layers_b == [f"stage{s}.{i}.relu" for s in (1, 2, 3) for i in (0, 1)]
    assert (res.model_a, res.model_b, res.passes, res.num_batches) == ("resnet8_w0.25", "resnet14_w1", 2, 4)
    assert len(b.layer_names("all")) > len(res.layers_b)


def test_random_inputs(tmp_path) -> None:
    out = tmp_path / "r.npz"
    assert main(["cka", "--arch", "resnet8", "--width", "0.25", "--random-inputs", "40", "--image-size", "16",
                 "--batch-size", "20", "--no-shuffle", "--out", str(out), "--quiet"]) == 0
    assert CKAResult.load(out).n == 40


def test_tokens_choose_how_a_transformer_layer_becomes_one_example(tmp_path) -> None:
    fresh = ["cka", "--arch", "vit2", "--width", "0.5", "--random-inputs", "32", "--image-size", "16",
             "--batch-size", "16", "--layers", "all", "--quiet"]
    assert main([*fresh, "--out", str(tmp_path / "auto.npz")]) == 0
    assert main([*fresh, "--tokens", "mean", "--out", str(tmp_path / "mean.npz")]) == 0
    auto, mean = CKAResult.load(tmp_path / "auto.npz"), CKAResult.load(tmp_path / "mean.npz")
    assert (auto.metadata["tokens"], mean.metadata["tokens"]) == ("flatten", "mean")
    assert np.abs(auto.matrix - mean.matrix).max() > 1e-3


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
    assert "holds no ckatlas run" in _error(capsys, ["cka", str(tmp_path), "--out", out])
    assert "--layers-b needs a second model" in _error(capsys, ["cka", *FRESH, "--layers-b", "fc", "--out", out])
    assert "--random-inputs is for registry models" in _error(capsys, ["cka", run_dir, "--random-inputs", "8", "--out", out])
    assert "--model-style is for registry models" in _error(capsys, ["cka", run_dir, "--model-style", "paper", "--out", out])
    with pytest.raises(SystemExit) as exc:
        main(["cka", *FRESH, "--batch-size", "0", "--out", out])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "x.npz").exists()


def test_a_progress_bar_on_a_terminal_only(tmp_path) -> None:
    from terminal import ckatlas_stderr

    argv = ["cka", *FRESH, "--out", str(tmp_path / "p.npz")]
    code, err = ckatlas_stderr(argv, terminal=True)
    assert code == 0 and "CKA:" in err and "/2 " in err and "batch" in err  # a bar over the two batches of 32
    for flags, terminal in (([], False), (["--quiet"], True)):
        code, err = ckatlas_stderr([*argv, *flags], terminal=terminal)
        assert code == 0 and "batch" not in err
