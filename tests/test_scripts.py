"""The research scripts that produced REPRODUCTION.md's evidence run, from any working directory, on a tiny
finished experiment trained on all of its data (fraction 1.0: run names without "-f")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_experiment import tiny_toml

from ckatlas.experiment import run_experiment

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TOML = tiny_toml("scripts-smoke")  # fraction 1.0: run names without "-f"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scripts")
    (folder / "tiny.toml").write_text(TOML)
    run_experiment(folder / "tiny.toml", folder / "exp", quiet=True, threads=1, jobs=1)
    return folder / "exp"


def _script(cwd: Path, *args: str) -> str:
    """Run a script with this interpreter from `cwd` (not the repository); its stdout."""
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_reproduction_tables_and_figures(experiment: Path, tmp_path: Path) -> None:
    out = _script(tmp_path, str(SCRIPTS / "reproduction.py"), f"{experiment}=smoke", "--figures", "figs",
                  "--permutations", "200")
    assert "| claim |" in out and "| width |" in out
    assert {p.name for p in (tmp_path / "figs").iterdir()} >= {"smoke-heatmaps.png", "smoke-trend.png"}
    assert "does not hold" not in out  # one vocabulary: holds / contradicted / not established


def test_reproduction_renders_the_experiments_own_claims_under_each_definition(experiment: Path, tmp_path: Path) -> None:
    out = _script(tmp_path, str(SCRIPTS / "reproduction.py"), f"{experiment}=choosing", f"{experiment}=confirming",
                  "--saved", "--figures", "figs")
    table = out.split("### The trend claims under each definition")[1].split("###")[0]
    rows = [line for line in table.splitlines() if line.startswith("| width |") or line.startswith("| depth |")]
    assert [row.split(" | ")[1] for row in rows] == ["paper", "stands out", "definition-free"] * 2
    saved = json.loads((experiment / "claims.json").read_text())
    width = next(c for c in saved["claims"] if c["key"] == "width")["details"]["definitions"]["paper"]
    assert f"{width['value']:+.2f}" in rows[0] and width["verdict"] in rows[0]  # the saved numbers, not new ones
    assert all(row.endswith("| raw yes, minus untrained yes |") for row in rows)  # the same set twice replicates


def test_redecide_runs_from_any_folder(experiment: Path, tmp_path: Path) -> None:
    out = _script(tmp_path, str(SCRIPTS / "redecide.py"), f"{experiment}=smoke", "--permutations", "200")
    assert "width" in out and "border 15% (the default)" in out


def test_blind_labels_draw_every_heatmap_at_fraction_one_and_compare(experiment: Path, tmp_path: Path) -> None:
    out = _script(tmp_path, str(SCRIPTS / "blind" / "labels.py"), "draw", str(experiment), "--depths", "8,14",
                  "--out", "labels.png")
    assert "drew 8 heatmaps" in out and (tmp_path / "labels.png").stat().st_size > 0
    names = sorted(p.stem for p in (experiment / "cka").glob("*.npz"))
    (tmp_path / "labels.txt").write_text("".join(f"{name} {i % 3}\n" for i, name in enumerate(names)))
    out = _script(tmp_path, str(SCRIPTS / "blind" / "labels.py"), "compare", str(experiment), "labels.txt")
    assert out.strip()


def test_block_gallery(experiment: Path, tmp_path: Path) -> None:
    _script(tmp_path, str(SCRIPTS / "block_gallery.py"), str(experiment), "--out", "gallery", "--cache", "cache",
            "--columns", "4")
    listing = json.loads((tmp_path / "gallery" / "gallery.json").read_text())
    assert len(listing["heatmaps"]) == 8 and (tmp_path / "gallery" / "gallery-own-range.png").is_file()


def test_measure_survival(experiment: Path, tmp_path: Path) -> None:
    assert _script(tmp_path, str(SCRIPTS / "measures" / "survival.py"), str(experiment), str(experiment)).strip()


def test_regime_table_of_nothing_yet(tmp_path: Path) -> None:
    out = _script(tmp_path, str(SCRIPTS / "regime" / "measure.py"), "--out", "regime", "--table-only")
    assert out.startswith("| recipe | model |")


def test_regime_control_figure_draws_every_model_trained_and_untrained(experiment: Path, tmp_path: Path) -> None:
    out = _script(tmp_path, str(SCRIPTS / "regime" / "control_figure.py"), str(experiment), "--png", "control.png")
    lines = out.strip().splitlines()
    assert len(lines) == 16 and (tmp_path / "control.png").stat().st_size > 0  # 8 models, trained and untrained
    name = sorted(p.stem for p in (experiment / "cka").glob("*.npz"))[0]
    with np.load(experiment / "cka" / f"{name}.npz") as npz:
        matrix = npz["matrix"]
    mean = np.nanmean(matrix[~np.eye(len(matrix), dtype=bool)])
    assert f"{name} trained:" in out and f"mean off-diagonal {mean:.3f}" in next(l for l in lines if l.startswith(f"{name} trained"))
