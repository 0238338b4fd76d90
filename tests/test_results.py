"""One serialiser for every result: the same file round trip and the same one clear error for each kind."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest

import ckatlas
from ckatlas.analysis import ErrorComparison, Population, compare_populations, find_blocks
from ckatlas.analysis.dynamics import BlockDynamics
from ckatlas.analysis.origins import BlockOrigins
from ckatlas.experiment.claims import Claim, ClaimsResult
from ckatlas.hf.removal import LayerRemoval
from ckatlas.analysis.across import AveragedCKA, LayerMatch, average_heatmaps, match_layers
from ckatlas.analysis.stability import BlockStability, block_stability
from ckatlas.analysis.pca import PCAResult
from ckatlas.analysis.probes import ProbeResult
from ckatlas.analysis.prune import PruneResult
from ckatlas.errors import UserInputError
from ckatlas.heatmap import CKAResult
from ckatlas.io.results import JsonResult, NpzResult
from ckatlas.io.summary import CrossSeedPair, ExperimentSummary, GridTable, GroupEntry, ModelEntry


def _cka(seed: int = 0) -> CKAResult:
    rng = np.random.default_rng(seed)
    m = rng.uniform(0.5, 1, (5, 5))
    m = (m + m.T) / 2
    np.fill_diagonal(m, 1)
    names = [f"l{i}" for i in range(5)]
    return CKAResult(m, names, names, np.zeros((5, 5)), 64, 2, 1, "a", "a", True, {"seed": seed})


def _all_result_classes() -> list[type]:
    """Every result class of the package: each module imported, then every subclass of the two bases."""
    for module in pkgutil.walk_packages(ckatlas.__path__, "ckatlas."):
        if not module.name.endswith("__main__"):  # (running the command line)
            importlib.import_module(module.name)
    found, todo = [], [JsonResult, NpzResult]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("ckatlas.") and sub not in found:
                found.append(sub)
                todo.append(sub)
    return sorted(found, key=lambda c: c.__name__)


def _comparison() -> ErrorComparison:
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 4
    pops = [Population(np.where(rng.random((3, 40)) < 0.7, labels, (labels + 1) % 4), labels, 4,
                       [f"{name}{i}" for i in range(3)], name) for name in ("a", "b")]
    return compare_populations(*pops, num_permutations=50)


def _instances() -> dict[type, JsonResult | NpzResult]:
    """One instance of every result class (a new class without one fails the test below)."""
    blocks = [find_blocks(_cka(s), threshold=0.6, min_size=2) for s in range(2)]
    pca = PCAResult(["a", "b"], np.array([0.5, 0.6]), np.eye(2), np.eye(2), np.eye(2), 10, 1, {"k": 1})
    probes = ProbeResult(["a"], ["layer"], [4], np.array([0.5]), np.array([[0.4, 0.5]]), np.array([0.1]), [True],
                         [0.1, 1.0], 100, 20, 50, 0.1, {})
    prune = PruneResult(0.9, [], 0, 50, {})
    dynamics = BlockDynamics([0, 2], ["l0", "l1", "l2"], np.stack([np.eye(3)] * 2), np.full((2, 3), 0.4),
                             [0.0, 0.67], [[], [[0, 1]]], {"examples": 64}, np.array([0.0, 0.5]))
    origins = BlockOrigins(["l0", "l1", "l2"], [[0, 1]], np.full((1, 10), 0.1), np.array([[3, 1]]), np.array([[3]]),
                           np.array([[5]]), np.eye(3)[None], np.eye(3)[None], np.eye(3)[None], np.eye(3)[None],
                           np.zeros((2, 1, 4, 4)), {"remove": 0.1})
    removal = LayerRemoval(["l0", "l1"], np.eye(3), np.zeros((3, 3)), np.array([0.2, 0.1]), [[0, 1]],
                           {"cka": [[1]]}, {"cka": [1.5, 1.7]}, "loss", {"tokens": 100})
    claims = ClaimsResult("exp", [Claim("width", "grows with width", "Spearman rho", 0.5, 0.01, 12, True, "",
                                        {"per_depth": [0.4]}),
                                  Claim("depth", "grows with depth", "Spearman rho", None, None, 0, None, "one depth")],
                          0.05, {"permutations": 100})
    model = ModelEntry("m0", "resnet8", 8, 1.0, True, 0, 1.0, test_accuracy=0.9, block_fraction=0.5,
                       block_strength=0.3, blocks=[[0, 1]], block_scores=[0.6], layers=["a", "b"],
                       paths={"run": "runs/m0", "pca": "analysis/pca/m0.npz"})
    summary = ExperimentSummary("exp", "a test", {"name": "digits"}, [model],
                                [GroupEntry("g", "resnet8", 8, 1.0, True, 1.0, ["m0"], block_fraction_mean=0.5)],
                                [GridTable(True, 1.0, [8], [1.0], [[0.5]], [[0.9]], "resnet", [[0.3]])],
                                [CrossSeedPair("m0", "m1", "cka/m0__m1.npz")], ["pca"], None, {}, {"train": 1.0},
                                {"name": "exp"})
    made = [blocks[0], block_stability(blocks, ["s0", "s1"]), _cka(), pca, probes, prune,
            average_heatmaps([_cka(0), _cka(1)]), match_layers(_cka()), _comparison(), dynamics, origins, removal,
            claims, summary]
    return {type(result): result for result in made}


INSTANCES = _instances()
CLASSES = _all_result_classes()


def test_every_result_class_has_an_example_here() -> None:
    missing = [c.__name__ for c in CLASSES if c not in INSTANCES]
    assert not missing, f"add an instance of {missing} to _instances()"


@pytest.mark.parametrize("kind", CLASSES, ids=lambda c: c.__name__)
def test_every_result_round_trips_through_its_file(kind, tmp_path: Path) -> None:
    result = INSTANCES[kind]
    suffix = ".json" if isinstance(result, JsonResult) else ".npz"
    path = result.save(tmp_path / f"r{suffix}")
    back = type(result).load(path)
    assert type(back) is kind
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(result.to_dict(), sort_keys=True)


@pytest.mark.parametrize("kind", [c for c in CLASSES if issubclass(c, JsonResult)], ids=lambda c: c.__name__)
def test_a_json_result_of_another_kind_or_missing_a_field_is_one_clear_error(kind, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "ckatlas.Something", "x": 1}))
    with pytest.raises(UserInputError, match=rf"other\.json: not {re.escape(kind.WHAT)}: expected format '{kind.FORMAT}'"):
        kind.load(other)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"format": kind.FORMAT}))
    with pytest.raises(UserInputError, match=rf"partial\.json: {re.escape(kind.WHAT)} with a missing or malformed field"):
        kind.load(partial)
    with pytest.raises(UserInputError, match="no such file"):
        kind.load(tmp_path / "missing.json")


@pytest.mark.parametrize("kind", [c for c in CLASSES if issubclass(c, NpzResult)], ids=lambda c: c.__name__)
def test_an_npz_result_missing_an_array_or_a_field_is_one_clear_error(kind, tmp_path: Path) -> None:
    np.savez(tmp_path / "empty.npz", something=np.zeros(2))
    with pytest.raises(UserInputError, match=rf"is not {re.escape(kind.WHAT)}: arrays .* are missing"):
        kind.load(tmp_path / "empty.npz")
    arrays = {name: np.zeros((2, 2)) for name in kind.ARRAYS}
    header = {"format": kind.FORMAT} if kind.FORMAT else {}
    np.savez(tmp_path / "bad.npz", header=np.array(json.dumps(header)), **arrays)
    with pytest.raises(UserInputError, match=rf"bad\.npz: {re.escape(kind.WHAT)} with a missing or malformed field"):
        kind.load(tmp_path / "bad.npz")


def test_a_dataclass_result_needs_no_serialising_code(tmp_path: Path) -> None:
    """A plugin's result declares its fields only; the generic serialiser saves and loads it, arrays included."""
    from dataclasses import dataclass, field

    @dataclass
    class Mine(NpzResult):
        FORMAT = "test.Mine"
        WHAT = "a test result"
        ARRAYS = ("values",)
        name: str
        values: np.ndarray
        counts: list[int] = field(default_factory=list)

    @dataclass
    class MineJson(JsonResult):
        FORMAT = "test.MineJson"
        WHAT = "a test JSON result"
        scores: np.ndarray
        label: str = "x"

        def __post_init__(self) -> None:
            self.scores = np.asarray(self.scores, dtype=np.float64)

    back = Mine.load(Mine("a", np.arange(6.0).reshape(2, 3), [np.int64(1), 2]).save(tmp_path / "m.npz"))
    assert back.name == "a" and back.counts == [1, 2] and back.values.shape == (2, 3)
    json_back = MineJson.load(MineJson(np.array([0.5, np.nan]), "y").save(tmp_path / "m.json"))
    assert json_back.label == "y" and json_back.scores[0] == 0.5 and np.isnan(json_back.scores[1])
    assert json.loads((tmp_path / "m.json").read_text())["version"] == 1  # a kind ckatlas does not name: version 1
    (tmp_path / "bad.json").write_text(json.dumps({"format": "test.MineJson", "version": 1, "label": "y"}))
    with pytest.raises(UserInputError, match="a test JSON result with a missing or malformed field"):
        MineJson.load(tmp_path / "bad.json")


def test_plain_values() -> None:
    from dataclasses import dataclass

    from ckatlas.io.results import plain

    @dataclass
    class Inner:
        a: tuple[int, ...]

    value = {"x": np.float32(0.5), "y": (np.int64(2), np.bool_(True)), "z": [Inner((1, 2))], "w": np.eye(2)}
    assert plain(value) == {"x": 0.5, "y": [2, True], "z": [{"a": [1, 2]}], "w": [[1.0, 0.0], [0.0, 1.0]]}
    assert json.dumps(plain(value))
