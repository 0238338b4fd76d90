"""ckatlas: do wide and deep networks learn the same things?

CKA maps, block structure, principal components, probes, pruning and error
analyses for families of PyTorch models (Nguyen, Raghu & Kornblith, ICLR 2021).
"""

import importlib as _importlib
import sys as _sys

from ckatlas._version import __version__
from ckatlas.heatmap import CKAResult, heatmap, population_heatmaps

__all__ = ["CKAResult", "__version__", "heatmap", "population_heatmaps"]

#: Modules that earlier releases kept at the package root, and where they live now. Their old
#: names still import (``from ckatlas.summary import read_summary``) and are the same modules.
MOVED_MODULES = {f"{__name__}.{old}": f"{__name__}.{new}" for old, new in {
    "files": "io.files",
    "formats": "io.formats",
    "results": "io.results",
    "rundir": "io.rundir",
    "summary": "io.summary",
    "tokens": "capture.tokens",
    "cpu": "runtime.cpu",
    "devices": "runtime.devices",
    "seeding": "runtime.seeding",
}.items()}
for _old, _new in MOVED_MODULES.items():
    _sys.modules[_old] = _importlib.import_module(_new)
    globals()[_old.rsplit(".", 1)[1]] = _sys.modules[_old]
