"""How a claim is decided: `Claim` and `ClaimsResult` (what `evaluate_claims` returns and
`ckatlas claims --out` saves), the three kinds of claim definition (`TrendClaim`,
`PairedClaim`, `OwnClaim`) and `ClaimContext`, the finished experiment as the claims read it
(its models, their blocks by the chosen detector, and their saved analyses, each read once).
The paper's claims themselves are defined in `ckatlas.experiment.claims`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ckatlas.analysis import BlockDetector, BlockResult
from ckatlas.analysis.origins import BlockOrigins
from ckatlas.analysis.pca import PCAResult
from ckatlas.analysis.trend import min_sign_flip_p, paired_difference_test, trend_test, verdict
from ckatlas.heatmap import CKAResult
from ckatlas.io.results import JsonResult
from ckatlas.io.summary import ExperimentSummary, ModelEntry

SWEEPS = {"contrast": ("min_score", (0.3, 0.4, 0.5, 0.6, 0.7)), "threshold": ("threshold", (0.8, 0.85, 0.9, 0.95, 0.97))}
DEFAULT_SWEEP = SWEEPS["threshold"][1]  # earlier releases' name for the threshold sweep
DETECTORS = ("heatmap", "block-outputs")  # the rows `[analyses.blocks] on` can find blocks in


@dataclass
class Claim:
    """One claim of the paper, tested.

    Attributes:
        key: short name ("width", "depth", "data", "pc1-variance", ...).
        statement: the paper's claim in words.
        statistic: what was computed, in words.
        value: the statistic's value (None when untested).
        p_value: one-sided permutation p-value (None when untested).
        n: models (or pairs) the statistic is over.
        holds: True / False at `alpha`; None when the experiment cannot test it.
        note: why it is untested, or a detail worth knowing.
        details: the numbers behind it (per stratum, per threshold, ...).
        p_opposite: one-sided p-value in the direction against the paper's (None when untested, or
            from a release that did not record it).
        interval: 95% bootstrap interval of `value` over the replicates (seeds, pairs); None when
            there are none to resample.
        verdict: "holds" (significant in the paper's direction), "contradicted" (significant in the
            other direction), "not established" (neither) or "untested" (`ckatlas.analysis.trend`).
    """

    key: str
    statement: str
    statistic: str
    value: float | None = None
    p_value: float | None = None
    n: int = 0
    holds: bool | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    p_opposite: float | None = None
    interval: list[float] | None = None
    verdict: str = ""

    def __post_init__(self) -> None:
        if not self.verdict:  # a claim built without one (files of earlier releases: ckatlas.io.formats)
            self.verdict = "untested" if self.holds is None else "holds" if self.holds else "not established"

    def effect(self) -> str:
        """The value with its interval, e.g. ``+0.412 (95% CI +0.10 to +0.66)``."""
        ci = "" if not self.interval else f" (95% CI {self.interval[0]:+.2f} to {self.interval[1]:+.2f})"
        return f"{self.value:+.3f}{ci}"

    def line(self) -> str:
        other = self.details.get("compare")
        beside = ""
        if other is not None:
            if other["holds"] is None:
                beside = f"; {other['method']} rule: untested"
            else:
                beside = f"; {other['method']} rule: {other['verdict']} ({other['value']:+.3f}, p {other['p_value']:.3g}, n {other['n']})"
        if self.holds is None:
            return f"[untested] {self.key}: {self.note}{beside}"
        against = "" if self.p_opposite is None else f", the other way p = {self.p_opposite:.3g}"
        named = self.details.get("definitions")
        if named:
            beside += "; " + self.details["agreement"].split(" (")[0] + ": " + ", ".join(
                f"{name} {d['value']:+.2f} {d['verdict']}"
                + (f" (minus untrained {d['minus_untrained']['value']:+.2f} {d['minus_untrained']['verdict']})"
                   if "minus_untrained" in d else "") for name, d in named.items())
        return (f"[{self.verdict}] {self.key}: {self.statistic} = {self.effect()}, p = {self.p_value:.3g}{against}, "
                f"n = {self.n}" + (f" ({self.note})" if self.note else "") + beside)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("key", "statement", "statistic", "value", "p_value", "n", "holds",
                                               "note", "details", "p_opposite", "interval", "verdict")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Claim:
        return cls(data["key"], data["statement"], data["statistic"], data["value"], data["p_value"], int(data["n"]),
                   data["holds"], data["note"], dict(data["details"]), data["p_opposite"], data["interval"],
                   data["verdict"])


@dataclass
class ClaimsResult(JsonResult):
    """Every claim tested on one experiment (saved as claims.json by `ckatlas claims --out`)."""

    FORMAT = "ckatlas.Claims"
    WHAT = "a claims result"

    experiment: str
    claims: list[Claim]
    alpha: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Claim:
        for claim in self.claims:
            if claim.key == key:
                return claim
        raise KeyError(key)

    def summary(self) -> str:
        return "\n".join([f"claims of the paper on {self.experiment} (alpha {self.alpha}):"]
                         + [f"  {c.line()}" for c in self.claims])

    def fields(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "alpha": self.alpha, "claims": [c.to_dict() for c in self.claims],
                "metadata": self.metadata}

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> ClaimsResult:
        return cls(data["experiment"], [Claim.from_dict(c) for c in data["claims"]], float(data["alpha"]),
                   dict(data["metadata"] or {}))


#: Which blocks a claim reads: those of the detector it is evaluated with (found again on the saved heatmaps
#: when a detector is given, so it is also decided with `compare_with`), the experiment's saved block files
#: whatever the detector (analyses that traced them), or none.
BLOCK_SOURCES = ("detector", "saved", "none")


@dataclass(frozen=True)
class TrendClaim:
    """A claim that block structure grows (or falls: `direction`) with one factor of the grid, within
    each slice of the others (`strata`): `trend_test` of the detector's statistic. `blocks`: which
    blocks it reads (`BLOCK_SOURCES`)."""

    key: str
    statement: str
    factor: str
    strata: tuple[str, str]
    direction: str = "increasing"
    blocks: str = "detector"

    def evaluate(self, ctx: ClaimContext, sweep: Sequence[float]) -> Claim:
        return ctx.trend(self.key, self.statement, self.factor, self.strata, sweep, self.direction)


@dataclass(frozen=True)
class PairedClaim:
    """A claim decided by a paired test over units (models, pairs of seeds): `pairs(ctx)` gives each
    unit's (first, second) value; the claim holds when first - second > 0 at `alpha`
    (`paired_difference_test`). `labels` name the two means in the details; `extra(ctx)` adds
    more details; `needs` says what an experiment must hold to test it; `blocks`: which blocks it
    reads (`BLOCK_SOURCES`)."""

    key: str
    statement: str
    statistic: str
    needs: str
    pairs: Callable[[ClaimContext], list[tuple[float, float]]]
    labels: tuple[str, str]
    extra: Callable[[ClaimContext], dict[str, Any]] | None = None
    blocks: str = "detector"

    def evaluate(self, ctx: ClaimContext, sweep: Sequence[float]) -> Claim:
        pairs = self.pairs(ctx)
        first, second = [a for a, _ in pairs], [b for _, b in pairs]
        test = paired_difference_test(first, second, num_permutations=ctx.permutations, seed=ctx.seed) \
            if pairs else None
        details = {label: float(np.mean(values)) if pairs else None for label, values in zip(self.labels, (first, second))}
        if self.extra is not None:
            details.update(self.extra(ctx))
        return ctx.claim(self.key, self.statement, self.statistic, test, self.needs, details)


@dataclass(frozen=True)
class OwnClaim:
    """A claim with a test of its own (`decide(ctx)`), e.g. the errors analysis' permutation test;
    `blocks`: which blocks it reads (`BLOCK_SOURCES`)."""

    key: str
    decide: Callable[[ClaimContext], Claim]
    blocks: str = "detector"

    def evaluate(self, ctx: ClaimContext, sweep: Sequence[float]) -> Claim:
        return self.decide(ctx)


#: The three named definitions of block structure every trend claim is also decided by (issue 32).
DEFINITIONS = {
    "paper": "block fraction by the threshold rule at CKA >= 0.9 (the paper's words: a considerable range of "
             "layers with very high similarity)",
    "stands out": "block area by the contrast rule (runs of layers that stand out from their surroundings)",
    "definition-free": "mean off-diagonal CKA of the heatmap",
}
PAPER_DETECTOR = BlockDetector(method="threshold", threshold=0.9)


def mean_off_diagonal(matrix: np.ndarray) -> float:
    """The mean CKA of a square heatmap off its diagonal (NaN cells of dead layers left out)."""
    off = ~np.eye(len(matrix), dtype=bool)
    return float(np.nanmean(np.asarray(matrix)[off]))


def agreement(definitions: dict[str, Any]) -> str:
    """"agrees across definitions" when every definition gives the same verdict (raw, and as trained minus
    untrained where there is a baseline), else "depends on the definition", saying which way each goes."""
    verdicts = {name: d["verdict"] for name, d in definitions.items()}
    verdicts.update({f"{name} minus untrained": d["minus_untrained"]["verdict"] for name, d in definitions.items()
                     if "minus_untrained" in d})
    if len(set(verdicts.values())) <= 1:
        return "agrees across definitions"
    return "depends on the definition (" + "; ".join(f"{name}: {v}" for name, v in verdicts.items()) + ")"


class ClaimContext:
    def __init__(self, root: Path, summary: ExperimentSummary, alpha: float, permutations: int, seed: int,
                 detector: BlockDetector | None) -> None:
        self.root, self.summary, self.alpha = root, summary, alpha
        self.permutations, self.seed = permutations, seed
        self.models = [m for m in summary.models if m.residual]
        self._blocks: dict[str, BlockResult] = {}
        self._heatmaps: dict[str, CKAResult] = {}
        self.named = True  # decide the trend claims under the named definitions too (they ignore the detector)
        table = summary.blocks_table
        self.rows = table.get("on", "heatmap")
        self.refind = detector is not None
        self.detector = detector or BlockDetector.from_saved(table or None, "[analyses.blocks] of summary.json")
        self._outputs: dict[str, list[str]] = {}
        self._traced: list[tuple[ModelEntry, dict[str, np.ndarray], BlockOrigins]] | None = None

    def share_reads(self, other: ClaimContext) -> None:
        """Use what `other` (the same experiment, another detector) has read already and will read."""
        self._heatmaps, self._outputs, self._traced = other._heatmaps, other._outputs, other._traced

    # -- shared ----------------------------------------------------------------------------
    def blocks(self, model: ModelEntry) -> BlockResult:
        """The model's blocks: as the experiment found them, or found again with this context's detector."""
        if model.name not in self._blocks:
            if self.refind:
                self._blocks[model.name] = self._find(model, self.detector, self.rows)
            else:
                saved = BlockResult.load(self.root / model.path("blocks"))
                if not np.isfinite(saved.block_area):  # saved by a release without it: the same detector again
                    saved = self._find(model, saved.detector, self.rows)
                self._blocks[model.name] = saved
        return self._blocks[model.name]

    @property
    def statistic_name(self) -> str:
        """What the trend claims test: block area (contrast rule: free of its min_score threshold), or block
        fraction (the threshold rule, as the releases that used it did)."""
        return "block_area" if self.detector.method == "contrast" else "block_fraction"

    @property
    def sweep_statistic(self) -> str:
        """What the sweep tests at each setting of the detector's main knob: block strength (contrast rule;
        block area does not move with min_score), or block fraction (threshold rule)."""
        return "block_strength" if self.detector.method == "contrast" else "block_fraction"

    def has_block(self, model: ModelEntry) -> bool:
        return bool(self.blocks(model).blocks)

    def in_block(self, model: ModelEntry) -> dict[str, bool]:
        """{analysed layer name: inside a block}."""
        result = self.blocks(model)
        names = result.layer_names or [str(i) for i in range(result.num_layers)]
        return dict(zip(names, result.in_block.tolist()))

    def claim(self, key: str, statement: str, statistic: str, test: dict[str, Any] | None, note: str = "",
              details: dict[str, Any] | None = None) -> Claim:
        """`note` says what the claim needs: shown only when the experiment cannot test it."""
        if test is None or test.get("n", 0) == 0:
            return Claim(key, statement, statistic, holds=None, note=note or "the experiment holds no such models",
                         details=details or {})
        floor = min_sign_flip_p(int(test["n"]))
        if floor > self.alpha:  # no outcome could reach alpha: untested, not "not established"
            return Claim(key, statement, statistic, float(test["mean_difference"]), float(test["p_value"]),
                         int(test["n"]), None, f"{test['n']} pairs: a sign-flip p cannot fall below {floor:.3g} > alpha",
                         details or {}, float(test["p_opposite"]), test["interval"], "untested")
        return Claim(key, statement, statistic, float(test["mean_difference"]), float(test["p_value"]),
                     int(test["n"]), bool(test["p_value"] <= self.alpha), "", details or {}, float(test["p_opposite"]),
                     test["interval"], verdict(test["p_value"], test["p_opposite"], self.alpha))

    # -- claims 1 and 2 ----------------------------------------------------------------------
    def trend(self, key: str, statement: str, factor: str, strata: tuple[str, str], sweep: Sequence[float],
              direction: str = "increasing") -> Claim:
        what = self.statistic_name.replace("_", " ")
        statistic = f"mean Spearman rho of {what} with {factor}, within each {' x '.join(strata)}"
        levels = {getattr(m, factor) for m in self.models}
        if len(levels) < 2:
            return Claim(key, statement, statistic, note=f"every model has the same {factor}")
        models = [m for m in self.models if self._varies(m, factor, strata)]
        if not models:
            return Claim(key, statement, statistic, note=f"no {' x '.join(strata)} slice has two {factor}s")
        labels = [tuple(getattr(m, s) for s in strata) for m in models]
        values = [getattr(self.blocks(m), self.statistic_name) for m in models]
        test = trend_test(values, [getattr(m, factor) for m in models], labels, direction=direction,
                          num_permutations=self.permutations, seed=self.seed)
        details: dict[str, Any] = {"strata": test.strata, "sweep": self.sweep(models, factor, labels, sweep, direction)}
        if self.named:
            details["definitions"] = self.definitions(models, factor, labels, direction)
            details["agreement"] = agreement(details["definitions"])
        details["tested"] = {"statistic": self.statistic_name, "factor": factor, "strata": list(strata),
                             "direction": direction}
        for name, read in (("block_area", lambda m: self.blocks(m).block_area),
                           ("block_strength", lambda m: self.blocks(m).block_strength),
                           ("block_fraction", lambda m: self.blocks(m).block_fraction)):
            by_level = {str(level): float(np.mean([read(m) for m in models if getattr(m, factor) == level]))
                        for level in sorted(levels) if any(getattr(m, factor) == level for m in models)}
            details[f"mean_{name}"] = by_level
        if not np.isfinite(test.statistic):
            return Claim(key, statement, statistic, note=f"{what} does not vary in any slice",
                         details=details, n=test.num_models, holds=False, value=0.0, p_value=1.0)
        return Claim(key, statement, statistic, test.statistic, test.p_value, test.num_models,
                     test.holds(self.alpha), details=details, p_opposite=test.p_opposite,
                     interval=None if test.interval is None else list(test.interval), verdict=test.verdict(self.alpha))

    def definitions(self, models: list[ModelEntry], factor: str, labels: list[tuple], direction: str) -> dict[str, Any]:
        """The trend under each named definition of block structure (`DEFINITIONS`), each with its effect,
        95% interval over seeds, both one-sided p-values and its verdict; where every model has its heatmap at
        initialisation (`[analyses.untrained]`), the same of trained minus untrained (``minus_untrained``)."""
        readers = {"paper": lambda m, cka: self._find(m, PAPER_DETECTOR, self.rows, cka).block_fraction,
                   "stands out": lambda m, cka: self._find(m, BlockDetector(), self.rows, cka).block_area,
                   "definition-free": lambda m, cka: mean_off_diagonal(cka.matrix)}
        untrained = [self._untrained(m) for m in models]
        levels = [getattr(m, factor) for m in models]
        out = {}
        for name, read in readers.items():
            trained = [read(m, self._cka(m)) for m in models]
            out[name] = {"statistic": DEFINITIONS[name], **self._decided(trained, levels, labels, direction)}
            if all(u is not None for u in untrained):
                start = [read(m, u) for m, u in zip(models, untrained)]
                out[name]["minus_untrained"] = self._decided(list(np.subtract(trained, start)), levels, labels,
                                                             direction)
        return out

    def _decided(self, values: list[float], levels: list[float], labels: list[tuple], direction: str) -> dict[str, Any]:
        test = trend_test(values, levels, labels, direction=direction, num_permutations=self.permutations,
                          seed=self.seed)
        words = test.verdict(self.alpha) if np.isfinite(test.statistic) else "not established"
        return {"value": test.statistic, "p_value": test.p_value, "p_opposite": test.p_opposite,
                "interval": None if test.interval is None else list(test.interval), "verdict": words}

    def _untrained(self, model: ModelEntry) -> CKAResult | None:
        """The model's heatmap at initialisation (the experiment's untrained step), or None; read once."""
        key = f"untrained/{model.name}"
        if key not in self._heatmaps:
            path = self.root / "cka" / "untrained" / f"{model.name}.npz"
            if not path.is_file():
                return None
            self._heatmaps[key] = CKAResult.load(path)
        return self._heatmaps[key]

    def _varies(self, model: ModelEntry, factor: str, strata: tuple[str, str]) -> bool:
        same = [m for m in self.models if all(getattr(m, s) == getattr(model, s) for s in strata)]
        return len({getattr(m, factor) for m in same}) >= 2

    def sweep(self, models: list[ModelEntry], factor: str, labels: list[tuple], values: Sequence[float],
              direction: str) -> list[dict[str, Any]]:
        """The trend test with the detector re-run at each value of its main knob (`SWEEPS`), on every
        layer of the heatmap and on the block outputs only (its other settings as used)."""
        knob = SWEEPS[self.detector.method][0]
        out = []
        for on in DETECTORS:
            for value in values:
                detector = self.detector.replace(**{knob: value})
                found = [self._find(m, detector, on) for m in models]
                strength = [f.block_strength for f in found]
                test = trend_test([getattr(f, self.sweep_statistic) for f in found], [getattr(m, factor) for m in models],
                                  labels, direction=direction,
                                  num_permutations=self.permutations, seed=self.seed)
                out.append({"on": on, knob: value, "rho": test.statistic, "p_value": test.p_value,
                            "mean_block_strength": float(np.mean(strength)),
                            "mean_block_fraction": float(np.mean([f.block_fraction for f in found]))})
        return out

    def _find(self, model: ModelEntry, detector: BlockDetector, on: str, cka: CKAResult | None = None) -> BlockResult:
        """The model's blocks by `detector` on rows `on` of its saved heatmap (or of `cka`: the same layers at
        initialisation); the smallest block follows the rows: min_fraction of 12 block outputs is not of 70 layers."""
        cka = self._cka(model) if cka is None else cka
        layers = None
        if on == "block-outputs":
            outputs = set(self._block_outputs(model))
            layers = [name for name in cka.layers_a if name in outputs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # dead layers were warned about when found first
            return detector.find(cka, layers=layers)

    def _cka(self, model: ModelEntry) -> CKAResult:
        if model.name not in self._heatmaps:
            self._heatmaps[model.name] = CKAResult.load(self.root / model.path("cka"))
        return self._heatmaps[model.name]

    def _block_outputs(self, model: ModelEntry) -> list[str]:
        """The residual stream's layer names of `model` (`model.layer_names("blocks")`)."""
        if model.name not in self._outputs:
            from ckatlas.train import load_run

            self._outputs[model.name] = load_run(self.root / model.path("run")).model.layer_names("blocks")
        return self._outputs[model.name]

    # -- claim 3 ----------------------------------------------------------------------------
    def pca_rows(self, model: ModelEntry) -> tuple[PCAResult, np.ndarray, np.ndarray] | None:
        path = model.path("pca")
        if path is None or not self.has_block(model):
            return None
        pca = PCAResult.load(self.root / path)
        inside = self.in_block(model)
        rows = [pca.layers.index(n) for n in inside if n in pca.layers]
        mask = np.array([inside[pca.layers[r]] for r in rows])
        return pca, np.array(rows), mask

    # -- where blocks come from (Nguyen, Raghu & Kornblith 2022) --------------------------------
    def traced_origins(self) -> list[tuple[ModelEntry, dict[str, np.ndarray], BlockOrigins]]:
        """(model, its blocks' scores on the four heatmaps, its origins) of every traced model with a block;
        read and scored once for both origins claims."""
        if self._traced is None:
            self._traced = []
            for model in self.models:
                path = model.path("origins")
                if path is not None:
                    origins = BlockOrigins.load(self.root / path)
                    if origins.blocks:
                        self._traced.append((model, origins.scores(), origins))
        return self._traced


__all__ = ["DEFINITIONS", "PAPER_DETECTOR", "Claim", "ClaimContext", "ClaimsResult", "OwnClaim", "PairedClaim",
           "TrendClaim", "agreement", "mean_off_diagonal"]
