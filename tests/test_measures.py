"""The similarity measures beside minibatch CKA (`ckatlas.cka.measures`), each against a plain
reference written from its paper (and rsatoolbox for RSA), on random data and through `heatmap`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from references import cka1
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

from ckatlas import CKAResult, heatmap, population_heatmaps
from ckatlas.capture import capture_activations
from ckatlas.cka import CKAInputError
from ckatlas.cka.measures import MEASURES, accumulator, check_all_examples_memory, measure_matrix
from ckatlas.errors import UserInputError
from ckatlas.models import create_model


def _features(seed: int = 0, n: int = 48) -> list[np.ndarray]:
    """Layers of different widths: a base, a noisy linear map of it, its square, unrelated noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12))
    return [x, x @ rng.normal(size=(12, 30)) + 0.3 * rng.normal(size=(n, 30)), np.tanh(x) ** 2,
            rng.normal(size=(n, 7))]


def _table(reference, acts) -> np.ndarray:
    return np.array([[reference(a, b) for b in acts] for a in acts])


# -- plain references, from the papers ---------------------------------------------------------
def _procrustes_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Ding et al. (2021): centre, scale to unit Frobenius norm, rotate Y onto X; similarity 1 - d^2/2."""
    x, y = x - x.mean(0), y - y.mean(0)
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    if max(x.shape[1], y.shape[1]) > x.shape[0]:  # the same rotation problem in an orthonormal basis of each span
        x, y = np.linalg.qr(x.T)[1].T, np.linalg.qr(y.T)[1].T
    width = max(x.shape[1], y.shape[1])
    x, y = np.pad(x, ((0, 0), (0, width - x.shape[1]))), np.pad(y, ((0, 0), (0, width - y.shape[1])))
    rotation, _ = orthogonal_procrustes(y, x)
    return 1.0 - np.sum((y @ rotation - x) ** 2) / 2.0


def _knn_reference(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Huh et al. (2024), mutual k-NN: neighbours by cosine similarity (here of the centred features)."""
    def neighbours(f: np.ndarray) -> list[set[int]]:
        f = f - f.mean(0)
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        sim = f @ f.T
        np.fill_diagonal(sim, -np.inf)
        return [set(np.argsort(-row)[:k]) for row in sim]
    na, nb = neighbours(x), neighbours(y)
    return float(np.mean([len(a & b) / k for a, b in zip(na, nb)]))


def _rsa_reference(x: np.ndarray, y: np.ndarray) -> float:
    return spearmanr(pdist(x), pdist(y)).statistic


