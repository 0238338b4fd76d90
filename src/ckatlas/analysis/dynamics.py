"""Block structure through training: the within-model heatmap at chosen epochs.

The paper asks how the block structure arises during training. `train(...,
dynamics=DynamicsSettings())` answers it for one run without saving a checkpoint
per epoch: at each chosen epoch (0 is the initialisation) the model, as training
left it, is run once over a fixed probe set (the first `examples` test images,
in eval mode, under `torch.inference_mode()`), and from that one pass come
the minibatch CKA heatmap over its layers and each layer's first-PC variance share
(both from the same Grams, `measure`); the block detector (`find_blocks`) then gives the block fraction and the
blocks. Training itself is unchanged: the pass draws no random numbers and
updates no BatchNorm statistics, so a run trains to the same weights with or
without it.

The record is `dynamics.npz` in the run directory (`BlockDynamics`), rewritten
after each recorded epoch, so that a resumed run keeps the epochs it already has.

Default epochs (`default_epochs`): 0, then 1, 2, 4, 8, ... (doubling) and the last
epoch: a handful, dense early, where the representations move most.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ckatlas.analysis.blocks import BlockDetector, BlockResult
from ckatlas.capture import LayerSpec
from ckatlas.cka import MinibatchCKA
from ckatlas.errors import UserInputError
from ckatlas.capture.gram_passes import GramPasses
from ckatlas.io.results import NpzResult
from ckatlas.io.rundir import RunDir


def default_epochs(total: int) -> tuple[int, ...]:
    """0, the powers of two below `total`, and `total` (e.g. 15: 0, 1, 2, 4, 8, 15)."""
    epochs, e = {0, total}, 1
    while e < total:
        epochs.add(e)
        e *= 2
    return tuple(sorted(epochs))


@dataclass(frozen=True)
class DynamicsSettings:
    """What to record while training (module docstring).

    Attributes:
        epochs: epochs after which to record (0: before the first step); None: `default_epochs`.
        examples: probe images (the first of the test split).
        layers: the heatmap's layers ("all", "blocks", names, globs).
        batch_size: minibatch of the CKA estimator (at least 4).
        detector: the block detector (`BlockDetector`).
        tokens: how a token sequence becomes one example's representation (`ckatlas.capture.tokens`).
    """

    epochs: tuple[int, ...] | None = None
    examples: int = 256
    layers: LayerSpec = "all"
    batch_size: int = 256
    detector: BlockDetector = BlockDetector()
    tokens: str = "auto"

    def resolved_epochs(self, total: int) -> tuple[int, ...]:
        """The epochs to record in a run of `total` epochs, checked."""
        if self.epochs is None:
            return default_epochs(total)
        bad = [e for e in self.epochs if not isinstance(e, (int, np.integer)) or not 0 <= e <= total]
        if bad:
            raise UserInputError(f"dynamics epochs must be integers in [0, {total}] (0: initialisation), got {bad}")
        return tuple(sorted(set(int(e) for e in self.epochs)))

    def recorder(self, data: Any, total_epochs: int, run_dir: str | Path) -> DynamicsRecorder:
        """The epoch callback `train(dynamics=self)` calls: records into `run_dir`'s dynamics.npz,
        probing with the first `examples` test images of `data`."""
        run_dir = Path(run_dir)
        return DynamicsRecorder(self, data.x_test[: self.examples], total_epochs, RunDir(run_dir).dynamics,
                                {"run": run_dir.name})

    def check(self) -> None:
        if self.examples < 4:
            raise UserInputError(f"dynamics examples must be >= 4 (the unbiased CKA estimator), got {self.examples}")
        if self.batch_size < 4:
            raise UserInputError(f"dynamics batch_size must be >= 4, got {self.batch_size}")


@dataclass
class BlockDynamics(NpzResult):
    """The heatmap, the blocks and the first-PC variance of one run at several epochs.

    Attributes:
        epochs: (E,) the recorded epochs (0: initialisation).
        layers: the L layer names (the same at every epoch).
        cka: (E, L, L) the heatmap at each epoch.
        variance_explained: (E, L) each layer's first-PC share of its variance.
        block_fraction: (E,) share of the layers inside a block.
        block_strength: (E,) the same share weighted by each block's score.
        block_area: (E,) the block fraction averaged over min_score 0.05 .. 1 (`BlockResult.block_area`;
            found again from the stored heatmaps for records of earlier releases).
        blocks: per epoch, the blocks as [first, last] layer indices (inclusive).
        metadata: probe set size, detector settings, the run's name, and "seconds": the
            time each epoch's record took.
    """

    FORMAT = "ckatlas.BlockDynamics"
    WHAT = "a block dynamics record (dynamics.npz)"
    ARRAYS = ("epochs", "cka", "variance_explained", "block_fraction")

    epochs: np.ndarray
    layers: list[str]
    cka: np.ndarray
    variance_explained: np.ndarray
    block_fraction: np.ndarray
    blocks: list[list[list[int]]]
    metadata: dict[str, Any] = field(default_factory=dict)
    block_strength: np.ndarray | None = None
    block_area: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.epochs = np.asarray(self.epochs, dtype=np.int64).reshape(-1)
        size, count = len(self.layers), len(self.epochs)
        self.cka = np.asarray(self.cka, dtype=np.float64).reshape(count, size, size)
        self.variance_explained = np.asarray(self.variance_explained, dtype=np.float64).reshape(count, size)
        self.block_fraction = np.asarray(self.block_fraction, dtype=np.float64).reshape(count)
        strength = np.full(count, np.nan) if self.block_strength is None else self.block_strength
        self.block_strength = np.asarray(strength, dtype=np.float64).reshape(count)
        if self.block_area is None:  # not given (a record of version 0): from its heatmaps, by its detector
            saved = self.metadata.get("detector") or {}
            detector = BlockDetector.from_dict(saved) if "method" in saved else BlockDetector()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self.block_area = np.array([detector.find(m).block_area for m in self.cka])
        self.block_area = np.asarray(self.block_area, dtype=np.float64).reshape(count)
        if len(self.blocks) != count:
            raise UserInputError(f"{self.WHAT}: {len(self.blocks)} block lists for {count} epochs")

    def fields(self) -> dict[str, Any]:
        return {"layers": self.layers, "blocks": self.blocks, "metadata": self.metadata}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"epochs": self.epochs, "cka": self.cka, "variance_explained": self.variance_explained,
                "block_fraction": self.block_fraction, "block_strength": self.block_strength,
                "block_area": self.block_area}

    @classmethod
    def from_parts(cls, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> BlockDynamics:
        return cls(arrays["epochs"], header["layers"], arrays["cka"], arrays["variance_explained"],
                   arrays["block_fraction"], header["blocks"], header["metadata"], arrays["block_strength"],
                   arrays.get("block_area"))  # none in a record of version 0: found from its heatmaps

    def redetect(self, detector: BlockDetector) -> BlockDynamics:
        """The same record with the blocks of every epoch found again by `detector` (from the stored heatmaps)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # dead layers: NaN CKA, never in a block
            found = [detector.find(matrix, layer_names=self.layers) for matrix in self.cka]
        return BlockDynamics(self.epochs, self.layers, self.cka, self.variance_explained,
                             [f.block_fraction for f in found], [_spans(f) for f in found],
                             {**self.metadata, "detector": detector.to_dict()}, [f.block_strength for f in found],
                             [f.block_area for f in found])

    def mean_variance_explained(self) -> np.ndarray:
        """(E,) each epoch's mean first-PC variance share over the layers that have one (NaN: none has)."""
        v = self.variance_explained
        alive = np.isfinite(v)
        return np.where(alive.any(axis=1), np.where(alive, v, 0.0).sum(axis=1) / np.maximum(alive.sum(axis=1), 1),
                        np.nan)

    def summary(self) -> str:
        """One line per recorded epoch: block fraction, blocks, mean first-PC variance."""
        lines = [f"block structure through training ({len(self.layers)} layers, "
                 f"{self.metadata.get('examples', '?')} probe images):"]
        pc1 = self.mean_variance_explained()
        for i, epoch in enumerate(self.epochs):
            spans = ", ".join(f"{a}-{b}" for a, b in self.blocks[i]) or "none"
            lines.append(f"  epoch {int(epoch):>4}  block fraction {self.block_fraction[i]:.2f}  "
                         f"strength {self.block_strength[i]:.2f}  area {self.block_area[i]:.2f}  blocks {spans:<14}"
                         f"  mean PC1 variance {pc1[i]:.2f}")
        return "\n".join(lines)


