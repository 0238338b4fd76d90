"""One serialiser for every result: the same file round trip and the same one clear error for each kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ckatlas.analysis import BlockResult, ErrorComparison, find_blocks
from ckatlas.analysis.across import AveragedCKA, LayerMatch, average_heatmaps, match_layers
from ckatlas.analysis.stability import BlockStability, block_stability
from ckatlas.analysis.pca import PCAResult
from ckatlas.analysis.probes import ProbeResult
from ckatlas.analysis.prune import PruneResult
from ckatlas.errors import UserInputError
from ckatlas.heatmap import CKAResult
from ckatlas.results import JsonResult, NpzResult


def _cka(seed: int = 0) -> CKAResult:
    rng = np.random.default_rng(seed)
    m = rng.uniform(0.5, 1, (5, 5))
    m = (m + m.T) / 2
    np.fill_diagonal(m, 1)
    names = [f"l{i}" for i in range(5)]
    return CKAResult(m, names, names, np.zeros((5, 5)), 64, 2, 1, "a", "a", True, {"seed": seed})


def _instances() -> list[JsonResult | NpzResult]:
    blocks = [find_blocks(_cka(s), threshold=0.6, min_size=2) for s in range(2)]
    pca = PCAResult(["a", "b"], np.array([0.5, 0.6]), np.eye(2), np.eye(2), np.eye(2), 10, 1, {"k": 1})
    probes = ProbeResult(["a"], ["layer"], [4], np.array([0.5]), np.array([[0.4, 0.5]]), np.array([0.1]), [True],
                         [0.1, 1.0], 100, 20, 50, 0.1, {})
    prune = PruneResult(0.9, [], 0, 50, {})
    return [blocks[0], block_stability(blocks, ["s0", "s1"]), _cka(), pca, probes, prune,
            average_heatmaps([_cka(0), _cka(1)]), match_layers(_cka())]


@pytest.mark.parametrize("result", _instances(), ids=lambda r: type(r).__name__)
def test_every_result_round_trips_through_its_file(result, tmp_path: Path) -> None:
    suffix = ".json" if isinstance(result, JsonResult) else ".npz"
    path = result.save(tmp_path / f"r{suffix}")
    back = type(result).load(path)
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(result.to_dict(), sort_keys=True)


@pytest.mark.parametrize("kind", [BlockResult, BlockStability, ProbeResult, PruneResult, ErrorComparison, LayerMatch])
def test_a_json_result_of_another_kind_or_missing_a_field_is_one_clear_error(kind, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "ckatlas.Something", "x": 1}))
    with pytest.raises(UserInputError, match=rf"other\.json: not {kind.WHAT}: expected format '{kind.FORMAT}'"):
        kind.load(other)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"format": kind.FORMAT}))
    with pytest.raises(UserInputError, match=rf"partial\.json: {kind.WHAT} with a missing or malformed field"):
        kind.load(partial)
    with pytest.raises(UserInputError, match="no such file"):
        kind.load(tmp_path / "missing.json")


@pytest.mark.parametrize("kind", [CKAResult, PCAResult, AveragedCKA])
def test_an_npz_result_missing_an_array_or_a_field_is_one_clear_error(kind, tmp_path: Path) -> None:
    np.savez(tmp_path / "empty.npz", something=np.zeros(2))
    with pytest.raises(UserInputError, match=rf"holds no {kind.WHAT}: arrays .* are missing"):
        kind.load(tmp_path / "empty.npz")
    arrays = {name: np.zeros((2, 2)) for name in kind.ARRAYS}
    header = {"format": kind.FORMAT} if kind.FORMAT else {}
    np.savez(tmp_path / "bad.npz", header=np.array(json.dumps(header)), **arrays)
    with pytest.raises(UserInputError, match=rf"bad\.npz: {kind.WHAT} with a missing or malformed field"):
        kind.load(tmp_path / "bad.npz")
