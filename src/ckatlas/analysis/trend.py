"""Rank-trend tests over a grid of models: does a measure grow with width, depth or data?

A claim such as "block structure emerges with width" is decided over seeds by one
statistic, not by the look of one grid. `trend_test` takes one value per model (its
block fraction, say), the level of the factor under test (its width) and, optionally,
a stratum (its depth: the trend is then tested within each depth and pooled).

Statistic: the mean over strata of Spearman's rank correlation between level and
value (average ranks for ties); each stratum weighs the same. Null hypothesis: within
each stratum, the values are exchangeable across levels (the factor does nothing).
The p-value is one-sided in the stated `direction`, from permutations of the values
within each stratum: ``(1 + #{permuted >= observed}) / (1 + num_permutations)``,
where "observed" is the statistic signed so that the claimed direction is positive.
A stratum where the level or the value does not vary has no correlation and is left
out (reported as such).

Both tests also give the one-sided p-value in the *other* direction (`p_opposite`, from the
same permutations), so that a result significant against the claim reads as such
("contradicted", `verdict`) and is never confused with one that is merely not significant,
and a 95% bootstrap interval of the effect over the replicates (`interval`): the models of
each stratum x level cell (the seeds) resampled with replacement, the statistic recomputed,
the 2.5 and 97.5 percentiles; for paired differences, the pairs resampled.

The words (`verdict`): **holds** when the one-sided p in the claimed direction is at most
alpha, **contradicted** when the one-sided p in the other direction is, **not established**
otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ckatlas.errors import UserInputError

DIRECTIONS = ("increasing", "decreasing")
#: bootstrap resamples of every interval ckatlas reports, seed 0
BOOTSTRAP = 2_000
VERDICTS = ("holds", "contradicted", "not established")
#: fewest pairs a paired difference gets a bootstrap interval for
MIN_INTERVAL_PAIRS = 5


def min_sign_flip_p(n: int) -> float:
    """The smallest one-sided p-value a sign-flip test over `n` pairs can give: 2^-n (all signs as observed)."""
    return 2.0 ** -n


def verdict(p_value: float, p_opposite: float, alpha: float = 0.05) -> str:
    """The words for a one-sided test (module docstring): "holds", "contradicted" or "not established"."""
    if p_value <= alpha:
        return "holds"
    if p_opposite <= alpha:
        return "contradicted"
    return "not established"
#: permutations of every test ckatlas reports (the headline, `ckatlas claims`, the report), seed 0:
#: one statistic, one p-value wherever it is printed.
PERMUTATIONS = 10_000


@dataclass
class TrendTest:
    """The result of `trend_test`.

    Attributes:
        statistic: mean Spearman correlation over the strata used (in [-1, 1]; the sign
            is that of the data, not flipped for the direction).
        p_value: one-sided permutation p-value for `direction`.
        direction: the claimed direction, "increasing" or "decreasing".
        num_permutations: permutations drawn.
        strata: per stratum: its label, its correlation (None when it has none), and
            its number of models.
        num_models: models in the strata used.
        p_opposite: one-sided permutation p-value for the other direction.
        interval: 95% bootstrap interval of `statistic` over the replicates of each stratum x level
            cell (None without replicates or resamples).
    """

    statistic: float
    p_value: float
    direction: str
    num_permutations: int
    strata: list[dict[str, Any]] = field(default_factory=list)
    num_models: int = 0
    p_opposite: float = float("nan")
    interval: tuple[float, float] | None = None

    def holds(self, alpha: float = 0.05) -> bool:
        """Whether the trend is significant at `alpha` in the claimed direction."""
        return bool(self.p_value <= alpha)

    def verdict(self, alpha: float = 0.05) -> str:
        """"holds", "contradicted" or "not established" at `alpha` (module docstring)."""
        return verdict(self.p_value, self.p_opposite, alpha)

    def summary(self, what: str = "the measure", factor: str = "the factor") -> str:
        """One line: the statistic, its interval, its p-values and the verdict."""
        ci = "" if self.interval is None else f" (95% CI {self.interval[0]:+.2f} to {self.interval[1]:+.2f})"
        return (f"{what} {self.direction[:-3]}es with {factor}: mean Spearman rho {self.statistic:+.2f}{ci} over "
                f"{sum(s['rho'] is not None for s in self.strata)} strata ({self.num_models} models), one-sided "
                f"permutation p = {self.p_value:.3g}, the other way {self.p_opposite:.3g}: {self.verdict()} at 0.05")

    def to_dict(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "p_value": self.p_value,
            "direction": self.direction,
            "num_permutations": self.num_permutations,
            "strata": self.strata,
            "num_models": self.num_models,
            "p_opposite": self.p_opposite,
            "interval": None if self.interval is None else list(self.interval),
        }


def trend_test(
    values: Sequence[float],
    levels: Sequence[float],
    strata: Sequence[Hashable] | None = None,
    *,
    direction: str = "increasing",
    num_permutations: int = PERMUTATIONS,
    seed: int = 0,
    bootstrap: int = BOOTSTRAP,
) -> TrendTest:
    """One-sided permutation test of a monotone trend of `values` with `levels` (module docstring).

    Args:
        values: one value per model (NaN values are left out).
        levels: the level of the factor under test per model (e.g. its width).
        strata: a label per model; the trend is tested within each label (None: one stratum).
        direction: the claimed direction, "increasing" or "decreasing".
        num_permutations: permutations of the values within each stratum.
        seed: seed of the permutations and of the bootstrap.
        bootstrap: resamples of the 95% interval (0: none).

    Returns:
        A `TrendTest`.
    """
    if direction not in DIRECTIONS:
        raise UserInputError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if isinstance(num_permutations, bool) or not isinstance(num_permutations, int) or num_permutations < 1:
        raise UserInputError(f"num_permutations must be a positive integer, got {num_permutations!r}")
    v = np.asarray(values, dtype=np.float64)
    x = np.asarray(levels, dtype=np.float64)
    s = np.zeros(len(v), dtype=np.int64) if strata is None else None
    labels: list[Hashable] = ["all"]
    if strata is not None:
        if len(strata) != len(v):
            raise UserInputError(f"{len(strata)} strata for {len(v)} values: give one stratum per model")
        labels = list(dict.fromkeys(strata))
        s = np.array([labels.index(k) for k in strata])
    if len(x) != len(v):
        raise UserInputError(f"{len(x)} levels for {len(v)} values: give one level per model")
    rng = np.random.default_rng(seed)
    sign = 1.0 if direction == "increasing" else -1.0
    observed, permuted, report, used = [], [], [], 0
    for k, label in enumerate(labels):
        keep = (s == k) & np.isfinite(v)
        xv, vv = x[keep], v[keep]
        if len(vv) < 3 or np.ptp(xv) == 0 or np.ptp(vv) == 0:
            report.append({"stratum": _jsonable(label), "rho": None, "n": int(len(vv))})
            continue
        rx = rankdata(xv) - (len(xv) + 1) / 2.0  # centred ranks
        rv = rankdata(vv) - (len(vv) + 1) / 2.0
        norm = np.sqrt((rx @ rx) * (rv @ rv))
        rho = float(rx @ rv / norm)
        shuffled = rv[np.argsort(rng.random((num_permutations, len(rv))), axis=1)]  # (P, n) permuted value ranks
        observed.append(rho)
        permuted.append(shuffled @ rx / norm)
        report.append({"stratum": _jsonable(label), "rho": rho, "n": int(len(vv))})
        used += len(vv)
    if not observed:
        return TrendTest(float("nan"), 1.0, direction, num_permutations, report, 0, 1.0)
    statistic = float(np.mean(observed))
    null = np.mean(permuted, axis=0)
    exceed = int(np.sum(sign * null >= sign * statistic - 1e-12))
    against = int(np.sum(sign * null <= sign * statistic + 1e-12))
    p = (1 + exceed) / (1 + num_permutations)
    p_opposite = (1 + against) / (1 + num_permutations)
    interval = _trend_interval(v, x, s, len(labels), bootstrap, np.random.default_rng([seed, 1]))
    return TrendTest(statistic, float(p), direction, num_permutations, report, used, float(p_opposite), interval)


def _row_spearman(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of (B, n) arrays (average ranks for ties); NaN where a row of x or of v
    does not vary, or has fewer than 3 entries."""
    if x.shape[1] < 3:
        return np.full(len(x), np.nan)
    rx = rankdata(x, axis=1) - (x.shape[1] + 1) / 2.0
    rv = rankdata(v, axis=1) - (v.shape[1] + 1) / 2.0
    norm = np.sqrt((rx * rx).sum(1) * (rv * rv).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (rx * rv).sum(1) / np.where(norm > 0, norm, 1.0), np.nan)


