"""Saved formats carry a version; files of every earlier version load (ckatlas.io.formats), newer ones are refused.

Each version-0 file below is written as an earlier release wrote it (the fields it lacked are left
out), so that the converter of that version keeps a test when the format moves on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ckatlas.analysis.blocks import BlockDetector, BlockResult, find_blocks
from ckatlas.analysis.dynamics import BlockDynamics
from ckatlas.analysis.origins import BlockOrigins
from ckatlas.analysis.prune import PruneResult, PruneStep
from ckatlas.errors import UserInputError
from ckatlas.experiment.claims import ClaimsResult
from ckatlas.io.formats import VERSIONS, upgrade
from ckatlas.heatmap import CKAResult, PopulationResult
from ckatlas.hf.removal import LayerRemoval
from ckatlas.io.results import JsonResult, NpzResult
from ckatlas.io.summary import ExperimentSummary

from test_results import CLASSES, INSTANCES, _cka


def _saved(result: JsonResult | NpzResult, tmp_path: Path) -> tuple[Path, dict]:
    """The file `result` saves, and its JSON object (the header of an .npz)."""
    if isinstance(result, JsonResult):
        path = result.save(tmp_path / "r.json")
        return path, json.loads(path.read_text())
    path = result.save(tmp_path / "r.npz")
    with np.load(path) as npz:
        return path, json.loads(str(npz["header"]))


def _rewrite(path: Path, data: dict) -> None:
    """Write `data` back as the file's JSON object (an .npz's header; its arrays kept)."""
    if path.suffix == ".json":
        path.write_text(json.dumps(data))
        return
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "header"}
    np.savez(path, header=np.array(json.dumps(data)), **arrays)


@pytest.mark.parametrize("kind", CLASSES, ids=lambda c: c.__name__)
def test_every_result_is_saved_with_its_kind_and_current_version(kind, tmp_path: Path) -> None:
    _, data = _saved(INSTANCES[kind], tmp_path)
    assert data["format"] == kind.FORMAT and data["version"] == VERSIONS[kind.FORMAT] >= 1


@pytest.mark.parametrize("kind", CLASSES, ids=lambda c: c.__name__)
def test_a_file_of_a_newer_version_is_one_clear_error(kind, tmp_path: Path) -> None:
    path, data = _saved(INSTANCES[kind], tmp_path)
    _rewrite(path, {**data, "version": VERSIONS[kind.FORMAT] + 1})
    with pytest.raises(UserInputError) as info:
        kind.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert f"format version {VERSIONS[kind.FORMAT] + 1}" in message and "upgrade ckatlas" in message


@pytest.mark.parametrize("kind", CLASSES, ids=lambda c: c.__name__)
def test_a_version_0_file_of_todays_shape_loads_unchanged(kind, tmp_path: Path) -> None:
    """The files written just before versions existed: every converter leaves a complete file as it is."""
    result = INSTANCES[kind]
    path, data = _saved(result, tmp_path)
    del data["version"]
    _rewrite(path, data)
    back = kind.load(path)
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(result.to_dict(), sort_keys=True)


def test_a_malformed_version_is_one_clear_error(tmp_path: Path) -> None:
    path, data = _saved(INSTANCES[BlockResult], tmp_path)
    _rewrite(path, {**data, "version": "1"})
    with pytest.raises(UserInputError, match=r"r\.json: format version '1': expected a whole number >= 0"):
        BlockResult.load(path)


# -- version 0 as earlier releases wrote it -------------------------------------------------------------
def test_a_cka_npz_of_version_0_carries_no_tag_and_loads(tmp_path: Path) -> None:
    result = _cka()
    np.savez(tmp_path / "old.npz", header=np.array(json.dumps(result.fields())), matrix=result.matrix,
             standard_error=result.standard_error)
    back = CKAResult.load(tmp_path / "old.npz")
    np.testing.assert_array_equal(back.matrix, result.matrix)
    assert back.layers_a == result.layers_a and back.metadata == result.metadata
    # another kind's tag is still refused
    np.savez(tmp_path / "pca.npz", header=np.array(json.dumps({"format": "ckatlas.PCAResult", **result.fields()})),
             matrix=result.matrix, standard_error=result.standard_error)
    with pytest.raises(UserInputError, match="pca.npz: not a CKAResult: expected format 'ckatlas.CKAResult'"):
        CKAResult.load(tmp_path / "pca.npz")


def test_a_population_of_version_0_loads_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    population = PopulationResult(["a"], {("a", "a"): _cka()})
    path = population.save(tmp_path / "pop.npz")
    with np.load(path) as npz:
        header, arrays = json.loads(str(npz["header"])), {k: npz[k] for k in npz.files if k != "header"}
    assert header["format"] == "ckatlas.PopulationResult" and header["version"] == 1
    old = {k: v for k, v in header.items() if k not in ("format", "version")}
    np.savez(tmp_path / "old.npz", header=np.array(json.dumps(old)), **arrays)
    np.testing.assert_array_equal(PopulationResult.load(tmp_path / "old.npz").within("a").matrix, _cka().matrix)
    np.savez(tmp_path / "new.npz", header=np.array(json.dumps({**header, "version": 2})), **arrays)
    with pytest.raises(UserInputError, match="new.npz: .*format version 2 .*upgrade ckatlas"):
        PopulationResult.load(tmp_path / "new.npz")


def test_a_block_result_of_version_0_without_scores_or_area(tmp_path: Path) -> None:
    new = find_blocks(_cka(), detector=BlockDetector(method="contrast", min_score=0.1, min_gap=0.01, min_size=2))
    data = {k: v for k, v in new.to_dict().items() if k not in ("version", "peak_score", "block_area", "layer_names")}
    data["blocks"] = [{k: v for k, v in b.items() if k not in ("score", "gap")} for b in data["blocks"]]
    data["detector"] = {k: v for k, v in data["detector"].items() if k != "border_fraction"}  # before it existed
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = BlockResult.load(tmp_path / "old.json")
    assert [(b.start, b.end) for b in old.blocks] == [(b.start, b.end) for b in new.blocks]
    assert all(math.isnan(b.score) and math.isnan(b.gap) for b in old.blocks)
    assert math.isnan(old.peak_score) and math.isnan(old.block_area) and old.layer_names is None
    assert old.detector.method == "contrast" and old.detector.border_fraction == new.detector.min_fraction


def test_a_prune_result_of_version_0(tmp_path: Path) -> None:
    step = PruneStep(1, 2, "0-3", ("b1", "b2"), "b3", 0.8, -0.1, True).to_dict()
    del step["in_block"]
    old = {"format": "ckatlas.PruneResult", "unpruned_accuracy": 0.9, "steps": [step], "finetune_epochs": 0,
           "num_test": 50}
    (tmp_path / "old.json").write_text(json.dumps(old))
    res = PruneResult.load(tmp_path / "old.json")
    assert res.steps[0].in_block is None and res.metadata == {} and res.steps[0].removed == ("b1", "b2")


def test_a_dynamics_record_of_version_0_finds_its_area_by_its_own_detector(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cka = np.stack([_cka(s).matrix for s in range(2)])
    threshold = BlockDetector(method="threshold", threshold=0.7, min_size=2).to_dict()
    saved = {k: v for k, v in threshold.items() if k != "border_fraction"}  # as a release before border_fraction
    header = {"format": "ckatlas.BlockDynamics", "layers": [f"l{i}" for i in range(5)], "blocks": [[], []],
              "metadata": {"detector": saved}}
    np.savez(tmp_path / "old.npz", header=np.array(json.dumps(header)), epochs=np.array([0, 3]), cka=cka,
             variance_explained=rng.random((2, 5)), block_fraction=np.zeros(2))
    old = BlockDynamics.load(tmp_path / "old.npz")
    assert np.isnan(old.block_strength).all()
    expected = BlockDetector.from_dict({**saved, "border_fraction": saved["min_fraction"]})
    np.testing.assert_allclose(old.block_area, [expected.find(m).block_area for m in cka])
    del header["metadata"]  # the oldest records: no metadata, the default detector
    np.savez(tmp_path / "oldest.npz", header=np.array(json.dumps(header)), epochs=np.array([0, 3]), cka=cka,
             variance_explained=rng.random((2, 5)), block_fraction=np.zeros(2))
    oldest = BlockDynamics.load(tmp_path / "oldest.npz")
    assert oldest.metadata == {}
    np.testing.assert_allclose(oldest.block_area, [BlockDetector().find(m).block_area for m in cka])


def test_an_origins_record_of_version_0(tmp_path: Path) -> None:
    new = INSTANCES[BlockOrigins]
    path, header = _saved(new, tmp_path)
    _rewrite(path, {k: v for k, v in header.items() if k not in ("version", "metadata")})
    assert BlockOrigins.load(path).metadata == {}
    saved = {"threshold": 0.8, "tolerance": 0.1, "min_size": 2, "min_fraction": 0.1}  # no method: threshold rule
    _rewrite(path, {**{k: v for k, v in header.items() if k != "version"}, "metadata": {"detector": saved}})
    old = BlockOrigins.load(path)
    assert BlockDetector.from_saved(old.metadata["detector"]).method == "threshold"
    assert set(old.scores()) == {"cka", "cka_without", "cka_random", "cka_normalised"}


def test_a_layer_removal_of_version_0(tmp_path: Path) -> None:
    data = INSTANCES[LayerRemoval].to_dict()
    old = {k: v for k, v in data.items() if k not in ("version", "curves", "metric", "metadata", "healing")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    res = LayerRemoval.load(tmp_path / "old.json")
    assert (res.curves, res.metric, res.metadata, res.healing) == ({}, "loss", {}, {})


def test_claims_of_version_0(tmp_path: Path) -> None:
    data = INSTANCES[ClaimsResult].to_dict()
    old = {k: v for k, v in data.items() if k not in ("version", "metadata")}
    old["claims"] = [{k: v for k, v in c.items() if k not in ("p_opposite", "interval", "verdict")}
                     for c in data["claims"]]
    # those releases compared with a second detector and kept only whether it held
    old["claims"][0]["details"] = {"compare": {"method": "threshold", "value": 0.2, "p_value": 0.3, "n": 9,
                                               "holds": False}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    res = ClaimsResult.load(tmp_path / "old.json")
    assert res.metadata == {} and [c.key for c in res.claims] == ["width", "depth"]
    assert all(c.p_opposite is None and c.interval is None for c in res.claims)
    assert [c.verdict for c in res.claims] == ["holds", "untested"]  # from `holds`, as those releases said it
    assert res.claims[0].details["compare"]["verdict"] == "not established"
    assert "threshold rule: not established (+0.200, p 0.3, n 9)" in res.claims[0].line()


def test_a_summary_of_version_0_with_only_its_models(tmp_path: Path) -> None:
    model = {"name": "m0", "arch": "resnet8", "depth": 8, "width": 1.0, "residual": True, "seed": 0, "fraction": 1.0,
             "test_accuracy": 0.9, "block_fraction": 0.5}  # no family, train accuracy, strength or area yet
    blocks = {"threshold": 0.95, "tolerance": 0.1, "min_size": 3, "min_fraction": 0.1}  # no method: threshold
    old = {"format": "ckatlas.ExperimentSummary", "name": "exp", "models": [model],
           "config": {"grid": [{"depths": [8], "widths": [1.0]}], "analyses": {"blocks": blocks}}}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    summary = ExperimentSummary.load(tmp_path / "summary.json")
    assert summary.description == "" and summary.groups == [] and summary.grid == [] and summary.enabled == []
    entry = summary.models[0]
    assert entry.family == "resnet" and entry.block_area is None and entry.train_accuracy is None
    assert BlockDetector.from_saved(summary.blocks_table).method == "threshold"
    assert summary.config["grid"][0]["family"] == "resnet" and "untrained" in summary.config["analyses"]


def test_upgrade_leaves_its_input_alone() -> None:
    data = {"format": "ckatlas.Claims", "experiment": "e", "alpha": 0.05, "claims": [{"key": "width"}]}
    before = json.dumps(data, sort_keys=True)
    out = upgrade("ckatlas.Claims", data)
    assert json.dumps(data, sort_keys=True) == before
    assert "format" not in out and "version" not in out and out["claims"][0]["verdict"] == "untested"


def test_a_run_folder_of_version_0_reads_as_this_release_writes_it(tmp_path: Path) -> None:
    """config.json and metrics.json of earlier releases: no tag, no precision or channels_last, no clean
    training accuracy; amp = "bfloat16" meant bfloat16 autocast."""
    from ckatlas.io.rundir import RunDir

    (tmp_path / "config.json").write_text(json.dumps({"config": {"arch": "resnet8"}, "data": {},
                                                      "environment": {"amp": "bfloat16"}}))
    (tmp_path / "metrics.json").write_text(json.dumps({"epochs": [], "final": {"test_accuracy": 0.5}}))
    run = RunDir(tmp_path)
    environment = run.read_info()["environment"]
    assert environment["precision"] == "bfloat16" and environment["channels_last"] is False
    assert run.read_metrics()["final"] == {"test_accuracy": 0.5, "train_accuracy": None}
    (tmp_path / "config.json").write_text(json.dumps({"config": {}, "environment": {"amp": None}}))
    assert run.read_info()["environment"]["precision"] == "float32"
    (tmp_path / "metrics.json").write_text(json.dumps({"format": "ckatlas.RunMetrics", "version": 9, "final": None}))
    with pytest.raises(UserInputError, match=r"metrics\.json: .*format version 9 .*upgrade ckatlas"):
        run.read_metrics()
    (tmp_path / "metrics.json").write_text(json.dumps({"format": "ckatlas.Claims", "final": None}))
    with pytest.raises(UserInputError, match="not a ckatlas run's metrics.json: expected format 'ckatlas.RunMetrics'"):
        run.read_metrics()


def test_a_summary_without_its_optional_available_table_round_trips(tmp_path: Path) -> None:
    """`available` is written only when known: a summary without it is of the current version too."""
    summary = ExperimentSummary("e", "", {}, [], [], [], [], [], None, None, {}, {})
    assert "available" not in summary.to_dict()["analyses"]
    back = ExperimentSummary.load(summary.save(tmp_path / "summary.json"))
    assert back.available is None and back.to_dict() == summary.to_dict()
