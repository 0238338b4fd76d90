"""Do two populations of models (e.g. wide vs deep, several seeds each) make different errors?

Input: each model's predictions on the same test set (a run's ``predictions.npz``, with
``logits`` (N, C) or ``predictions`` (N,), and ``labels`` (N,), in dataset order).

Example level. The per-example accuracy of a population is the fraction of its models
that classify the example correctly. The statistic is the mean over the N examples of
the squared difference of the two populations' per-example accuracies,

    D(A, B) = mean_n (acc_A[n] - acc_B[n])^2.

Test: a permutation test over models. Under the null hypothesis the models of A and B
are exchangeable (they come from one distribution of models, so their errors differ only
as much as seeds do); re-assigning the M_A + M_B models to groups of the original sizes
M_A and M_B and recomputing D gives its null distribution. The one-sided p-value is the
share of assignments with D >= the observed D: all C(M_A + M_B, M_A) assignments when
there are at most ``num_permutations`` of them (exact; the observed one included), else
``num_permutations`` random ones, p = (1 + #{D_perm >= D_obs}) / (1 + num_permutations).
Because the permuted groups have the observed sizes, the noise of finite populations is
the same on both sides of the comparison. D detects any difference in which examples
the models get right, a difference in overall accuracy included; the per-model
accuracies are reported beside it. The smallest attainable p-value is about
1 / C(M_A + M_B, M_A) (e.g. 2/20 for 3 + 3 models), so use enough models.

For the scatter, population A is also split at random into two disjoint halves of
floor(M_A / 2) models each (one model left out when M_A is odd): the control, showing
how much per-example accuracy moves between two groups of models of the same kind.

Class level. Each model's accuracy on each class; per class, Welch's t-test (unequal
variances, `scipy.stats.ttest_ind`) of A's models against B's; the p-values corrected
for the number of classes with Holm-Sidak (`statsmodels.stats.multitest.multipletests`).
Class groups (e.g. WordNet superclasses; a JSON mapping ``{group: [classes]}``, by index
or by name) are tested the same way, with a model's group accuracy taken over all test
examples of the group's classes and its own Holm-Sidak family. Classes (or groups) where
the t statistic is undefined (no test examples, or no variance in either population) get
NaN and are left out of the correction.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ckatlas.analysis.error_results import ErrorComparison, ExampleLevel, GroupLevel
from ckatlas.analysis.populations import Population, check_same_test_set, load_class_groups, load_predictions
from ckatlas.errors import UserInputError



# -- the analysis ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorSettings:
    """How `compare_populations` tests: the one place of these settings and their defaults
    (`[analyses.errors]` takes them; `ckatlas errors` makes its options from them)."""

    alpha: float = field(default=0.05, metadata={"help": "significance level of the verdicts and of Holm-Sidak"})
    num_permutations: int = field(default=10_000, metadata={
        "help": "permutation budget: every assignment of models when there are at most this many, else a sample",
        "flags": ("--permutations",)})
    seed: int = field(default=0, metadata={"help": "seed of the control split and the sampled permutations"})

    def check(self, where: str = "") -> None:
        """One clear error for a setting `compare_populations` cannot use."""
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1:
            raise UserInputError(f"alpha{where} must be in (0, 1), got {self.alpha}")
        if isinstance(self.num_permutations, bool) or not isinstance(self.num_permutations, int) \
                or self.num_permutations < 1:
            raise UserInputError(f"num_permutations{where} must be >= 1, got {self.num_permutations}")


def compare_populations(
    pop_a: Population,
    pop_b: Population,
    *,
    alpha: float = ErrorSettings.alpha,
    seed: int = ErrorSettings.seed,
    num_permutations: int = ErrorSettings.num_permutations,
    class_groups: Mapping[str, Sequence[int | str]] | None = None,
    class_names: Sequence[str] | None = None,
) -> ErrorComparison:
    """Compare the errors of two populations of models on one test set (tests: module docstring).

    Args:
        pop_a, pop_b: the populations, at least 2 models each, same test set.
        alpha: significance level for the verdicts and the Holm-Sidak correction.
        seed: seeds the control split and the sampled permutations.
        num_permutations: enumerate all model assignments when there are at most this many,
            else sample this many.
        class_groups: ``{group: [class index or name, ...]}`` to test groups of classes.
        class_names: a name per class (for tables, and to name classes in ``class_groups``).

    Raises:
        UserInputError: different test sets, a population of fewer than 2 models, unknown
            classes in ``class_groups``, or settings out of range.
    """
    for pop, label in ((pop_a, "A"), (pop_b, "B")):
        if pop.num_models < 2:
            raise UserInputError(
                f"population {pop.name or label} has {pop.num_models} model; comparing errors needs at least 2 "
                "models per population (e.g. several seeds)"
            )
    where_a, where_b = f"population {pop_a.name or 'A'}", f"population {pop_b.name or 'B'}"
    check_same_test_set(pop_a.labels, pop_b.labels, where_a, where_b)
    ErrorSettings(alpha, num_permutations, seed).check()
    num_classes = max(pop_a.num_classes, pop_b.num_classes)
    names = _class_names(class_names, num_classes)
    groups = None if class_groups is None else _resolve_groups(class_groups, names)

    examples = _example_level(pop_a.correct, pop_b.correct, seed, num_permutations)
    labels = pop_a.labels
    counts_a = class_correct_counts(pop_a.correct, labels, num_classes)
    counts_b = class_correct_counts(pop_b.correct, labels, num_classes)
    totals = np.bincount(labels, minlength=num_classes)
    classes = _group_level(counts_a, counts_b, totals, [[c] for c in range(num_classes)], names, alpha)
    group_level = None
    if groups is not None:
        group_level = _group_level(counts_a, counts_b, totals, list(groups.values()), list(groups), alpha)
        group_level.members = list(groups.values())
    return ErrorComparison(
        name_a=pop_a.name or "A",
        name_b=pop_b.name or "B",
        sources_a=list(pop_a.sources),
        sources_b=list(pop_b.sources),
        model_accuracy_a=pop_a.model_accuracy,
        model_accuracy_b=pop_b.model_accuracy,
        examples=examples,
        classes=classes,
        groups=group_level,
        alpha=float(alpha),
        seed=int(seed),
    )


def per_example_accuracy(correct: np.ndarray) -> np.ndarray:
    """(N,) fraction of models right on each example, from an (M, N) bool array."""
    return np.asarray(correct, dtype=np.float64).mean(axis=0)


def class_correct_counts(correct: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(M, C) number of test examples of each class that each model gets right."""
    m = correct.shape[0]
    flat = (np.arange(m)[:, None] * num_classes + labels[None, :]).ravel()
    counts = np.bincount(flat, weights=correct.ravel().astype(np.float64), minlength=m * num_classes)
    return counts.reshape(m, num_classes)


