"""Principal-component analyses: planted structure, a plain NumPy loop, the heatmap's CKA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from references import hsic1
from torch import nn

from ckatlas.analysis.pca import PCAResult, pc_scatter, principal_components
from ckatlas.errors import UserInputError
from ckatlas.heatmap import heatmap
from ckatlas.models import create_model

P = 12  # features per layer
SIGNAL = 6.0  # scale of the shared rank-1 signal


class _Mix(nn.Module):
    """`scale * z w^T + noise`, with z and the noise read from fixed columns of the input."""

    def __init__(self, w: torch.Tensor, scale: float, noise: slice | None) -> None:
        super().__init__()
        self.register_buffer("w", w)
        self.scale, self.noise = scale, noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        signal = self.scale * x[:, :1] * self.w
        return signal if self.noise is None else signal + x[:, self.noise]


class _Planted(nn.Module):
    """Layers a and b share one dominant component; c is noise only."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        w_a = torch.randn(P, generator=gen, dtype=torch.float64)
        w_b = torch.randn(P, generator=gen, dtype=torch.float64)
        self.a = _Mix(w_a / w_a.norm(), SIGNAL, slice(1, 1 + P))
        self.b = _Mix(w_b / w_b.norm(), SIGNAL, slice(1 + P, 1 + 2 * P))
        self.c = _Mix(torch.zeros(P, dtype=torch.float64), 0.0, slice(1 + 2 * P, 1 + 3 * P))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x), self.c(x)], dim=1)


