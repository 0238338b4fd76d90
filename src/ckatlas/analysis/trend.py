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
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ckatlas.errors import UserInputError

DIRECTIONS = ("increasing", "decreasing")
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
    """

    statistic: float
    p_value: float
    direction: str
    num_permutations: int
    strata: list[dict[str, Any]] = field(default_factory=list)
    num_models: int = 0

    def holds(self, alpha: float = 0.05) -> bool:
        """Whether the trend is significant at `alpha` in the claimed direction."""
        return bool(self.p_value <= alpha)

    def summary(self, what: str = "the measure", factor: str = "the factor") -> str:
        """One line: the statistic, its p-value and the verdict."""
        verdict = "significant" if self.holds() else "not significant"
        return (f"{what} {self.direction[:-3]}es with {factor}: mean Spearman rho {self.statistic:+.2f} over "
                f"{sum(s['rho'] is not None for s in self.strata)} strata ({self.num_models} models), one-sided "
                f"permutation p = {self.p_value:.3g} ({verdict} at 0.05)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "p_value": self.p_value,
            "direction": self.direction,
            "num_permutations": self.num_permutations,
            "strata": self.strata,
            "num_models": self.num_models,
        }


def trend_test(
    values: Sequence[float],
    levels: Sequence[float],
    strata: Sequence[Hashable] | None = None,
    *,
    direction: str = "increasing",
    num_permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> TrendTest:
    """One-sided permutation test of a monotone trend of `values` with `levels` (module docstring).

    Args:
        values: one value per model (NaN values are left out).
        levels: the level of the factor under test per model (e.g. its width).
        strata: a label per model; the trend is tested within each label (None: one stratum).
        direction: the claimed direction, "increasing" or "decreasing".
        num_permutations: permutations of the values within each stratum.
        seed: seed of the permutations.

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
        return TrendTest(float("nan"), 1.0, direction, num_permutations, report, 0)
    statistic = float(np.mean(observed))
    null = np.mean(permuted, axis=0)
    exceed = int(np.sum(sign * null >= sign * statistic - 1e-12))
    p = (1 + exceed) / (1 + num_permutations)
    return TrendTest(statistic, float(p), direction, num_permutations, report, used)


def _jsonable(label: Hashable) -> Any:
    if isinstance(label, (np.integer, np.floating)):
        return label.item()
    return label if isinstance(label, (str, int, float, bool)) or label is None else str(label)


def paired_difference_test(
    a: Sequence[float], b: Sequence[float], *, num_permutations: int = PERMUTATIONS, seed: int = 0,
    alternative: str = "greater",
) -> dict[str, float]:
    """Sign-flip permutation test that the mean of paired differences a - b is above (or below) 0.

    For per-model comparisons inside vs outside a block (one pair per model). NaN pairs
    are left out. Returns mean difference, the number of pairs and the one-sided p-value.
    """
    if alternative not in ("greater", "less"):
        raise UserInputError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return {"mean_difference": float("nan"), "n": 0, "p_value": 1.0}
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(num_permutations, len(d)))
    null = (signs * d).mean(axis=1)
    sign = 1.0 if alternative == "greater" else -1.0
    exceed = int(np.sum(sign * null >= sign * d.mean() - 1e-12))
    return {"mean_difference": float(d.mean()), "n": int(len(d)), "p_value": (1 + exceed) / (1 + num_permutations)}


__all__ = ["DIRECTIONS", "PERMUTATIONS", "TrendTest", "paired_difference_test", "trend_test"]
