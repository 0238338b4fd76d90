"""The ``dynamics`` step: block structure through training (``[analyses.dynamics]``,
`ckatlas.analysis.dynamics`). Recorded by the run's training (the ``train`` step passes these
settings to `ckatlas.train.train`); the step itself only checks that the record is there.

    dynamics/<run>       runs/<run>/dynamics.npz             <- train/<run> (recorded by it)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ckatlas.analysis.dynamics import DynamicsSettings
from ckatlas.errors import UserInputError
from ckatlas.experiment.analyses import RunSelection
from ckatlas.experiment.registry import Step, StepKind, register_step
from ckatlas.experiment.steps._common import StepContext, per_run, trained
from ckatlas.experiment.store import ExperimentStore
from ckatlas.io.rundir import DYNAMICS_FILE

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


@dataclass(frozen=True)
class DynamicsConfig(RunSelection):
    """`[analyses.dynamics]`: block structure through training (`ckatlas.analysis.dynamics`).

    Recorded while each run trains (not afterwards): at `epochs` (0: the initialisation;
    default 0, 1, 2, 4, ... and the last), the heatmap over `layers` (default: those of
    [cka]) of the first `examples`
    test images, its blocks (the detector of [analyses.blocks]) and each layer's first-PC
    variance, into the run's dynamics.npz. `seeds`, `depths`, `fractions` limit it to some runs.
    """

    epochs: tuple[int, ...] | None = DynamicsSettings.epochs  # the defaults of `DynamicsSettings`
    examples: int = DynamicsSettings.examples
    layers: Literal["all", "blocks"] | None = None

    def check(self, config: ExperimentConfig) -> None:
        self.check_selection(config, "[analyses.dynamics]")
        if self.examples < 4:
            raise UserInputError(f"examples in [analyses.dynamics] must be >= 4 (the unbiased CKA estimator), "
                                 f"got {self.examples}")
        if self.epochs is not None:
            last = min(config.train_config(r).epochs for r in config.runs if self.wants(r))
            bad = [e for e in self.epochs if not 0 <= e <= last]
            if bad or not self.epochs:
                raise UserInputError(f"epochs in [analyses.dynamics] must be epochs in [0, {last}] (0: the "
                                     f"initialisation), got {list(self.epochs)}")

    def settings(self, config: ExperimentConfig) -> DynamicsSettings:
        """The recorder's settings: these, with the layers of [cka] (unless set) and the detector of [analyses.blocks]."""
        layers = self.layers if self.layers is not None else config.cka.layers
        return DynamicsSettings(epochs=self.epochs, examples=self.examples, layers=layers,
                                detector=config.analyses.blocks.detector, tokens=config.cka.tokens)


def dynamics_file(run: str) -> str:
    return f"{ExperimentStore.run_dir(run)}/{DYNAMICS_FILE}"


def _compute(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    # Written by the run's training: missing only when deleted from a finished run, and training
    # again is the one way to get it back.
    if not store.path(step.outputs[0]).is_file():
        raise UserInputError(
            f"{step.outputs[0]} is missing from a finished run: block structure through training is recorded "
            f"while a run trains; delete {store.run_dir(step.runs[0].name)} to train it again with the record"
        )


register_step(StepKind("dynamics", per_run("dynamics", dynamics_file, trained,
                                           lambda c, r: c.analyses.dynamics.wants(r)), _compute,
                       settings=DynamicsConfig, resumable=True,  # its file is written by training: kept on resume
                       description="block structure through training", after=("train",)))

__all__ = ["DynamicsConfig", "dynamics_file"]