def _inputs(n: int = 320) -> torch.Tensor:
    return torch.randn(n, 1 + 3 * P, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


# -- a plain NumPy reference ------------------------------------------------------------------
def _minibatch_cka(grams_per_batch: list[list[np.ndarray]]) -> np.ndarray:
    num = len(grams_per_batch[0])
    xy = np.zeros((num, num))
    for grams in grams_per_batch:
        for i in range(num):
            for j in range(num):
                xy[i, j] += hsic1(grams[i], grams[j])
    return xy / np.sqrt(np.outer(np.diag(xy), np.diag(xy)))


def _naive(acts: list[np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Per batch: SVD of each layer's centred activations; n-weighted means; CKA with and without PC1."""
    num, total = len(acts), len(acts[0])
    var, sim, weight = np.zeros(num), np.zeros((num, num)), 0
    grams, grams_without = [], []
    count = max(1, int(np.floor(total / batch_size + 0.5)))  # near-equal batches, as every CKA estimate cuts them
    for rows in np.array_split(np.arange(total), count):
        batch = [a[rows] for a in acts]
        n = len(batch[0])
        u1, g, g_without = [], [], []
        for x in batch:
            x = x.reshape(n, -1) - x.reshape(n, -1).mean(0)
            u, s, vt = np.linalg.svd(x, full_matrices=False)
            var[len(u1)] += n * s[0] ** 2 / (s**2).sum()
            u1.append(u[:, 0])
            rest = x - s[0] * np.outer(u[:, 0], vt[0])
            g.append(x @ x.T)
            g_without.append(rest @ rest.T)
        for i in range(num):
            for j in range(num):
                sim[i, j] += n * (u1[i] @ u1[j]) ** 2
        weight += n
        grams.append(g)
        grams_without.append(g_without)
    return {
        "variance_explained": var / weight,
        "pc_similarity": sim / weight,
        "cka": _minibatch_cka(grams),
        "cka_without_pc1": _minibatch_cka(grams_without),
    }


# -- tests ------------------------------------------------------------------------------------
def test_planted_component_is_recovered() -> None:
    res = principal_components(_Planted(), _inputs(), ["a", "b", "c"], batch_size=64, shuffle=False)
    assert res.layers == ["a", "b", "c"]
    # signal variance SIGNAL^2 against P unit noise variances (+1 of noise along the signal)
    expected = (SIGNAL**2 + 1) / (SIGNAL**2 + P)
    assert res.variance_explained[:2] == pytest.approx([expected, expected], abs=0.06)
    assert res.variance_explained[2] < 0.35
    assert res.pc_similarity[0, 1] > 0.9
    assert res.pc_similarity[0, 2] < 0.2 and res.pc_similarity[1, 2] < 0.2
    np.testing.assert_allclose(np.diag(res.pc_similarity), 1.0)
    assert res.cka[0, 1] > 0.7
    assert abs(res.cka_without_pc1[0, 1]) < 0.1  # what a and b share is their first PC
    assert abs(res.cka[0, 2]) < 0.1


def test_matches_a_plain_numpy_loop() -> None:
    model, x = _Planted(), _inputs(298)  # five batches of 60, 60, 60, 59, 59
    res = principal_components(model, x, ["a", "b", "c"], batch_size=64, shuffle=False)
    with torch.no_grad():
        acts = [model.a(x).numpy(), model.b(x).numpy(), model.c(x).numpy()]
    ref = _naive(acts, 64)
    for key, value in ref.items():
        np.testing.assert_allclose(getattr(res, key), value, atol=1e-9, err_msg=key)
    assert res.n == 298 and res.num_batches == 5


def test_cka_equals_the_heatmap_of_the_same_batches() -> None:
    model = create_model("resnet8", width=0.25, num_classes=10, in_channels=1)
    x = torch.randn(200, 1, 16, 16)
    res = principal_components(model, x, "blocks", batch_size=50, seed=3)
    ref = heatmap(model, x, layers="blocks", batch_size=50, seed=3)
    assert res.layers == ref.layers_a
    np.testing.assert_allclose(res.cka, ref.matrix, atol=1e-12)
    assert np.all((res.variance_explained > 0) & (res.variance_explained <= 1))
    assert np.all((res.pc_similarity >= 0) & (res.pc_similarity <= 1 + 1e-9))


def test_rank_one_layer_has_nothing_left_without_pc1() -> None:
    model = _Planted()
    model.a = _Mix(model.a.w, SIGNAL, None)  # exactly rank one: scale * z w^T
    res = principal_components(model, _inputs(128), ["a", "b"], batch_size=64, shuffle=False)
    assert res.variance_explained[0] == pytest.approx(1.0)
    assert np.isnan(res.cka_without_pc1[0]).all()
    assert np.isfinite(res.cka_without_pc1[1, 1])


def test_save_and_load_round_trip(tmp_path) -> None:
    res = principal_components(_Planted(), _inputs(128), ["a", "b", "c"], batch_size=64)
    path = res.save(tmp_path / "pca.npz")
    back = PCAResult.load(path)
    assert back.layers == res.layers and back.n == res.n and back.metadata == res.metadata
    for key in ("variance_explained", "pc_similarity", "cka_without_pc1", "cka"):
        np.testing.assert_array_equal(getattr(back, key), getattr(res, key))
    assert "PC1 variance" in res.summary()
    with pytest.raises(UserInputError, match="does not exist"):
        PCAResult.load(tmp_path / "missing.npz")


def test_unknown_layer_is_one_clear_error() -> None:
    with pytest.raises(UserInputError, match="no module named 'd'"):
        principal_components(_Planted(), _inputs(64), ["a", "d"])


def test_pc_scatter_matches_numpy_svd() -> None:
    model, x = _Planted(), _inputs(150)
    labels = np.arange(150) % 3
    sc = pc_scatter(model, x, "a", labels, batch_size=40)
    with torch.no_grad():
        a = model.a(x).numpy()
    a = a - a.mean(0)
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    ref = u[:, :2] * s[:2]
    ref *= np.sign(ref[np.abs(ref).argmax(0), [0, 1]])  # the documented sign convention
    np.testing.assert_allclose(sc.coords, ref, atol=1e-9)
    np.testing.assert_allclose(sc.variance_ratio, s[:2] ** 2 / (s**2).sum())
    np.testing.assert_array_equal(sc.labels, labels)
    assert sc.to_dict()["layer"] == "a"
    with pytest.raises(UserInputError, match="labels must have shape"):
        pc_scatter(model, x, "a", labels[:10])


def test_figures(tmp_path) -> None:
    from ckatlas.report.analysis_figures import plot_pc_heatmaps, plot_pc_scatter, plot_pc_variance

    res = principal_components(_Planted(), _inputs(128), ["a", "b", "c"], batch_size=64)
    ax = plot_pc_variance(res)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), res.variance_explained)
    left, right = plot_pc_heatmaps(res)
    np.testing.assert_allclose(left.images[0].get_array(), res.pc_similarity)
    np.testing.assert_allclose(right.images[0].get_array(), res.cka_without_pc1)
    sc = pc_scatter(_Planted(), _inputs(60), "b", np.arange(60) % 4)
    ax = plot_pc_scatter(sc)
    assert len(ax.collections) == 4 and "PC1" in ax.get_xlabel()
    ax.figure.savefig(tmp_path / "scatter.png")
    assert (tmp_path / "scatter.png").stat().st_size > 0


# -- command line -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    from ckatlas.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "r8"
    train(TrainConfig(arch="resnet8", width=0.25, dataset="digits", epochs=1, fraction=0.05, batch_size=32), out, quiet=True)
    return str(out)


def test_cli_writes_the_result_and_figures(run_dir, tmp_path, capsys) -> None:
    from ckatlas.cli import main

    out = tmp_path / "pca"
    code = main(["pca", run_dir, "--out", str(out), "--device", "cpu", "--batch-size", "128",
                 "--scatter-examples", "100"])
    assert code == 0
    assert "PC1 variance" in capsys.readouterr().out
    res = PCAResult.load(out / "pca.npz")
    assert res.layers[0] == "stem.relu" and res.n == 445 and res.metadata["batch_size"] == 128
    for name in ("pc_variance.png", "pc_heatmaps.png", "pc_scatter.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--layers", "stage9.0.relu"], "no module named 'stage9.0.relu'"), (["--scatter-layer", "nope"], "no module named")],
)
def test_cli_user_errors_are_one_line(run_dir, tmp_path, capsys, extra, message) -> None:
    from ckatlas.cli import main

    assert main(["pca", run_dir, "--out", str(tmp_path / "o"), "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("ckatlas pca: error:")
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_cli_missing_run_dir_is_one_line(tmp_path, capsys) -> None:
    from ckatlas.cli import main

    assert main(["pca", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run folder" in err and "--resume" not in err
