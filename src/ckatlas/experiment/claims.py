"""The paper's claims, each decided by a stated statistic over the models of a finished experiment.

`evaluate_claims(root)` reads an experiment directory (summary.json and the analyses'
files) and tests what Nguyen, Raghu & Kornblith (2021) claim, wherever the experiment
holds what a claim needs; a claim it cannot test is reported as such, with the reason.

Layers "in a block" are the analysed layers of each model's block result (the block
outputs, when blocks are found on them). Every test is one-sided in the paper's
direction and uses permutations (`ckatlas.analysis.trend`), so its p-value needs no
distributional assumption; a claim holds when p <= `alpha`.

1. ``width`` / ``depth``: block strength (the share of layers in a block weighted by how
   much each block stands out, `BlockResult.block_strength`: continuous, so the test does
   not saturate) grows with width (within each depth and training fraction) and with depth
   (within each width and fraction): `trend_test`. Also at each setting of a sweep of the
   detector's main knob (``min_score`` of the contrast rule, ``threshold`` of the threshold
   rule), on every layer and on the block outputs only (the detector re-run on the saved
   heatmaps), so that a verdict that rests on one setting or one choice of rows shows. With
   the threshold rule the statistic is block fraction, as in the releases that used it.
2. ``data``: block strength falls as the training fraction grows (within each depth x
   width): `trend_test`, decreasing.
3. ``pc1-variance``: in models with a block, the first PC explains more of the variance
   of in-block layers than of the other analysed layers (mean per model, paired over
   models: sign-flip test). ``pc1-carries``: the first PCs of consecutive in-block layers
   are more alike (squared cosine) than those of consecutive layers elsewhere.
4. ``probes``: the post-residual probe accuracy gains less per block inside a block
   than outside (paired over models). ``pruning``: deleting a block inside the block
   structure costs less accuracy than deleting one outside (paired over models).
5. ``cross-seed``: CKA between the same layer of two seeds is higher outside the block
   structure than inside it (paired over pairs of seeds, blocks of the first seed).
6. ``dominant-examples`` and ``normalised`` (beyond the paper: Nguyen, Raghu & Kornblith 2022):
   without the examples that dominate a block's first PC, the block's contrast score falls
   more than without as many random examples; with per-example normalised activations it
   falls (paired over models, `ckatlas.analysis.origins`). They read the experiment's own
   blocks whatever the detector.
7. ``errors``: the two populations of the errors analysis differ in their per-example
   accuracies more than two halves of one population (the analysis' own permutation
   test), and in which classes they get right (Holm-Sidak over classes).

The blocks are the experiment's own (its blocks files), or, given a `detector`, found again
on the saved heatmaps with it. Every claim that rests on blocks is also decided with a
second detector (`compare_with`, by default the threshold rule of earlier releases), and
its verdict is kept beside the claim's, so that a change of detector shows.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ckatlas.analysis import BlockDetector, BlockResult, mark_blocks
from ckatlas.analysis.errors import ErrorComparison
from ckatlas.analysis.origins import BlockOrigins
from ckatlas.analysis.pca import PCAResult
from ckatlas.analysis.probes import ProbeResult
from ckatlas.analysis.prune import PruneResult
from ckatlas.analysis.trend import PERMUTATIONS, paired_difference_test, trend_test
from ckatlas.errors import UserInputError
from ckatlas.files import read_json
from ckatlas.heatmap import CKAResult
from ckatlas.results import JsonResult

FIXED_BLOCKS = ("errors", "dominant-examples", "normalised")  # claims that do not follow a change of detector
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

    def line(self) -> str:
        other = self.details.get("compare")
        beside = ""
        if other is not None:
            if other["holds"] is None:
                beside = f"; {other['method']} rule: untested"
            else:
                beside = (f"; {other['method']} rule: {'holds' if other['holds'] else 'does not hold'} "
                          f"({other['value']:+.3f}, p {other['p_value']:.3g}, n {other['n']})")
        if self.holds is None:
            return f"[untested] {self.key}: {self.note}{beside}"
        verdict = "holds" if self.holds else "does NOT hold"
        return (f"[{verdict}] {self.key}: {self.statistic} = {self.value:+.3f}, p = {self.p_value:.3g}, n = {self.n}"
                + (f" ({self.note})" if self.note else "") + beside)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("key", "statement", "statistic", "value", "p_value", "n", "holds",
                                               "note", "details")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Claim:
        return cls(data["key"], data["statement"], data["statistic"], data["value"], data["p_value"], int(data["n"]),
                   data["holds"], data["note"], dict(data["details"]))


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
                   dict(data.get("metadata") or {}))


def evaluate_claims(
    root: str | Path,
    *,
    alpha: float = 0.05,
    num_permutations: int = PERMUTATIONS,
    seed: int = 0,
    sweep: Sequence[float] | None = None,
    detector: BlockDetector | None = None,
    compare_with: BlockDetector | None = BlockDetector(method="threshold"),
) -> ClaimsResult:
    """Test the paper's claims on the finished experiment in `root` (module docstring).

    Args:
        sweep: values of the detector's main knob to re-run the trend tests at (default:
            `SWEEPS` of its method).
        detector: find the blocks again on the saved heatmaps with this detector (default:
            the experiment's blocks as computed).
        compare_with: a second detector whose verdicts are kept beside each claim's (None: none).
    """
    root = Path(root).expanduser()
    summary = read_json(root / "summary.json", "an experiment's summary.json (run 'ckatlas run' to the end)")
    if not isinstance(summary, dict) or "models" not in summary:
        raise UserInputError(f"{root / 'summary.json'} is not a ckatlas experiment summary")
    ctx = _Context(root, summary, alpha, num_permutations, seed, detector)
    if sweep is None:
        sweep = SWEEPS[ctx.detector.method][1]
    claims = _claims(ctx, sweep)
    if compare_with is not None and compare_with != ctx.detector:
        other = _Context(root, summary, alpha, num_permutations, seed, compare_with)
        other._heatmaps, other._outputs, other._traced = ctx._heatmaps, ctx._outputs, ctx._traced  # read once
        for claim, again in zip(claims, _claims(other, ())):
            if claim.key not in FIXED_BLOCKS:
                claim.details["compare"] = {"method": compare_with.method, "detector": compare_with.to_dict(),
                                            "value": again.value, "p_value": again.p_value, "n": again.n,
                                            "holds": again.holds}
    return ClaimsResult(summary.get("name", str(root)), claims, alpha,
                        {"num_permutations": num_permutations, "seed": seed, "sweep": list(sweep),
                         "detector": ctx.detector.to_dict(),
                         "compare_with": None if compare_with is None else compare_with.to_dict()})


def _claims(ctx: _Context, sweep: Sequence[float]) -> list[Claim]:
    return [
        ctx.trend("width", "block structure emerges as networks get wider", "width", ("depth", "fraction"), sweep),
        ctx.trend("depth", "block structure emerges as networks get deeper", "depth", ("width", "fraction"), sweep),
        ctx.trend("data", "with less training data, block structure appears in smaller models", "fraction",
                  ("depth", "width"), sweep, direction="decreasing"),
        ctx.pc1_variance(),
        ctx.pc1_carries(),
        ctx.probes(),
        ctx.pruning(),
        ctx.cross_seed(),
        ctx.dominant_examples(),
        ctx.normalised(),
        ctx.errors(),
    ]


class _Context:
    def __init__(self, root: Path, summary: dict[str, Any], alpha: float, permutations: int, seed: int,
                 detector: BlockDetector | None) -> None:
        self.root, self.summary, self.alpha = root, summary, alpha
        self.permutations, self.seed = permutations, seed
        self.models = [m for m in summary["models"] if m.get("residual", True)]
        self._blocks: dict[str, BlockResult] = {}
        self._heatmaps: dict[str, CKAResult] = {}
        table = _blocks_table(summary)
        self.rows = table.get("on", "heatmap")
        self.refind = detector is not None
        self.detector = detector or BlockDetector.from_saved(table, "[analyses.blocks] of summary.json")
        self._outputs: dict[str, list[str]] = {}
        self._traced: list[tuple[dict[str, Any], dict[str, np.ndarray], BlockOrigins]] | None = None

    # -- shared ----------------------------------------------------------------------------
    def blocks(self, model: dict[str, Any]) -> BlockResult:
        """The model's blocks: as the experiment found them, or found again with this context's detector."""
        if model["name"] not in self._blocks:
            if self.refind:
                self._blocks[model["name"]] = self._find(model, self.detector, self.rows)
            else:
                self._blocks[model["name"]] = BlockResult.load(self.root / model["paths"]["blocks"])
        return self._blocks[model["name"]]

    @property
    def statistic_name(self) -> str:
        """What the trend claims test: block strength (contrast rule), or block fraction (the threshold rule,
        as the releases that used it did)."""
        return "block_strength" if self.detector.method == "contrast" else "block_fraction"

    def has_block(self, model: dict[str, Any]) -> bool:
        return bool(self.blocks(model).blocks)

    def in_block(self, model: dict[str, Any]) -> dict[str, bool]:
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
        return Claim(key, statement, statistic, float(test["mean_difference"]), float(test["p_value"]),
                     int(test["n"]), bool(test["p_value"] <= self.alpha), "", details or {})

    # -- claims 1 and 2 ----------------------------------------------------------------------
    def trend(self, key: str, statement: str, factor: str, strata: tuple[str, str], sweep: Sequence[float],
              direction: str = "increasing") -> Claim:
        what = self.statistic_name.replace("_", " ")
        statistic = f"mean Spearman rho of {what} with {factor}, within each {' x '.join(strata)}"
        levels = {m[factor] for m in self.models}
        if len(levels) < 2:
            return Claim(key, statement, statistic, note=f"every model has the same {factor}")
        models = [m for m in self.models if self._varies(m, factor, strata)]
        if not models:
            return Claim(key, statement, statistic, note=f"no {' x '.join(strata)} slice has two {factor}s")
        labels = [tuple(m[s] for s in strata) for m in models]
        values = [getattr(self.blocks(m), self.statistic_name) for m in models]
        test = trend_test(values, [m[factor] for m in models], labels, direction=direction,
                          num_permutations=self.permutations, seed=self.seed)
        details: dict[str, Any] = {"strata": test.strata, "sweep": self.sweep(models, factor, labels, sweep, direction)}
        for name, read in (("block_strength", lambda m: self.blocks(m).block_strength),
                           ("block_fraction", lambda m: self.blocks(m).block_fraction)):
            by_level = {str(level): float(np.mean([read(m) for m in models if m[factor] == level]))
                        for level in sorted(levels) if any(m[factor] == level for m in models)}
            details[f"mean_{name}"] = by_level
        if not np.isfinite(test.statistic):
            return Claim(key, statement, statistic, note=f"{what} does not vary in any slice",
                         details=details, n=test.num_models, holds=False, value=0.0, p_value=1.0)
        return Claim(key, statement, statistic, test.statistic, test.p_value, test.num_models,
                     test.holds(self.alpha), details=details)

    def _varies(self, model: dict[str, Any], factor: str, strata: tuple[str, str]) -> bool:
        same = [m for m in self.models if all(m[s] == model[s] for s in strata)]
        return len({m[factor] for m in same}) >= 2

    def sweep(self, models: list[dict[str, Any]], factor: str, labels: list[tuple], values: Sequence[float],
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
                test = trend_test([getattr(f, self.statistic_name) for f in found], [m[factor] for m in models],
                                  labels, direction=direction,
                                  num_permutations=self.permutations, seed=self.seed)
                out.append({"on": on, knob: value, "rho": test.statistic, "p_value": test.p_value,
                            "mean_block_strength": float(np.mean(strength)),
                            "mean_block_fraction": float(np.mean([f.block_fraction for f in found]))})
        return out

    def _find(self, model: dict[str, Any], detector: BlockDetector, on: str) -> BlockResult:
        """The model's blocks by `detector` on rows `on` of its saved heatmap (the smallest block follows
        the rows: min_fraction of 12 block outputs is not of 70 layers)."""
        cka = self._cka(model)
        layers = None
        if on == "block-outputs":
            outputs = set(self._block_outputs(model))
            layers = [name for name in cka.layers_a if name in outputs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # dead layers were warned about when found first
            return detector.find(cka, layers=layers)

    def _cka(self, model: dict[str, Any]) -> CKAResult:
        if model["name"] not in self._heatmaps:
            self._heatmaps[model["name"]] = CKAResult.load(self.root / model["paths"]["cka"])
        return self._heatmaps[model["name"]]

    def _block_outputs(self, model: dict[str, Any]) -> list[str]:
        """The residual stream's layer names of `model` (`model.layer_names("blocks")`)."""
        if model["name"] not in self._outputs:
            from ckatlas.train import load_run

            self._outputs[model["name"]] = load_run(self.root / model["paths"]["run"]).model.layer_names("blocks")
        return self._outputs[model["name"]]

    # -- claim 3 ----------------------------------------------------------------------------
    def _pca(self, model: dict[str, Any]) -> tuple[PCAResult, np.ndarray, np.ndarray] | None:
        path = model["paths"].get("pca")
        if path is None or not self.has_block(model):
            return None
        pca = PCAResult.load(self.root / path)
        inside = self.in_block(model)
        rows = [pca.layers.index(n) for n in inside if n in pca.layers]
        mask = np.array([inside[pca.layers[r]] for r in rows])
        return pca, np.array(rows), mask

    def pc1_variance(self) -> Claim:
        statement = "inside a block, the first principal component explains most of the variance"
        statistic = "mean PC1 variance share, in-block minus other analysed layers (per model with a block)"
        inside, outside = [], []
        for model in self.models:
            found = self._pca(model)
            if found is None:
                continue
            pca, rows, mask = found
            share = pca.variance_explained[rows]
            if mask.any() and (~mask).any():
                inside.append(float(np.nanmean(share[mask])))
                outside.append(float(np.nanmean(share[~mask])))
        test = paired_difference_test(inside, outside, num_permutations=self.permutations, seed=self.seed) \
            if inside else None
        details = {"mean_in_block": float(np.mean(inside)) if inside else None,
                   "mean_elsewhere": float(np.mean(outside)) if outside else None}
        return self.claim("pc1-variance", statement, statistic, test, "needs [analyses.pca] and models with a block",
                          details)

    def pc1_carries(self) -> Claim:
        statement = "inside a block, the first principal component carries from layer to layer"
        statistic = "mean squared cosine of consecutive layers' PC1s, in-block pairs minus other pairs"
        inside, outside = [], []
        for model in self.models:
            found = self._pca(model)
            if found is None:
                continue
            pca, rows, mask = found
            sims = np.array([pca.pc_similarity[a, b] for a, b in zip(rows, rows[1:])])
            both = mask[:-1] & mask[1:]
            if both.any() and (~both).any():
                inside.append(float(np.nanmean(sims[both])))
                outside.append(float(np.nanmean(sims[~both])))
        test = paired_difference_test(inside, outside, num_permutations=self.permutations, seed=self.seed) \
            if inside else None
        details = {"mean_in_block": float(np.mean(inside)) if inside else None,
                   "mean_elsewhere": float(np.mean(outside)) if outside else None}
        return self.claim("pc1-carries", statement, statistic, test, "needs [analyses.pca] and models with a block",
                          details)

    # -- claim 4 ----------------------------------------------------------------------------
    def probes(self) -> Claim:
        statement = "linear-probe accuracy stalls inside a block"
        statistic = "mean post-residual probe gain per block, other blocks minus in-block blocks"
        inside, outside = [], []
        for model in self.models:
            path = model["paths"].get("probes")
            if path is None or not self.has_block(model):
                continue
            probes = ProbeResult.load(self.root / path)
            in_block = self.in_block(model)
            post = [(n, a) for n, k, a in zip(probes.layers, probes.kinds, probes.test_accuracy)
                    if k == "post-residual"]
            gains_in, gains_out = [], []
            for (_, before), (name, after) in zip(post, post[1:]):
                block_output = name.rsplit(".", 1)[0] + ".relu"  # stage{s}.{i}.add -> stage{s}.{i}.relu
                (gains_in if in_block.get(block_output, False) else gains_out).append(after - before)
            if gains_in and gains_out:
                inside.append(float(np.mean(gains_in)))
                outside.append(float(np.mean(gains_out)))
        test = paired_difference_test(outside, inside, num_permutations=self.permutations, seed=self.seed) \
            if inside else None
        details = {"mean_gain_in_block": float(np.mean(inside)) if inside else None,
                   "mean_gain_elsewhere": float(np.mean(outside)) if outside else None}
        return self.claim("probes", statement, statistic, test,
                          "needs [analyses.probes] on models with a block and blocks outside it", details)

    def pruning(self) -> Claim:
        statement = "deleting blocks inside the block structure costs little accuracy, deleting others more"
        statistic = "mean accuracy change of single deletions, in-block minus elsewhere"
        inside, outside = [], []
        for model in self.models:
            path = model["paths"].get("prune")
            if path is None:
                continue
            result = mark_blocks(PruneResult.load(self.root / path), self.blocks(model))
            first = [s for s in result.steps if s.num_removed == 1 and s.in_block is not None]
            ins = [s.delta for s in first if s.in_block]
            outs = [s.delta for s in first if not s.in_block]
            if ins and outs:
                inside.append(float(np.mean(ins)))
                outside.append(float(np.mean(outs)))
        test = paired_difference_test(inside, outside, num_permutations=self.permutations, seed=self.seed) \
            if inside else None
        details = {"mean_delta_in_block": float(np.mean(inside)) if inside else None,
                   "mean_delta_elsewhere": float(np.mean(outside)) if outside else None}
        return self.claim("pruning", statement, statistic, test,
                          "needs [analyses.prune] on models with deletions inside and outside a block", details)

    # -- claim 5 ----------------------------------------------------------------------------
    def cross_seed(self) -> Claim:
        statement = "outside the block structure the same layer of two seeds is similar, inside it is not"
        statistic = "mean cross-seed CKA of a layer with itself, elsewhere minus in-block (per pair of seeds)"
        by_name = {m["name"]: m for m in self.models}
        inside, outside = [], []
        for pair in self.summary.get("cross_seed", []):
            model = by_name.get(pair["a"])
            if model is None or not self.has_block(model):
                continue
            cka = CKAResult.load(self.root / pair["path"])
            in_block = self.in_block(model)
            diag = {n: cka.matrix[i, cka.layers_b.index(n)] for i, n in enumerate(cka.layers_a) if n in cka.layers_b}
            ins = [diag[n] for n, flag in in_block.items() if flag and n in diag]
            outs = [diag[n] for n, flag in in_block.items() if not flag and n in diag]
            if ins and outs:
                inside.append(float(np.nanmean(ins)))
                outside.append(float(np.nanmean(outs)))
        test = paired_difference_test(outside, inside, num_permutations=self.permutations, seed=self.seed) \
            if inside else None
        details = {"mean_in_block": float(np.mean(inside)) if inside else None,
                   "mean_elsewhere": float(np.mean(outside)) if outside else None}
        return self.claim("cross-seed", statement, statistic, test,
                          "needs [analyses.cross_seed] and models with a block", details)

    # -- where blocks come from (Nguyen, Raghu & Kornblith 2022) --------------------------------
    def _origins(self) -> list[tuple[dict[str, Any], dict[str, np.ndarray], BlockOrigins]]:
        """(model, its blocks' scores on the four heatmaps, its origins) of every traced model with a block;
        read and scored once for both origins claims."""
        if self._traced is None:
            self._traced = []
            for model in self.models:
                path = model["paths"].get("origins")
                if path is not None:
                    origins = BlockOrigins.load(self.root / path)
                    if origins.blocks:
                        self._traced.append((model, origins.scores(), origins))
        return self._traced

    def dominant_examples(self) -> Claim:
        statement = ("block structure is carried by a few dominant examples: without them a block stands out less "
                     "than without as many random examples")
        statistic = "mean block score without as many random examples minus without the dominant ones (per model)"
        found = self._origins()
        random = [float(np.nanmean(s["cka_random"])) for _, s, _ in found]
        without = [float(np.nanmean(s["cka_without"])) for _, s, _ in found]
        test = paired_difference_test(random, without, num_permutations=self.permutations, seed=self.seed) \
            if found else None
        details = {"mean_score": float(np.mean([np.nanmean(s["cka"]) for _, s, _ in found])) if found else None,
                   "mean_score_without_random": float(np.mean(random)) if found else None,
                   "mean_score_without_dominant": float(np.mean(without)) if found else None,
                   "mean_dominant_pc1_share": float(np.mean([np.nanmean(o.dominant_share()) for *_, o in found]))
                   if found else None}
        return self.claim("dominant-examples", statement, statistic, test,
                          "needs [analyses.origins] on models with a block", details)

    def normalised(self) -> Claim:
        statement = "with each example's activations scaled to unit length, blocks stand out less"
        statistic = "mean block score minus its score with per-example normalised activations (per model)"
        found = self._origins()
        plain = [float(np.nanmean(s["cka"])) for _, s, _ in found]
        normalised = [float(np.nanmean(s["cka_normalised"])) for _, s, _ in found]
        test = paired_difference_test(plain, normalised, num_permutations=self.permutations, seed=self.seed) \
            if found else None
        details = {"mean_score": float(np.mean(plain)) if found else None,
                   "mean_score_normalised": float(np.mean(normalised)) if found else None}
        return self.claim("normalised", statement, statistic, test, "needs [analyses.origins] on models with a block",
                          details)

    # -- claim 6 ----------------------------------------------------------------------------
    def errors(self) -> Claim:
        statement = "wide and deep models make different errors, per example and per class"
        statistic = "example-level D(A, B) = mean squared difference of per-example accuracy"
        path = (self.summary.get("analyses") or {}).get("errors")
        if not path or not (self.root / path).is_file():
            return Claim("errors", statement, statistic, note="needs [analyses.errors]")
        result = ErrorComparison.load(self.root / path)
        ex, classes = result.examples, result.classes
        details = {
            "populations": [result.name_a, result.name_b],
            "accuracy_a": float(np.mean(result.model_accuracy_a)),
            "accuracy_b": float(np.mean(result.model_accuracy_b)),
            "models": [len(result.model_accuracy_a), len(result.model_accuracy_b)],
            "control_statistic": ex.control_statistic,
            "null_mean": ex.null_mean,
            "min_p_value": ex.min_p_value,
            "classes_different": [n for n, sig in zip(classes.names, classes.significant) if sig],
        }
        note = (f"control (two halves of {result.name_a}) D = {ex.control_statistic:.4f}; "
                f"{int(np.sum(classes.significant))} of {len(classes.names)} classes differ after Holm-Sidak")
        n = len(result.model_accuracy_a) + len(result.model_accuracy_b)
        if ex.min_p_value > self.alpha:  # no outcome could reach alpha: the claim is not tested, not refuted
            return Claim("errors", statement, statistic, float(ex.statistic), float(ex.p_value), n, None,
                         f"{n} models: p cannot fall below {ex.min_p_value:.3g} > alpha; {note}", details)
        return Claim("errors", statement, statistic, float(ex.statistic), float(ex.p_value), n,
                     bool(ex.p_value <= self.alpha), note, details)




def _blocks_table(summary: Any) -> dict[str, Any]:
    """The saved ``[analyses.blocks]`` table of an experiment's summary ({} when it has none)."""
    if not isinstance(summary, dict):
        return {}
    return dict(((summary.get("config") or {}).get("analyses") or {}).get("blocks") or {})


def experiment_detector(root: str | Path) -> BlockDetector:
    """The block detector a finished experiment used (its summary.json)."""
    path = Path(root).expanduser() / "summary.json"
    summary = read_json(path, "an experiment's summary.json (run 'ckatlas run' to the end)")
    return BlockDetector.from_saved(_blocks_table(summary), f"[analyses.blocks] of {path}")


__all__ = ["Claim", "ClaimsResult", "DEFAULT_SWEEP", "SWEEPS", "evaluate_claims", "experiment_detector"]
