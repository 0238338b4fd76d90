"""The positive control of the instrument: silenced residual branches make a block known by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ckatlas.analysis.controls import DEFINITIONS, plant_block, planted_control, silence_blocks, silenced_control
from ckatlas.data import load_dataset
from ckatlas.errors import UserInputError
from ckatlas.models import create_model
from ckatlas.train import TrainConfig, load_run, train


def test_a_silenced_block_passes_its_input_through_and_the_original_is_untouched() -> None:
    model = create_model("resnet20", width=0.5, num_classes=10, in_channels=1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    silenced = silence_blocks(model, ["stage2.1", "stage2.2"]).eval()
    seen: dict[str, torch.Tensor] = {}
    for name in ("stage2.0", "stage2.1", "stage2.2", "stage3.0"):
        silenced.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    with torch.no_grad():
        silenced(torch.rand(8, 1, 16, 16))
    assert torch.equal(seen["stage2.0"], seen["stage2.1"]) and torch.equal(seen["stage2.1"], seen["stage2.2"])
    assert not torch.equal(seen["stage2.2"].mean(), seen["stage3.0"].mean())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # a copy was silenced
    with pytest.raises(UserInputError, match="'stage2.0' is not a residual block with an identity shortcut"):
        silence_blocks(model, ["stage2.0"])  # the first block of a stage changes the width
    with pytest.raises(UserInputError, match="no module 'stage9.1'"):
        silence_blocks(model, ["stage9.1"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("control") / "r20"
    train(TrainConfig(arch="resnet20", width=1, epochs=4, seed=3), run_dir, quiet=True, device="cpu")
    return run_dir


def test_the_known_run_is_identical_and_each_definition_is_checked_against_it(trained: Path) -> None:
    run = load_run(trained)
    x = load_dataset("digits").x_test[:256]
    result = silenced_control(run.model, x, ["stage2.1", "stage2.2"])
    assert result.true_layers == ["stage2.0.relu", "stage2.1.relu", "stage2.2.relu"]
    assert result.mean_inside_after == pytest.approx(1.0, abs=1e-6)  # identical outputs: CKA 1 by construction
    assert result.mean_inside_before < 1.0 - 1e-3  # and not before silencing
    rows = [result.after.layers_a.index(n) for n in result.true_layers]
    np.testing.assert_allclose(result.after.matrix[np.ix_(rows, rows)], 1.0, atol=1e-6)
    assert [o.definition for o in result.outcomes] == list(DEFINITIONS)
    for outcome in result.outcomes:  # the outcome is what the detector finds, read back here
        before, after = result.results[outcome.definition]
        spans = [(b.start, b.end) for b in after.blocks]
        assert outcome.exact == ((rows[0], rows[-1]) in spans)
        assert outcome.found == [(after.layer_names[a], after.layer_names[b]) for a, b in spans]
    assert "known run: stage2.0.relu .. stage2.2.relu (3 layers); changed stage2.1, stage2.2" in result.lines()[0]


def test_the_control_refuses_blocks_that_are_not_consecutive(trained: Path) -> None:
    run = load_run(trained)
    x = load_dataset("digits").x_test[:64]
    with pytest.raises(UserInputError, match="not consecutive"):
        silenced_control(run.model, x, ["stage2.1", "stage3.1"], batch_size=32)


def test_a_planted_dominant_direction_is_a_block_with_known_borders_that_both_definitions_find(trained: Path) -> None:
    run = load_run(trained)
    x = load_dataset("digits").x_test[:256]
    result = planted_control(run.model, x, ["stage2.0", "stage2.1", "stage2.2"], share=0.8)
    names = result.after.layers_a
    rows = [names.index(n) for n in result.true_layers]
    outside = [i for i in range(len(names)) if i not in rows]
    # the network computes what it did: every layer outside the run is as before
    np.testing.assert_allclose(result.after.matrix[np.ix_(outside, outside)],
                               result.before.matrix[np.ix_(outside, outside)], atol=1e-6)
    assert result.mean_inside_after > 0.99 and result.mean_outside_after < result.mean_outside_before - 0.1
    for outcome in result.outcomes:  # both definitions find it at its exact extent
        assert outcome.exact, outcome
    with torch.no_grad():  # the planted model's logits are the trained model's
        torch.testing.assert_close(plant_block(run.model, ["stage2.0", "stage2.1"], calibration=x[:64])(x[:32]),
                                   run.model.eval()(x[:32]), rtol=1e-5, atol=1e-5)
    with pytest.raises(UserInputError, match="not consecutive"):
        plant_block(run.model, ["stage2.0", "stage3.1"], calibration=x[:64])
    with pytest.raises(UserInputError, match="share must be in"):
        plant_block(run.model, ["stage2.0"], share=1.5, calibration=x[:64])
