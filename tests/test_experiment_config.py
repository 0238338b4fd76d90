"""Experiment files: every preset validates; every mistake is one clear error before any work."""

from __future__ import annotations

import dataclasses
import json
import sys
import tomllib
from pathlib import Path

import pytest

from ckatlas.cli import main
from ckatlas.errors import UserInputError
from ckatlas.experiment import (
    ExperimentStore,
    GridConfig,
    config_from_dict,
    list_presets,
    load_config,
    plan,
    preset_path,
    run_experiment,
    to_toml,
)
from ckatlas.experiment.plan import is_done, pending
from ckatlas.experiment.schema import from_table, to_table
from ckatlas.analysis import BlockDetector


def _base() -> dict:
    return {
        "name": "t",
        "dataset": {"name": "digits"},
        "grid": [{"depths": [8, 14], "widths": [0.25, 0.5], "seeds": [0, 1]}],
        "train": {"epochs": 1},
        "cka": {"num_examples": 64},
    }


def _error(table: dict) -> str:
    with pytest.raises(UserInputError) as exc:
        config_from_dict(table, "x.toml")
    message = str(exc.value)
    assert "\n" not in message and message.startswith("x.toml: ")
    return message


# -- presets -----------------------------------------------------------------------------------
def test_the_issue_presets_are_shipped():
    assert {"demo", "paper-depth", "paper-width", "paper-data-size", "paper-no-residual", "paper-errors"} <= set(
        list_presets()
    )


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_validates_and_round_trips(name):
    config = load_config(name)
    assert config.name == name and config.description
    assert config_from_dict(config.to_dict()) == config
    assert config_from_dict(tomllib.loads(to_toml(config))) == config
    assert len({r.name for r in config.runs}) == len(config.runs) >= 1
    plan(config)  # every analysis the preset asks for can be planned


def test_paper_presets_match_the_paper():
    depth = load_config("paper-depth")
    assert depth.dataset.name == "cifar10"
    assert sorted(r.depth for r in depth.runs) == [26, 44, 56, 110, 164] and {r.width for r in depth.runs} == {1.0}
    width = load_config("paper-width")
    assert {r.depth for r in width.runs} == {38} and sorted(r.width for r in width.runs) == [1, 2, 4, 8, 10]
    assert {r.fraction for r in load_config("paper-data-size").runs} == {1.0, 0.25, 0.0625}
    assert {r.residual for r in load_config("paper-no-residual").runs} == {False, True}
    errors = load_config("paper-errors").analyses.errors
    assert (errors.population_a.depth, errors.population_a.width) == (62, 1.0)
    assert (errors.population_b.depth, errors.population_b.width) == (14, 2.0)


def test_demo_has_two_seeds_of_the_widest_models():
    config = load_config("demo")
    assert config.dataset.name == "digits"
    widest = max(r.width for r in config.runs)
    assert all(len({r.seed for r in runs}) >= 2 for g, runs in config.groups.items() if runs[0].width == widest)
    assert len({r.depth for r in config.runs}) >= 2 and len({r.width for r in config.runs}) >= 2


def test_cli_lists_and_shows_presets(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out if not line.startswith(" ")] == list_presets()  # then what it needs
    assert main(["presets", "--show", "demo"]) == 0
    assert capsys.readouterr().out == preset_path("demo").read_text()


