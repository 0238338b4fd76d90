"""The results of `ckatlas.analysis.error_compare.compare_populations`: `ErrorComparison`, with its
example-level (`ExampleLevel`) and class- or group-level (`GroupLevel`) tests."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from ckatlas.errors import UserInputError
from ckatlas.io.results import JsonResult


@dataclass
class ExampleLevel:
    """Per-example accuracies of both populations, the control split, and the permutation test.

    Attributes:
        accuracy_a, accuracy_b: (N,) fraction of each population's models right on each example.
        control_1, control_2: (N,) the same for the two disjoint halves of population A.
        control_models_1, control_models_2: which models of A form each half.
        statistic: D(A, B), the mean squared difference of per-example accuracy.
        control_statistic: D(A half 1, A half 2).
        null_mean, null_std: mean and std of D over the permuted assignments.
        p_value: one-sided permutation p-value of D(A, B).
        min_p_value: the smallest p-value these population sizes can give; when it is
            not below alpha no difference can be detected, whatever the data.
        num_permutations: assignments evaluated; exact: whether that is all of them.
        correlation, control_correlation: Pearson correlation of the two scatters.
    """

    accuracy_a: np.ndarray
    accuracy_b: np.ndarray
    control_1: np.ndarray
    control_2: np.ndarray
    control_models_1: list[int]
    control_models_2: list[int]
    statistic: float
    control_statistic: float
    null_mean: float
    null_std: float
    p_value: float
    min_p_value: float
    num_permutations: int
    exact: bool
    correlation: float
    control_correlation: float

    test: ClassVar[str] = "permutation test over models of D = mean over examples of (acc_A - acc_B)^2, one-sided"


@dataclass
class GroupLevel:
    """Per-class (or per-group) accuracy of both populations, Welch t-tests, Holm-Sidak.

    Attributes:
        names: class or group names.
        num_examples: (K,) test examples in each class or group.
        accuracy_a, accuracy_b: (K,) mean over each population's models.
        difference: accuracy_a - accuracy_b.
        t: (K,) Welch t statistic (A minus B); p_value: two-sided, uncorrected.
        p_corrected: Holm-Sidak corrected p-values; significant: p_corrected < alpha.
        members: each group's class indices (None for classes).
    """

    names: list[str]
    num_examples: np.ndarray
    accuracy_a: np.ndarray
    accuracy_b: np.ndarray
    t: np.ndarray
    p_value: np.ndarray
    p_corrected: np.ndarray
    significant: np.ndarray
    members: list[list[int]] | None = None

    test: ClassVar[str] = "Welch t-test per class across models, Holm-Sidak corrected"

    @property
    def difference(self) -> np.ndarray:
        return self.accuracy_a - self.accuracy_b

    def rows(self) -> list[dict[str, Any]]:
        """One dict per class or group: name, n, acc_a, acc_b, diff, t, p, p_holm_sidak, significant."""
        return [
            {
                "name": self.names[k],
                "n": int(self.num_examples[k]),
                "acc_a": float(self.accuracy_a[k]),
                "acc_b": float(self.accuracy_b[k]),
                "diff": float(self.difference[k]),
                "t": float(self.t[k]),
                "p": float(self.p_value[k]),
                "p_holm_sidak": float(self.p_corrected[k]),
                "significant": bool(self.significant[k]),
            }
            for k in range(len(self.names))
        ]

    def to_markdown(self, name_a: str = "A", name_b: str = "B", only_significant: bool = False) -> str:
        """The table in Markdown, largest absolute difference first."""
        head = f"| name | n | acc {name_a} | acc {name_b} | diff | t | p | p (Holm-Sidak) | significant |"
        lines = [head, "|" + "---|" * 9]
        rows = sorted(self.rows(), key=lambda r: -abs(r["diff"]) if np.isfinite(r["diff"]) else 0.0)
        for r in rows:
            if only_significant and not r["significant"]:
                continue
            lines.append(
                f"| {r['name']} | {r['n']} | {r['acc_a']:.4f} | {r['acc_b']:.4f} | {r['diff']:+.4f} | {r['t']:.3f} "
                f"| {r['p']:.3g} | {r['p_holm_sidak']:.3g} | {'yes' if r['significant'] else ''} |"
            )
        return "\n".join(lines) + "\n"


@dataclass
class ErrorComparison(JsonResult):
    """Example- and class-level comparison of the errors of two populations of models."""

    FORMAT = "ckatlas.ErrorComparison"
    WHAT = "an error comparison"

    name_a: str
    name_b: str
    sources_a: list[str]
    sources_b: list[str]
    model_accuracy_a: np.ndarray
    model_accuracy_b: np.ndarray
    examples: ExampleLevel
    classes: GroupLevel
    groups: GroupLevel | None
    alpha: float
    seed: int

    def class_table(self, level: str = "classes") -> list[dict[str, Any]]:
        """Rows of the class-level table (``level="groups"`` for class groups)."""
        return self._level(level).rows()

    def class_table_markdown(self, level: str = "classes", only_significant: bool = False) -> str:
        """The class-level table in Markdown."""
        return self._level(level).to_markdown(self.name_a, self.name_b, only_significant)

    def _level(self, level: str) -> GroupLevel:
        if level == "classes":
            return self.classes
        if level == "groups":
            if self.groups is None:
                raise UserInputError("this comparison has no class groups (pass class_groups=)")
            return self.groups
        raise UserInputError(f"level must be 'classes' or 'groups', got {level!r}")

    def summary(self) -> str:
        """A few human-readable lines."""
        ex = self.examples

        def pop(name: str, acc: np.ndarray) -> str:
            return f"{name} ({len(acc)} models, accuracy {100 * acc.mean():.2f} ± {100 * acc.std(ddof=1):.2f}%)"

        verdict = "differ more than" if ex.p_value < self.alpha else "do not differ detectably more than"
        kind = "all" if ex.exact else "random"
        lines = [
            f"{pop(self.name_a, self.model_accuracy_a)} vs {pop(self.name_b, self.model_accuracy_b)}, "
            f"{len(ex.accuracy_a)} test examples",
            f"examples: D = mean (acc_{self.name_a} - acc_{self.name_b})^2 = {ex.statistic:.4g}; control "
            f"({self.name_a} halves) {ex.control_statistic:.4g}; "
            f"permutation null {ex.null_mean:.4g} ± {ex.null_std:.2g}",
            f"  permutation test over models ({ex.num_permutations} {kind} assignments): p = {ex.p_value:.4g} -> "
            f"the populations {verdict} models of one kind (alpha {self.alpha:g})",
        ]
        if ex.min_p_value >= self.alpha:
            lines.append(
                f"  warning: with {len(self.model_accuracy_a)} + {len(self.model_accuracy_b)} models the smallest "
                f"attainable p is {ex.min_p_value:.3g} >= alpha; add models (seeds) to be able to detect a difference"
            )
        for label, level in (("classes", self.classes), ("groups", self.groups)):
            if level is None:
                continue
            hits = [n for n, s in zip(level.names, level.significant) if s]
            shown = ", ".join(hits[:10]) + (", ..." if len(hits) > 10 else "")
            lines.append(
                f"{label}: {len(hits)} of {len(level.names)} differ (Welch t-test, Holm-Sidak, alpha {self.alpha:g})"
                + (f": {shown}" if hits else "")
            )
        return "\n".join(lines)

    def fields(self) -> dict[str, Any]:
        return {
            "name_a": self.name_a,
            "name_b": self.name_b,
            "sources_a": list(self.sources_a),
            "sources_b": list(self.sources_b),
            "model_accuracy_a": self.model_accuracy_a.tolist(),
            "model_accuracy_b": self.model_accuracy_b.tolist(),
            "alpha": self.alpha,
            "seed": self.seed,
            "examples": {"test": ExampleLevel.test, **_plain(vars(self.examples))},
            "classes": {"test": GroupLevel.test, **_plain(vars(self.classes))},
            "groups": None if self.groups is None else {"test": GroupLevel.test, **_plain(vars(self.groups))},
        }

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> ErrorComparison:
        return cls(
            name_a=data["name_a"],
            name_b=data["name_b"],
            sources_a=list(data["sources_a"]),
            sources_b=list(data["sources_b"]),
            model_accuracy_a=np.array(data["model_accuracy_a"], dtype=float),
            model_accuracy_b=np.array(data["model_accuracy_b"], dtype=float),
            examples=ExampleLevel(**_arrays(data["examples"], ExampleLevel)),
            classes=GroupLevel(**_arrays(data["classes"], GroupLevel)),
            groups=None if data["groups"] is None else GroupLevel(**_arrays(data["groups"], GroupLevel)),
            alpha=float(data["alpha"]),
            seed=int(data["seed"]),
        )


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in values.items()}


_ARRAY_FIELDS = {
    "accuracy_a", "accuracy_b", "control_1", "control_2",
    "num_examples", "t", "p_value", "p_corrected", "significant",
}  # fmt: skip


def _arrays(data: dict[str, Any], cls: type) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    out = {}
    for k, v in data.items():
        if k not in names:
            continue
        if k in _ARRAY_FIELDS and isinstance(v, list):
            dtype = bool if k == "significant" else (np.int64 if k == "num_examples" else float)
            v = np.array(v, dtype=dtype)
        out[k] = v
    return out


__all__ = ["ErrorComparison", "ExampleLevel", "GroupLevel"]