def measure(model: nn.Module, probe: torch.Tensor, settings: DynamicsSettings,
            device: torch.device | str | None = None) -> tuple[list[str], np.ndarray, np.ndarray, BlockResult]:
    """One epoch's record: (layers, heatmap, first-PC variance, blocks).

    One pass over the probe images (`ckatlas.capture.gram_passes.GramPasses`): each batch's centred Grams
    feed the minibatch CKA estimator, and each layer's first-PC share of its variance is the
    top eigenvalue of its centred Gram over the Gram's trace (`top_eigenvalue`), averaged over
    batches weighted by their size (exact for a probe set of one batch, the default).
    """
    loop = GramPasses([model], ["model"], [settings.layers], probe, min(settings.batch_size, len(probe)), 1,
                      False, 0, device, tokens=settings.tokens, desc="dynamics")
    acc: MinibatchCKA | None = None
    share = weight = None
    for (grams,) in loop:
        if acc is None:
            acc = MinibatchCKA(grams.shape[0], device=loop.device)
        acc.update_grams(grams)
        trace = torch.diagonal(grams, dim1=1, dim2=2).double().sum(-1)
        alive = trace > 0
        ratio = torch.where(alive, top_eigenvalue(grams).double() / trace.clamp_min(1e-300), torch.zeros_like(trace))
        n = grams.shape[-1]
        share = ratio * n * alive if share is None else share + ratio * n * alive
        weight = alive.double() * n if weight is None else weight + alive.double() * n
    assert acc is not None and share is not None and weight is not None  # the loop raises without a batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # dead layers: NaN CKA, no block
        matrix = acc.compute().cpu().numpy()
    variance = torch.where(weight > 0, share / weight.clamp_min(1), torch.nan).cpu().numpy()
    layers = loop.names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # dead layers were warned about by the estimator
        found = settings.detector.find(matrix, layer_names=layers)
    return layers, matrix, variance, found


