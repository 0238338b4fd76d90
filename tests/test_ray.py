"""The Ray executor: a tiny experiment through a local Ray instance equals the same run locally."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import ray  # the optional extra ckatlas[ray]; the dev install includes it

from ckatlas.experiment import config_from_dict, plan, run_experiment
from ckatlas.heatmap import CKAResult

pytestmark = pytest.mark.slow

TABLE = {
    "name": "ray-test",
    "dataset": {"name": "digits"},
    "grid": [{"depths": [8], "widths": [0.25, 0.5], "seeds": [0, 1], "fractions": [0.25]}],
    "train": {"epochs": 1, "batch_size": 64},
    "cka": {"num_examples": 64, "batch_size": 32},
    "analyses": {
        "pca": True,
        "cross_seed": True,
        "errors": {
            "population_a": {"depth": 8, "width": 0.5, "fraction": 0.25},
            "population_b": {"depth": 8, "width": 0.25, "fraction": 0.25},
            "num_permutations": 100,
        },
    },
}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in ("timings.json", "spans.json")}


def test_ray_results_equal_a_local_run(local_ray, tmp_path):
    config = config_from_dict(TABLE)
    # One thread per task on both sides: Ray tasks use as many threads as CPUs they declare.
    by_ray = run_experiment(config, tmp_path / "ray", executor="ray", cpus_per_task=1, quiet=True)
    local = run_experiment(config, tmp_path / "local", threads=1, quiet=True)

    steps = {s.key for s in plan(config)}
    assert set(by_ray.computed) == set(local.computed) == steps
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")

    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("ray", "local"))
    for m_ray, m_local in zip(a["models"], b["models"], strict=True):
        assert m_ray["name"] == m_local["name"]
        assert m_ray["test_accuracy"] == m_local["test_accuracy"]
        assert m_ray["blocks"] == m_local["blocks"]
        logits = [np.load(tmp_path / d / "runs" / m_ray["name"] / "predictions.npz")["logits"] for d in ("ray", "local")]
        np.testing.assert_array_equal(*logits)
    for path in (tmp_path / "local" / "cka").glob("*.npz"):
        np.testing.assert_allclose(CKAResult.load(tmp_path / "ray" / "cka" / path.name).matrix,
                                   CKAResult.load(path).matrix, rtol=1e-12, atol=1e-12)
    errors = [json.loads((tmp_path / d / "analysis/errors.json").read_text())["examples"] for d in ("ray", "local")]
    assert errors[0]["statistic"] == errors[1]["statistic"]


def test_ray_resumes_and_recomputes_only_what_is_missing(local_ray, tmp_path):
    config = config_from_dict(TABLE)
    root = tmp_path / "exp"
    run_experiment(config, root, threads=1, quiet=True)  # finished locally...
    name = config.runs[0].name
    (root / "cka" / f"{name}.npz").unlink()
    again = run_experiment(config, root, executor="ray", quiet=True)  # ... completed through Ray
    group = config.runs[0].group
    assert sorted(again.computed) == sorted([f"cka/{name}", f"blocks/{name}", f"stability/{group}", "summary", "claims", "report"])
