"""CKA heatmaps: `heatmap` (one model or two) and `population_heatmaps` (many), their saved results
`CKAResult` and `PopulationResult`, and their drawing.

    compute   the heatmaps over data (batches, tokens, devices, measures: its docstring)
    result    CKAResult, PopulationResult: the arrays, saved as .npz
    figures   plot_heatmap, plot_heatmap_grid: a heatmap in the paper's style (matplotlib only here)

``from ckatlas.heatmap import heatmap, CKAResult`` reads as it always has.
"""

from ckatlas.capture.gram_passes import GramPasses
from ckatlas.capture.minibatches import Minibatches
from ckatlas.heatmap.compute import heatmap, population_heatmaps
from ckatlas.heatmap.result import CKAResult, PopulationResult

__all__ = ["CKAResult", "GramPasses", "Minibatches", "PopulationResult", "heatmap", "population_heatmaps"]
