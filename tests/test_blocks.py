"""Block structure by the contrast rule (the default detector): planted blocks found on any floor,
nothing in a smooth decay, a checkerboard or a flat heatmap, scores against a naive loop, the
detector's settings, results, stability, figures and the command line. The threshold rule of
earlier releases: test_block_threshold.py."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from ckatlas.analysis import (
    Block,
    BlockDetector,
    BlockResult,
    BlockStability,
    block_stability,
    find_blocks,
    find_threshold_blocks,
)
from ckatlas.analysis.block_rules import SCORE_TIE, contrast_table
from ckatlas.analysis.blocks import AREA_LEVELS
from ckatlas.cka import linear_cka
from ckatlas.errors import UserInputError
from ckatlas.io.formats import complete_detector
from ckatlas.report import outline_blocks, plot_block_frequency, plot_blocks

from block_matrices import planted, spans

# -- synthetic matrices -----------------------------------------------------------------------


def synthetic(num_layers: int, floor: float, blocks: tuple[tuple[int, int], ...] = (), *, kind: str = "decay",
              period: int = 7, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """A CKA-like heatmap ``floor + (1 - floor) * structure`` plus symmetric noise of sd `noise`.

    kind: "decay" (0.5 * 0.9^|i-j|: a heatmap without blocks), "smooth" (0.9^|i-j|, no background),
    "flat" (0.9 everywhere), "lines" (alike layers cut every `period` layers by one unlike layer, a
    transformer's stream at initialisation), "checker" (a residual checkerboard: every `period`-th pair of stream
    layers at 0.95 with one another, the residual branches' layers decaying from 0.6). Planted blocks
    (inclusive spans) are 0.95 inside.
    """
    i, j = np.indices((num_layers, num_layers))
    distance = np.abs(i - j)
    if kind == "decay":
        structure = 0.5 * 0.9**distance
    elif kind == "smooth":
        structure = 0.9**distance
    elif kind == "flat":
        structure = np.full((num_layers, num_layers), 0.9)
    elif kind == "lines":  # a field of alike layers cut every `period` layers by one unlike layer
        line = np.arange(num_layers) % period == period - 1
        structure = np.where(line[:, None] | line[None, :], 0.4, 0.95 * 0.999**distance)
    else:
        phase = np.arange(num_layers) % period
        stream = phase >= period - 2 if period > 3 else phase == period - 1
        structure = np.where(stream[:, None] & stream[None, :], 0.95, 0.6 * 0.95**distance)
    for start, end in blocks:
        structure[start : end + 1, start : end + 1] = 0.95
    m = floor + (1 - floor) * structure
    e = np.random.default_rng(seed).normal(0.0, noise, m.shape)
    m = np.clip(m + (e + e.T) / 2, 0.0, 1.0)
    np.fill_diagonal(m, 1.0)
    return m


def naive_contrast(m: np.ndarray, i: int, j: int, min_outside: int = 1) -> tuple[float, float]:
    """Score and gap of run [i, j] as documented, one border, one distance and one pair at a time."""
    cells = (m + m.T) / 2
    size = len(m)
    sides = []
    for crosses, beyond in ((lambda a, b: a < i <= b <= j, i), (lambda a, b: i <= a <= j < b, size - 1 - j)):
        if beyond < min_outside:
            continue
        num = dissimilar = weights = 0.0
        for d in range(1, j - i + 1):
            pairs = [(a, a + d) for a in range(size - d)]
            inside = [cells[p] for p in pairs if i <= p[0] and p[1] <= j and not np.isnan(cells[p])]
            across = [cells[p] for p in pairs if crosses(*p) and not np.isnan(cells[p])]
            if inside and across:
                w = len(inside) * len(across) / (len(inside) + len(across))
                num += w * (np.mean(inside) - np.mean(across))
                dissimilar += w * (1 - np.mean(across))
                weights += w
        if weights > 0:
            sides.append((num / dissimilar if dissimilar > 0 else math.nan, num / weights))
    if not sides:
        return math.nan, math.nan
    finite = [s for s in sides if not math.isnan(s[0])] or sides
    return min(s[0] for s in finite), min(s[1] for s in sides)


# -- the contrast rule ---------------------------------------------------------------------------

FLOORS = (0.0, 0.5, 0.85)
PLACES = (((0, 15),), ((30, 50),), ((55, 71),), ((10, 25), (40, 65)), ((20, 35), (36, 55)))


@pytest.mark.parametrize("floor", FLOORS)
@pytest.mark.parametrize("blocks", PLACES, ids=["start", "middle", "end", "two", "adjacent"])
@pytest.mark.parametrize("kind", ["decay", "checker"])
def test_planted_blocks_are_found_exactly_on_any_floor(floor: float, blocks: tuple, kind: str) -> None:
    for seed in range(3):  # noise of sd 0.01 does not move the verdict
        res = find_blocks(synthetic(72, floor, blocks, kind=kind, seed=seed))
        assert spans(res) == list(blocks)
        assert all(b.score > 0.8 and b.gap > 0.05 for b in res.blocks)


@pytest.mark.parametrize("floor", (0.0, 0.5, 0.85, 0.95))
@pytest.mark.parametrize(("kind", "period"), [("decay", 7), ("smooth", 7), ("flat", 7), ("checker", 2),
                                              ("checker", 3), ("checker", 7), ("lines", 9), ("lines", 12)])
def test_no_block_in_a_decay_a_checkerboard_or_a_flat_heatmap(floor: float, kind: str, period: int) -> None:
    for seed in range(3):
        res = find_blocks(synthetic(72, floor, kind=kind, period=period, seed=seed))
        assert res.blocks == [] and res.block_fraction == 0.0 and res.block_strength == 0.0
        assert res.peak_score < 0.35 or floor == 0.95 or kind == "lines"  # else the gap or the median keeps them out
    # without noise a distance-only decay has no contrast at all
    exact = find_blocks(synthetic(72, 0.8, kind="smooth", noise=0.0))
    assert abs(exact.peak_score) < 1e-9


def test_score_does_not_move_with_the_floor() -> None:
    m = synthetic(40, 0.0, ((10, 25),), noise=0.0)
    score, gap = contrast_table(m)
    for a in (0.3, 0.8, 0.95):
        lifted_score, lifted_gap = contrast_table(a + (1 - a) * m)
        np.testing.assert_allclose(lifted_score, score, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(lifted_gap, (1 - a) * gap, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("seed", range(4))
def test_contrast_table_matches_a_naive_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(6, 16))
    m = rng.uniform(0, 1, (size, size))
    m[rng.random(m.shape) < 0.05] = np.nan
    for min_outside in (1, 3):
        score, gap = contrast_table(m, min_outside)
        for i in range(size):
            for j in range(size):
                expected = naive_contrast(m, i, j, min_outside) if j > i else (math.nan, math.nan)
                np.testing.assert_allclose([score[i, j], gap[i, j]], expected, atol=1e-12, equal_nan=True)
        assert np.isnan(score[0, size - 1])  # the whole matrix has no border
    assert np.isnan(score[2, size - 2]) and not np.isnan(score[3, size - 2])  # too few layers beyond both borders


def test_a_block_that_stands_out_from_a_low_floor_is_found_where_the_threshold_rule_misses_it() -> None:
    m = synthetic(40, 0.0, ((10, 25),))
    m[10:26, 10:26] = np.clip(m[10:26, 10:26] - 0.15, 0, 1)  # the block at CKA ~0.8, its surroundings ~0.1-0.4
    np.fill_diagonal(m, 1.0)
    assert spans(find_blocks(m)) == [(10, 25)]
    assert find_threshold_blocks(m).blocks == []


RULES = pytest.mark.parametrize("rule", [find_blocks, find_threshold_blocks], ids=["contrast", "threshold"])


@RULES
def test_block_with_a_hole_is_not_one_block(rule) -> None:
    m = planted(24, [(4, 17)])
    m[10:12, :] = m[:, 10:12] = 0.3  # two interior layers unlike the rest
    np.fill_diagonal(m, 1.0)
    res = rule(m)
    assert not any(b.start <= 9 and b.end >= 12 for b in res.blocks)
    assert spans(res) == [(4, 9), (12, 17)]


@RULES
def test_large_block_does_not_absorb_an_unlike_neighbour(rule) -> None:
    m = planted(60, [(10, 49)])
    m[50, 40:50] = m[40:50, 50] = 0.95  # layer 50 resembles only the block's last 10 layers
    assert spans(rule(m)) == [(10, 49)]


@RULES
def test_dead_layer_nan_is_never_inside_a_block(rule) -> None:
    m = planted(20, [(3, 16)])
    m[9, :] = m[:, 9] = np.nan
    with pytest.warns(RuntimeWarning, match="no finite CKA"):
        res = rule(m)
    assert spans(res) == [(3, 8), (10, 16)]
    assert not res.in_block[9]


@RULES
def test_min_size_and_min_fraction(rule) -> None:
    m = planted(40, [(2, 5), (10, 29)])
    assert spans(rule(m, min_fraction=0.0, min_size=3)) == [(2, 5), (10, 29)]
    res = rule(m, min_fraction=0.2)  # blocks of at least 8 layers
    assert spans(res) == [(10, 29)] and res.min_size == 8


@RULES
def test_blocks_in_cka_of_activations_sharing_a_dominant_component(rule) -> None:
    # Layers 5..10 share one dominant direction of variation across examples; the rest drift.
    rng = np.random.default_rng(0)
    n, width, num_layers = 200, 20, 14
    shared = rng.standard_normal((n, 1))
    acts, previous = [], rng.standard_normal((n, width))
    for layer in range(num_layers):
        previous = 0.7 * previous + rng.standard_normal((n, width))
        x = previous
        if 5 <= layer <= 10:
            direction = rng.standard_normal((1, width))
            x = 10.0 * shared @ (direction / np.linalg.norm(direction)) + rng.standard_normal((n, width))
        acts.append(x)
    m = np.eye(num_layers)
    for a in range(num_layers):
        for b in range(a + 1, num_layers):
            m[a, b] = m[b, a] = linear_cka(acts[a], acts[b])
    assert spans(rule(m)) == [(5, 10)]


def test_scores_strength_and_peak() -> None:
    m = synthetic(72, 0.5, ((10, 25), (40, 65)))
    res = find_blocks(m)
    score, gap = contrast_table(m, BlockDetector().border_context(72))  # a border needs 15% of the layers beyond it
    for b in res.blocks:
        assert b.score == pytest.approx(score[b.start, b.end]) and b.gap == pytest.approx(gap[b.start, b.end])
        inner = m[b.start : b.end + 1, b.start : b.end + 1][~np.eye(b.size, dtype=bool)]
        assert b.mean_cka == pytest.approx(inner.mean()) and b.min_cka == pytest.approx(inner.min())
    expected = sum(b.size * b.score for b in res.blocks) / 72
    assert res.block_strength == pytest.approx(expected) and res.block_strength < res.block_fraction
    best = max(b.score for b in res.blocks)  # the peak may be a slightly shorter run that lost the tie to the block
    assert best <= res.peak_score <= best + SCORE_TIE
    # a weaker block scores lower: strength follows how much blocks stand out, fraction does not
    weak = synthetic(72, 0.5, ((10, 25), (40, 65)))
    weak[10:26, 10:26] = weak[10:26, 10:26] - 0.12
    np.fill_diagonal(weak, 1.0)
    again = find_blocks(weak)
    assert spans(again) == spans(res) and again.block_fraction == res.block_fraction
    assert again.block_strength < res.block_strength - 0.02


def test_block_area_is_the_block_fraction_averaged_over_min_score() -> None:
    for m in (synthetic(72, 0.5, ((10, 25), (40, 65))), synthetic(60, 0.3, ((5, 30),), kind="checker"),
              synthetic(50, 0.8, kind="decay"), planted(30, [(3, 12), (15, 27)], inside=0.8, outside=0.6)):
        for detector in (BlockDetector(), BlockDetector(min_gap=0.1, min_fraction=0.2),
                         BlockDetector(method="threshold")):
            expected = np.mean([find_blocks(m, detector, method="contrast", min_score=level).block_fraction
                                for level in AREA_LEVELS])
            assert find_blocks(m, detector).block_area == pytest.approx(expected, abs=1e-12)
    assert AREA_LEVELS[0] == pytest.approx(0.05) and AREA_LEVELS[-1] == 1.0 and len(AREA_LEVELS) == 20


def test_block_area_does_not_jump_where_strength_does() -> None:
    """A square whose score sits at min_score: strength jumps between 0 and its size, area hardly moves."""
    def square(lift: float) -> np.ndarray:  # a middle square 0.08 above a decaying 0.8 floor, scored near 0.5
        m = synthetic(60, 0.0, kind="smooth", noise=0.0) * 0.2 + 0.78
        m[10:45, 10:45] += lift
        np.fill_diagonal(m, 1.0)
        return np.clip(m, 0.0, 1.0)

    lifts = np.linspace(0.065, 0.12, 12)  # gaps above min_gap (0.05), which the area keeps
    results = [find_blocks(square(lift)) for lift in lifts]
    scores = [contrast_table(square(lift), BlockDetector().border_context(60))[0][10, 44] for lift in lifts]
    assert min(scores) < 0.5 < max(scores)  # the square crosses the default min_score
    strength = np.array([r.block_strength for r in results])
    area = np.array([r.block_area for r in results])
    assert np.max(np.diff(strength)) > 0.25  # strength jumps from 0 to ~0.3 as the score crosses 0.5
    assert np.max(np.abs(np.diff(area))) < 0.05 and np.all(np.diff(area) >= -1e-12)  # area rises smoothly
    assert area[-1] > area[0] + 0.05  # and follows how much the square stands out
    # no block: no area, on any floor; a uniform planted block over half the layers: about half
    assert find_blocks(synthetic(72, 0.5, kind="decay")).block_area < 0.02
    assert find_blocks(synthetic(72, 0.9, kind="flat")).block_area == 0.0
    assert find_blocks(planted(40, [(10, 29)], inside=1.0, outside=0.3, noise=0.0)).block_area == pytest.approx(0.5)


# -- the detector's settings ---------------------------------------------------------------------


def test_detector_settings_are_checked_when_made() -> None:
    for bad, message in [({"method": "brightness"}, "method"), ({"min_score": 0.0}, "min_score"),
                         ({"min_gap": 1.0}, "min_gap"), ({"threshold": 0.0}, "threshold"),
                         ({"tolerance": 0.5}, "tolerance"), ({"min_size": 1}, "min_size"),
                         ({"min_fraction": 2.0}, "min_fraction"), ({"min_score": "high"}, "min_score"),
                         ({"border_fraction": 1.5}, "border_fraction"), ({"border_fraction": -0.1}, "border_fraction")]:
        with pytest.raises(UserInputError, match=message):
            BlockDetector(**bad)
    with pytest.raises(UserInputError, match="unknown setting"):
        BlockDetector.from_dict({"threshhold": 0.9})
    with pytest.raises(UserInputError, match="unknown block detector setting"):
        find_blocks(np.eye(3), threshhold=0.9)


def test_one_detector_one_set_of_defaults() -> None:
    from ckatlas.analysis.dynamics import DynamicsSettings
    from ckatlas.experiment import BlocksConfig

    assert BlocksConfig().detector == BlockDetector() == DynamicsSettings().detector
    assert find_blocks(synthetic(30, 0.5, ((5, 15),))).detector == BlockDetector()
    assert BlockDetector.from_dict(BlockDetector(min_score=0.7).to_dict()) == BlockDetector(min_score=0.7)
    # a saved table of earlier releases (no method) is the threshold rule (ckatlas.io.formats completes it
    # when it reads the file); `on` is not the detector's
    old = BlockDetector.from_saved(complete_detector({"threshold": 0.95, "tolerance": 0.1, "min_size": 3,
                                                      "min_fraction": 0.1, "on": "heatmap"}))
    assert old.method == "threshold" and old.threshold == 0.95
    assert BlockDetector.from_saved(None) == BlockDetector()
    # a contrast rule saved before border_fraction existed judged its borders with min_fraction
    before = {k: v for k, v in BlockDetector(min_fraction=0.12).to_dict().items() if k != "border_fraction"}
    assert BlockDetector.from_saved(complete_detector(before)).border_fraction == 0.12
    assert BlockDetector.from_dict(before).border_fraction == BlockDetector().border_fraction  # a user's table: default


def test_a_body_judged_against_its_head_alone_is_not_a_block(tmp_path) -> None:
    """An untrained ResNet-8's picture (30 layers): a stem of two layers a little apart (0.9), a body of 26
    layers alike with a slow decay (1 - 0.004 per layer), and a head of two (the pool and the logits) unlike it
    (0.55-0.88, more alike to later layers). At 10% a border needs 3 layers beyond it, so layers 2-26 were one
    block against the last relu and the head (docs/gallery); at the default 15% (5 layers) the border's pairs
    reach three body layers, and there is no block, while a block with 5 layers or more beyond a border is
    still found."""
    index = np.arange(30)
    body = 1.0 - 0.004 * np.abs(index[:, None] - index[None, :])
    body[:2, :] = body[:, :2] = 0.9
    body[:2, :2] = 1.0
    body[28:, :28] = (0.55 + 0.012 * index[:28])[None, :]
    body[:28, 28:] = body[28:, :28].T
    body[28:, 28:] = 0.95
    noise = np.random.default_rng(0).uniform(-0.005, 0.005, body.shape)
    body = np.clip(body + (noise + noise.T) / 2, 0.0, 1.0)
    np.fill_diagonal(body, 1.0)
    assert spans(BlockDetector(border_fraction=0.1).find(body))  # the earlier rule: a block against the head
    result = BlockDetector().find(body)
    assert spans(result) == [] and result.block_area == 0.0
    assert spans(BlockDetector().find(planted(30, [(0, 20)]))) == [(0, 20)]  # 9 layers beyond: judged
    # a result saved before border_fraction existed loads with the detector that found it
    saved = BlockDetector(border_fraction=0.1).find(body).save(tmp_path / "old.json")
    record = json.loads(saved.read_text())
    del record["detector"]["border_fraction"], record["version"]  # as an earlier release wrote it
    saved.write_text(json.dumps(record))
    assert BlockResult.load(saved).detector == BlockDetector(border_fraction=0.1)
    # the same choice on the command line
    from ckatlas.cli import main

    np.save(tmp_path / "body.npy", body)
    for extra, expected in (([], BlockDetector()), (["--border-fraction", "0.1"], BlockDetector(border_fraction=0.1))):
        out = tmp_path / f"body{len(extra)}.json"
        assert main(["blocks", str(tmp_path / "body.npy"), "--out", str(out), *extra]) == 0
        assert BlockResult.load(out) == expected.find(body)


def test_a_block_result_of_earlier_releases_loads_as_the_threshold_rule(tmp_path) -> None:
    old = {"format": "ckatlas.BlockResult", "blocks": [{"start": 2, "end": 7, "size": 6, "mean_cka": 0.95,
                                                        "min_cka": 0.91}],
           "block_fraction": 0.5, "num_layers": 12, "layer_indices": list(range(12)), "layer_names": None,
           "threshold": 0.9, "tolerance": 0.1, "min_size": 3}
    (tmp_path / "old.json").write_text(json.dumps(old))
    res = BlockResult.load(tmp_path / "old.json")
    assert res.detector.method == "threshold" and spans(res) == [(2, 7)] and res.block_fraction == 0.5
    assert math.isnan(res.blocks[0].score) and res.block_strength == 0.0 and math.isnan(res.block_area)


# -- layers, inputs, results --------------------------------------------------------------------


def test_cka_result_like_input_and_layer_subset() -> None:
    names = [f"layer{i}" for i in range(20)]
    m = planted(20, [(6, 15)])
    result_like = SimpleNamespace(matrix=m, layers_a=names, layers_b=names)
    res = find_blocks(result_like)
    assert res.layer_names == names and spans(res) == [(6, 15)]
    assert res.block_layers(res.blocks[0]) == names[6:16]

    subset = find_blocks(result_like, layers=names[::2])  # every other layer
    assert subset.num_layers == 10 and subset.layer_indices == list(range(0, 20, 2))
    assert subset.layer_names == names[::2] and subset.layers == names[::2]  # .layers, as every result names them
    assert spans(subset) == [(3, 7)]  # layers 6..14 of the full matrix
    unnamed = find_blocks(m, layers=list(range(0, 20, 2)))
    assert spans(unnamed) == [(3, 7)] and unnamed.layers == [str(i) for i in range(0, 20, 2)]


@pytest.mark.parametrize(
    ("matrix", "kwargs", "message"),
    [
        (np.ones((3, 4)), {}, "square"),
        (np.ones(5), {}, "square"),
        (np.full((4, 4), np.inf), {}, "infinities"),
        (np.full((4, 4), 1.5), {}, "above 1"),
        (np.ones((4, 4)), {"threshold": 0.0}, "threshold"),
        (np.ones((4, 4)), {"tolerance": 0.5}, "tolerance"),
        (np.ones((4, 4)), {"min_size": 1}, "min_size"),
        (np.ones((4, 4)), {"layers": [0, 7]}, "does not exist"),
        (np.ones((4, 4)), {"layers": ["stage3.0"]}, "no layer names"),
        (np.ones((4, 4)), {"layers": ["nope"], "layer_names": list("abcd")}, "does not exist"),
        (np.ones((4, 4)), {"layers": [1, 1]}, "twice"),
        (np.ones((4, 4)), {"layer_names": ["a"]}, "layer names"),
        ([["a", "b"], ["c", "d"]], {}, "numbers"),
    ],
)
def test_bad_input_is_one_clear_error(matrix: object, kwargs: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        find_blocks(matrix, **kwargs)


def test_cka_result_from_heatmap(tmp_path, capsys) -> None:
    from ckatlas.cli import main
    from ckatlas.heatmap import CKAResult

    names = [f"stage{i // 6}.{i % 6}" for i in range(18)]
    m = planted(18, [(6, 13)])
    result = CKAResult(m, names, names, np.zeros_like(m), n=512, num_batches=8, passes=1, is_square=True)
    assert spans(find_blocks(result)) == [(6, 13)] and find_blocks(result).layer_names == names
    result.save(tmp_path / "cka.npz")
    assert main(["blocks", str(tmp_path / "cka.npz")]) == 0
    assert "stage1.0 .. stage2.1" in capsys.readouterr().out
    cross = CKAResult(m, names, names, np.zeros_like(m), n=512, num_batches=8, passes=1, model_b="other")
    with pytest.raises(UserInputError, match="against themselves"):
        find_blocks(cross)


def test_cross_model_result_is_refused() -> None:
    cross = SimpleNamespace(matrix=np.ones((3, 3)), layers_a=["a", "b", "c"], layers_b=["x", "y", "z"])
    with pytest.raises(UserInputError, match="against themselves"):
        find_blocks(cross)


def test_save_load_roundtrip(tmp_path) -> None:
    res = find_blocks(planted(16, [(2, 7), (9, 14)]), layer_names=[f"l{i}" for i in range(16)])
    res.save(tmp_path / "blocks.json")
    back = BlockResult.load(tmp_path / "blocks.json")
    assert back == res and back.to_dict() == res.to_dict()
    first = res.blocks[0]
    assert back.to_dict()["blocks"][0] == {"start": 2, "end": 7, "size": 6, "mean_cka": first.mean_cka,
                                          "min_cka": first.min_cka, "score": first.score, "gap": first.gap}
    assert back.block_strength == res.block_strength and back.detector == res.detector
    assert back.block_area == res.block_area and 0 < res.block_area <= res.block_fraction
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(UserInputError, match="not a block result"):
        BlockResult.load(tmp_path / "other.json")


# -- stability across seeds ---------------------------------------------------------------------


def test_stability_of_shifted_blocks() -> None:
    shifts = [0, 1, -1, 2]
    results = [find_blocks(planted(24, [(8 + s, 16 + s)], seed=k)) for k, s in enumerate(shifts)]
    assert [spans(r) for r in results] == [[(8 + s, 16 + s)] for s in shifts]
    stab = block_stability(results, labels=[f"seed{k}" for k in range(4)])

    sets = [set(range(8 + s, 17 + s)) for s in shifts]
    for a in range(4):
        for b in range(4):
            assert stab.jaccard[a, b] == pytest.approx(len(sets[a] & sets[b]) / len(sets[a] | sets[b]))
    assert stab.jaccard[0, 1] == pytest.approx(8 / 10)
    expected_freq = [sum(layer in s for s in sets) / 4 for layer in range(24)]
    np.testing.assert_allclose(stab.layer_frequency, expected_freq)
    assert stab.block_fractions.tolist() == pytest.approx([9 / 24] * 4)
    assert [b.start for b in stab.largest_blocks] == [8, 9, 7, 10]
    text = stab.summary()
    assert "start 8.5 ± 1.3" in text and "end 16.5 ± 1.3" in text


def test_stability_edge_cases_and_roundtrip(tmp_path) -> None:
    empty = find_blocks(planted(12, []))
    same = block_stability([empty, empty])
    assert same.mean_jaccard == 1.0 and "no model has a block" in same.summary()
    with pytest.raises(UserInputError, match="at least 2"):
        block_stability([empty])
    with pytest.raises(UserInputError, match="different layers"):
        block_stability([empty, find_blocks(planted(13, []))])

    stab = block_stability([find_blocks(planted(20, [(3, 12)])), find_blocks(planted(20, [(5, 14)], seed=3))])
    stab.save(tmp_path / "stability.json")
    back = BlockStability.load(tmp_path / "stability.json")
    assert back.to_dict() == stab.to_dict()


def test_block_size_property() -> None:
    assert Block(3, 7, 0.9, 0.8).size == 5


# -- figures ------------------------------------------------------------------------------------


def test_figures(tmp_path) -> None:
    m = planted(20, [(2, 6), (10, 17)])
    res = find_blocks(m)
    ax = plot_blocks(m, res)
    assert len(ax.patches) == 2
    ax.figure.savefig(tmp_path / "blocks.png")
    assert (tmp_path / "blocks.png").stat().st_size > 0

    subset = find_blocks(m, layers=list(range(0, 20, 2)))
    ax2 = plot_blocks(m, subset)
    outline_blocks(ax2, subset, original_rows=True)
    corners = sorted(p.get_xy() for p in ax2.patches)
    assert (subset.layer_indices[subset.blocks[-1].start] - 0.5,) * 2 in corners

    stab = block_stability([res, find_blocks(planted(20, [(3, 6), (10, 16)], seed=5))])
    ax3 = plot_block_frequency(stab)
    assert len(ax3.patches) == 20


# -- command line -------------------------------------------------------------------------------


def test_cli_blocks_writes_result_and_figure(tmp_path, capsys) -> None:
    from ckatlas.cli import main

    m = planted(20, [(4, 12)])
    np.save(tmp_path / "cka.npy", m)
    out = tmp_path / "analysis" / "blocks.json"
    assert main(["blocks", str(tmp_path / "cka.npy"), "--out", str(out)]) == 0
    assert "layers 4-12 (9 layers" in capsys.readouterr().out
    assert BlockResult.load(out) == find_blocks(m)
    assert out.with_suffix(".png").stat().st_size > 0

    names = np.array([f"block{i}" for i in range(20)])
    np.savez(tmp_path / "cka.npz", matrix=m, layers_a=names)
    argv = ["blocks", str(tmp_path / "cka.npz"), "--min-score", "0.6", "--layers", *names[::2], "--out", str(out)]
    assert main(argv) == 0
    saved = BlockResult.load(out)
    assert saved.layer_names == names[::2].tolist() and saved.detector.min_score == 0.6 and spans(saved) == [(2, 6)]
    argv = ["blocks", str(tmp_path / "cka.npy"), "--method", "threshold", "--threshold", "0.95", "--out", str(out)]
    assert main(argv) == 0
    assert BlockResult.load(out) == find_threshold_blocks(m, threshold=0.95)


def test_cli_blocks_stability_over_several_matrices(tmp_path, capsys) -> None:
    from ckatlas.cli import main

    paths = []
    for seed, shift in enumerate([0, 1, 2]):
        paths.append(str(tmp_path / f"seed{seed}.npy"))
        np.save(paths[-1], planted(20, [(5 + shift, 12 + shift)], seed=seed))
    out = tmp_path / "stability.json"
    assert main(["blocks", *paths, "--out", str(out)]) == 0
    assert "stability: 3 models" in capsys.readouterr().out
    stab = BlockStability.load(out)
    assert stab.labels == paths and [b.start for b in stab.largest_blocks] == [5, 6, 7]
    assert out.with_suffix(".png").is_file()


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (None, [], "no such file"),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones((3, 4))), [], "square"),
        (lambda p: p.with_suffix(".txt").write_text("1 2"), [], "expected a .npy"),
        (lambda p: np.savez(p.with_suffix(".npz"), cka=np.ones((3, 3))), [], "named 'matrix'"),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones((3, 3))), ["--layers", "5"], "does not exist"),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones((3, 3))), ["--tolerance", "0.7"], "tolerance"),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones((3, 3))), ["--min-score", "1.5"], "min_score"),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones((3, 3))), ["--border-fraction", "1.5"], "border_fraction"),
    ],
)
def test_cli_blocks_user_errors_are_one_line(tmp_path, capsys, make, extra, message) -> None:
    from ckatlas.cli import main

    base = tmp_path / "cka"
    path = base.with_suffix(".npy")
    if make is not None:
        make(base)
        path = next(tmp_path.iterdir())
    assert main(["blocks", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ckatlas blocks: error:") and message in err


def test_cli_blocks_bad_option_value_exits_2(capsys) -> None:
    from ckatlas.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["blocks", "x.npy", "--threshold", "-1"])
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1
