"""The built-in step kinds: one module per kind (its settings table, plan, computation and output
paths), each registering itself when imported, as a user's step does; the registry imports none.

    train/<run>          runs/<run>/                     (ckatlas.train)
    cka/<run>            cka/<run>.npz                   <- train/<run>
    cross/<a>__<b>       cka/<a>__<b>.npz                <- train/<a>, train/<b>      [analyses.cross_seed]
    blocks/<run>         analysis/blocks/<run>.json      <- cka/<run>                 [analyses.blocks] (always)
    stability/<group>    analysis/stability/<group>.json <- blocks/<run> of the group's seeds
    pca/<run>            analysis/pca/<run>.npz          <- train/<run>               [analyses.pca]
    probes/<run>         analysis/probes/<run>.json      <- train/<run>               [analyses.probes]
    prune/<run>          analysis/prune/<run>.json       <- train/<run>, blocks/<run> [analyses.prune] (residual)
    dynamics/<run>       runs/<run>/dynamics.npz         <- train/<run> (recorded by it) [analyses.dynamics]
    errors               analysis/errors.json            <- train/<run> of both populations  [analyses.errors]
    summary              summary.json                    <- every other step
    report               report/index.html               <- summary
    origins/<run>        analysis/origins/<run>.npz      <- train/<run>, blocks/<run> [analyses.origins]

A step reads only files under the experiment directory (and the dataset), and
writes only its own outputs, atomically: it can run in this process, in a Ray
worker, or again after a crash, with the same result. Models run on
`StepContext.device`; every random choice comes from the config's seeds.
"""

# The plan's order comes from each kind's `after` (registry.step_kinds), not from this import order.
from ckatlas.experiment.steps._common import StepContext, execute, load_model, test_inputs
from ckatlas.experiment.steps import train, cka, blocks, pca, probes, prune, dynamics, errors, summary  # noqa: F401,I001
from ckatlas.experiment.steps import origins  # noqa: F401,E402
from ckatlas.experiment.steps.blocks import BlocksConfig
from ckatlas.experiment.steps.cka import CrossSeedConfig
from ckatlas.experiment.steps.dynamics import DynamicsConfig
from ckatlas.experiment.steps.errors import ErrorsConfig, PopulationConfig
from ckatlas.experiment.steps.origins import OriginsConfig
from ckatlas.experiment.steps.pca import PCAConfig
from ckatlas.experiment.steps.probes import ProbesConfig
from ckatlas.experiment.steps.prune import PruneConfig

__all__ = ["BlocksConfig", "CrossSeedConfig", "DynamicsConfig", "ErrorsConfig", "OriginsConfig", "PCAConfig",
           "PopulationConfig", "ProbesConfig", "PruneConfig", "StepContext", "execute", "load_model", "test_inputs"]
