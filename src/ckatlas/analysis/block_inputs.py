"""What the block detector reads (`ckatlas.analysis.blocks`): one model's square CKA matrix from a result
or an array, checked, and the analysed layers picked from it."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ckatlas.analysis.block_rules import dead_layers
from ckatlas.errors import UserInputError


def as_matrix(cka_matrix: Any, layer_names: Sequence[str] | None) -> tuple[np.ndarray, list[str] | None]:
    names = layer_names
    source = cka_matrix
    if hasattr(cka_matrix, "matrix"):
        source = cka_matrix.matrix
        layers_a = getattr(cka_matrix, "layers_a", None)
        layers_b = getattr(cka_matrix, "layers_b", None)
        cross = getattr(cka_matrix, "is_square", True) is False
        if cross or (layers_a is not None and layers_b is not None and list(layers_a) != list(layers_b)):
            raise UserInputError(
                "block structure needs one model's layers against themselves; this CKA result compares "
                "two models or two layer lists"
            )
        if names is None and layers_a is not None:
            names = list(layers_a)
    try:
        matrix = np.array(source, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserInputError(
            f"expected a square CKA matrix of numbers (or an object with .matrix), got {type(source).__name__}"
        ) from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise UserInputError(f"expected a square (L, L) CKA matrix, got shape {matrix.shape}")
    if np.isinf(matrix).any():
        raise UserInputError("the CKA matrix holds infinities; expected values in [0, 1] (NaN for dead layers)")
    if np.nanmax(matrix, initial=0.0) > 1.0 + 1e-6:
        raise UserInputError(
            f"the CKA matrix holds values above 1 (max {np.nanmax(matrix):.4g}); expected CKA values in [0, 1]"
        )
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != matrix.shape[0]:
            raise UserInputError(f"{len(names)} layer names for a matrix of {matrix.shape[0]} layers")
    check_dead_layers(matrix, names)
    return matrix, names


def check_dead_layers(matrix: np.ndarray, names: list[str] | None) -> None:
    """No finite CKA at all is an error; layers without one (dead, zero variance) are a warning."""
    dead = np.flatnonzero(dead_layers(matrix))
    if matrix.shape[0] > 1 and len(dead) == matrix.shape[0]:  # not one finite value between two layers
        raise UserInputError(
            f"the {matrix.shape[0]} x {matrix.shape[0]} CKA matrix holds no finite value between two layers (all NaN): "
            "every layer had zero variance, or this is not a CKA matrix; nothing to find blocks in"
        )
    if len(dead):
        shown = [names[i] if names is not None else int(i) for i in dead[:5]]
        warnings.warn(
            f"{len(dead)} of {matrix.shape[0]} layers have no finite CKA (dead layers, zero variance) and cannot be "
            f"in a block: {shown}{' ...' if len(dead) > 5 else ''}",
            RuntimeWarning,
            stacklevel=4,
        )


def select_layers(layers: Sequence[str | int] | None, names: list[str] | None, size: int) -> np.ndarray:
    if layers is None:
        return np.arange(size)
    if isinstance(layers, str):
        layers = [layers]
    chosen = []
    for layer in layers:
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if not 0 <= layer < size:
                raise UserInputError(f"layer index {layer} does not exist; the matrix has layers 0..{size - 1}")
            chosen.append(int(layer))
        elif names is None:
            raise UserInputError(
                f"layer {layer!r} given by name, but the matrix has no layer names (pass layer_names=)"
            )
        elif layer not in names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise UserInputError(f"layer {layer!r} does not exist; known layers: {shown}")
        else:
            chosen.append(names.index(layer))
    if len(set(chosen)) != len(chosen):
        raise UserInputError("the same layer is listed twice in layers=")
    if len(chosen) < 2:
        raise UserInputError(f"block structure needs at least 2 layers, got {len(chosen)}")
    return np.array(sorted(chosen))


__all__ = ["as_matrix", "check_dead_layers", "select_layers"]