def mean_squared_difference(correct: np.ndarray, in_a: np.ndarray) -> np.ndarray:
    """D for each assignment of models to groups.

    Args:
        correct: (M, N) whether each of the pooled models is right on each example.
        in_a: (P, M) bool, each row one assignment (True: the model is in group A).

    Returns:
        (P,) mean over examples of the squared difference of the groups' per-example accuracy.
    """
    in_a = np.asarray(in_a, dtype=bool)
    weights = in_a / in_a.sum(1, keepdims=True) - ~in_a / (~in_a).sum(1, keepdims=True)  # (P, M)
    values = np.asarray(correct, dtype=np.float64)
    out = np.empty(len(in_a))
    for lo in range(0, len(in_a), 256):  # chunks keep the (P, N) differences small
        diff = weights[lo : lo + 256] @ values
        out[lo : lo + 256] = np.mean(diff * diff, axis=1)
    return out


def _example_level(correct_a: np.ndarray, correct_b: np.ndarray, seed: int, num_permutations: int) -> ExampleLevel:
    ma, mb = len(correct_a), len(correct_b)
    pooled = np.concatenate([correct_a, correct_b])
    observed = np.zeros((1, ma + mb), dtype=bool)
    observed[0, :ma] = True
    statistic = float(mean_squared_difference(pooled, observed)[0])

    control_rng = np.random.default_rng([seed, 0])
    half = ma // 2
    order = control_rng.permutation(ma)
    first, second = sorted(order[:half].tolist()), sorted(order[half : 2 * half].tolist())
    control_1, control_2 = per_example_accuracy(correct_a[first]), per_example_accuracy(correct_a[second])

    total = math.comb(ma + mb, ma)
    exact = total <= num_permutations
    if exact:
        assignments = np.zeros((total, ma + mb), dtype=bool)
        for row, members in enumerate(itertools.combinations(range(ma + mb), ma)):
            assignments[row, list(members)] = True
    else:
        keys = np.random.default_rng([seed, 1]).random((num_permutations, ma + mb))
        assignments = keys.argsort(axis=1).argsort(axis=1) < ma
    null = mean_squared_difference(pooled, assignments)
    at_least = int(np.sum(null >= statistic * (1 - 1e-12)))  # relative slack: ties in floating point
    p_value = at_least / total if exact else (1 + at_least) / (1 + num_permutations)
    # With the observed D as large as any, p is the share of assignments tied at the maximum.
    min_p_value = float(np.mean(null >= null.max() * (1 - 1e-12))) if exact else 1 / (1 + num_permutations)

    acc_a, acc_b = per_example_accuracy(correct_a), per_example_accuracy(correct_b)
    return ExampleLevel(
        accuracy_a=acc_a,
        accuracy_b=acc_b,
        control_1=control_1,
        control_2=control_2,
        control_models_1=first,
        control_models_2=second,
        statistic=statistic,
        control_statistic=float(np.mean((control_1 - control_2) ** 2)),
        null_mean=float(null.mean()),
        null_std=float(null.std()),
        p_value=float(p_value),
        min_p_value=min_p_value,
        num_permutations=int(len(assignments)),
        exact=bool(exact),
        correlation=_pearson(acc_a, acc_b),
        control_correlation=_pearson(control_1, control_2),
    )


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _group_level(
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    totals: np.ndarray,
    members: list[list[int]],
    names: list[str],
    alpha: float,
) -> GroupLevel:
    """Per-group accuracy of each model, Welch t-test per group, Holm-Sidak over the groups."""
    n = np.array([totals[m].sum() for m in members])
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_a = np.stack([counts_a[:, m].sum(1) for m in members], axis=1) / n  # (M_A, K)
        acc_b = np.stack([counts_b[:, m].sum(1) for m in members], axis=1) / n
    t = np.full(len(members), np.nan)
    p = np.full(len(members), np.nan)
    has_data = n > 0
    if has_data.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: NaN, handled below
            res = stats.ttest_ind(acc_a[:, has_data], acc_b[:, has_data], axis=0, equal_var=False)
        t[has_data], p[has_data] = res.statistic, res.pvalue
    p_corrected = np.full(len(members), np.nan)
    significant = np.zeros(len(members), dtype=bool)
    tested = np.isfinite(p)
    if tested.any():
        with np.errstate(divide="ignore"):  # statsmodels takes log1p(-p), -inf at p = 1
            reject, corrected, _, _ = multipletests(p[tested], alpha=alpha, method="holm-sidak")
        p_corrected[tested], significant[tested] = corrected, reject
    return GroupLevel(
        names=list(names),
        num_examples=n.astype(np.int64),
        accuracy_a=acc_a.mean(axis=0),
        accuracy_b=acc_b.mean(axis=0),
        t=t,
        p_value=p,
        p_corrected=p_corrected,
        significant=significant,
    )


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise UserInputError(f"{len(names)} class names given for {num_classes} classes")
    if len(set(names)) != len(names):
        raise UserInputError("class names must be unique")
    return names