def _rbf_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019): RBF kernel, bandwidth the median distance; CKA with unbiased HSIC (Song et al.)."""
    def kernel(f: np.ndarray) -> np.ndarray:
        sq = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
        return np.exp(-sq / (2.0 * np.median(sq)))
    return cka1(kernel(x), kernel(y))


def _svcca_reference(x: np.ndarray, y: np.ndarray, variance: float = 0.99) -> float:
    """Raghu et al. (2017): SVD of each centred representation, keep the top directions explaining `variance`
    of it, then CCA (textbook: the canonical correlations squared are the eigenvalues of
    Sxx^-1 Sxy Syy^-1 Syx); the mean of the min(k_x, k_y) correlations."""
    def reduced(f: np.ndarray) -> np.ndarray:
        f = f - f.mean(0)
        _, s, vt = np.linalg.svd(f, full_matrices=False)
        share = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.searchsorted(share, variance * (1 - 1e-12)) + 1)
        return f @ vt[:k].T
    a, b = reduced(x), reduced(y)
    sxx, syy, sxy = a.T @ a, b.T @ b, a.T @ b
    product = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    rho2 = np.sort(np.linalg.eigvals(product).real)[::-1][: min(a.shape[1], b.shape[1])]
    return float(np.mean(np.sqrt(np.clip(rho2, 0.0, 1.0))))


def _linear_reference(x: np.ndarray, y: np.ndarray) -> float:
    return cka1(x @ x.T, y @ y.T)


@pytest.mark.parametrize("measure, reference, tolerance", [
    ("procrustes", _procrustes_reference, 1e-7),
    ("knn", _knn_reference, 1e-12),
    ("rsa", _rsa_reference, 1e-10),
    ("cka-rbf", _rbf_reference, 1e-9),
    ("cka-debiased", _linear_reference, 1e-10),
    ("cka", _linear_reference, 1e-10),
    ("svcca", _svcca_reference, 1e-8),
])
def test_each_measure_equals_its_reference_on_one_batch(measure, reference, tolerance) -> None:
    for seed in range(3):
        acts = _features(seed)
        np.testing.assert_allclose(measure_matrix(measure, acts), _table(reference, acts), rtol=0, atol=tolerance)


def test_rsa_equals_rsatoolbox() -> None:
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    acts = _features(4)
    rdms = [calc_rdm(Dataset(a), method="euclidean") for a in acts]
    expected = np.array([[compare(r, s, method="spearman").item() for s in rdms] for r in rdms])
    np.testing.assert_allclose(measure_matrix("rsa", acts), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("measure", [m for m in MEASURES])
def test_identical_rotated_and_scaled_layers_score_one(measure) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 9))
    rotation = np.linalg.qr(rng.normal(size=(9, 9)))[0]
    m = measure_matrix(measure, [x, 3.0 * x @ rotation + 5.0, rng.normal(size=(40, 9))])
    np.testing.assert_allclose(m[:2, :2], 1.0, atol=1e-9)
    assert m[0, 2] < 0.9 and np.allclose(m, m.T)


@pytest.mark.parametrize("measure", ["procrustes", "knn", "rsa", "svcca"])
def test_a_minibatch_measure_is_the_mean_over_batches_with_its_spread(measure, tmp_path) -> None:
    model = create_model("resnet8", width=0.25, in_channels=1, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    x = torch.randn(48, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = heatmap(model, x, batch_size=16, shuffle=False, measure=measure)
    per_batch = []
    for batch in x.split(16):
        acts = capture_activations(model, "blocks", batch)
        per_batch.append(_table({"procrustes": _procrustes_reference, "knn": _knn_reference,
                                 "rsa": _rsa_reference, "svcca": _svcca_reference}[measure], [a.flatten(1).numpy() for a in acts.values()]))
    np.testing.assert_allclose(got.matrix, np.mean(per_batch, axis=0), rtol=0, atol=1e-7)
    np.testing.assert_allclose(got.standard_error, np.std(per_batch, axis=0, ddof=1) / np.sqrt(3), rtol=0, atol=1e-7)
    assert got.measure == measure and got.num_batches == 3
    assert CKAResult.load(got.save(tmp_path / "r.npz")).measure == measure


def test_debiased_cka_sees_every_example_at_once_and_differs_from_the_minibatch_estimate() -> None:
    model = create_model("resnet8", width=0.25, in_channels=1, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    x = torch.randn(40, 1, 12, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = heatmap(model, x, batch_size=8, measure="cka-debiased")  # batch_size does not apply
    acts = [a.flatten(1).numpy() for a in capture_activations(model, "blocks", x).values()]
    np.testing.assert_allclose(got.matrix, _table(_linear_reference, acts), rtol=0, atol=1e-10)
    assert got.num_batches == 1 and got.n == 40 and got.metadata["measure"] == "cka-debiased"
    minibatch = heatmap(model, x, batch_size=8, shuffle=False)
    assert minibatch.measure == "cka" and np.abs(minibatch.matrix - got.matrix).max() > 1e-3
    with pytest.raises(UserInputError, match="needs all examples in one batch: pass the inputs as one Tensor"):
        heatmap(model, list(x.split(8)), measure="cka-debiased")


def test_all_examples_memory_is_refused_above_the_limit_before_any_work() -> None:
    check_all_examples_memory("cka-debiased", 1000, 10, limit=10**9)  # 80 MB: fine
    with pytest.raises(CKAInputError, match=r"needs all 50000 examples in one batch: 40 Grams .* about 745\.1 GiB"):
        check_all_examples_memory("cka-debiased", 50_000, 40)

    class Exploding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))

        def forward(self, x):
            raise AssertionError("no forward pass may run")

    with pytest.raises(CKAInputError, match="over the limit"):
        heatmap(Exploding(), torch.zeros(40_000, 4), layers="all", measure="cka-debiased")


def test_unknown_measures_and_bad_options_are_one_line() -> None:
    model = create_model("resnet8", width=0.25, in_channels=1)
    with pytest.raises(CKAInputError, match=r"measure must be one of cka, cka-rbf, cka-debiased, procrustes, knn, rsa, "
                                            r"svcca, got 'cca'"):
        heatmap(model, torch.zeros(8, 1, 8, 8), measure="cca")
    with pytest.raises(CKAInputError, match=r"'pwcca' is not offered: its weights need each neuron's projections.*svcca"):
        heatmap(model, torch.zeros(8, 1, 8, 8), measure="pwcca")
    with pytest.raises(CKAInputError, match=r"variance must be a share in \(0, 1\], got 0"):
        accumulator("svcca", 2, variance=0)
    with pytest.raises(CKAInputError, match="k must be a positive integer"):
        accumulator("knn", 2, k=0)
    with pytest.raises(CKAInputError, match="knn' with k=10 needs batches of more than 10 examples"):
        measure_matrix("knn", [np.ones((8, 3)), np.eye(8, 3)])


def test_dead_layers_are_nan_and_the_others_unaffected() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    for measure in ("procrustes", "knn", "rsa"):
        m = measure_matrix(measure, [x, np.ones((30, 5)), x])
        assert np.isnan(m[1]).all() and np.isnan(m[:, 1]).all(), measure
        np.testing.assert_allclose(m[0, 2], 1.0, atol=1e-9)


def test_population_heatmaps_take_a_measure_for_every_pair() -> None:
    gen = torch.Generator().manual_seed(0)
    models = {name: create_model("resnet8", width=0.25, in_channels=1, generator=gen) for name in "ab"}
    x = torch.randn(32, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    population = population_heatmaps(models, x, batch_size=16, measure="rsa")
    single = heatmap(models["a"], x, models["b"], batch_size=16, measure="rsa")
    np.testing.assert_allclose(population["a", "b"].matrix, single.matrix, atol=1e-12)
    assert {r.measure for r in population.results.values()} == {"rsa"}


def test_the_cli_computes_a_measure_and_refuses_an_unknown_one(tmp_path) -> None:
    out = tmp_path / "p.npz"
    cmd = [sys.executable, "-m", "ckatlas.cli", "cka", "--arch", "resnet8", "--width", "0.25", "--random-inputs", "32",
           "--image-size", "8", "--measure", "procrustes", "--quiet", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = CKAResult.load(out)
    assert result.measure == "procrustes" and np.allclose(np.diag(result.matrix), 1.0)
    bad = subprocess.run(cmd[:-5] + ["--measure", "cca", "--out", str(tmp_path / "q.npz")], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'cca'" in bad.stderr and not (tmp_path / "q.npz").exists()


class _Awkward(torch.nn.Module):
    """Layers that stress a measure's arithmetic: fewer features than examples (6), more (400), a dead layer
    (all zeros), one on a scale 1e3 times larger, and a rank-2 one inside 40 features."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.narrow = torch.nn.Linear(10, 6)
        self.wide = torch.nn.Linear(6, 400)
        self.act = torch.nn.ReLU()
        self.loud = torch.nn.Linear(400, 40)
        self.low = torch.nn.Linear(40, 2)
        self.up = torch.nn.Linear(2, 40)
        self.dead = torch.nn.Linear(40, 8)
        for layer in (self.narrow, self.wide, self.loud, self.low, self.up, self.dead):
            torch.nn.init.normal_(layer.weight, generator=g)
            torch.nn.init.normal_(layer.bias, generator=g)
        with torch.no_grad():
            self.loud.weight.mul_(1e3)
            self.dead.weight.zero_()
            self.dead.bias.fill_(-1.0)
        self.dead_act = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.wide(self.narrow(x)))
        h = self.up(self.low(self.loud(h)))
        return self.dead_act(self.dead(h))


@pytest.mark.parametrize("measure, reference", [
    ("procrustes", _procrustes_reference), ("svcca", _svcca_reference), ("cka-rbf", _rbf_reference),
    ("rsa", _rsa_reference), ("knn", _knn_reference), ("cka", _linear_reference), ("cka-debiased", _linear_reference),
])
def test_each_measure_is_exact_on_float32_activations_against_float64(measure, reference) -> None:
    model = _Awkward().eval()  # float32
    x = torch.randn(200, 10, generator=torch.Generator().manual_seed(1))
    layers = ["narrow", "wide", "act", "loud", "up", "dead_act"]
    res = heatmap(model, x, layers=layers, batch_size=200, shuffle=False, measure=measure)
    acts = [a.double().numpy() for a in capture_activations(model, layers, x).values()]  # the same float32 values
    live = [i for i, a in enumerate(acts) if np.ptp(a) > 0]
    expected = np.array([[reference(acts[i], acts[j]) for j in live] for i in live])
    np.testing.assert_allclose(res.matrix[np.ix_(live, live)], expected, rtol=0, atol=1e-6)
    assert np.isnan(res.matrix[layers.index("dead_act")]).all()  # the dead layer: NaN, not a number
