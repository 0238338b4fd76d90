"""The CKA engine against textbook formulas written as plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from references import hsic1 as ref_hsic1

from ckatlas.cka import (
    CKAInputError,
    MinibatchCKA,
    center_gram,
    cka_from_grams,
    feature_space_linear_cka,
    gram_linear,
    gram_rbf,
    hsic_biased,
    hsic_unbiased,
    linear_cka,
    rbf_cka,
)

# -- textbook references (NumPy, float64, no vectorisation tricks) ----------------------------


def ref_hsic0(k: np.ndarray, l: np.ndarray) -> float:
    """Gretton et al. (2005) biased HSIC with an explicit centring matrix."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def ref_gram(x: np.ndarray) -> np.ndarray:
    f = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return f @ f.T  # deliberately *not* centred: the estimators must not care


def ref_minibatch_cka(batches_a: list[list[np.ndarray]], batches_b: list[list[np.ndarray]]) -> np.ndarray:
    """The paper's minibatch CKA, one layer pair at a time."""
    la, lb = len(batches_a[0]), len(batches_b[0])
    out = np.zeros((la, lb))
    for i in range(la):
        for j in range(lb):
            xy = sum(ref_hsic1(ref_gram(ba[i]), ref_gram(bb[j])) for ba, bb in zip(batches_a, batches_b))
            xx = sum(ref_hsic1(ref_gram(ba[i]), ref_gram(ba[i])) for ba in batches_a)
            yy = sum(ref_hsic1(ref_gram(bb[j]), ref_gram(bb[j])) for bb in batches_b)
            out[i, j] = xy / math.sqrt(xx * yy)
    return out


def layered_batch(rng: np.random.Generator, n: int, dims=((6,), (3, 2, 2), (10,), (4,))) -> list[np.ndarray]:
    """Activations of a few 'layers' with shared structure so CKA values are spread out."""
    z = rng.normal(size=(n, 5))
    acts = []
    for d in dims:
        p = int(np.prod(d))
        w = rng.normal(size=(5, p))
        acts.append((np.tanh(z @ w) + 0.5 * rng.normal(size=(n, p)) + 3.0).reshape(n, *d))
    return acts


# -- full-batch CKA -----------------------------------------------------------------------------


@pytest.fixture
def xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 12))
    y = np.tanh(x @ rng.normal(size=(12, 7))) + 0.3 * rng.normal(size=(60, 7))
    return x, y


@pytest.mark.parametrize("debiased", [False, True])
def test_self_similarity_is_one(xy, debiased):
    x, _ = xy
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert feature_space_linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(x, x, threshold=0.5, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_symmetry(xy, debiased):
    x, y = xy
    assert linear_cka(x, y, debiased) == pytest.approx(linear_cka(y, x, debiased), abs=1e-14)
    assert rbf_cka(x, y, 1.0, debiased) == pytest.approx(rbf_cka(y, x, 1.0, debiased), abs=1e-14)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_transform_and_isotropic_scaling(xy, debiased):
    x, y = xy
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    base = linear_cka(x, y, debiased)
    assert linear_cka(3.7 * x @ q, y, debiased) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x + 5.0, 0.01 * y, debiased) == pytest.approx(base, abs=1e-12)
    rbf_base = rbf_cka(x, y, 1.0, debiased)
    assert rbf_cka(2.5 * x @ q, y, 1.0, debiased) == pytest.approx(rbf_base, abs=1e-12)


def test_not_invariant_to_arbitrary_invertible_map(xy):
    x, y = xy
    rng = np.random.default_rng(3)
    a = rng.normal(size=(12, 12)) @ np.diag(np.logspace(-2, 2, 12))
    assert np.linalg.cond(a) < 1e8  # invertible
    assert abs(linear_cka(x @ a, y) - linear_cka(x, y)) > 0.05


def test_debiased_cka_of_independent_data_is_near_zero():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(400, 200)), rng.normal(size=(400, 200))
    biased, debiased = linear_cka(x, y), linear_cka(x, y, debiased=True)
    assert biased > 0.2  # the biased estimator is far from 0 when p is comparable to n
    assert abs(debiased) < 0.02


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_space_equals_example_space(xy, debiased):
    x, y = xy
    via_grams = cka_from_grams(ref_gram(x), ref_gram(y), debiased=debiased)
    assert feature_space_linear_cka(x, y, debiased) == pytest.approx(via_grams, abs=1e-12)
    wide = np.random.default_rng(5).normal(size=(20, 50))  # p > n takes the Gram path
    assert linear_cka(wide, wide[:, :10], debiased) == pytest.approx(
        feature_space_linear_cka(wide, wide[:, :10], debiased), abs=1e-12
    )