def _resolve_groups(groups: Mapping[str, Sequence[int | str]], names: list[str]) -> dict[str, list[int]]:
    """Class groups as class indices; names are looked up in `names`."""
    if not groups:
        raise UserInputError("class_groups is empty; expected {group: [class index or name, ...]}")
    index = {name: k for k, name in enumerate(names)}
    out: dict[str, list[int]] = {}
    for group, classes in groups.items():
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
            raise UserInputError(f"class group {group!r} must be a non-empty list of class indices or names")
        resolved = []
        for c in classes:
            if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                if not 0 <= c < len(names):
                    raise UserInputError(
                        f"class group {group!r} names class index {c}; classes are 0..{len(names) - 1}"
                    )
                resolved.append(int(c))
            elif isinstance(c, str) and c in index:
                resolved.append(index[c])
            else:
                raise UserInputError(
                    f"class group {group!r} names unknown class {c!r}; "
                    "expected class indices, or names from class_names"
                )
        out[str(group)] = sorted(set(resolved))
    return out


__all__ = [
    "ErrorComparison",
    "ErrorSettings",
    "ExampleLevel",
    "GroupLevel",
    "Population",
    "class_correct_counts",
    "compare_populations",
    "load_class_groups",
    "load_predictions",
    "mean_squared_difference",
    "per_example_accuracy",
]
