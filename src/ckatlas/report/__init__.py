"""Figures (matplotlib, never shown) and the self-contained HTML report.

Plot functions take an optional `ax`, return it, and only read results.
"""

from ckatlas.report.analysis_figures import (
    plot_averaged_heatmap,
    plot_pc_heatmaps,
    plot_pc_scatter,
    plot_pc_variance,
    plot_probe_accuracy,
    plot_pruning,
)
from ckatlas.report.block_figures import outline_blocks, plot_block_frequency, plot_blocks
from ckatlas.report.error_figures import plot_class_differences, plot_example_scatter
from ckatlas.report.headline import trend_sentences
from ckatlas.heatmap_figures import plot_heatmap, plot_heatmap_grid
from ckatlas.report._page import HOVER_SCRIPT
from ckatlas.report.html import render_report, write_report

__all__ = [
    "HOVER_SCRIPT",
    "outline_blocks",
    "plot_averaged_heatmap",
    "plot_block_frequency",
    "plot_blocks",
    "plot_class_differences",
    "plot_example_scatter",
    "plot_heatmap",
    "plot_heatmap_grid",
    "plot_pc_heatmaps",
    "plot_pc_scatter",
    "plot_pc_variance",
    "plot_probe_accuracy",
    "plot_pruning",
    "render_report",
    "trend_sentences",
    "write_report",
]
