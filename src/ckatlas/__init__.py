"""ckatlas: do wide and deep networks learn the same things?

CKA maps, block structure, principal components, probes, pruning and error
analyses for families of PyTorch models (Nguyen, Raghu & Kornblith, ICLR 2021).
"""

from ckatlas._version import __version__
from ckatlas.heatmap import CKAResult, heatmap, population_heatmaps

__all__ = ["CKAResult", "__version__", "heatmap", "population_heatmaps"]