def test_hsic_estimators_match_textbook(xy):
    x, y = xy
    k, l = ref_gram(x), ref_gram(y)
    assert hsic_unbiased(torch.from_numpy(k), torch.from_numpy(l)) == pytest.approx(ref_hsic1(k, l), rel=1e-12)
    assert hsic_biased(torch.from_numpy(k), torch.from_numpy(l)) == pytest.approx(ref_hsic0(k, l), rel=1e-12)
    # U-centring: <U(K), U(L)> / (n(n-3)) is the unbiased estimator
    n = k.shape[0]
    uk, ul = center_gram(torch.from_numpy(k), unbiased=True), center_gram(torch.from_numpy(l), unbiased=True)
    assert float((uk * ul).sum()) / (n * (n - 3)) == pytest.approx(ref_hsic1(k, l), rel=1e-12)


def test_cka_from_grams_matches_textbook(xy):
    x, y = xy
    k, l = ref_gram(x), ref_gram(y)
    expected = ref_hsic1(k, l) / math.sqrt(ref_hsic1(k, k) * ref_hsic1(l, l))
    assert cka_from_grams(k, l, debiased=True) == pytest.approx(expected, abs=1e-12)
    expected0 = ref_hsic0(k, l) / math.sqrt(ref_hsic0(k, k) * ref_hsic0(l, l))
    assert cka_from_grams(k, l) == pytest.approx(expected0, abs=1e-12)


def test_rbf_gram_matches_definition(xy):
    x, _ = xy
    n = len(x)
    d2 = np.array([[np.sum((x[i] - x[j]) ** 2) for j in range(n)] for i in range(n)])
    expected = np.exp(-d2 / (2 * 0.7**2 * np.median(d2)))
    assert np.allclose(gram_rbf(x, 0.7).numpy(), expected, atol=1e-12)


def test_accepts_images_tensors_and_half_precision():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(16, 3, 4, 4)).astype(np.float32)
    y = rng.normal(size=(16, 8))
    ref = linear_cka(x.reshape(16, -1).astype(np.float64), y)
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(ref, abs=1e-6)
    assert linear_cka(torch.from_numpy(x).half(), y) == pytest.approx(ref, abs=2e-3)
    assert linear_cka(torch.from_numpy(x).to(memory_format=torch.channels_last), y) == pytest.approx(ref, abs=1e-6)


# -- bad input ------------------------------------------------------------------------------------


def test_full_batch_errors():
    rng = np.random.default_rng(7)
    with pytest.raises(CKAInputError, match="at least 4 examples"):
        linear_cka(rng.normal(size=(3, 5)), rng.normal(size=(3, 5)), debiased=True)
    with pytest.raises(CKAInputError, match="same examples"):
        linear_cka(rng.normal(size=(10, 5)), rng.normal(size=(11, 5)))
    bad = rng.normal(size=(10, 5))
    bad[2, 3] = np.nan
    with pytest.raises(CKAInputError, match="X contains NaN or Inf"):
        linear_cka(bad, rng.normal(size=(10, 5)))
    with pytest.raises(CKAInputError, match="threshold"):
        rbf_cka(rng.normal(size=(10, 5)), rng.normal(size=(10, 5)), threshold=0)
    with pytest.raises(CKAInputError, match="scalar"):
        linear_cka(np.float64(1.0), np.float64(2.0))


def test_constant_representation_gives_nan_with_warning():
    x = np.ones((10, 4)) * 0.1
    with pytest.warns(RuntimeWarning, match="zero variance"):
        assert math.isnan(linear_cka(x, np.random.default_rng(0).normal(size=(10, 4))))


# -- minibatch CKA --------------------------------------------------------------------------------


def test_minibatch_square_equals_textbook_loop_over_unequal_batches():
    rng = np.random.default_rng(8)
    batches = [layered_batch(rng, n) for n in (32, 17, 9, 40)]
    acc = MinibatchCKA(4)
    for b in batches:
        acc.update(b)
    got = acc.compute().numpy()
    expected = ref_minibatch_cka(batches, batches)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(got, got.T, atol=1e-14)
    np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-12)
    assert acc.num_batches == 4 and acc.num_examples == 98


