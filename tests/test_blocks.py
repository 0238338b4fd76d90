"""Block structure: planted blocks recovered, checkerboards and holes rejected, a naive reference."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from ckatlas.analysis import Block, BlockResult, BlockStability, block_stability, find_blocks
from ckatlas.cka import linear_cka
from ckatlas.errors import UserInputError
from ckatlas.report import outline_blocks, plot_block_frequency, plot_blocks

# -- synthetic matrices -----------------------------------------------------------------------


def planted(num_layers: int, blocks: list[tuple[int, int]], *, inside: float = 0.95, outside: float = 0.4,
            noise: float = 0.03, seed: int = 0) -> np.ndarray:
    """Symmetric CKA-like matrix: `inside` within each planted block (end inclusive), `outside` elsewhere."""
    rng = np.random.default_rng(seed)
    m = np.full((num_layers, num_layers), outside)
    for start, end in blocks:
        m[start : end + 1, start : end + 1] = inside
    m = m + rng.uniform(-noise, noise, m.shape)
    m = np.clip((m + m.T) / 2, 0.0, 1.0)
    np.fill_diagonal(m, 1.0)
    return m


def spans(result: BlockResult) -> list[tuple[int, int]]:
    return [(b.start, b.end) for b in result.blocks]


def naive_find_blocks(m: np.ndarray, threshold: float, tolerance: float, min_size: int) -> list[tuple[int, int]]:
    """The documented algorithm, one interval and one layer at a time."""
    n = len(m)
    candidates = []
    for i in range(n):
        for j in range(i + min_size - 1, n):
            size = j - i + 1
            allowed = math.floor(tolerance * (size - 1) + 1e-9)
            uniform = True
            for k in range(i, j + 1):
                lows = sum(1 for o in range(i, j + 1) if o != k and not (m[k, o] >= threshold and m[o, k] >= threshold))
                uniform = uniform and lows <= allowed
            if uniform:
                vals = [m[a, b] for a in range(i, j + 1) for b in range(i, j + 1) if a != b and not np.isnan(m[a, b])]
                candidates.append((size, float(np.mean(vals)), i, j))
    candidates.sort(key=lambda c: (-c[0], -c[1], c[2]))
    taken: set[int] = set()
    picked = []
    for _, _, i, j in candidates:
        if not taken & set(range(i, j + 1)):
            taken |= set(range(i, j + 1))
            picked.append((i, j))
    return sorted(picked)


# -- recovery -----------------------------------------------------------------------------------


def test_planted_blocks_are_recovered_exactly() -> None:
    m = planted(24, [(3, 8), (13, 21)])
    res = find_blocks(m)
    assert spans(res) == [(3, 8), (13, 21)]
    assert [b.size for b in res.blocks] == [6, 9]
    assert res.block_fraction == pytest.approx(15 / 24)
    inner = m[13:22, 13:22][~np.eye(9, dtype=bool)]
    assert res.blocks[1].mean_cka == pytest.approx(inner.mean())
    assert res.blocks[1].min_cka == pytest.approx(inner.min())


def test_adjacent_blocks_that_differ_stay_apart() -> None:
    m = planted(20, [(2, 9), (10, 17)], outside=0.5)
    assert spans(find_blocks(m)) == [(2, 9), (10, 17)]


def test_no_structure_gives_no_block() -> None:
    res = find_blocks(planted(20, []))
    assert res.blocks == [] and res.block_fraction == 0.0


@pytest.mark.parametrize("period", [2, 3])
def test_residual_checkerboard_is_not_a_block(period: int) -> None:
    # Post-residual-sum layers (every `period`-th) similar to each other, branch layers not.
    n = 30
    post = np.arange(n) % period == period - 1
    m = np.where(post[:, None] & post[None, :], 0.9, 0.3)
    if period == 2:  # the plain alternating checkerboard: 0.9 where i + j is even
        i, j = np.indices((n, n))
        m = np.where((i + j) % 2 == 0, 0.9, 0.3)
    m = m + np.random.default_rng(1).uniform(-0.02, 0.02, m.shape)
    m = (m + m.T) / 2
    np.fill_diagonal(m, 1.0)
    for tolerance in (0.0, 0.1, 0.3):
        assert find_blocks(m, tolerance=tolerance).blocks == []


def test_block_with_a_hole_is_not_one_block() -> None:
    m = planted(24, [(4, 17)])
    m[10:12, :] = m[:, 10:12] = 0.3  # two interior layers unlike the rest
    np.fill_diagonal(m, 1.0)
    res = find_blocks(m)
    assert not any(b.start <= 9 and b.end >= 12 for b in res.blocks)
    assert spans(res) == [(4, 9), (12, 17)]


def test_block_with_a_dissimilar_patch_is_not_one_block() -> None:
    m = planted(24, [(4, 17)])
    m[4:10, 12:18] = m[12:18, 4:10] = 0.5  # the two ends of the run are not alike
    res = find_blocks(m)
    assert not any(b.start <= 5 and b.end >= 16 for b in res.blocks)


def test_large_block_does_not_absorb_an_unlike_neighbour() -> None:
    m = planted(60, [(10, 49)])
    m[50, 40:50] = m[40:50, 50] = 0.95  # layer 50 resembles only the block's last 10 layers
    assert spans(find_blocks(m)) == [(10, 49)]


def test_tolerance_admits_a_few_noisy_pairs() -> None:
    m = planted(20, [(5, 16)], noise=0.0)
    m[7, 12] = m[12, 7] = 0.6
    assert spans(find_blocks(m, tolerance=0.1)) == [(5, 16)]
    assert (5, 16) not in spans(find_blocks(m, tolerance=0.0))
    assert find_blocks(m, tolerance=0.1).blocks[0].min_cka == pytest.approx(0.6)


def test_dead_layer_nan_is_never_inside_a_block() -> None:
    m = planted(20, [(3, 16)])
    m[9, :] = m[:, 9] = np.nan
    res = find_blocks(m)
    assert spans(res) == [(3, 8), (10, 16)]
    assert not res.in_block[9]


def test_min_size_and_min_fraction() -> None:
    m = planted(40, [(2, 5), (10, 29)])
    assert spans(find_blocks(m, min_fraction=0.0, min_size=3)) == [(2, 5), (10, 29)]
    res = find_blocks(m, min_fraction=0.2)  # blocks of at least 8 layers
    assert spans(res) == [(10, 29)] and res.min_size == 8


def test_blocks_in_cka_of_activations_sharing_a_dominant_component() -> None:
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
    assert m[5:11, 5:11].min() > 0.9 and np.delete(m[5], range(5, 11)).max() < 0.5
    res = find_blocks(m)
    assert spans(res) == [(5, 10)]


@pytest.mark.parametrize("seed", range(6))
def test_matches_naive_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(12, 22))
    starts = sorted(rng.choice(n - 3, size=3, replace=False))
    blocks = [(int(s), int(min(n - 1, s + rng.integers(2, 8)))) for s in starts]
    m = planted(n, blocks, inside=0.85, outside=0.6, noise=0.15, seed=seed)
    m[rng.random(m.shape) < 0.05] = np.nan
    for tolerance in (0.0, 0.15, 0.3):
        for min_size in (2, 3):
            res = find_blocks(m, threshold=0.8, tolerance=tolerance, min_size=min_size, min_fraction=0.0)
            assert spans(res) == naive_find_blocks(m, 0.8, tolerance, min_size)


def test_asymmetric_matrix_needs_both_directions_high() -> None:
    m = planted(12, [(2, 9)])
    m[5, 2:10] = 0.2  # row 5 low, column 5 high
    m[5, 5] = 1.0
    assert not any(b.start <= 5 <= b.end for b in find_blocks(m).blocks)


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
    assert subset.layer_names == names[::2]
    assert spans(subset) == [(3, 7)]  # layers 6..14 of the full matrix
    assert spans(find_blocks(m, layers=list(range(0, 20, 2)))) == [(3, 7)]


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
    assert back.to_dict()["blocks"][0] == {"start": 2, "end": 7, "size": 6, "mean_cka": res.blocks[0].mean_cka,
                                          "min_cka": res.blocks[0].min_cka}
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
    argv = ["blocks", str(tmp_path / "cka.npz"), "--threshold", "0.9", "--layers", *names[::2], "--out", str(out)]
    assert main(argv) == 0
    saved = BlockResult.load(out)
    assert saved.layer_names == names[::2].tolist() and saved.threshold == 0.9 and spans(saved) == [(2, 6)]


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
