"""Analyses of CKA maps and model populations: block structure, errors.

Each analysis is a module with pure functions and a result dataclass that saves itself.
"""

from ckatlas.analysis.blocks import Block, BlockResult, BlockStability, block_stability, find_blocks
from ckatlas.analysis.errors import (
    ErrorComparison,
    ExampleLevel,
    GroupLevel,
    Population,
    class_correct_counts,
    compare_populations,
    load_class_groups,
    load_predictions,
    mean_squared_difference,
    per_example_accuracy,
)

__all__ = [
    "Block",
    "BlockResult",
    "BlockStability",
    "ErrorComparison",
    "ExampleLevel",
    "GroupLevel",
    "Population",
    "block_stability",
    "class_correct_counts",
    "compare_populations",
    "find_blocks",
    "load_class_groups",
    "load_predictions",
    "mean_squared_difference",
    "per_example_accuracy",
]