def _trend_interval(v: np.ndarray, x: np.ndarray, s: np.ndarray, num_strata: int, resamples: int,
                    rng: np.random.Generator) -> tuple[float, float] | None:
    """95% percentile interval of the mean within-stratum Spearman rho, the models of each stratum x level
    cell resampled with replacement (the seeds are the replicates); None when no cell has two models.
    All resamples at once: per stratum, a (resamples, models) array of picks."""
    cells = []
    for k in range(num_strata):
        keep = np.flatnonzero((s == k) & np.isfinite(v))
        cells.append([keep[x[keep] == level] for level in np.unique(x[keep])])
    if resamples < 1 or not any(len(c) > 1 for stratum in cells for c in stratum):
        return None
    rhos = []
    for stratum in cells:
        if not stratum:
            continue
        picked = np.concatenate([c[rng.integers(0, len(c), size=(resamples, len(c)))] for c in stratum], axis=1)
        rhos.append(_row_spearman(x[picked], v[picked]))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no stratum varies: left out
        stats = np.nanmean(np.stack(rhos), axis=0)
    stats = stats[np.isfinite(stats)]
    if not len(stats):
        return None
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


def _jsonable(label: Hashable) -> Any:
    if isinstance(label, (np.integer, np.floating)):
        return label.item()
    return label if isinstance(label, (str, int, float, bool)) or label is None else str(label)