def test_load_config_reads_a_file_and_rejects_unknown_names(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(to_toml(config_from_dict(_base())))
    assert load_config(path) == config_from_dict(_base())
    with pytest.raises(UserInputError, match="not a preset name .*demo"):
        load_config("no-such-preset")
    path.write_text("name = [")
    with pytest.raises(UserInputError, match="not valid TOML"):
        load_config(path)


# -- the grid ----------------------------------------------------------------------------------
def test_runs_are_the_union_of_the_grids_without_repeats():
    table = _base()
    table["grid"] = [
        {"depths": [8, 14], "widths": [0.25], "seeds": [0]},
        {"depths": [14], "widths": [0.25, 1], "seeds": [0, 1], "fractions": [1.0, 0.5]},
    ]
    config = config_from_dict(table)
    expected = {(8, 0.25, 0, 1.0), (14, 0.25, 0, 1.0)} | {
        (14, w, s, f) for w in (0.25, 1.0) for s in (0, 1) for f in (1.0, 0.5)
    }
    assert {(r.depth, r.width, r.seed, r.fraction) for r in config.runs} == expected
    assert len(config.runs) == len(expected)
    names = [r.name for r in config.runs]
    assert "resnet14-w0.25-s0" in names and "resnet14-w1-f0.5-s1" in names
    assert config.groups["resnet14-w1-f0.5"] == [r for r in config.runs if r.name.startswith("resnet14-w1-f0.5-")]


def test_a_single_grid_table_is_accepted():
    table = _base()
    table["grid"] = table["grid"][0]
    assert config_from_dict(table).grid == config_from_dict(_base()).grid


def test_no_residual_runs_are_cnns():
    table = _base()
    table["grid"][0]["residual"] = [False]
    run = config_from_dict(table).runs[0]
    assert run.arch == "cnn8" and run.model_name == "cnn8"
    assert config_from_dict(_base()).train_config(config_from_dict(_base()).runs[0]).arch == "cifar_resnet8"


def test_train_settings_reach_the_train_config():
    table = _base()
    table["train"] = {"epochs": 3, "lr": 0.05, "nesterov": True}
    table["grid"][0]["fractions"] = [0.5]
    config = config_from_dict(table)
    run = config.runs[-1]
    tc = config.train_config(run)
    assert (tc.epochs, tc.lr, tc.nesterov, tc.seed, tc.width, tc.fraction, tc.dataset) == (
        3, 0.05, True, run.seed, run.width, 0.5, "digits"
    )


# -- mistakes: one line, naming the key and its table ------------------------------------------
@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda t: t.update(nmae="x"), r"unknown key 'nmae' in the top level; did you mean 'name'\?"),
        (lambda t: t["grid"][0].update(depth=[8]), r"unknown key 'depth' in \[grid\]; did you mean 'depths'\?"),
        (lambda t: t["cka"].update(layer="all"), r"unknown key 'layer' in \[cka\].*allowed keys: layers"),
        (lambda t: t["train"].update(epoch=2), r"unknown key 'epoch' in \[train\]; did you mean 'epochs'\?"),
        (lambda t: t.update(analyses={"pcaa": True}), r"unknown key 'pcaa' in \[analyses\]; did you mean 'pca'\?"),
        (lambda t: t.update(analyses={"blocks": {"treshold": 0.9}}), r"unknown key 'treshold' in \[analyses.blocks\]"),
        (lambda t: t["dataset"].update(data="x"), r"unknown key 'data' in \[dataset\]"),
    ],
)
def test_unknown_keys_name_the_key_the_table_and_a_close_match(edit, expected):
    table = _base()
    edit(table)
    assert pytest.raises(UserInputError, config_from_dict, table).match(expected)


def test_a_bad_depth_names_valid_depths():
    table = _base()
    table["grid"][0]["depths"] = [8, 21]
    assert "depth 21 in [grid] is not 6n+2" in _error(table)
    assert "8, 14, 20, 26" in _error(table)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda t: t["grid"][0].update(depths=8), "depths in [grid] must be a non-empty list"),
        (lambda t: t["grid"][0].update(depths=[]), "depths in [grid] must be a non-empty list"),
        (lambda t: t["grid"][0].update(depths=[8.5]), "each entry of depths in [grid] must be an integer"),
        (lambda t: t["grid"][0].update(residual=[1]), "must be true or false"),
        (lambda t: t["grid"][0].update(widths=[0]), "width 0 in [grid] must be > 0"),
        (lambda t: t["grid"][0].update(fractions=[1.5]), "fraction 1.5 in [grid] must be in (0, 1]"),
        (lambda t: t["grid"][0].update(fractions=[0]), "fraction 0 in [grid] must be in (0, 1]"),
        (lambda t: t["grid"][0].update(seeds=[0, 0]), "seeds in [grid] lists 0 more than once"),
        (lambda t: t["grid"][0].update(seeds=[-1]), "seed -1 in [grid] must be >= 0"),
        (lambda t: t.pop("grid"), "missing [[grid]]"),
        (lambda t: t.pop("name"), 'missing key "name"'),
        (lambda t: t["dataset"].update(name="svhn"), "unknown dataset 'svhn'"),
        (lambda t: t["cka"].update(layers="some"), "layers in [cka] must be one of 'blocks', 'all'"),
        (lambda t: t["cka"].update(batch_size=2), "batch_size in [cka] must be >= 4"),
        (lambda t: t["cka"].update(measure="cca"), "measure in [cka] must be one of cka, cka-rbf, cka-debiased, "
                                                   "procrustes, knn, rsa, svcca, got 'cca'"),
        (lambda t: t["train"].update(seed=3), "seed cannot be set in [train]: it comes from seeds in [[grid]]"),
        (lambda t: t["train"].update(lr=-1.0), "[train]: lr must be a number > 0"),
        (lambda t: t["train"].update(epochs="3"), "epochs in [train] must be an integer"),
        (lambda t: t.update(analyses={"blocks": {"threshold": 1.5}}), "[analyses.blocks]: threshold must be in (0, 1]"),
    ],
)
def test_bad_values_are_one_clear_error(edit, expected):
    table = _base()
    edit(table)
    assert expected in _error(table)


