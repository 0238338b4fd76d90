"""One verdict engine: an experiment decides the paper's claims once (its ``claims`` step writes claims.json),
and the report's headline, the terminal headline and ``ckatlas claims`` render that one result, for an
experiment of either detector kind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tiny_experiment import tiny_toml

from ckatlas.cli import main
from ckatlas.experiment import run_experiment
from ckatlas.experiment.claims import CLAIMS_FILE, ClaimsResult, evaluate_claims
from ckatlas.report.headline import headline_text
from ckatlas.io.summary import ExperimentSummary

TOML = tiny_toml("engine-{method}", grid="fractions = [0.5]", extra='[analyses.blocks]\nmethod = "{method}"')

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["contrast", "threshold"])
def experiment(request, tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp(request.param)
    (folder / "e.toml").write_text(TOML.format(method=request.param))
    run_experiment(folder / "e.toml", folder / "exp", quiet=True, threads=1, jobs=1)
    return folder / "exp", request.param


def test_the_headline_states_what_the_claims_decided(experiment, capsys) -> None:
    root, method = experiment
    saved = ClaimsResult.load(root / CLAIMS_FILE)
    again = json.loads(json.dumps([c.to_dict() for c in evaluate_claims(root).claims]))
    assert json.loads(json.dumps([c.to_dict() for c in saved.claims])) == again  # decided once, the same again
    tested = "block area" if method == "contrast" else "block fraction"  # what each detector kind's claims test
    text = headline_text(ExperimentSummary.load(root / "summary.json"), {c.key: c.to_dict() for c in saved.claims})
    page = (root / "report" / "index.html").read_text()
    for factor in ("width", "depth"):
        claim = saved[factor]
        assert tested in claim.statistic
        if claim.value is None:
            continue
        for shown in (text, page):
            line = next(x for x in re.split(r"\n|<p", shown) if f"{tested} against {factor}" in x)
            assert f"mean Spearman rho {claim.value:+.2f}" in line
            assert f"one-sided permutation p = {claim.p_value:.3g}" in line
            assert claim.details["agreement"].split(" (")[0] in line.replace("&#x27;", "'")
    assert main(["claims", str(root)]) == 0
    out = capsys.readouterr().out
    assert "as the experiment decided them" in out
    assert all(c.line() in out for c in saved.claims)


def test_each_model_has_its_heatmap_at_initialisation_and_the_claims_subtract_it(experiment) -> None:
    import numpy as np

    from ckatlas import heatmap
    from ckatlas.analysis.trend import trend_test
    from ckatlas.heatmap import CKAResult
    from ckatlas.train import initial_model, load_run

    root, _ = experiment
    models = ExperimentSummary.load(root / "summary.json").models
    run = load_run(root / models[0].path("run"))
    saved = CKAResult.load(root / "cka" / "untrained" / f"{models[0].name}.npz")
    data = run.config.load_data()
    again = heatmap(initial_model(run.config, data.num_classes, data.in_channels), data.x_test[: saved.n],
                    layers=saved.layers_a, batch_size=saved.metadata["batch_size"], seed=saved.metadata["seed"])
    np.testing.assert_allclose(saved.matrix, again.matrix, atol=1e-6)  # the run's own start, not any model
    trained = CKAResult.load(root / models[0].path("cka"))
    assert not np.allclose(saved.matrix, trained.matrix, atol=1e-3)

    def mean_off(m: np.ndarray) -> float:
        return float(np.nanmean(m[~np.eye(len(m), dtype=bool)]))

    claim = ClaimsResult.load(root / CLAIMS_FILE)["width"]
    differences = [mean_off(CKAResult.load(root / m.path("cka")).matrix)
                   - mean_off(CKAResult.load(root / "cka" / "untrained" / f"{m.name}.npz").matrix) for m in models]
    expected = trend_test(differences, [m.width for m in models], [(m.depth, m.fraction) for m in models])
    baseline = claim.details["definitions"]["definition-free"]["minus_untrained"]
    if np.isfinite(expected.statistic):
        assert baseline["value"] == expected.statistic and baseline["verdict"] == expected.verdict()