def test_minibatch_rectangular_equals_textbook_loop():
    rng = np.random.default_rng(9)
    batches_a, batches_b = [], []
    for n in (20, 33, 12):
        acts = layered_batch(rng, n, dims=((5,), (7,), (2, 3), (4,), (9,)))
        batches_a.append(acts[:2])
        batches_b.append(acts[1:])
    acc = MinibatchCKA(2, 4)
    for a, b in zip(batches_a, batches_b):
        acc.update(a, b)
    got = acc.compute().numpy()
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got, ref_minibatch_cka(batches_a, batches_b), atol=1e-12)
    assert got[1, 0] == pytest.approx(1.0, abs=1e-12)  # the shared layer


def test_update_grams_equals_update():
    rng = np.random.default_rng(10)
    a, b = MinibatchCKA(4), MinibatchCKA(4)
    for n in (16, 24):
        acts = layered_batch(rng, n)
        a.update(acts)
        b.update_grams(torch.stack([gram_linear(x) for x in acts]))
    torch.testing.assert_close(a.compute(), b.compute(), rtol=0, atol=1e-14)


def _shard_accumulators(rng, square: bool):
    batches = [layered_batch(rng, n) for n in (16, 25, 8, 30, 12, 19)]
    make = (lambda: MinibatchCKA(4)) if square else (lambda: MinibatchCKA(2, 2))

    def feed(acc, bs):
        for b in bs:
            acc.update(b) if square else acc.update(b[:2], b[2:])
        return acc

    return feed(make(), batches), [feed(make(), batches[i::3]) for i in range(3)]


@pytest.mark.parametrize("square", [True, False])
def test_merge_of_shards_equals_one_pass(square):
    whole, shards = _shard_accumulators(np.random.default_rng(11), square)
    merged = shards[0].merge(shards[1]).merge(shards[2])
    torch.testing.assert_close(merged.compute(), whole.compute(), rtol=0, atol=1e-13)
    torch.testing.assert_close(merged.standard_error(), whole.standard_error(), rtol=0, atol=1e-13)
    assert merged.num_batches == whole.num_batches and merged.num_examples == whole.num_examples
    # merging does not change its operands
    assert shards[0].num_batches == 2


def test_merge_with_empty_accumulator():
    whole, _ = _shard_accumulators(np.random.default_rng(12), True)
    torch.testing.assert_close(MinibatchCKA(4).merge(whole).compute(), whole.compute(), rtol=0, atol=0)


def test_standard_error_is_spread_of_per_batch_estimates():
    rng = np.random.default_rng(13)
    batches = [layered_batch(rng, n) for n in (20, 25, 30, 22, 18)]
    acc = MinibatchCKA(4)
    for b in batches:
        acc.update(b)
    per_batch = np.stack([ref_minibatch_cka([b], [b]) for b in batches])  # (k, L, L)
    expected = per_batch.std(axis=0, ddof=1) / math.sqrt(len(batches))
    np.testing.assert_allclose(acc.standard_error().numpy(), expected, atol=1e-12)
    one = MinibatchCKA(4)
    one.update(batches[0])
    assert torch.isnan(one.standard_error()).all()


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(14)
    a64, a32 = MinibatchCKA(4), MinibatchCKA(4)
    for n in (64, 50):
        acts = layered_batch(rng, n, dims=((3, 8, 8), (16, 4, 4), (200,), (10,)))
        a64.update([torch.from_numpy(x) for x in acts])
        a32.update([torch.from_numpy(x).float() for x in acts])
    assert a64.compute().dtype == torch.float64 and a32.compute().dtype == torch.float64
    torch.testing.assert_close(a32.compute(), a64.compute(), rtol=0, atol=1e-6)


def test_state_dict_round_trip_and_resume():
    rng = np.random.default_rng(15)
    batches = [layered_batch(rng, n) for n in (16, 20, 24)]
    whole = MinibatchCKA(4)
    for b in batches:
        whole.update(b)
    first = MinibatchCKA(4)
    first.update(batches[0])
    resumed = MinibatchCKA.from_state_dict(first.state_dict())
    for b in batches[1:]:
        resumed.update(b)
    torch.testing.assert_close(resumed.compute(), whole.compute(), rtol=0, atol=1e-14)
    with pytest.raises(CKAInputError, match="num_layers_a"):
        MinibatchCKA(3).load_state_dict(first.state_dict())


