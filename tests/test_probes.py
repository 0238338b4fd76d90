"""Linear probes: a layer that holds the labels and one that does not, selection without the test set."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from ckatlas.analysis.probes import (
    ProbeResult,
    default_probe_layers,
    linear_probes,
    pool_features,
    validation_split,
)
from ckatlas.errors import UserInputError
from ckatlas.models import create_model

K = 3  # classes
NOISE = 8  # noise features


class _Columns(nn.Module):
    def __init__(self, cols: slice) -> None:
        super().__init__()
        self.cols = cols

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.cols]


class _Toy(nn.Module):
    """`signal` holds a noisy one-hot code of the label; `noise` is independent of it."""

    def __init__(self) -> None:
        super().__init__()
        self.signal = _Columns(slice(0, K))
        self.noise = _Columns(slice(K, K + NOISE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.signal(x), self.noise(x)], dim=1)


def _toy_data(n_train: int = 300, n_test: int = 150, seed: int = 0) -> SimpleNamespace:
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, K, (n,), generator=gen)
        x = torch.randn(n, K + NOISE, generator=gen)
        x[:, :K] = 0.6 * x[:, :K] + 2.0 * nn.functional.one_hot(y, K)
        return x, y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return SimpleNamespace(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def test_signal_layer_is_decodable_and_noise_is_at_chance() -> None:
    res = linear_probes(_Toy(), _toy_data(), ["signal", "noise"], c_grid=(0.01, 1.0))
    assert res.layers == ["signal", "noise"] and res.kinds == ["layer", "layer"]
    assert res.num_features == [K, NOISE]
    assert res.test_accuracy[0] > 0.9
    assert abs(res.test_accuracy[1] - 1 / K) < 0.12
    assert res.num_train == 300 and res.num_test == 150 and res.num_val == pytest.approx(60, abs=2)
    assert all(res.converged)


def test_test_labels_play_no_part_in_the_choice() -> None:
    data = _toy_data()
    grid = (1e-4, 1e-2, 1.0)
    res = linear_probes(_Toy(), data, ["signal", "noise"], c_grid=grid)
    gen = torch.Generator().manual_seed(5)
    shuffled = SimpleNamespace(**{**vars(data), "y_test": data.y_test[torch.randperm(len(data.y_test), generator=gen)]})
    res2 = linear_probes(_Toy(), shuffled, ["signal", "noise"], c_grid=grid)
    np.testing.assert_array_equal(res.val_accuracy, res2.val_accuracy)
    np.testing.assert_array_equal(res.chosen_c, res2.chosen_c)
    assert res2.test_accuracy[0] < 0.6  # the test labels were really changed


def test_matches_a_plain_scikit_learn_loop() -> None:
    data, grid = _toy_data(), (1e-3, 0.05, 1.0)
    res = linear_probes(_Toy(), data, ["noise"], c_grid=grid, seed=4)
    x, y = data.x_train[:, K:].numpy(), data.y_train.numpy()
    fit, val = validation_split(y, 0.2, 4)
    mean, std = x[fit].mean(0), x[fit].std(0)
    val_acc = []
    for c in grid:
        probe = LogisticRegression(C=c, max_iter=1000).fit((x[fit] - mean) / std, y[fit])
        val_acc.append((probe.predict((x[val] - mean) / std) == y[val]).mean())
    np.testing.assert_allclose(res.val_accuracy[0], val_acc)
    best = [c for c, a in zip(grid, val_acc) if a == max(val_acc)][0]
    assert res.chosen_c[0] == best
    mean, std = x.mean(0), x.std(0)
    probe = LogisticRegression(C=best, max_iter=1000).fit((x - mean) / std, y)
    x_test = (data.x_test[:, K:].numpy() - mean) / std
    assert res.test_accuracy[0] == pytest.approx((probe.predict(x_test) == data.y_test.numpy()).mean())


def test_validation_split_is_stratified_and_seeded() -> None:
    y = np.repeat(np.arange(4), [10, 20, 30, 1])
    fit, val = validation_split(y, 0.2, seed=1)
    assert np.bincount(y[val], minlength=4).tolist() == [2, 4, 6, 0]
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(len(y)))
    np.testing.assert_array_equal(val, validation_split(y, 0.2, seed=1)[1])
    assert not np.array_equal(val, validation_split(y, 0.2, seed=2)[1])
    with pytest.raises(UserInputError, match="val_fraction"):
        validation_split(y, 1.0, 0)


def test_pooling_rule_against_a_loop() -> None:
    x = torch.randn(2, 4, 16, 16)
    np.testing.assert_array_equal(pool_features(x, 4 * 16 * 16), x.reshape(2, -1))  # small enough: untouched
    pooled = pool_features(x, 4 * 8 * 8 + 5)  # s = floor(sqrt(261 / 4)) = 8
    ref = torch.stack([x[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean((-2, -1)) for i in range(8) for j in range(8)], -1)
    torch.testing.assert_close(pooled, ref.reshape(2, -1))
    assert pool_features(x, 3).shape == (2, 4)  # more channels than allowed: global average
    assert pool_features(torch.randn(2, 5, 7), 4).shape == (2, 35)  # only 4-D maps are pooled


def test_resnet_default_layers_and_memory_groups() -> None:
    model = create_model("resnet8", width=0.25, num_classes=3, in_channels=1)
    assert default_probe_layers(model) == [
        ("stage1.0.branch.bn2", "pre-residual"), ("stage1.0.add", "post-residual"),
        ("stage2.0.branch.bn2", "pre-residual"), ("stage2.0.add", "post-residual"),
        ("stage3.0.branch.bn2", "pre-residual"), ("stage3.0.add", "post-residual"),
    ]
    gen = torch.Generator().manual_seed(0)
    data = SimpleNamespace(
        x_train=torch.randn(90, 1, 16, 16, generator=gen), y_train=torch.arange(90) % 3,
        x_test=torch.randn(30, 1, 16, 16, generator=gen), y_test=torch.arange(30) % 3,
    )
    one = linear_probes(model, data, c_grid=(0.1,), max_features=200)
    assert one.num_features == [196, 196, 200, 200, 144, 144]  # 4x16x16 -> 4x7x7, 8x8x8 -> 8x5x5, 16x4x4 -> 16x3x3
    tiny = linear_probes(model, data, c_grid=(0.1,), max_features=200, feature_memory_gb=1e-6)  # a pass per layer
    np.testing.assert_array_equal(one.test_accuracy, tiny.test_accuracy)
    cnn = create_model("cnn8", width=0.25, num_classes=3, in_channels=1)
    assert default_probe_layers(cnn)[1] == ("stage1.0.relu", "block output")


def test_save_and_load_round_trip(tmp_path) -> None:
    res = linear_probes(_Toy(), _toy_data(), ["signal", "noise"], c_grid=(0.1, 1.0))
    back = ProbeResult.load(res.save(tmp_path / "probes.json"))
    assert back.to_dict() == res.to_dict()
    assert "signal" in res.summary()


def test_bad_input_is_one_clear_error() -> None:
    data = _toy_data()
    with pytest.raises(UserInputError, match="no module named 'hidden'"):
        linear_probes(_Toy(), data, ["signal", "hidden"])
    with pytest.raises(UserInputError, match="residual_blocks"):
        linear_probes(_Toy(), data)
    with pytest.raises(UserInputError, match="x_train"):
        linear_probes(_Toy(), (data.x_train, data.y_train), ["signal"])
    with pytest.raises(UserInputError, match="c_grid"):
        linear_probes(_Toy(), data, ["signal"], c_grid=(0.0,))


def test_figure_marks_pre_and_post_residual_layers() -> None:
    from ckatlas.report.analysis_figures import plot_probe_accuracy

    res = ProbeResult(
        layers=["b0.pre", "b0.add", "b1.pre", "b1.add"], kinds=["pre-residual", "post-residual"] * 2,
        num_features=[4] * 4, test_accuracy=[0.5, 0.7, 0.6, 0.9], val_accuracy=[[0.5], [0.7], [0.6], [0.9]],
        chosen_c=[1.0] * 4, converged=[True] * 4, c_grid=[1.0], num_train=10, num_val=2, num_test=5,
        majority_accuracy=0.2,
    )
    ax = plot_probe_accuracy(res)
    lines = {line.get_label(): line for line in ax.lines}
    assert lines["pre-residual"].get_ydata().tolist() == [0.5, 0.6]
    assert lines["post-residual"].get_ydata().tolist() == [0.7, 0.9]
    assert list(lines["majority class"].get_ydata()) == [0.2, 0.2]


# -- command line -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    from ckatlas.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "r8"
    train(TrainConfig(arch="resnet8", width=0.25, dataset="digits", epochs=1, fraction=0.05, batch_size=32), out, quiet=True)
    return str(out)


def test_cli_writes_the_result_and_figure(run_dir, tmp_path, capsys) -> None:
    from ckatlas.cli import main

    out = tmp_path / "probes"
    code = main(["probes", run_dir, "--out", str(out), "--device", "cpu", "--layers", "stage3.0.branch.bn2",
                 "stage3.0.add", "--c-grid", "0.1", "--max-features", "64"])
    assert code == 0
    assert "post-residual" in capsys.readouterr().out
    res = ProbeResult.load(out / "probes.json")
    assert res.layers == ["stage3.0.branch.bn2", "stage3.0.add"] and res.kinds == ["pre-residual", "post-residual"]
    assert res.num_test == 445 and res.c_grid == [0.1]
    assert (out / "probes.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--layers", "stage3.0.mul"], "no module named 'stage3.0.mul'"), (["--val-fraction", "1.5"], "val_fraction")],
)
def test_cli_user_errors_are_one_line(run_dir, tmp_path, capsys, extra, message) -> None:
    from ckatlas.cli import main

    assert main(["probes", run_dir, "--out", str(tmp_path / "o"), "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("ckatlas probes: error:")
    assert not (tmp_path / "o").exists()


def test_the_result_does_not_depend_on_the_thread_setting() -> None:
    # Standalone, a probe run used PyTorch's and the BLAS pools' default threads; the chosen C
    # moved with that setting. Features and fits must come out the same on 1 or 2 threads.
    from threadpoolctl import threadpool_limits

    model = create_model("resnet8", width=0.5, num_classes=K, in_channels=1)
    gen = torch.Generator().manual_seed(3)
    data = SimpleNamespace(x_train=torch.randn(160, 1, 8, 8, generator=gen), y_train=torch.arange(160) % K,
                           x_test=torch.randn(60, 1, 8, 8, generator=gen), y_test=torch.arange(60) % K)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with threadpool_limits(limits=threads):
                results.append(linear_probes(model, data, ["stem.relu", "stage1.0.add", "pool"],
                                             c_grid=(0.01, 0.1, 1.0), max_iter=200).to_dict())
    finally:
        torch.set_num_threads(before)
    assert results[0] == results[1]


def test_a_probe_fit_has_the_same_coefficients_on_one_or_two_blas_threads() -> None:
    # With the process's BLAS threads, the coefficients moved in the 8th digit with the
    # thread count, enough to flip a validation example and with it the chosen C.
    from threadpoolctl import threadpool_limits

    from ckatlas.analysis.probes import fit_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 2048))
    y = np.arange(512) % 10
    coefs = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            probe, _ = fit_probe(x, y, 0.1, max_iter=50)
            coefs.append(probe.coef_.copy())
    np.testing.assert_array_equal(coefs[0], coefs[1])
