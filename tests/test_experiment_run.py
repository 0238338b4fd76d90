"""Running an experiment end to end: the directory it writes, what it holds, and re-runs.

A tiny grid (ResNet-8 at widths 1/4 and 1/2, two seeds, 1 epoch on a quarter of
digits, CKA on 64 test images) is run once per module; the tests check its
results against the library called directly, and that re-running computes
exactly what is missing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import ckatlas.train.loop
from ckatlas.analysis import BlockDetector, BlockResult, compare_populations, find_blocks, load_predictions
from ckatlas.analysis.dynamics import BlockDynamics
from ckatlas.analysis.error_compare import ErrorComparison
from ckatlas.analysis.origins import BlockOrigins
from ckatlas.analysis.trend import paired_difference_test
from ckatlas.analysis.pca import PCAResult, principal_components
from ckatlas.cka import MeasureInfo, center_gram, register_measure, unregister_measure
from ckatlas.cka.batch_measures import BatchMeanMeasure
from ckatlas.cka.measures import minibatch_measures
from ckatlas.cli import main
from ckatlas.errors import UserInputError
from ckatlas.experiment import config_from_dict, load_config, plan, run_experiment
from ckatlas.experiment.claim_kinds import ClaimsResult
from ckatlas.experiment import registry
from ckatlas.experiment.claims import SWEEPS
from ckatlas.experiment.executors import torch_threads
from ckatlas.experiment.steps import test_inputs as experiment_inputs
from ckatlas.heatmap import CKAResult, heatmap
from ckatlas.report import Section, para, render_report, report_section, unregister_section
from ckatlas.io.summary import ExperimentSummary
from ckatlas.train import load_run, train

pytestmark = pytest.mark.slow

# One PyTorch thread: with two, oneDNN's CPU convolutions in torch 2.13 corrupt the heap at random;
# one thread also makes the runs bit-for-bit repeatable.
THREADS = 1
TIMES = ("timings.json", "spans.json")  # when steps ran: differs between runs

TOML = """
name = "tiny-test"

[dataset]
name = "digits"

[[grid]]
depths = [8]
widths = [0.25, 0.5]
seeds = [0, 1]
fractions = [0.25]

[train]
epochs = 1
batch_size = 64

[cka]
num_examples = 64
batch_size = 32

[analyses.pca]
[analyses.prune]
[analyses.cross_seed]
[analyses.dynamics]
examples = 32
seeds = [0]
[analyses.origins]
seeds = [0]
remove = 0.05
[analyses.errors]
population_a = { depth = 8, width = 0.5, fraction = 0.25 }
population_b = { depth = 8, width = 0.25, fraction = 0.25 }
num_permutations = 100
"""


@pytest.fixture(scope="module")
def toml_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(TOML)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, toml_file):
    root = tmp_path_factory.mktemp("experiment") / "out"
    result = run_experiment(toml_file, root, quiet=True, threads=THREADS)
    return root, load_config(toml_file), result


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def _results(summary: dict) -> list[dict]:
    """The models' entries of a summary without their (machine-dependent) training time."""
    return [{k: v for k, v in m.items() if k != "train_seconds"} for m in summary["models"]]


def test_the_directory_has_the_documented_layout(finished):
    root, config, result = finished
    names = [r.name for r in config.runs]
    assert names == ["resnet8-w0.25-f0.25-s0", "resnet8-w0.25-f0.25-s1", "resnet8-w0.5-f0.25-s0", "resnet8-w0.5-f0.25-s1"]
    assert result.computed == [s.key for s in plan(config)] and result.skipped == []
    for name in names:
        for file in ("config.json", "model.safetensors", "metrics.json", "predictions.npz"):
            assert (root / "runs" / name / file).is_file()
        for path in (f"cka/{name}.npz", f"analysis/blocks/{name}.json", f"analysis/pca/{name}.npz",
                     f"analysis/prune/{name}.json"):
            assert (root / path).is_file()
    for group in ("resnet8-w0.25-f0.25", "resnet8-w0.5-f0.25"):
        assert (root / f"cka/{group}-s0__{group}-s1.npz").is_file()
        assert (root / f"analysis/stability/{group}.json").is_file()
    for file in ("experiment.json", "experiment.toml", "summary.json", "timings.json", "analysis/errors.json"):
        assert (root / file).is_file()
    assert not list(root.rglob("*.tmp"))
    recorded = json.loads((root / "experiment.json").read_text())
    assert config_from_dict(recorded["config"]) == config