def _spans(found: BlockResult) -> list[list[int]]:
    return [[int(b.start), int(b.end)] for b in found.blocks]


def top_eigenvalue(grams: torch.Tensor, steps: int = 16) -> torch.Tensor:
    """The largest eigenvalue of each symmetric positive semi-definite (n, n) matrix of
    `grams` (L, n, n), from a Krylov subspace of `steps` dimensions (Lanczos with full
    re-orthogonalisation, then Rayleigh-Ritz): `steps` + 1 products with each matrix instead
    of a full eigendecomposition, which would cost as much as the heatmap itself. The Ritz
    value never exceeds the eigenvalue; the tests check it against `torch.linalg.eigvalsh`.
    """
    n = grams.shape[-1]
    steps = min(steps, n)
    q = torch.linspace(1.0, 2.0, n, dtype=grams.dtype, device=grams.device).expand(grams.shape[0], n).unsqueeze(-1)
    basis = q / q.norm(dim=1, keepdim=True)
    for _ in range(steps - 1):
        w = grams @ basis[:, :, -1:]
        for _ in range(2):  # twice is enough (Kahan): the basis stays orthonormal to rounding
            w = w - basis @ (basis.transpose(1, 2) @ w)
        basis = torch.cat([basis, w / w.norm(dim=1, keepdim=True).clamp_min(1e-300)], dim=2)
    ritz = (basis.transpose(1, 2) @ (grams @ basis)).double()
    return torch.linalg.eigvalsh((ritz + ritz.transpose(1, 2)) / 2)[:, -1]


class DynamicsRecorder:
    """Records `BlockDynamics` into `path` as training reaches each chosen epoch.

    Args:
        settings: what to record.
        probe: the probe images (N, ...), on the model's device or the CPU.
        total_epochs: the run's epochs.
        path: the record's file; an existing record (a resumed run) is continued.
        metadata: stored with the record.
    """

    def __init__(self, settings: DynamicsSettings, probe: torch.Tensor, total_epochs: int, path: str | Path,
                 metadata: dict[str, Any] | None = None) -> None:
        settings.check()
        self.settings, self.probe, self.path = settings, probe, Path(path)
        self.epochs = settings.resolved_epochs(total_epochs)
        self.metadata = {"examples": len(probe), "layers": str(settings.layers),
                         "detector": settings.detector.to_dict(), **(metadata or {})}
        self.record: BlockDynamics | None = BlockDynamics.load(self.path) if self.path.is_file() else None

    def wants(self, epoch: int) -> bool:
        done = set() if self.record is None else set(int(e) for e in self.record.epochs)
        return epoch in self.epochs and epoch not in done

    def __call__(self, model: nn.Module, epoch: int, device: torch.device | str | None = None) -> None:
        """Record `epoch` if it is one of the chosen epochs (and not recorded yet)."""
        if not self.wants(epoch):
            return
        started = time.perf_counter()
        layers, cka, variance, found = measure(model, self.probe, self.settings, device)
        fraction, spans, strength, area = found.block_fraction, _spans(found), found.block_strength, found.block_area
        seconds = time.perf_counter() - started
        old = self.record
        if old is None:
            self.record = BlockDynamics([epoch], layers, cka[None], variance[None], [fraction], [spans],
                                        {**self.metadata, "seconds": [seconds]}, [strength], [area])
        else:
            if old.layers != layers:
                raise UserInputError(f"{self.path} was recorded on other layers; delete it to record again")
            self.record = BlockDynamics(
                np.append(old.epochs, epoch), layers, np.concatenate([old.cka, cka[None]]),
                np.concatenate([old.variance_explained, variance[None]]), np.append(old.block_fraction, fraction),
                [*old.blocks, spans], {**old.metadata, "seconds": [*old.metadata.get("seconds", []), seconds]},
                np.append(old.block_strength, strength), np.append(old.block_area, area))
        self.record.save(self.path)


__all__ = [
    "BlockDynamics", "DynamicsRecorder", "DynamicsSettings", "default_epochs", "measure",
    "top_eigenvalue",
]
