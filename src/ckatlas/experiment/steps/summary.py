"""The ``summary``, ``claims`` and ``report`` steps, last and in the driver process: summary.json from
every other step's files (`ckatlas.experiment.summarise`), the paper's claims decided once
(`ckatlas.experiment.claims`: claims.json, what the report's headline and ``ckatlas claims`` render),
then the report (`ckatlas.report`).

    summary              summary.json                        <- every other step
    claims               claims.json                         <- summary
    report               report/index.html                   <- summary, claims
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ckatlas.experiment.claims import CLAIMS_FILE, evaluate_claims
from ckatlas.experiment.registry import Step, StepKind, register_step
from ckatlas.experiment.steps._common import StepContext
from ckatlas.experiment.store import SUMMARY_FILE, ExperimentStore
from ckatlas.experiment.summarise import build_summary
from ckatlas.report.html import write_report

if TYPE_CHECKING:
    from ckatlas.experiment.config import ExperimentConfig


def _summary(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    build_summary(store, ctx.config).save(store.path(SUMMARY_FILE))


def _claims(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    evaluate_claims(store.root).save(store.path(CLAIMS_FILE))


def _report(step: Step, ctx: StepContext, store: ExperimentStore) -> None:
    write_report(store.root)


def _summary_plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    return [Step("summary", "summary", (SUMMARY_FILE,), tuple(s.key for s in earlier), tuple(config.runs))]


def _claims_plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    return [Step("claims", "claims", (CLAIMS_FILE,), ("summary",), tuple(config.runs))]


def _report_plan(config: ExperimentConfig, earlier: list[Step]) -> list[Step]:
    return [Step("report", "report", ("report/index.html",), ("summary", "claims"), tuple(config.runs))]


register_step(StepKind("summary", _summary_plan, _summary, driver=True, description="summary.json"))
register_step(StepKind("claims", _claims_plan, _claims, driver=True, description="claims.json", after=("summary",)))
register_step(StepKind("report", _report_plan, _report, driver=True, description="report/index.html",
                       after=("claims",)))