def test_summary_holds_every_model_as_the_issue_specifies(finished):
    root, config, _ = finished
    summary = json.loads((root / "summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == [r.name for r in config.runs]
    for model, run in zip(summary["models"], config.runs):
        assert {"name", "arch", "depth", "width", "residual", "seed", "fraction", "test_accuracy", "block_fraction",
                "blocks"} <= set(model)
        assert (model["arch"], model["depth"], model["width"], model["seed"], model["fraction"]) == (
            "resnet8", 8, run.width, run.seed, 0.25)
        metrics = json.loads((root / "runs" / run.name / "metrics.json").read_text())
        assert model["test_accuracy"] == metrics["final"]["test_accuracy"]
        blocks = find_blocks(CKAResult.load(root / "cka" / f"{run.name}.npz"))
        assert model["block_fraction"] == blocks.block_fraction and model["block_strength"] == blocks.block_strength
        assert model["block_area"] == blocks.block_area
        assert model["blocks"] == [[b.start, b.end] for b in blocks.blocks]
        assert model["train_accuracy"] == metrics["final"]["train_accuracy"]
        assert all((root / path).exists() for path in model["paths"].values())
    groups = {g["name"]: g for g in summary["groups"]}
    g = groups["resnet8-w0.5-f0.25"]
    fractions = [m["block_fraction"] for m in summary["models"] if m["name"] in g["runs"]]
    assert g["block_fraction_mean"] == pytest.approx(np.mean(fractions))
    (table,) = summary["grid"]
    assert table["depths"] == [8] and table["widths"] == [0.25, 0.5]
    assert table["block_fraction"][0][1] == pytest.approx(g["block_fraction_mean"])
    assert summary["analyses"]["errors"] == "analysis/errors.json"
    kinds = {"train", "cka", "cross", "blocks", "stability", "pca", "prune", "dynamics", "errors", "origins", "untrained", "summary"}
    assert set(summary["timings"]) == kinds - {"summary"} | {"total", "wall"}
    assert 0 < summary["timings"]["wall"] <= summary["timings"]["total"] * (1 + 1e-9)  # side by side counts once


def test_results_equal_the_library_called_directly(finished):
    root, config, _ = finished
    x = experiment_inputs(config)
    assert x.shape[0] == 64
    a, b = config.groups["resnet8-w0.5-f0.25"]
    model_a = load_run(root / "runs" / a.name).model
    model_b = load_run(root / "runs" / b.name).model
    kw = dict(layers="blocks", batch_size=32, passes=1, shuffle=True, seed=0, progress=False)

    saved = CKAResult.load(root / "cka" / f"{a.name}.npz")
    np.testing.assert_array_equal(saved.matrix, heatmap(model_a, x, **kw).matrix)
    cross = CKAResult.load(root / "cka" / f"{a.name}__{b.name}.npz")
    assert (cross.model_a, cross.model_b) == (a.name, b.name)
    np.testing.assert_array_equal(cross.matrix, heatmap(model_a, x, model_b, **kw).matrix)

    assert BlockResult.load(root / "analysis/blocks" / f"{a.name}.json").to_dict() == find_blocks(saved).to_dict()
    pca = PCAResult.load(root / "analysis/pca" / f"{a.name}.npz")
    direct = principal_components(model_a, x, layers="blocks", batch_size=32, shuffle=True, seed=0)
    np.testing.assert_array_equal(pca.variance_explained, direct.variance_explained)

    pops = [load_predictions([root / "runs" / r.name for r in config.groups[g]], name=g)
            for g in ("resnet8-w0.5-f0.25", "resnet8-w0.25-f0.25")]
    errors = ErrorComparison.load(root / "analysis/errors.json")
    expected = compare_populations(*pops, num_permutations=100, class_names=[str(i) for i in range(10)])
    assert errors.examples.statistic == expected.examples.statistic
    assert errors.examples.p_value == expected.examples.p_value


def test_two_worker_processes_give_the_same_results(finished, toml_file, tmp_path):
    root, config, sequential = finished
    parallel = run_experiment(toml_file, tmp_path / "jobs2", quiet=True, threads=THREADS, jobs=2)
    assert sorted(parallel.computed) == sorted(sequential.computed)
    # Each step starts after the steps it reads from have finished.
    order = {key: i for i, key in enumerate(parallel.computed)}
    for step in plan(config):
        assert all(order[need] < order[step.key] for need in step.needs), step.key
    assert {p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name not in TIMES} == {
        p.relative_to(tmp_path / "jobs2") for p in (tmp_path / "jobs2").rglob("*") if p.is_file() and p.name not in TIMES}
    summaries = [json.loads((d / "summary.json").read_text()) for d in (root, tmp_path / "jobs2")]
    assert _results(summaries[0]) == _results(summaries[1])
    for path in (root / "cka").glob("*.npz"):
        np.testing.assert_array_equal(CKAResult.load(tmp_path / "jobs2" / "cka" / path.name).matrix,
                                      CKAResult.load(path).matrix)


def test_a_dead_worker_is_one_clear_error(toml_file, tmp_path):
    # The classic way to kill spawned workers: a script without a __main__ guard re-runs itself in each.
    script = tmp_path / "no_guard.py"
    script.write_text(f"from ckatlas.experiment import run_experiment\n"
                      f"run_experiment({str(toml_file)!r}, {str(tmp_path / 'out')!r}, jobs=2, threads=1, quiet=True)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ckatlas.errors.UserInputError: a worker process died while computing train/"), last
    assert "if __name__ == \"__main__\":" in last


def test_jobs_must_be_a_positive_integer(toml_file, tmp_path):
    with pytest.raises(UserInputError, match="jobs must be a positive integer, got 0"):
        run_experiment(toml_file, tmp_path / "x", jobs=0, quiet=True)


def test_running_again_computes_nothing_and_touches_nothing(finished, toml_file):
    root, config, _ = finished
    before = _snapshot(root)
    result = run_experiment(toml_file, root, quiet=True, threads=THREADS)
    assert result.computed == [] and result.skipped == [s.key for s in plan(config)]
    assert _snapshot(root) == before


def test_the_cli_on_a_finished_experiment_only_reports(finished, toml_file, capsys):
    root, _, _ = finished
    before = _snapshot(root)
    assert main(["run", str(toml_file), "--out", str(root), "--quiet", "--threads", "1"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["run", str(toml_file), "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert "resnet8-w0.5-f0.25-s1" in out and "summary:" in out
    assert _snapshot(root) == before


def test_a_deleted_piece_and_a_stray_temp_file_recompute_only_that_piece(finished, toml_file, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(finished[0], root)  # copy2 keeps the mtimes
    name = "resnet8-w0.5-f0.25-s1"
    (root / "cka" / f"{name}.npz").unlink()
    stray = root / "cka" / f".{name}.npz.abc123.tmp"
    stray.write_bytes(b"half a file")
    before = _snapshot(root)

    result = run_experiment(toml_file, root, quiet=True, threads=THREADS)

    assert result.computed == [f"cka/{name}", f"blocks/{name}", "stability/resnet8-w0.5-f0.25", f"prune/{name}", "summary", "claims", "report"]
    assert not stray.exists()
    after = _snapshot(root)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {f"cka/{name}.npz", f"analysis/blocks/{name}.json", "analysis/stability/resnet8-w0.5-f0.25.json",
                       f"analysis/prune/{name}.json", "summary.json", "timings.json",
                       "spans.json", "claims.json", "report/index.html"}
    np.testing.assert_array_equal(CKAResult.load(root / "cka" / f"{name}.npz").matrix,
                                  CKAResult.load(finished[0] / "cka" / f"{name}.npz").matrix)
    old, new = (json.loads((r / "summary.json").read_text()) for r in (finished[0], root))
    assert _results(new) == _results(old)


def test_a_truncated_model_file_is_not_done_and_is_written_again(finished, toml_file, tmp_path, capsys):
    root = tmp_path / "truncated"
    shutil.copytree(finished[0], root)
    name = "resnet8-w0.25-f0.25-s0"
    weights = root / "runs" / name / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # a copy cut short
    assert main(["run", str(toml_file), "--out", str(root), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"todo  train/{name}" in lines and "done  train/resnet8-w0.5-f0.25-s0" in lines
    result = run_experiment(toml_file, root, quiet=True, threads=THREADS)
    assert result.computed[0] == f"train/{name}"
    assert weights.read_bytes() == whole  # finished again from its last checkpoint, bit for bit
    with pytest.raises(UserInputError, match="holds an unfinished ckatlas run"):
        (root / "runs" / name / "predictions.npz").write_bytes(b"PK\x03\x04 cut")
        load_run(root / "runs" / name)


def test_a_crash_in_a_step_resumes_where_it_stopped(finished, toml_file, tmp_path):
    root = tmp_path / "crashed"

    def boom(step, ctx, store):
        raise RuntimeError("simulated crash")

    pca = registry.step_kind("pca")
    registry.register_step(dataclasses.replace(pca, compute=boom), replace=True)  # a PCA that crashes
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_experiment(toml_file, root, quiet=True, threads=THREADS)
    finally:
        registry.register_step(pca, replace=True)
    assert not (root / "summary.json").exists() and not (root / "analysis/pca").exists()
    trained = _snapshot(root / "runs")

    result = run_experiment(toml_file, root, quiet=True, threads=THREADS)
    assert {k.split("/")[0] for k in result.computed} == {"pca", "prune", "errors", "origins", "summary", "claims", "report"}
    assert _snapshot(root / "runs") == trained
    old, new = (json.loads((r / "summary.json").read_text()) for r in (finished[0], root))
    assert _results(new) == _results(old)  # the same numbers as the uninterrupted experiment


def test_a_run_interrupted_mid_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    table = {
        "name": "resume",
        "grid": [{"depths": [8], "widths": [0.25], "fractions": [0.25]}],
        "train": {"epochs": 2, "batch_size": 64},
        "cka": {"num_examples": 32, "batch_size": 32},
        "dataset": {"name": "digits"},
        "analyses": {"dynamics": {"examples": 32}},
    }
    config = config_from_dict(table)
    real_save = ckatlas.train.loop.save_state

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckatlas.train.loop, "save_state", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path / "exp", quiet=True, threads=THREADS)
    run_dir = tmp_path / "exp" / "runs" / config.runs[0].name
    assert (run_dir / "state" / "checkpoint.safetensors").is_file() and not (run_dir / "model.safetensors").exists()
    monkeypatch.undo()

    result = run_experiment(config, tmp_path / "exp", quiet=True, threads=THREADS)
    assert result.computed[0] == f"train/{config.runs[0].name}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    with torch_threads(THREADS):
        reference = train(config.train_config(config.runs[0]), tmp_path / "reference", quiet=True,
                          dynamics=config.analyses.dynamics.settings(config))
    resumed = load_run(run_dir).model.state_dict()
    for key, value in load_run(reference.run_dir).model.state_dict().items():
        assert (resumed[key] == value).all(), key
    # the record of the epochs before the interruption is kept, and continued: the same as uninterrupted
    record, whole = BlockDynamics.load(run_dir / "dynamics.npz"), BlockDynamics.load(reference.run_dir / "dynamics.npz")
    assert list(record.epochs) == list(whole.epochs) == [0, 1, 2]
    np.testing.assert_allclose(record.cka, whole.cka, rtol=1e-6, atol=1e-9)


def test_dynamics_is_recorded_while_the_selected_runs_train_and_reported(finished, toml_file, tmp_path):
    root, config, _ = finished
    summary = json.loads((root / "summary.json").read_text())
    for model in summary["models"]:
        path = root / "runs" / model["name"] / "dynamics.npz"
        assert path.is_file() == (model["seed"] == 0)
        assert ("dynamics" in model["paths"]) == (model["seed"] == 0)
        if model["seed"] == 0:
            record = BlockDynamics.load(path)
            assert list(record.epochs) == [0, 1] and record.metadata["examples"] == 32
            assert record.layers == CKAResult.load(root / model["paths"]["cka"]).layers_a
    page = (root / "report" / "index.html").read_text()
    assert 'id="dynamics"' in page and "Block structure through training" in page
    # a record deleted from a finished run cannot be recomputed without training: one clear error
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "runs" / config.runs[0].name / "dynamics.npz").unlink()
    with pytest.raises(UserInputError, match=r"dynamics.npz is missing from a finished run.*delete runs/"):
        run_experiment(toml_file, copy, quiet=True, threads=THREADS)


def test_an_experiment_recorded_before_cka_tokens_and_measures_existed_resumes(finished, toml_file, tmp_path):
    root = Path(shutil.copytree(finished[0], tmp_path / "old"))
    record = json.loads((root / "experiment.json").read_text())
    assert record["config"]["cka"].pop("tokens") == "auto"
    assert record["config"]["cka"].pop("measure") == "cka"
    del record["version"]  # as an earlier release wrote it
    (root / "experiment.json").write_text(json.dumps(record))
    before = _snapshot(root)
    result = run_experiment(toml_file, root, quiet=True, threads=THREADS)
    assert not result.computed and _snapshot(root) == before  # the same experiment: nothing to do


def test_a_different_experiment_in_the_same_directory_is_refused(finished):
    root, config, _ = finished
    before = _snapshot(root)
    changed = config.replace(train={**config.train, "epochs": 2})
    with pytest.raises(UserInputError, match=r"holds a different experiment \(train.epochs was 1, now 2\)"):
        run_experiment(changed, root, quiet=True, threads=THREADS)
    assert _snapshot(root) == before


def test_a_new_claim_is_one_definition(finished):
    """A claim of one's own: each model's PC1 share at its first and last analysed layer, paired."""
    from ckatlas.experiment.claims import CLAIMS, PairedClaim, evaluate_claims

    def ends(ctx):
        pcas = [PCAResult.load(ctx.root / m.path("pca")) for m in ctx.models if m.has("pca")]
        return [(float(p.variance_explained[-1]), float(p.variance_explained[0])) for p in pcas]

    mine = PairedClaim("pc1-grows", "the first PC explains more at the output than at the input",
                       "PC1 share, last minus first analysed layer", "needs [analyses.pca]", ends, ("last", "first"))
    root = finished[0]
    result = evaluate_claims(root, num_permutations=500, claims=[*CLAIMS, mine], compare_with=None)
    assert [c.key for c in result.claims[:-1]] == [c.key for c in CLAIMS]
    claim, pairs = result["pc1-grows"], ends(SimpleNamespace(root=root, models=[
        m for m in ExperimentSummary.load(root / "summary.json").models if m.residual]))
    expected = paired_difference_test([a for a, _ in pairs], [b for _, b in pairs], num_permutations=500, seed=0)
    assert pairs and claim.n == len(pairs) and claim.value == pytest.approx(expected["mean_difference"])
    assert claim.p_value == pytest.approx(expected["p_value"])
    if 2.0 ** -len(pairs) > 0.05:  # too few pairs for any sign-flip p to reach alpha: untested, and it says so
        assert claim.holds is None and claim.verdict == "untested" and "cannot fall below" in claim.note
    else:
        assert claim.holds == (expected["p_value"] <= 0.05)
    assert claim.details["last"] == pytest.approx(np.mean([a for a, _ in pairs]))


def test_claims_are_the_stated_statistics_of_the_experiment(finished, capsys, tmp_path):
    from ckatlas.analysis.trend import trend_test
    from ckatlas.experiment.claims import evaluate_claims

    root, _, _ = finished
    summary = json.loads((root / "summary.json").read_text())
    result = evaluate_claims(root, num_permutations=2000)
    width = result["width"]
    models = summary["models"]
    found = [BlockResult.load(root / m["paths"]["blocks"]) for m in models]
    strength, area = [f.block_strength for f in found], [f.block_area for f in found]
    assert strength == pytest.approx([m["block_strength"] for m in models])
    assert area == pytest.approx([m["block_area"] for m in models])
    labels, widths = [(m["depth"], m["fraction"]) for m in models], [m["width"] for m in models]
    expected = trend_test(area, widths, labels, num_permutations=2000)  # the claim tests block area
    assert "block area" in width.statistic
    if np.isfinite(expected.statistic):
        assert width.value == pytest.approx(expected.statistic) and width.p_value == pytest.approx(expected.p_value)
        # one vocabulary: holds / contradicted / not established, with the other way's p and a 95% interval
        assert width.verdict == expected.verdict() and width.p_opposite == pytest.approx(expected.p_opposite)
        assert width.interval == (None if expected.interval is None else pytest.approx(list(expected.interval)))
    else:
        assert width.holds is False and "does not vary" in width.note
    # three named definitions, each its own trend test over the same models
    named = width.details["definitions"]
    assert list(named) == ["paper", "stands out", "definition-free"]
    mean_cka = [float(np.nanmean(c.matrix[~np.eye(len(c.matrix), dtype=bool)]))
                for c in (CKAResult.load(root / m["paths"]["cka"]) for m in models)]
    free = trend_test(mean_cka, widths, labels, num_permutations=2000)
    if np.isfinite(free.statistic):
        assert named["definition-free"]["value"] == pytest.approx(free.statistic)
        assert named["definition-free"]["verdict"] == free.verdict()
    paper = trend_test([BlockDetector(method="threshold", threshold=0.9).find(CKAResult.load(root / m["paths"]["cka"]))
                        .block_fraction for m in models], widths, labels, num_permutations=2000)
    if np.isfinite(paper.statistic):
        assert named["paper"]["value"] == pytest.approx(paper.statistic)
    verdicts = {d["verdict"] for d in named.values()}
    assert width.details["agreement"].startswith(
        "agrees across definitions" if len(verdicts) == 1 else "depends on the definition (paper: ")
    knob, values = SWEEPS["contrast"]
    assert [(s["on"], s[knob]) for s in width.details["sweep"]] == [
        (on, v) for on in ("heatmap", "block-outputs") for v in values]
    used = json.loads((root / "experiment.json").read_text())["config"]["analyses"]["blocks"]
    detector = BlockDetector.from_saved(used)
    again = [s for s in width.details["sweep"] if (s["on"], s[knob]) == (used["on"], detector.min_score)]
    by_strength = trend_test(strength, widths, labels, num_permutations=2000)
    if again and np.isfinite(by_strength.statistic):  # the sweep at the experiment's own setting: block strength
        assert again[0]["rho"] == pytest.approx(by_strength.statistic)
    # on the block outputs, the smallest block follows their count (min_fraction of ~10 rows, not of all layers)
    from ckatlas.train import load_run

    fractions = []
    for m in models:
        cka = CKAResult.load(root / m["paths"]["cka"])
        outputs = set(load_run(root / m["paths"]["run"]).model.layer_names("blocks"))
        fractions.append(detector.replace(min_score=0.3).find(
            cka, layers=[n for n in cka.layers_a if n in outputs]).block_fraction)
    row = next(s for s in width.details["sweep"] if (s["on"], s[knob]) == ("block-outputs", 0.3))
    assert row["mean_block_fraction"] == pytest.approx(float(np.mean(fractions)))
    # beside each claim on blocks: its verdict with the threshold rule of earlier releases
    threshold = BlockDetector(method="threshold")
    old = trend_test([threshold.find(CKAResult.load(root / m["paths"]["cka"])).block_fraction for m in models],
                     [m["width"] for m in models], [(m["depth"], m["fraction"]) for m in models],
                     num_permutations=2000)
    compare = width.details["compare"]
    assert compare["method"] == "threshold" and compare["n"] == old.num_models
    if np.isfinite(old.statistic):
        assert compare["value"] == pytest.approx(old.statistic)
    assert "errors" == result.claims[-1].key and "compare" not in result["errors"].details
    # where blocks come from: the origins of the seed-0 models with a block, paired over models
    traced = [BlockOrigins.load(root / m["paths"]["origins"]) for m in models if "origins" in m["paths"]]
    assert len(traced) == 2 and all(m["seed"] == 0 for m in models if "origins" in m["paths"])
    scores = [o.scores() for o in traced if o.blocks]
    dominant = result["dominant-examples"]
    if scores:
        expected = paired_difference_test([np.nanmean(s["cka_random"]) for s in scores],
                                          [np.nanmean(s["cka_without"]) for s in scores], num_permutations=2000)
        assert dominant.value == pytest.approx(expected["mean_difference"]) and dominant.n == len(scores)
    else:
        assert dominant.holds is None and "origins" in dominant.note
    for key in ("depth", "data"):  # one depth, one fraction: nothing to test, and it says so
        assert result[key].holds is None and "same" in result[key].note
    errors = ErrorComparison.load(root / "analysis" / "errors.json")
    assert result["errors"].p_value == pytest.approx(errors.examples.p_value)
    assert result["errors"].n == 4 and "cannot fall below" in result["errors"].note  # 2 vs 2 models
    assert result["errors"].holds is None  # no outcome could reach alpha: untested, not refuted
    assert main(["claims", str(root), "--permutations", "500", "--out", str(tmp_path / "claims.json")]) == 0
    out = capsys.readouterr().out
    assert "width" in out and json.loads((tmp_path / "claims.json").read_text())["format"] == "ckatlas.Claims"
    assert "not hold" not in out.lower()  # a result that is only not significant is "not established"
    saved = ClaimsResult.load(tmp_path / "claims.json")
    assert [c.verdict for c in saved.claims] == [c.verdict for c in evaluate_claims(root, num_permutations=500).claims]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads a process's children from /proc (Linux)")
def test_a_killed_run_stops_its_worker_processes(tmp_path):
    """`kill` (SIGTERM) of `ckatlas run --jobs 2` ends its workers too, not only itself."""
    config = tmp_path / "e.toml"
    config.write_text('name = "t"\n[dataset]\nname = "digits"\n[[grid]]\ndepths = [8]\nwidths = [0.25]\n'
                      'seeds = [0, 1]\n[train]\nepochs = 500\n')
    proc = subprocess.Popen([sys.executable, "-m", "ckatlas.cli", "run", str(config), "--out", str(tmp_path / "out"),
                             "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: list[int] = []
    deadline = time.monotonic() + 120
    while len(children) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        children = [int(c) for path in Path(f"/proc/{proc.pid}/task").glob("*/children")
                    for c in path.read_text().split()]
    assert len(children) >= 2, proc.communicate()[0] if proc.poll() is not None else "no workers started"
    time.sleep(1.0)  # the workers are inside their first training step
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    deadline = time.monotonic() + 30
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [c for c in alive if Path(f"/proc/{c}").exists() and "Z" not in _state(c)]
        time.sleep(0.2)
    for pid in alive:  # leave no orphan computing when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"worker processes {alive} still run after their parent was killed"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


def test_cka_measure_fills_every_heatmap_of_an_experiment(tmp_path):
    base = TOML.split("[analyses.pca]")[0].replace("widths = [0.25, 0.5]", "widths = [0.25]")
    toml = tmp_path / "rsa.toml"
    toml.write_text(base.replace("batch_size = 32\n", 'batch_size = 32\nmeasure = "rsa"\n') + "[analyses.cross_seed]\n")
    run_experiment(toml, tmp_path / "out", quiet=True, threads=THREADS)
    heatmaps = sorted((tmp_path / "out" / "cka").rglob("*.npz"))
    assert len(heatmaps) == 5  # two models, their cross-seed pair, and the two at initialisation (cka/untrained)
    for path in heatmaps:
        result = CKAResult.load(path)
        assert result.measure == "rsa" and np.isfinite(result.matrix).all()


class _GramCorrelation(BatchMeanMeasure):
    """A measure from outside the package: Pearson correlation of two layers' centred Grams, per batch."""

    def batch_similarity(self, a, b):
        flat_a = center_gram(a).flatten(1)
        flat_b = flat_a if b is None else center_gram(b).flatten(1)
        flat_a = flat_a - flat_a.mean(1, keepdim=True)
        flat_b = flat_b - flat_b.mean(1, keepdim=True)
        return (flat_a / flat_a.norm(dim=1, keepdim=True)) @ (flat_b / flat_b.norm(dim=1, keepdim=True)).T


def test_a_measure_registered_from_outside_reaches_the_cli_an_experiment_and_the_report(tmp_path, capsys):
    info = register_measure(MeasureInfo("gram-corr", False, "Pearson correlation of centred Grams (a plugin)",
                                        "Gram correlation (plugin)"), _GramCorrelation)
    base = TOML.split("[analyses.pca]")[0].replace("widths = [0.25, 0.5]", "widths = [0.25]")
    toml = tmp_path / "plugin.toml"
    toml.write_text(base.replace("batch_size = 32\n", 'batch_size = 32\nmeasure = "gram-corr"\n'))
    try:
        assert info.accumulator is _GramCorrelation and minibatch_measures()[-1] == "gram-corr"
        with pytest.raises(SystemExit):
            main(["cka", "--help"])
        assert "gram-corr: Pearson correlation of centred Grams" in " ".join(capsys.readouterr().out.split())
        out = tmp_path / "one.npz"
        assert main(["cka", "--arch", "resnet8", "--width", "0.25", "--random-inputs", "32", "--image-size", "8",
                     "--measure", "gram-corr", "--quiet", "--out", str(out)]) == 0
        assert CKAResult.load(out).measure == "gram-corr"
        run_experiment(toml, tmp_path / "out", quiet=True, threads=THREADS)
        heatmaps = sorted((tmp_path / "out" / "cka").rglob("*.npz"))
        assert heatmaps and all(CKAResult.load(p).measure == "gram-corr" for p in heatmaps)
        assert all(np.allclose(np.diag(CKAResult.load(p).matrix), 1.0) for p in heatmaps)
        labels: list[str] = []

        @report_section(95)  # a report section from outside the package, beside the measure
        def measured(data):
            first = CKAResult.load(data.root / data.models[0].path("cka"))
            return Section("plugin", "Plugin section", para(f"heatmaps measured by {first.measure}"))

        page = render_report(tmp_path / "out", on_figure=lambda alt, fig: labels.extend(
            ax.get_ylabel() for ax in fig.axes if alt.startswith("within-model CKA heatmaps")))
        assert "Gram correlation (plugin)" in labels
        assert '<section id="plugin">' in page and "heatmaps measured by gram-corr" in page
        unregister_section(measured)
        assert "Plugin section" not in render_report(tmp_path / "out")
    finally:
        unregister_measure("gram-corr")
    with pytest.raises(UserInputError, match="measure in \\[cka\\] must be one of cka, .*, svcca, got 'gram-corr'"):
        load_config(toml)


def test_summary_json_reads_as_typed_entries_and_writes_back_unchanged(finished, tmp_path):
    root, config, _ = finished
    text = (root / "summary.json").read_text()
    summary = ExperimentSummary.load(root / "summary.json")
    assert [m.name for m in summary.models] == [r.name for r in config.runs]
    first = summary.models[0]
    assert first.path("pca") == f"analysis/pca/{first.name}.npz" and first.has("prune") and not first.has("probes")
    assert summary.group_of(first.name).runs[0] == first.name and summary.model(first.name) is first
    assert summary.cell(summary.grid[0], first.depth, first.width)[0] is first
    assert summary.save(tmp_path / "again.json").read_text() == text  # the file on disk is as before