def test_zero_variance_layer_is_nan_and_rest_is_right():
    rng = np.random.default_rng(16)
    batches = [layered_batch(rng, n) for n in (16, 20)]
    with_dead = MinibatchCKA(5)
    for b in batches:
        with_dead.update(b[:2] + [np.full((len(b[0]), 3), 0.7)] + b[2:])
    with pytest.warns(RuntimeWarning, match=r"layer\(s\) \[2\] have zero variance"):
        got = with_dead.compute().numpy()
    assert np.isnan(got[2]).all() and np.isnan(got[:, 2]).all()
    keep = [0, 1, 3, 4]
    np.testing.assert_allclose(got[np.ix_(keep, keep)], ref_minibatch_cka(batches, batches), atol=1e-12)


def test_minibatch_errors():
    rng = np.random.default_rng(17)
    acc = MinibatchCKA(2)
    with pytest.raises(CKAInputError, match="at least 4 examples"):
        acc.update([rng.normal(size=(3, 4)), rng.normal(size=(3, 4))])
    with pytest.raises(CKAInputError, match="activation 1 of model A has 9 examples but activation 0 has 8"):
        acc.update([rng.normal(size=(8, 4)), rng.normal(size=(9, 4))])
    bad = rng.normal(size=(8, 2, 2))
    bad[0, 1, 1] = np.inf
    with pytest.raises(CKAInputError, match="activation 1 of model A contains NaN or Inf"):
        acc.update([rng.normal(size=(8, 4)), bad])
    with pytest.raises(CKAInputError, match="2 layers but this update holds 3"):
        acc.update([rng.normal(size=(8, 4))] * 3)
    with pytest.raises(CKAInputError, match="one model"):
        acc.update([rng.normal(size=(8, 4))] * 2, [rng.normal(size=(8, 4))] * 2)
    with pytest.raises(CKAInputError, match="before any update"):
        acc.compute()
    with pytest.raises(CKAInputError, match="cannot merge"):
        acc.merge(MinibatchCKA(3))
    with pytest.raises(CKAInputError, match="cannot merge"):
        MinibatchCKA(2, 2).merge(MinibatchCKA(2))
    rect = MinibatchCKA(1, 1)
    with pytest.raises(CKAInputError, match="model B too"):
        rect.update([rng.normal(size=(8, 4))])
    with pytest.raises(CKAInputError, match="n=8 examples but model B's have n=9"):
        rect.update([rng.normal(size=(8, 4))], [rng.normal(size=(9, 4))])
    with pytest.raises(CKAInputError, match="positive integer"):
        MinibatchCKA(0)
    assert acc.num_batches == 0  # failed updates leave no trace
    assert rect.num_batches == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(18)
    cpu, gpu = MinibatchCKA(4), MinibatchCKA(4)
    for n in (32, 40):
        acts = [torch.from_numpy(x).float() for x in layered_batch(rng, n)]
        cpu.update(acts)
        gpu.update([a.cuda() for a in acts])
    assert gpu.compute().device.type == "cuda"
    torch.testing.assert_close(gpu.compute().cpu(), cpu.compute(), rtol=0, atol=1e-6)


# -- principal components from Grams --------------------------------------------------------------


def test_components_from_gram_match_svd_of_features():
    from ckatlas.cka import explained_variance_ratio, remove_top_components, top_components

    rng = np.random.default_rng(19)
    x = rng.normal(size=(40, 15)) @ np.diag(np.linspace(3, 0.1, 15)) + 2.0
    xc = x - x.mean(0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    gram = gram_linear(x)
    values, vectors = top_components(gram, k=2)
    np.testing.assert_allclose(values.numpy(), s[:2] ** 2, rtol=1e-10)
    for i in range(2):  # same direction up to sign
        assert abs(float(vectors[:, i] @ torch.from_numpy(u[:, i]))) == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(explained_variance_ratio(gram, 1).numpy(), [s[0] ** 2 / (s**2).sum()], rtol=1e-10)
    x_removed = xc - xc @ vt[:1].T @ vt[:1]
    np.testing.assert_allclose(remove_top_components(gram, 1).numpy(), x_removed @ x_removed.T, atol=1e-9)
    # batched over a stack of Grams
    stack = torch.stack([gram, gram_linear(rng.normal(size=(40, 3)))])
    assert remove_top_components(stack, 1).shape == (2, 40, 40)
    with pytest.raises(CKAInputError, match="k must be"):
        top_components(gram, k=0)
