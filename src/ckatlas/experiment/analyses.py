"""The ``[analyses]`` table of an experiment file: `AnalysesConfig`, the mapping of the analyses that
run (re-exported by `ckatlas.experiment.config`), and `RunSelection`, the seeds/depths/fractions that
pick the runs of a costly analysis. Each analysis' own settings table lives with its step
(`ckatlas.experiment.steps.<kind>`), registered with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ckatlas.errors import UserInputError
from ckatlas.experiment.registry import analysis_kinds
from ckatlas.experiment.runspec import RunSpec
from ckatlas.experiment.schema import check_keys, from_table

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


@dataclass(frozen=True)
class RunSelection:
    """Which runs an analysis takes: those with these `seeds`, `depths` and training `fractions`
    (each None: any). For analyses too costly for every model of a large grid."""

    seeds: tuple[int, ...] | None = None
    depths: tuple[int, ...] | None = None
    fractions: tuple[float, ...] | None = None

    def wants(self, run: RunSpec) -> bool:
        """Whether `run` is selected."""
        return all(
            allowed is None or value in allowed
            for allowed, value in ((self.seeds, run.seed), (self.depths, run.depth), (self.fractions, run.fraction))
        )

    def check_selection(self, config: ExperimentConfig, where: str) -> None:
        if not any(self.wants(r) for r in config.runs):
            raise UserInputError(f"{where} selects no run of the grid (check its seeds, depths and fractions)")
        if self.seeds is not None:
            grid_seeds = sorted({r.seed for r in config.runs})
            missing = [seed for seed in self.seeds if seed not in grid_seeds]
            if missing:
                raise UserInputError(f"seeds in {where} lists seed(s) {missing} that no run of the grid has "
                                     f"(the grid's seeds: {grid_seeds})")

    def shifted(self, offset: int) -> RunSelection:
        """The same selection with every seed s as s + `offset` (`ExperimentConfig.with_seed_offset`)."""
        if self.seeds is None:
            return self
        return dataclasses.replace(self, seeds=tuple(s + offset for s in self.seeds))



class AnalysesConfig(Mapping[str, Any]):
    """`[analyses]`: the settings of each analysis that will run, by name (`registry.analysis_kinds`).

    An analysis runs when its table is present (or ``name = true``), or, for one that is
    on by default (blocks), always. ``config.analyses.pca`` is the PCA settings, or None
    when PCA is off; iterating gives the names of the analyses that run, in plan order.

    Args:
        tables: {name: settings dataclass}; analyses on by default are added.
    """

    def __init__(self, tables: Mapping[str, Any] | None = None, **named: Any) -> None:
        kinds = analysis_kinds()
        given = {**(tables or {}), **named}
        unknown = [name for name in given if name not in kinds]
        if unknown:
            raise UserInputError(f"unknown analysis {unknown[0]!r}; expected some of {', '.join(kinds)}")
        self._tables = {
            name: given[name] if given.get(name) is not None else kind.settings()
            for name, kind in kinds.items()
            if given.get(name) is not None or kind.default_on
        }

    @classmethod
    def from_table(cls, table: Any, where: str = "[analyses]") -> AnalysesConfig:
        """Validate the `[analyses]` table: each registered analysis' settings from its own sub-table."""
        if not isinstance(table, Mapping):
            raise UserInputError(f"{where} must be a table of analyses, got {table!r}")
        kinds = analysis_kinds()
        check_keys(table, kinds, where)
        tables = {}
        for name, value in table.items():
            if value is False:
                continue
            tables[name] = from_table(kinds[name].settings, {} if value is True else value, f"[analyses.{name}]")
        return cls(tables)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in analysis_kinds():
            return self._tables.get(name)
        raise AttributeError(f"{name!r} is not a registered analysis")

    def __getitem__(self, name: str) -> Any:
        return self._tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnalysesConfig) and self._tables == other._tables

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._tables.items(), key=lambda kv: kv[0])))

    def __repr__(self) -> str:
        return f"AnalysesConfig({self._tables!r})"

    def replace(self, **changes: Any) -> AnalysesConfig:
        """A copy with some analyses' settings replaced (None turns one off)."""
        return AnalysesConfig({**self._tables, **changes})

    @property
    def enabled(self) -> list[str]:
        """Names of the analyses that will run."""
        return list(self._tables)


__all__ = ["AnalysesConfig", "RunSelection"]
