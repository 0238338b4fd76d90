"""ckatlas: do wide and deep networks learn the same things?

CKA maps, block structure, principal components, probes, pruning and error
analyses for families of PyTorch models (Nguyen, Raghu & Kornblith, ICLR 2021).
"""

__version__ = "0.1.0"

from ckatlas.heatmap import CKAResult, heatmap, population_heatmaps  # noqa: E402 (needs __version__)

__all__ = ["CKAResult", "__version__", "heatmap", "population_heatmaps"]
