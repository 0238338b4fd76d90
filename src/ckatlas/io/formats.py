"""Saved formats: each kind's version, and every step that brings an older file forward.

Every result ckatlas saves (CKA .npz, blocks and each analysis' JSON or .npz, summary.json,
claims.json, experiment.json) carries its kind (``"format"``) and its ``"version"``. A file of an
earlier release has no version: it is version 0, whatever it holds. Reading goes through
`upgrade`, which applies this module's converters one version at a time up to the current one,
so a reader sees one shape only and never guesses a file's age from which fields it has.

A converter takes the fields of one version (a plain dict: JSON values, and NumPy arrays for an
.npz) and returns those of the next; it must accept every file ever written at its version.
Changing a saved format means: raise the kind's version in `VERSIONS`, add the converter from the
old version here, and keep a test that loads a file of the old version (tests/test_formats.py).

    data = upgrade("ckatlas.BlockResult", json_object, "a block result")   # version 0 or 1 in, 1 out;
                                                                           # another kind: one clear error
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ckatlas.errors import UserInputError

Converter = Callable[[dict[str, Any]], dict[str, Any]]

#: The version each kind is written at now (a kind not named here, e.g. a plugin's, is at version 1 until it
#: names itself here with its converters).
VERSIONS: dict[str, int] = {
    "ckatlas.CKAResult": 1,
    "ckatlas.PopulationResult": 1,
    "ckatlas.BlockResult": 1,
    "ckatlas.BlockStability": 1,
    "ckatlas.PCAResult": 1,
    "ckatlas.ProbeResult": 1,
    "ckatlas.PruneResult": 1,
    "ckatlas.ErrorComparison": 1,
    "ckatlas.BlockDynamics": 1,
    "ckatlas.BlockOrigins": 1,
    "ckatlas.AveragedCKA": 1,
    "ckatlas.LayerMatch": 1,
    "ckatlas.LayerRemoval": 1,
    "ckatlas.Claims": 1,
    "ckatlas.ExperimentSummary": 1,
    "ckatlas.Experiment": 1,
    "ckatlas.Removal": 1,  # ckatlas-removal.json beside a pruned Hugging Face model (written, not read back)
    "ckatlas.RunConfig": 1,  # a run folder's config.json
    "ckatlas.RunMetrics": 1,  # a run folder's metrics.json
}

#: Kinds whose version-0 files carried no "format" tag.
UNTAGGED_BEFORE_VERSIONS = frozenset({"ckatlas.CKAResult", "ckatlas.PopulationResult", "ckatlas.RunConfig",
                                      "ckatlas.RunMetrics"})

_CONVERTERS: dict[tuple[str, int], Converter] = {}


def converts(kind: str, version: int) -> Callable[[Converter], Converter]:
    """Register the converter from `version` of `kind` to the next version."""

    def register(fn: Converter) -> Converter:
        _CONVERTERS[(kind, version)] = fn
        return fn

    return register


def version_of(data: Mapping[str, Any]) -> int:
    """The version a file says it is (0: written before versions)."""
    version = data.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise UserInputError(f"format version {version!r}: expected a whole number >= 0")
    return version


def check_kind(kind: str, data: Mapping[str, Any], what: str) -> None:
    """One clear error unless `data` is of `kind` (an untagged version-0 file of a kind that had no tag passes)."""
    found = data.get("format")
    if found == kind or (found is None and "version" not in data and kind in UNTAGGED_BEFORE_VERSIONS):
        return
    raise UserInputError(f"not {what}: expected format {kind!r}, got {found!r}")


def upgrade(kind: str, data: Mapping[str, Any], what: str = "the file") -> dict[str, Any]:
    """The fields of `data` (of `kind`, any version) at the current version, without "format" and "version".

    Raises:
        UserInputError: `data` is of another kind (`check_kind`), or of a version newer than this release
            reads (a newer ckatlas wrote it).
    """
    check_kind(kind, data, what)
    current = current_version(kind)
    version = version_of(data)
    if version > current:
        raise UserInputError(f"{what} is format version {version} of {kind}, newer than this ckatlas reads "
                             f"(up to {current}); upgrade ckatlas to read it")
    fields = {k: v for k, v in data.items() if k not in ("format", "version")}
    while version < current:
        fields = _CONVERTERS.get((kind, version), dict)(fields)
        version += 1
    return fields


def current_version(kind: str) -> int:
    """The version `kind` is written at now (`VERSIONS`; 1 for a kind it does not name)."""
    return VERSIONS.get(kind, 1)


def tag(kind: str) -> dict[str, Any]:
    """The "format" and "version" keys a file of `kind` is written with."""
    return {"format": kind, "version": current_version(kind)}


# -- the block detector's settings, as every release saved them -----------------------------------
def complete_detector(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A detector's settings as an earlier release saved them, completed with what that release did: no
    ``method`` is the threshold rule; a contrast rule without ``border_fraction`` judged each border with
    ``min_fraction`` of the layers beyond it. Settings of this release pass unchanged."""
    out = dict(settings)
    if out and "method" not in out:
        out["method"] = "threshold"
    if out and "border_fraction" not in out:
        out["border_fraction"] = out.get("min_fraction", 0.1)
    return out


