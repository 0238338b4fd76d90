"""The paper's claims, each decided by a stated statistic over the models of a finished experiment.

`evaluate_claims(root)` reads an experiment directory (summary.json and the analyses'
files) and tests what Nguyen, Raghu & Kornblith (2021) claim, wherever the experiment
holds what a claim needs; a claim it cannot test is reported as such, with the reason.

Layers "in a block" are the analysed layers of each model's block result (the block
outputs, when blocks are found on them). Every test is one-sided in the paper's
direction and uses permutations (`ckatlas.analysis.trend`), so its p-value needs no
distributional assumption; a claim holds when p <= `alpha`.

1. ``width`` / ``depth``: block area (the contrast rule's block fraction averaged over its
   ``min_score`` from 0.05 to 1, `BlockResult.block_area`: continuous and free of the
   threshold, so the test neither saturates nor jumps with a square whose score sits near
   ``min_score``) grows with width (within each depth and training fraction) and with depth
   (within each width and fraction): `trend_test`. Also, for block strength, at each setting
   of a sweep of the detector's main knob (``min_score`` of the contrast rule, ``threshold``
   of the threshold rule), on every layer and on the block outputs only (the detector re-run
   on the saved heatmaps), so that a verdict that rests on one setting or one choice of rows
   shows. With the threshold rule the statistic is block fraction, as in the releases that
   used it.
2. ``data``: block area falls as the training fraction grows (within each depth x
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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ckatlas.analysis import BlockDetector, mark_blocks
from ckatlas.analysis.error_compare import ErrorComparison
from ckatlas.analysis.probes import ProbeResult
from ckatlas.analysis.prune import PruneResult
from ckatlas.analysis.trend import PERMUTATIONS
from ckatlas.experiment.claim_kinds import (  # noqa: F401  (Claim, ClaimsResult, SWEEPS re-exported)
    BLOCK_SOURCES,
    DEFAULT_SWEEP,
    SWEEPS,
    Claim,
    ClaimContext,
    ClaimsResult,
    OwnClaim,
    PairedClaim,
    TrendClaim,
)
from ckatlas.heatmap import CKAResult
from ckatlas.io.summary import read_summary

#: Where an experiment keeps its claims, decided once by its ``claims`` step with the defaults below.
CLAIMS_FILE = "claims.json"


def evaluate_claims(
    root: str | Path,
    *,
    alpha: float = 0.05,
    num_permutations: int = PERMUTATIONS,
    seed: int = 0,
    sweep: Sequence[float] | None = None,
    detector: BlockDetector | None = None,
    compare_with: BlockDetector | None = BlockDetector(method="threshold"),
    claims: Sequence[TrendClaim | PairedClaim | OwnClaim] | None = None,
) -> ClaimsResult:
    """Test the paper's claims on the finished experiment in `root` (module docstring).

    Args:
        claims: the claim definitions to test (default: `CLAIMS`, the paper's); add your own,
            e.g. ``[*CLAIMS, PairedClaim("mine", ..., pairs=my_pairs, labels=("a", "b"))]``.
        sweep: values of the detector's main knob to re-run the trend tests at (default:
            `SWEEPS` of its method).
        detector: find the blocks again on the saved heatmaps with this detector (default:
            the experiment's blocks as computed).
        compare_with: a second detector whose verdicts are kept beside each claim's (None: none).
    """
    root = Path(root).expanduser()
    summary = read_summary(root)
    ctx = ClaimContext(root, summary, alpha, num_permutations, seed, detector)
    if sweep is None:
        sweep = SWEEPS[ctx.detector.method][1]
    definitions = CLAIMS if claims is None else list(claims)
    odd = [f"{d.key}: {d.blocks!r}" for d in definitions if getattr(d, "blocks", None) not in BLOCK_SOURCES]
    if odd:
        raise ValueError(f"a claim's blocks must be one of {', '.join(BLOCK_SOURCES)}; got {'; '.join(odd)}")
    tested = [definition.evaluate(ctx, sweep) for definition in definitions]
    if compare_with is not None and compare_with != ctx.detector:
        other = ClaimContext(root, summary, alpha, num_permutations, seed, compare_with)
        other.share_reads(ctx)  # the saved files are read once for both detectors
        other.named = False  # the named definitions do not depend on the detector: decided once, above
        for definition, claim in zip(definitions, tested):
            if definition.blocks == "detector":  # the others do not follow a change of detector
                again = definition.evaluate(other, ())
                claim.details["compare"] = {"method": compare_with.method, "detector": compare_with.to_dict(),
                                            "value": again.value, "p_value": again.p_value, "n": again.n,
                                            "holds": again.holds, "verdict": again.verdict,
                                            "interval": again.interval}
    return ClaimsResult(summary.name, tested, alpha,
                        {"num_permutations": num_permutations, "seed": seed, "sweep": list(sweep),
                         "detector": ctx.detector.to_dict(),
                         "compare_with": None if compare_with is None else compare_with.to_dict()})


# -- the claims: one definition each ---------------------------------------------------------------
def _pc1_variance(ctx: ClaimContext) -> list[tuple[float, float]]:
    """Per model with a block: mean PC1 share of its in-block layers, and of its other layers."""
    pairs = []
    for model in ctx.models:
        found = ctx.pca_rows(model)
        if found is not None:
            pca, rows, mask = found
            share = pca.variance_explained[rows]
            if mask.any() and (~mask).any():
                pairs.append((float(np.nanmean(share[mask])), float(np.nanmean(share[~mask]))))
    return pairs


def _pc1_carries(ctx: ClaimContext) -> list[tuple[float, float]]:
    """Per model with a block: mean squared cosine of consecutive layers' PC1s, in-block pairs and others."""
    pairs = []
    for model in ctx.models:
        found = ctx.pca_rows(model)
        if found is not None:
            pca, rows, mask = found
            sims = np.array([pca.pc_similarity[a, b] for a, b in zip(rows, rows[1:])])
            both = mask[:-1] & mask[1:]
            if both.any() and (~both).any():
                pairs.append((float(np.nanmean(sims[both])), float(np.nanmean(sims[~both]))))
    return pairs


def _probe_gains(ctx: ClaimContext) -> list[tuple[float, float]]:
    """Per model with a block: mean post-residual probe gain per block elsewhere, and inside blocks."""
    pairs = []
    for model in ctx.models:
        path = model.path("probes")
        if path is None or not ctx.has_block(model):
            continue
        probes = ProbeResult.load(ctx.root / path)
        in_block = ctx.in_block(model)
        post = [(n, a) for n, k, a in zip(probes.layers, probes.kinds, probes.test_accuracy) if k == "post-residual"]
        gains_in, gains_out = [], []
        for (_, before), (name, after) in zip(post, post[1:]):
            block_output = name.rsplit(".", 1)[0] + ".relu"  # stage{s}.{i}.add -> stage{s}.{i}.relu
            (gains_in if in_block.get(block_output, False) else gains_out).append(after - before)
        if gains_in and gains_out:
            pairs.append((float(np.mean(gains_out)), float(np.mean(gains_in))))
    return pairs


def _deletions(ctx: ClaimContext) -> list[tuple[float, float]]:
    """Per pruned model: mean accuracy change of single deletions inside blocks, and elsewhere."""
    pairs = []
    for model in ctx.models:
        path = model.path("prune")
        if path is None:
            continue
        result = mark_blocks(PruneResult.load(ctx.root / path), ctx.blocks(model))
        first = [s for s in result.steps if s.num_removed == 1 and s.in_block is not None]
        ins = [s.delta for s in first if s.in_block]
        outs = [s.delta for s in first if not s.in_block]
        if ins and outs:
            pairs.append((float(np.mean(ins)), float(np.mean(outs))))
    return pairs


def _same_layer_across_seeds(ctx: ClaimContext) -> list[tuple[float, float]]:
    """Per pair of seeds (blocks of the first): mean CKA of a layer with itself elsewhere, and in blocks."""
    by_name = {m.name: m for m in ctx.models}
    pairs = []
    for pair in ctx.summary.cross_seed:
        model = by_name.get(pair.a)
        if model is None or not ctx.has_block(model):
            continue
        cka = CKAResult.load(ctx.root / pair.path)
        in_block = ctx.in_block(model)
        diag = {n: cka.matrix[i, cka.layers_b.index(n)] for i, n in enumerate(cka.layers_a) if n in cka.layers_b}
        ins = [diag[n] for n, flag in in_block.items() if flag and n in diag]
        outs = [diag[n] for n, flag in in_block.items() if not flag and n in diag]
        if ins and outs:
            pairs.append((float(np.nanmean(outs)), float(np.nanmean(ins))))
    return pairs


def _without_dominant(ctx: ClaimContext) -> list[tuple[float, float]]:
    """Per traced model: mean block score without as many random examples, and without the dominant ones."""
    return [(float(np.nanmean(s["cka_random"])), float(np.nanmean(s["cka_without"]))) for _, s, _ in ctx.traced_origins()]


def _dominance(ctx: ClaimContext) -> dict[str, Any]:
    found = ctx.traced_origins()
    return {"mean_score": float(np.mean([np.nanmean(s["cka"]) for _, s, _ in found])) if found else None,
            "mean_dominant_pc1_share": float(np.mean([np.nanmean(o.dominant_share()) for *_, o in found]))
            if found else None}


def _normalised(ctx: ClaimContext) -> list[tuple[float, float]]:
    """Per traced model: mean block score, and with per-example normalised activations."""
    return [(float(np.nanmean(s["cka"])), float(np.nanmean(s["cka_normalised"]))) for _, s, _ in ctx.traced_origins()]


def _errors(ctx: ClaimContext) -> Claim:
    statement = "wide and deep models make different errors, per example and per class"
    statistic = "example-level D(A, B) = mean squared difference of per-example accuracy"
    path = ctx.summary.errors
    if not path or not (ctx.root / path).is_file():
        return Claim("errors", statement, statistic, note="needs [analyses.errors]")
    result = ErrorComparison.load(ctx.root / path)
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
    if ex.min_p_value > ctx.alpha:  # no outcome could reach alpha: the claim is not tested, not refuted
        return Claim("errors", statement, statistic, float(ex.statistic), float(ex.p_value), n, None,
                     f"{n} models: p cannot fall below {ex.min_p_value:.3g} > alpha; {note}", details)
    return Claim("errors", statement, statistic, float(ex.statistic), float(ex.p_value), n,
                 bool(ex.p_value <= ctx.alpha), note, details)


IN_OUT = ("mean_in_block", "mean_elsewhere")

CLAIMS: list[TrendClaim | PairedClaim | OwnClaim] = [
    TrendClaim("width", "block structure emerges as networks get wider", "width", ("depth", "fraction")),
    TrendClaim("depth", "block structure emerges as networks get deeper", "depth", ("width", "fraction")),
    TrendClaim("data", "with less training data, block structure appears in smaller models", "fraction",
               ("depth", "width"), direction="decreasing"),
    PairedClaim("pc1-variance", "inside a block, the first principal component explains most of the variance",
                "mean PC1 variance share, in-block minus other analysed layers (per model with a block)",
                "needs [analyses.pca] and models with a block", _pc1_variance, IN_OUT),
    PairedClaim("pc1-carries", "inside a block, the first principal component carries from layer to layer",
                "mean squared cosine of consecutive layers' PC1s, in-block pairs minus other pairs",
                "needs [analyses.pca] and models with a block", _pc1_carries, IN_OUT),
    PairedClaim("probes", "linear-probe accuracy stalls inside a block",
                "mean post-residual probe gain per block, other blocks minus in-block blocks",
                "needs [analyses.probes] on models with a block and blocks outside it", _probe_gains,
                ("mean_gain_elsewhere", "mean_gain_in_block")),
    PairedClaim("pruning", "deleting blocks inside the block structure costs little accuracy, deleting others more",
                "mean accuracy change of single deletions, in-block minus elsewhere",
                "needs [analyses.prune] on models with deletions inside and outside a block", _deletions,
                ("mean_delta_in_block", "mean_delta_elsewhere")),
    PairedClaim("cross-seed", "outside the block structure the same layer of two seeds is similar, inside it is not",
                "mean cross-seed CKA of a layer with itself, elsewhere minus in-block (per pair of seeds)",
                "needs [analyses.cross_seed] and models with a block", _same_layer_across_seeds,
                ("mean_elsewhere", "mean_in_block")),
    PairedClaim("dominant-examples", "block structure is carried by a few dominant examples: without them a block "
                "stands out less than without as many random examples",
                "mean block score without as many random examples minus without the dominant ones (per model)",
                "needs [analyses.origins] on models with a block", _without_dominant,
                ("mean_score_without_random", "mean_score_without_dominant"), _dominance, blocks="saved"),
    PairedClaim("normalised", "with each example's activations scaled to unit length, blocks stand out less",
                "mean block score minus its score with per-example normalised activations (per model)",
                "needs [analyses.origins] on models with a block", _normalised,
                ("mean_score", "mean_score_normalised"), blocks="saved"),
    OwnClaim("errors", _errors, blocks="none"),
]
"""Every claim, in the order they are reported. A new claim is one definition here and, for a
paired claim, one function giving each unit's two values."""


def experiment_detector(root: str | Path) -> BlockDetector:
    """The block detector a finished experiment used (its summary.json)."""
    summary = read_summary(root)
    return BlockDetector.from_saved(summary.blocks_table or None, f"[analyses.blocks] of {Path(root) / 'summary.json'}")


__all__ = ["CLAIMS", "Claim", "ClaimContext", "ClaimsResult", "DEFAULT_SWEEP", "OwnClaim", "PairedClaim", "SWEEPS",
           "TrendClaim", "evaluate_claims", "experiment_detector"]