def test_a_second_grid_is_named_in_errors():
    table = _base()
    table["grid"].append({"depths": [9]})
    assert "depth 9 in [[grid]] #2" in _error(table)


# -- impossible combinations -------------------------------------------------------------------
def _errors(a: dict, b: dict) -> dict:
    table = _base()
    table["analyses"] = {"errors": {"population_a": a, "population_b": b}}
    return table


def test_errors_analysis_needs_populations_of_the_grid_with_two_seeds():
    config = config_from_dict(_errors({"depth": 14, "width": 0.5}, {"depth": 8, "width": 0.5}))
    assert config.analyses.errors.population_a.label == "resnet14-w0.5"
    assert "population_a in [analyses.errors] (resnet62-w1) is not in the grid; the grid has resnet8-w0.25" in _error(
        _errors({"depth": 62}, {"depth": 8, "width": 0.5})
    )
    table = _errors({"depth": 14, "width": 0.5}, {"depth": 8, "width": 0.5})
    table["grid"][0]["seeds"] = [0]
    assert "has 1 seed in the grid; comparing errors needs at least 2 seeds" in _error(table)
    assert "are the same architecture" in _error(_errors({"depth": 8, "width": 0.5}, {"depth": 8, "width": 0.5}))
    assert "missing key 'population_b' in [analyses.errors]" in _error(
        {**_base(), "analyses": {"errors": {"population_a": {"depth": 8}}}}
    )


def test_cross_seed_needs_an_architecture_with_two_seeds():
    table = {**_base(), "analyses": {"cross_seed": True}}
    assert config_from_dict(table).analyses.cross_seed is not None
    table["grid"][0]["seeds"] = [0]
    assert "no architecture of the grid has 2 or more seeds" in _error(table)


def test_analyses_turn_on_by_table_or_true_and_off_by_false():
    on = config_from_dict({**_base(), "analyses": {"pca": True, "cross_seed": {"pairs": "all"}}}).analyses
    assert on.enabled == ["untrained", "cross_seed", "blocks", "pca"] and on.cross_seed.pairs == "all"  # plan order
    off = config_from_dict({**_base(), "analyses": {"pca": False}}).analyses
    assert off.enabled == ["untrained", "blocks"]  # always on: the untrained baseline and the blocks


def test_prune_needs_residual_networks_and_probes_sane_settings():
    table = {**_base(), "analyses": {"prune": True, "probes": {"val_fraction": 0.3}}}
    config = config_from_dict(table)
    assert config.analyses.probes.val_fraction == 0.3 and config.analyses.prune.finetune_epochs == 0
    assert {s.kind for s in plan(config)} >= {"probes", "prune"}
    table["grid"][0]["residual"] = [False]
    assert "[analyses.prune] deletes residual blocks, but the grid has no residual network" in _error(table)
    table = {**_base(), "analyses": {"probes": {"val_fraction": 1.0}}}
    assert "val_fraction in [analyses.probes] must be in (0, 1)" in _error(table)


def test_probes_can_be_limited_to_some_seeds():
    table = {**_base(), "analyses": {"probes": {"seeds": [1]}}}
    config = config_from_dict(table)
    probed = [s.runs[0] for s in plan(config) if s.kind == "probes"]
    assert len(probed) == 4 and {r.seed for r in probed} == {1}
    everyone = [s for s in plan(config_from_dict({**_base(), "analyses": {"probes": True}})) if s.kind == "probes"]
    assert len(everyone) == 8
    table["analyses"]["probes"]["seeds"] = [1, 7]
    assert "seeds in [analyses.probes] lists seed(s) [7] that no run of the grid has (the grid's seeds: [0, 1])" in (
        _error(table))


def test_dynamics_is_checked_and_follows_cka_layers_and_the_block_detector():
    table = {**_base(), "analyses": {"dynamics": {"seeds": [1]}, "blocks": {"min_score": 0.6, "threshold": 0.95}}}
    config = config_from_dict(table)
    recorded = [s.runs[0] for s in plan(config) if s.kind == "dynamics"]
    assert recorded and {r.seed for r in recorded} == {1}
    settings = config.analyses.dynamics.settings(config)
    assert settings.layers == config.cka.layers and settings.epochs is None
    assert settings.detector == BlockDetector(min_score=0.6, threshold=0.95)
    epochs = config.train_config(config.runs[0]).epochs
    table["analyses"]["dynamics"] = {"epochs": [0, epochs + 1]}
    assert f"epochs in [analyses.dynamics] must be epochs in [0, {epochs}]" in _error(table)
    table["analyses"]["dynamics"] = {"layers": "some"}
    assert "layers in [analyses.dynamics] must be one of 'all', 'blocks'" in _error(table)
    table["analyses"]["dynamics"] = {"examples": 3}
    assert "examples in [analyses.dynamics] must be >= 4" in _error(table)


