"""Across models: averaging against a plain loop, populations of seeds, layer matching."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ckatlas.analysis.across import AveragedCKA, LayerMatch, average_heatmaps, match_layers, population_cka
from ckatlas.errors import UserInputError
from ckatlas.heatmap import CKAResult, heatmap
from ckatlas.models import create_model


def _result(matrix: np.ndarray, layers_a: list[str], layers_b: list[str], a: str = "m0", b: str = "m1") -> CKAResult:
    return CKAResult(matrix, layers_a, layers_b, np.zeros_like(matrix), 100, 1, 1, a, b)


def _resnets(arch: str, seeds: range) -> list[torch.nn.Module]:
    return [create_model(arch, width=0.25, num_classes=10, in_channels=1, generator=torch.Generator().manual_seed(s))
            for s in seeds]


def test_average_equals_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    mats = [rng.uniform(size=(3, 4)) for _ in range(5)]
    mats[1][0, 0] = mats[3][0, 0] = np.nan  # a dead layer in two heatmaps
    mats[0][2, 3] = mats[1][2, 3] = mats[2][2, 3] = mats[3][2, 3] = np.nan  # defined in one heatmap only
    for m in mats:
        m[1, 1] = np.nan  # defined nowhere
    res = average_heatmaps([_result(m, ["x", "y", "z"], list("abcd")) for m in mats])
    for i in range(3):
        for j in range(4):
            values = [m[i, j] for m in mats if not np.isnan(m[i, j])]
            assert res.count[i, j] == len(values)
            if not values:
                assert np.isnan(res.matrix[i, j]) and np.isnan(res.std[i, j])
                continue
            assert res.matrix[i, j] == pytest.approx(sum(values) / len(values))
            if len(values) < 2:
                assert np.isnan(res.std[i, j])
            else:
                mean = sum(values) / len(values)
                assert res.std[i, j] == pytest.approx((sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5)
    assert res.pairs == ["m0 vs m1"] * 5 and res.layers_a == ["x", "y", "z"] and res.num_pairs == 5
    np.testing.assert_allclose(res.standard_error, res.std / np.sqrt(res.count))


def test_heatmaps_of_different_layers_are_refused() -> None:
    a = _result(np.eye(2), ["l1", "l2"], ["l1", "l2"])
    b = _result(np.eye(2), ["l1", "l3"], ["l1", "l2"])
    with pytest.raises(UserInputError, match="layer 1 is 'l3', expected 'l2'"):
        average_heatmaps([a, b])
    with pytest.raises(UserInputError, match="shape"):
        average_heatmaps([np.eye(2), np.eye(3)])
    with pytest.raises(UserInputError, match="at least one"):
        average_heatmaps([])


def test_seed_population_average_matches_pairwise_heatmaps() -> None:
    models = _resnets("resnet8", range(3))
    x = torch.randn(120, 1, 16, 16)
    avg = population_cka(models, x, batch_size=40, seed=2)
    assert avg.pairs == ["a0 vs a1", "a0 vs a2", "a1 vs a2"]
    loop = [heatmap(models[i], x, models[j], batch_size=40, seed=2).matrix for i, j in ((0, 1), (0, 2), (1, 2))]
    np.testing.assert_allclose(avg.matrix, np.mean(loop, axis=0), atol=1e-12)
    np.testing.assert_allclose(avg.std, np.std(loop, axis=0, ddof=1), atol=1e-12)
    assert avg.layers_a == models[0].layer_names("blocks") and not avg.is_square


def test_identical_models_have_no_spread_and_reproduce_the_within_heatmap() -> None:
    model = _resnets("resnet8", range(1))[0]
    copies = {f"copy{i}": copy.deepcopy(model) for i in range(3)}
    x = torch.randn(80, 1, 16, 16)
    avg = population_cka(copies, x, batch_size=40, shuffle=False)
    within = heatmap(model, x, batch_size=40, shuffle=False)
    np.testing.assert_allclose(avg.matrix, within.matrix, atol=1e-6)
    np.testing.assert_allclose(avg.std, 0.0, atol=1e-6)
    np.testing.assert_allclose(np.diag(avg.matrix), 1.0, atol=1e-6)


def test_cross_architecture_population() -> None:
    shallow, deep = _resnets("resnet8", range(2)), _resnets("resnet14", range(10, 12))
    x = torch.randn(60, 1, 16, 16)
    avg = population_cka(shallow, x, deep, batch_size=30, names=("resnet8", "resnet14"))
    assert avg.matrix.shape == (6, 9) and avg.num_pairs == 4
    assert avg.layers_b == deep[0].layer_names("blocks")
    assert (avg.model_a, avg.model_b) == ("resnet8", "resnet14")
    loop = [heatmap(a, x, b, batch_size=30).matrix for a in shallow for b in deep]
    np.testing.assert_allclose(avg.matrix, np.mean(loop, axis=0), atol=1e-12)


def test_populations_of_one_model_are_one_clear_error() -> None:
    models = _resnets("resnet8", range(2))
    x = torch.randn(40, 1, 16, 16)
    with pytest.raises(UserInputError, match="population of 1 model"):
        population_cka(models[:1], x)
    with pytest.raises(UserInputError, match="at least 2 pairs"):
        population_cka(models[:1], x, models[1:])
    with pytest.raises(UserInputError, match="same object"):
        population_cka([models[0], models[0]], x)
    with pytest.raises(UserInputError, match="no module named"):
        population_cka(models, x, layers=["stage9.0.relu"])


def test_match_layers_recovers_a_planted_matching() -> None:
    rng = np.random.default_rng(1)
    target = np.array([0, 0, 2, 3, 3, 5])
    matrix = rng.uniform(0, 0.5, size=(6, 7))
    matrix[np.arange(6), target] = rng.uniform(0.8, 1.0, size=6)
    matrix[4, 2] = np.nan
    matrix[5] = np.nan  # a dead layer has no match
    match = match_layers(_result(matrix, [f"a{i}" for i in range(6)], [f"b{j}" for j in range(7)]))
    assert match.index.tolist() == [0, 0, 2, 3, 3, -1]
    assert match.matched == ["b0", "b0", "b2", "b3", "b3", None]
    np.testing.assert_allclose(match.cka[:5], matrix[np.arange(5), target[:5]])
    assert np.isnan(match.cka[5])
    assert "a2 -> b2" in match.summary()
    with pytest.raises(UserInputError, match="layer names"):
        match_layers(matrix, layers_a=["only one"])


def test_save_and_load_round_trip(tmp_path) -> None:
    avg = average_heatmaps([_result(np.full((2, 2), v), ["p", "q"], ["p", "q"]) for v in (0.2, 0.4)], labels=["s0", "s1"])
    back = AveragedCKA.load(avg.save(tmp_path / "avg.npz"))
    assert back.to_dict() == avg.to_dict()
    match = match_layers(avg)
    back_match = LayerMatch.load(match.save(tmp_path / "match.json"))
    assert back_match.to_dict() == match.to_dict()


def test_figure_shows_mean_and_spread() -> None:
    from ckatlas.report.analysis_figures import plot_averaged_heatmap

    avg = average_heatmaps([_result(np.full((2, 3), v), ["p", "q"], list("xyz")) for v in (0.2, 0.4, 0.9)])
    left, right = plot_averaged_heatmap(avg)
    np.testing.assert_allclose(left.images[0].get_array(), avg.matrix)
    np.testing.assert_allclose(right.images[0].get_array(), avg.std)
    assert "3 pairs" in left.get_title()
