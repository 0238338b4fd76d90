"""Experiments: grids of training runs, their CKA maps and analyses, in one resumable directory.

    from ckatlas.experiment import load_config, run_experiment
    config = load_config("demo")              # a preset, or a path to a TOML file
    run_experiment(config, "out/demo")        # again after a crash: only what is missing

Modules: `config` (the TOML schema), `presets` (shipped experiment files),
`store` (the directory layout), `plan` (steps and what they need), `steps`
(one module per step kind: what each computes), `summary` (summary.json), `executors` (local, Ray),
`pipeline` (`run_experiment`).
"""

from ckatlas.experiment.config import (
    AnalysesConfig,
    CKAConfig,
    DatasetConfig,
    ExperimentConfig,
    GridConfig,
    RunSpec,
    config_from_dict,
    load_config,
    to_toml,
    valid_depths,
)
# the built-in step kinds register themselves when their modules are imported, as a user's step does
from ckatlas.experiment.steps import (  # noqa: I001
    BlocksConfig,
    CrossSeedConfig,
    DynamicsConfig,
    ErrorsConfig,
    OriginsConfig,
    PCAConfig,
    PopulationConfig,
    ProbesConfig,
    PruneConfig,
)
from ckatlas.experiment.executors import EXECUTORS
from ckatlas.experiment.pipeline import ExperimentRun, check_ready, experiment_status, run_experiment
from ckatlas.experiment.plan import Step, plan
from ckatlas.experiment.presets import list_presets, preset_description, preset_path
from ckatlas.experiment.store import ExperimentStore

__all__ = [
    "AnalysesConfig",
    "BlocksConfig",
    "CKAConfig",
    "CrossSeedConfig",
    "DatasetConfig",
    "DynamicsConfig",
    "EXECUTORS",
    "ErrorsConfig",
    "ExperimentConfig",
    "ExperimentRun",
    "ExperimentStore",
    "GridConfig",
    "OriginsConfig",
    "PCAConfig",
    "PopulationConfig",
    "ProbesConfig",
    "PruneConfig",
    "RunSpec",
    "Step",
    "check_ready",
    "config_from_dict",
    "experiment_status",
    "list_presets",
    "load_config",
    "plan",
    "preset_description",
    "preset_path",
    "run_experiment",
    "to_toml",
    "valid_depths",
]