def paired_difference_test(
    a: Sequence[float], b: Sequence[float], *, num_permutations: int = PERMUTATIONS, seed: int = 0,
    alternative: str = "greater", bootstrap: int = BOOTSTRAP,
) -> dict[str, Any]:
    """Sign-flip permutation test that the mean of paired differences a - b is above (or below) 0.

    For per-model comparisons inside vs outside a block (one pair per model). NaN pairs
    are left out. Returns the mean difference, the number of pairs, the one-sided p-value, the
    one-sided p-value the other way (``p_opposite``) and the 95% bootstrap interval of the mean
    difference over the pairs (``interval``; None under `MIN_INTERVAL_PAIRS` pairs, where a percentile
    bootstrap has too few distinct resamples to mean anything). With n pairs no sign-flip p-value falls
    below 2^-n (`min_sign_flip_p`).
    """
    if alternative not in ("greater", "less"):
        raise UserInputError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return {"mean_difference": float("nan"), "n": 0, "p_value": 1.0, "p_opposite": 1.0, "interval": None}
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(num_permutations, len(d)))
    null = (signs * d).mean(axis=1)
    sign = 1.0 if alternative == "greater" else -1.0
    exceed = int(np.sum(sign * null >= sign * d.mean() - 1e-12))
    against = int(np.sum(sign * null <= sign * d.mean() + 1e-12))
    interval = None
    if len(d) >= MIN_INTERVAL_PAIRS and bootstrap > 0:
        means = d[np.random.default_rng([seed, 1]).integers(0, len(d), size=(bootstrap, len(d)))].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        interval = [float(low), float(high)]
    return {"mean_difference": float(d.mean()), "n": int(len(d)), "p_value": (1 + exceed) / (1 + num_permutations),
            "p_opposite": (1 + against) / (1 + num_permutations), "interval": interval}


__all__ = ["BOOTSTRAP", "DIRECTIONS", "MIN_INTERVAL_PAIRS", "PERMUTATIONS", "VERDICTS", "min_sign_flip_p", "TrendTest", "paired_difference_test", "trend_test", "verdict"]
