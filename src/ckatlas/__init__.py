"""ckatlas: do wide and deep networks learn the same things?

CKA maps, block structure, principal components, probes, pruning and error
analyses for families of PyTorch models (Nguyen, Raghu & Kornblith, ICLR 2021).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
