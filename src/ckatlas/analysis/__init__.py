"""Analyses of CKA maps and model populations: block structure, principal components,
linear probes, block deletion, cross-model averages, errors.

Each analysis is a module with pure functions and a result dataclass that saves itself.
"""

from ckatlas.analysis.across import AveragedCKA, LayerMatch, average_heatmaps, match_layers, population_cka
from ckatlas.analysis.blocks import Block, BlockDetector, BlockResult, find_blocks, find_threshold_blocks
from ckatlas.analysis.stability import BlockStability, block_stability
from ckatlas.analysis.error_compare import (
    ErrorComparison,
    ErrorSettings,
    ExampleLevel,
    GroupLevel,
    class_correct_counts,
    compare_populations,
    mean_squared_difference,
    per_example_accuracy,
)
from ckatlas.analysis.pca import PCAResult, PCScatter, pc_scatter, principal_components
from ckatlas.analysis.populations import Population, load_class_groups, load_predictions
from ckatlas.analysis.probes import ProbeResult, ProbeSettings, default_probe_layers, linear_probes, pool_features, validation_split
from ckatlas.analysis.prune import PruneResult, PruneSettings, PruneStep, deletion_order, mark_blocks, prune_blocks

__all__ = [
    "AveragedCKA",
    "Block",
    "BlockDetector",
    "BlockResult",
    "BlockStability",
    "ErrorComparison",
    "ExampleLevel",
    "GroupLevel",
    "LayerMatch",
    "PCAResult",
    "PCScatter",
    "Population",
    "ProbeResult",
    "PruneResult",
    "PruneStep",
    "average_heatmaps",
    "block_stability",
    "class_correct_counts",
    "compare_populations",
    "default_probe_layers",
    "deletion_order",
    "find_blocks",
    "find_threshold_blocks",
    "linear_probes",
    "ProbeSettings",
    "ErrorSettings",
    "PruneSettings",
    "load_class_groups",
    "load_predictions",
    "mark_blocks",
    "match_layers",
    "mean_squared_difference",
    "pc_scatter",
    "per_example_accuracy",
    "pool_features",
    "population_cka",
    "principal_components",
    "prune_blocks",
    "validation_split",
]