def _defaults(fields: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    return {**defaults, **fields}


# -- version 0 -> 1: the fields each kind gained before versions were written ----------------------
@converts("ckatlas.BlockResult", 0)
def _block_result_0(fields: dict[str, Any]) -> dict[str, Any]:
    out = _defaults(fields, layer_names=None, peak_score=None, block_area=None)
    if "detector" in out:
        out["detector"] = complete_detector(out["detector"])
    else:  # written before the detector had a name: the threshold rule, min_size already effective
        out["detector"] = {"method": "threshold", "threshold": float(out.pop("threshold")),
                           "tolerance": float(out.pop("tolerance")), "min_size": int(out["min_size"]),
                           "min_fraction": 0.0}
    out["blocks"] = [_defaults(dict(b), score=None, gap=None) for b in out["blocks"]]
    return out


@converts("ckatlas.PruneResult", 0)
def _prune_0(fields: dict[str, Any]) -> dict[str, Any]:
    out = _defaults(fields, metadata={})
    out["steps"] = [_defaults(dict(s), in_block=None) for s in out["steps"]]
    return out


@converts("ckatlas.BlockDynamics", 0)
def _dynamics_0(fields: dict[str, Any]) -> dict[str, Any]:
    out = _defaults(fields, metadata={})  # no block_area: the class finds it again from the heatmaps
    if "block_strength" not in out:  # records of earlier releases have none
        out["block_strength"] = np.full(len(np.asarray(out["epochs"]).reshape(-1)), np.nan)
    detector = dict(out["metadata"].get("detector") or {})
    if "method" in detector:
        out["metadata"] = {**out["metadata"], "detector": complete_detector(detector)}
    return out


@converts("ckatlas.BlockOrigins", 0)
def _origins_0(fields: dict[str, Any]) -> dict[str, Any]:
    out = _defaults(fields, metadata={})
    if isinstance(out["metadata"].get("detector"), dict):
        out["metadata"] = {**out["metadata"], "detector": complete_detector(out["metadata"]["detector"])}
    return out


@converts("ckatlas.LayerRemoval", 0)
def _removal_0(fields: dict[str, Any]) -> dict[str, Any]:
    return _defaults(fields, curves={}, metric="loss", metadata={}, healing={})


def _words(holds: bool | None) -> str:
    """The verdict of a claim that recorded only whether it held (releases before the three words)."""
    return "untested" if holds is None else "holds" if holds else "not established"


def _claim_0(claim: dict[str, Any]) -> dict[str, Any]:
    out = _defaults(claim, p_opposite=None, interval=None)
    out["verdict"] = out.get("verdict") or _words(out.get("holds"))
    details = dict(out.get("details") or {})
    if isinstance(details.get("compare"), dict):  # the second detector's verdict, nested
        compare = dict(details["compare"])
        compare["verdict"] = compare.get("verdict") or _words(compare.get("holds"))
        details["compare"] = compare
    out["details"] = details
    return out


@converts("ckatlas.Claims", 0)
def _claims_0(fields: dict[str, Any]) -> dict[str, Any]:
    out = _defaults(fields, metadata={})
    out["claims"] = [_claim_0(dict(c)) for c in out["claims"]]
    return out


@converts("ckatlas.ExperimentSummary", 0)
def _summary_0(fields: dict[str, Any]) -> dict[str, Any]:
    out = _defaults(fields, description="", dataset={}, groups=[], grid=[], cross_seed=[], timings={}, config={})
    out["description"] = out["description"] or ""
    out["analyses"] = _defaults(dict(out.get("analyses") or {}), enabled=[], errors=None, available=None)
    out["config"] = _experiment_config_0(dict(out["config"] or {})) if out["config"] else {}
    return out


@converts("ckatlas.RunConfig", 0)
def _run_config_0(fields: dict[str, Any]) -> dict[str, Any]:
    """Runs from before `precision` existed trained in bfloat16 where they ran under autocast ("amp"), in
    float32 elsewhere; runs from before `channels_last` existed did not use it."""
    environment = dict(fields.get("environment") or {})
    if environment.get("precision") not in ("float32", "bfloat16"):
        environment["precision"] = "bfloat16" if environment.get("amp") == "bfloat16" else "float32"
    environment.setdefault("channels_last", False)
    return {**fields, "environment": environment}


@converts("ckatlas.RunMetrics", 0)
def _run_metrics_0(fields: dict[str, Any]) -> dict[str, Any]:
    """Runs of earlier releases recorded no clean training accuracy."""
    final = fields.get("final")
    return {**fields, "final": None if final is None else _defaults(dict(final), train_accuracy=None)}


@converts("ckatlas.Experiment", 0)
def _experiment_0(fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "config": _experiment_config_0(dict(fields.get("config") or {}))}


def _experiment_config_0(config: dict[str, Any]) -> dict[str, Any]:
    """An experiment's config as earlier releases recorded it, with what those releases did."""
    out = dict(config)
    if "grid" in out:
        out["grid"] = [{"family": "resnet", **table} for table in out["grid"]]  # recorded before families existed
    if "cka" in out:
        out["cka"] = {"tokens": "auto", "measure": "cka", **out["cka"]}  # before [cka] tokens, measure existed
    if "analyses" in out:
        analyses = dict(out["analyses"] or {})
        analyses.setdefault("untrained", {})  # recorded before the untrained baseline existed: it runs always
        if isinstance(analyses.get("blocks"), dict):
            analyses["blocks"] = complete_detector(analyses["blocks"])
        out["analyses"] = analyses
    return out


__all__ = ["UNTAGGED_BEFORE_VERSIONS", "VERSIONS", "check_kind", "complete_detector", "converts", "current_version",
           "tag", "upgrade", "version_of"]