def test_prune_steps_skip_networks_without_residual_connections():
    table = _base()
    table["grid"][0]["residual"] = [True, False]
    table["analyses"] = {"prune": True}
    pruned = [s.runs[0] for s in plan(config_from_dict(table)) if s.kind == "prune"]
    assert pruned and all(r.residual for r in pruned)


def test_prune_can_be_limited_to_some_runs_and_follows_a_seed_offset():
    table = {**_base(), "analyses": {"prune": {"depths": [14], "seeds": [1]}}}
    config = config_from_dict(table)
    pruned = [s.runs[0] for s in plan(config) if s.kind == "prune"]
    assert sorted((r.depth, r.width, r.seed) for r in pruned) == [(14, 0.25, 1), (14, 0.5, 1)]
    shifted = config.with_seed_offset(10)
    assert shifted.analyses.prune.seeds == (11,)
    assert sorted(r.seed for s in plan(shifted) if s.kind == "prune" for r in s.runs) == [11, 11]
    table["analyses"]["prune"] = {"depths": [20]}
    assert "[analyses.prune] selects no run of the grid" in _error(table)


def test_cifar_without_data_dir_fails_before_any_work(tmp_path):
    config = config_from_dict({**_base(), "dataset": {"name": "cifar10"}})
    with pytest.raises(UserInputError, match="cifar10 dataset needs a data directory"):
        run_experiment(config, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_too_many_cka_examples_fails_before_any_work(tmp_path):
    config = config_from_dict({**_base(), "cka": {"num_examples": 10_000}})
    with pytest.raises(UserInputError, match="num_examples in \\[cka\\] is 10000, but the digits test split has 445"):
        run_experiment(config, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_ray_executor_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserInputError, match=r"pip install 'ckatlas\[ray\]'"):
        run_experiment(config_from_dict(_base()), tmp_path / "out", executor="ray", quiet=True)
    assert not (tmp_path / "out").exists()


def test_unknown_executor_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="unknown executor 'slurm'"):
        run_experiment(config_from_dict(_base()), tmp_path / "out", executor="slurm")


# -- the experiment directory ------------------------------------------------------------------
def test_a_directory_holds_one_experiment(tmp_path):
    config = config_from_dict(_base())
    store = ExperimentStore(tmp_path / "exp")
    store.claim(config)
    store.claim(config)  # the same experiment again: fine
    store.claim(config.replace(description="now described"))  # the description does not count
    changed = config.replace(grid=(dataclasses.replace(config.grid[0], seeds=(0, 1, 2)),))
    with pytest.raises(UserInputError, match=r"holds a different experiment \(grid.*seeds"):
        store.claim(changed)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not empty and holds no ckatlas experiment"):
        ExperimentStore(other).claim(config)


def test_an_experiment_recorded_before_the_untrained_baseline_is_the_same_experiment(tmp_path):
    store = ExperimentStore(tmp_path / "exp")
    config = config_from_dict(_base())
    store.claim(config)
    record_file = tmp_path / "exp" / "experiment.json"
    record = json.loads(record_file.read_text())
    assert record["config"]["analyses"].pop("untrained") == {}
    del record["version"]  # as an earlier release wrote it
    record_file.write_text(json.dumps(record))
    store.claim(config)  # resumable: the untrained steps are simply missing, and computed
    assert [s.key for s in pending(plan(config), store) if s.kind == "untrained"]


def test_an_experiment_recorded_before_border_fraction_keeps_its_detector(tmp_path):
    """A record written before `border_fraction` existed judged borders with `min_fraction` (10%): it is
    that experiment with border_fraction 0.1, not with today's default, and says so in one line."""
    store = ExperimentStore(tmp_path / "exp")
    store.claim(config_from_dict(_base()))
    record_file = tmp_path / "exp" / "experiment.json"
    record = json.loads(record_file.read_text())
    assert record["config"]["analyses"]["blocks"].pop("border_fraction") == 0.15
    del record["version"]  # as an earlier release wrote it
    record_file.write_text(json.dumps(record))
    with pytest.raises(UserInputError, match=r"analyses\.blocks\.border_fraction was 0\.1, now 0\.15"):
        store.claim(config_from_dict(_base()))
    store.claim(config_from_dict({**_base(), "analyses": {"blocks": {"border_fraction": 0.1}}}))  # the same detector


