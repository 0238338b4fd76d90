"""Figures (matplotlib, never shown) and the self-contained HTML report.

Plot functions take an optional `ax`, return it, and only read results. A section of your own:

    from ckatlas.report import ReportData, Section, para, report_section

    @report_section(95)                              # its place on the page (lower first)
    def mine(data: ReportData) -> Section | None:    # None: nothing to show for this experiment
        return Section("mine", "My section", para(f"{len(data.models)} models"))
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
from ckatlas.heatmap.figures import plot_heatmap, plot_heatmap_grid
from ckatlas.report._page import (
    HOVER_SCRIPT,
    ReportData,
    Section,
    esc,
    figure_html,
    para,
    report_section,
    table_html,
    unregister_section,
)
from ckatlas.report.html import render_report, write_report

__all__ = [
    "HOVER_SCRIPT",
    "ReportData",
    "Section",
    "esc",
    "figure_html",
    "para",
    "report_section",
    "table_html",
    "unregister_section",
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
