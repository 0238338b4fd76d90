"""The step registry: an analysis added from outside the package is one registration, and the
config parser, the plan, resume, the summary and the report all pick it up."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from ckatlas.capture import capture_activations
from ckatlas.errors import UserInputError
from ckatlas.experiment import config_from_dict, plan, run_experiment
from ckatlas.experiment.registry import Step, StepKind, register_step, unregister_step
from ckatlas.experiment.steps import test_inputs as experiment_inputs
from ckatlas.io.files import atomic_write_json
from ckatlas.train import load_run

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class MeanActivationConfig:
    """[analyses.mean_activation]: the mean activation of one layer over the test inputs."""

    layer: str = "pool"


def _plan(config, earlier):
    return [Step("mean_activation", f"mean_activation/{r.name}", (f"analysis/mean_activation/{r.name}.json",),
                 (f"train/{r.name}",), (r,)) for r in config.runs]


def _compute(step, ctx, store):
    run = step.runs[0]
    settings = ctx.config.analyses.mean_activation
    model = load_run(store.run(run.name).path).model
    acts = capture_activations(model, [settings.layer], experiment_inputs(ctx.config))[settings.layer]
    atomic_write_json(store.path(step.outputs[0]), {"format": "test.MeanActivation", "layer": settings.layer,
                                                    "mean": float(acts.mean())})


@pytest.fixture
def registered():
    kind = register_step(StepKind("mean_activation", _plan, _compute, settings=MeanActivationConfig,
                                  uses_models=True, description="mean activation", after=("train",)))
    yield kind
    unregister_step("mean_activation")


TABLE = {
    "name": "registry-test",
    "grid": {"depths": [8], "widths": [0.25], "seeds": [0, 1], "fractions": [0.25]},
    "train": {"epochs": 1, "batch_size": 64},
    "cka": {"num_examples": 64, "batch_size": 32},
    "analyses": {"mean_activation": {"layer": "stage3.0.relu"}},
}


def test_a_registered_analysis_runs_resumes_and_reaches_the_report(registered, tmp_path):
    config = config_from_dict(TABLE)
    assert config.analyses.mean_activation == MeanActivationConfig("stage3.0.relu")
    keys = [s.key for s in plan(config)]
    assert keys.index("mean_activation/resnet8-w0.25-f0.25-s0") > keys.index("train/resnet8-w0.25-f0.25-s0")
    assert keys[-3:] == ["summary", "claims", "report"]  # the driver steps stay last

    root = tmp_path / "exp"
    run_experiment(config, root, quiet=True, threads=1)
    name = "resnet8-w0.25-f0.25-s1"
    result = json.loads((root / "analysis" / "mean_activation" / f"{name}.json").read_text())
    model = load_run(root / "runs" / name).model
    direct = capture_activations(model, ["stage3.0.relu"], experiment_inputs(config))["stage3.0.relu"]
    assert result["mean"] == pytest.approx(float(direct.mean()))
    summary = json.loads((root / "summary.json").read_text())
    entry = next(m for m in summary["models"] if m["name"] == name)
    assert entry["paths"]["mean_activation"] == f"analysis/mean_activation/{name}.json"
    assert "mean_activation" in summary["analyses"]["enabled"]
    page = (root / "report" / "index.html").read_text()
    assert '<section id="analysis-mean_activation">' in page and f"{result['mean']:.4g}" in page

    (root / "analysis" / "mean_activation" / f"{name}.json").unlink()  # resume: only that piece and what reads it
    again = run_experiment(config, root, quiet=True, threads=1)
    assert again.computed == [f"mean_activation/{name}", "summary", "claims", "report"]
    assert json.loads((root / "analysis" / "mean_activation" / f"{name}.json").read_text()) == result


def test_a_registered_analysis_settings_are_checked_like_the_built_in_ones(registered):
    with pytest.raises(UserInputError, match=r"unknown key 'layers' in \[analyses.mean_activation\]"):
        config_from_dict({**TABLE, "analyses": {"mean_activation": {"layers": "pool"}}})
    without = config_from_dict({**TABLE, "analyses": {}})
    assert without.analyses.mean_activation is None
    assert not any(s.kind == "mean_activation" for s in plan(without))


def test_the_plan_follows_each_kinds_after_not_the_order_of_registration():
    def late_plan(config, earlier):
        return [Step("late", f"late/{r.name}", (f"analysis/late/{r.name}.json",), (f"mean_activation/{r.name}",), (r,))
                for r in config.runs]

    register_step(StepKind("late", late_plan, _compute, settings=MeanActivationConfig, after=("mean_activation",)))
    try:
        with pytest.raises(ValueError, match="'late' comes after 'mean_activation', which is not registered"):
            plan(config_from_dict(TABLE))
        register_step(StepKind("mean_activation", _plan, _compute, settings=MeanActivationConfig, after=("train",)))
        keys = [s.key for s in plan(config_from_dict({**TABLE, "analyses": {"mean_activation": {}, "late": {}}}))]
        name = "resnet8-w0.25-f0.25-s0"
        assert keys.index(f"train/{name}") < keys.index(f"mean_activation/{name}") < keys.index(f"late/{name}")
        assert keys[-3:] == ["summary", "claims", "report"]
        unregister_step("mean_activation")
        register_step(StepKind("mean_activation", _plan, _compute, settings=MeanActivationConfig, after=("late",)))
        with pytest.raises(ValueError, match="make a circle: late after mean_activation, mean_activation after late"):
            plan(config_from_dict({**TABLE, "analyses": {"mean_activation": {}, "late": {}}}))
        unregister_step("mean_activation")
        unregister_step("late")
        register_step(StepKind("late", late_plan, _compute, settings=MeanActivationConfig))  # no `after`
        register_step(StepKind("mean_activation", _plan, _compute, settings=MeanActivationConfig, after=("train",)))
        with pytest.raises(ValueError, match="step late/resnet8.* reads mean_activation/.*must name mean_activation"):
            plan(config_from_dict({**TABLE, "analyses": {"mean_activation": {}, "late": {}}}))
    finally:
        unregister_step("late")
        unregister_step("mean_activation")


def test_an_unregistered_analysis_is_an_unknown_key():
    with pytest.raises(UserInputError, match=r"unknown key 'mean_activation' in \[analyses\]"):
        config_from_dict(TABLE)