def test_pending_recomputes_what_is_missing_and_everything_downstream(tmp_path):
    config = config_from_dict({**_base(), "analyses": {"pca": True, "cross_seed": True}})
    store = ExperimentStore(tmp_path)
    steps = plan(config)
    keys = [s.key for s in steps]
    for step in steps:  # every step listed after the steps it reads from
        assert all(keys.index(n) < keys.index(step.key) for n in step.needs)
    assert [s.key for s in pending(steps, store)] == keys  # nothing there: everything

    for step in steps:  # pretend every step is done
        for output in step.outputs:
            if step.kind == "train":
                _fake_finished_run(store.path(output))
            else:
                store.path(output).parent.mkdir(parents=True, exist_ok=True)
                store.path(output).write_text("x")
    assert all(is_done(s, store) for s in steps) and pending(steps, store) == []

    store.path(store.cka_file("resnet14-w0.5-s1")).unlink()
    assert [s.key for s in pending(steps, store)] == [
        "cka/resnet14-w0.5-s1", "blocks/resnet14-w0.5-s1", "stability/resnet14-w0.5", "summary", "claims"
    ] + (["report"] if "report" in keys else [])

    (store.path(store.run_dir("resnet8-w0.25-s1")) / "metrics.json").write_text('{"final": null}')  # unfinished run
    todo = {s.key for s in pending(steps, store)}
    assert {"train/resnet8-w0.25-s1", "cka/resnet8-w0.25-s1", "pca/resnet8-w0.25-s1",
            "cross/resnet8-w0.25-s0__resnet8-w0.25-s1", "stability/resnet8-w0.25"} <= todo
    assert not any(k.endswith("resnet8-w0.5-s0") for k in todo)


def _fake_finished_run(run_dir: Path) -> None:
    # whole files of the right formats: a finished run's weights and predictions are checked to be intact
    import numpy as np
    import torch
    from safetensors.torch import save_file

    run_dir.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(run_dir / "model.safetensors"))
    np.savez(run_dir / "predictions.npz", logits=np.zeros((2, 2)), labels=np.zeros(2))
    (run_dir / "config.json").write_text("{}")
    (run_dir / "metrics.json").write_text('{"final": {"test_accuracy": 0.5}}')


# -- the TOML schema machinery -----------------------------------------------------------------
def test_schema_round_trip_and_type_errors():
    grid = from_table(GridConfig, {"depths": [8], "widths": [1, 0.5]}, "[grid]")
    assert grid.widths == (1.0, 0.5) and isinstance(grid.widths[0], float)
    assert from_table(GridConfig, to_table(grid), "[grid]") == grid
    with pytest.raises(UserInputError, match=r"\[grid\] must be a table"):
        from_table(GridConfig, [1], "[grid]")
    with pytest.raises(UserInputError, match="missing key 'depths' in \\[grid\\]"):
        from_table(GridConfig, {}, "[grid]")


# -- the command line --------------------------------------------------------------------------
def test_cli_user_errors_are_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(to_toml(config_from_dict(_base())).replace("depths = [8, 14]", "depths = [8, 15]"))
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "depth 15 in [grid] is not 6n+2" in err
    assert not (tmp_path / "out").exists()
    assert main(["run", "paper-depth", "--out", str(tmp_path / "out")]) == 2
    assert "cifar10 dataset needs a data directory" in capsys.readouterr().err


def test_cli_dry_run_lists_steps_without_work(tmp_path, capsys):
    path = tmp_path / "e.toml"
    path.write_text(to_toml(config_from_dict(_base())))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "todo  train/resnet8-w0.25-s0" and "todo  summary" in lines
    assert not (tmp_path / "out").exists()


def test_a_seed_offset_is_a_replication_on_other_seeds():
    config = load_config("fashion-study")
    shifted = config.with_seed_offset(100)
    assert sorted({r.seed for r in shifted.runs}) == [s + 100 for s in sorted({r.seed for r in config.runs})]
    assert len(shifted.runs) == len(config.runs) and shifted.name == "fashion-study-seed+100"
    assert shifted.analyses.probes.seeds == tuple(s + 100 for s in config.analyses.probes.seeds)
    assert [(r.depth, r.width, r.fraction) for r in shifted.runs] == [(r.depth, r.width, r.fraction) for r in config.runs]
    assert config.with_seed_offset(0) is config
    with pytest.raises(UserInputError, match="seed offset must be an integer >= 0"):
        config.with_seed_offset(-1)
