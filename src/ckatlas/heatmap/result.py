"""The saved results of `ckatlas.heatmap`: `CKAResult` (one heatmap) and `PopulationResult` (every pair of
a set of models), each an .npz of its arrays with a JSON header (`ckatlas.io.results`, `ckatlas.io.formats`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ckatlas.errors import UserInputError
from ckatlas.io.files import atomic_open
from ckatlas.io.formats import tag, upgrade
from ckatlas.io.results import NpzResult, read_result_npz

POPULATION_FORMAT = "ckatlas.PopulationResult"


# -- results -------------------------------------------------------------------------------
@dataclass
class CKAResult(NpzResult):
    """A CKA heatmap: layers of model A (rows) against layers of model B (columns).

    Attributes:
        matrix: (La, Lb) float64 minibatch CKA; NaN for a layer with zero variance.
        layers_a, layers_b: layer names of the rows and columns, input to output.
        standard_error: (La, Lb) standard error from the spread of per-batch CKA.
        n: examples per pass.
        num_batches: minibatches over all passes.
        passes: passes over the data.
        model_a, model_b: names of the two models (the same for one model).
        is_square: True when a model is compared with itself (symmetric, unit diagonal).
        metadata: settings and versions (JSON-able).
    """

    WHAT = "a CKAResult"
    FORMAT = "ckatlas.CKAResult"  # files of earlier releases (version 0) carry no tag
    ARRAYS = ("matrix", "standard_error")

    matrix: np.ndarray
    layers_a: list[str]
    layers_b: list[str]
    standard_error: np.ndarray
    n: int
    num_batches: int
    passes: int
    model_a: str = "model_a"
    model_b: str = "model_a"
    is_square: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.float64)
        self.standard_error = np.asarray(self.standard_error, dtype=np.float64)
        self.layers_a, self.layers_b = list(self.layers_a), list(self.layers_b)
        shape = (len(self.layers_a), len(self.layers_b))
        if self.matrix.shape != shape or self.standard_error.shape != shape:
            raise UserInputError(
                f"a CKA matrix of shape {self.matrix.shape} (standard errors {self.standard_error.shape}) does not "
                f"fit {shape[0]} x {shape[1]} layer names"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """(La, Lb)."""
        return self.matrix.shape

    @property
    def measure(self) -> str:
        """The similarity measure of the matrix (`ckatlas.cka.measures`; "cka" for results saved before there were others)."""
        return str(self.metadata.get("measure", "cka"))

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Draw the heatmap (`ckatlas.report.plot_heatmap`; layer names, stage boundaries, colour bar).

        Returns the matplotlib axes; save with ``res.plot().figure.savefig("cka.png")``.
        """
        from ckatlas.heatmap.figures import plot_heatmap  # matplotlib only when drawing

        return plot_heatmap(self, ax, **kwargs)

    def _repr_png_(self) -> bytes:
        """The heatmap as PNG: what a Jupyter notebook shows for a result on its own line."""
        from ckatlas.heatmap.figures import figure_png

        return figure_png(self.plot(), dpi=100)

    def transpose(self) -> CKAResult:
        """The same comparison with the roles of the models swapped."""
        return CKAResult(
            self.matrix.T.copy(), self.layers_b, self.layers_a, self.standard_error.T.copy(), self.n,
            self.num_batches, self.passes, self.model_b, self.model_a, self.is_square, dict(self.metadata),
        )


@dataclass
class PopulationResult:
    """Every within- and cross-model CKA heatmap of a set of models.

    `results[(a, b)]` exists for each pair with a at or before b in `names`;
    `result[a, b]` also answers the reverse order (transposed).
    """

    names: list[str]
    results: dict[tuple[str, str], CKAResult]

    def __getitem__(self, key: tuple[str, str]) -> CKAResult:
        a, b = key
        if (a, b) in self.results:
            return self.results[(a, b)]
        if (b, a) in self.results:
            return self.results[(b, a)].transpose()
        raise KeyError(f"no heatmap for ({a!r}, {b!r}); models are {self.names}")

    def within(self, name: str) -> CKAResult:
        """The heatmap of one model with itself."""
        return self[name, name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the names and each pair's `CKAResult.to_dict()`."""
        return {"names": self.names, "results": [r.to_dict() for r in self.results.values()]}

    def save(self, path: str | Path) -> Path:
        """Write all heatmaps to one `.npz` (no pickle), atomically."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        headers = []
        for k, ((a, b), res) in enumerate(self.results.items()):
            arrays[f"matrix_{k}"], arrays[f"standard_error_{k}"] = res.matrix, res.standard_error
            headers.append({"pair": [a, b], **res.fields()})
        header = np.array(json.dumps({**tag(POPULATION_FORMAT), "names": self.names, "results": headers}))
        with atomic_open(path, "wb") as fh:
            np.savez(fh, header=header, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PopulationResult:
        """Read what `save` wrote."""
        arrays = read_result_npz(path, ("header",), "a PopulationResult")
        try:
            header = json.loads(str(arrays["header"]))
            header = upgrade(POPULATION_FORMAT, header, "a PopulationResult")
        except (UserInputError, json.JSONDecodeError, AttributeError) as exc:
            raise UserInputError(f"{path}: {exc}") from None
        results = {}
        for k, h in enumerate(header["results"]):
            parts = {"matrix": arrays[f"matrix_{k}"], "standard_error": arrays[f"standard_error_{k}"]}
            results[tuple(h["pair"])] = CKAResult.from_parts(h, parts)
        return cls(header["names"], results)


__all__ = ["POPULATION_FORMAT", "CKAResult", "PopulationResult"]
