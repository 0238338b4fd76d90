"""Figures (matplotlib, never shown) and the self-contained HTML report.

Plot functions take an optional `ax`, return it, and only read results.
"""

from ckatlas.report.block_figures import outline_blocks, plot_block_frequency, plot_blocks
from ckatlas.report.error_figures import plot_class_differences, plot_example_scatter

__all__ = [
    "outline_blocks",
    "plot_block_frequency",
    "plot_blocks",
    "plot_class_differences",
    "plot_example_scatter",
]
