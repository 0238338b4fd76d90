"""summary.json: one entry per model, the grid at a glance, and where every result is.

Built from the files of the experiment directory alone, so a report can be
written from disk. Paths are relative to the experiment directory.

    {
      "format": "ckatlas.ExperimentSummary", "version": 1 (ckatlas.io.formats: earlier versions are read too),
      "name": ..., "description": ..., "dataset": {name, num_train, num_test, image_shape, num_classes, ...},
      "models": [{"name", "arch", "depth", "width", "residual", "seed", "fraction",
                  "test_accuracy", "train_accuracy" (clean, on the examples trained on), "block_fraction",
                  "block_strength", "peak_score", "block_area",
                  "blocks": [[start, end], ...], "block_scores": [...],
                  "layers": [...], "num_parameters", "train_seconds",
                  "paths": {"run", "cka", "blocks", and the file of every other step of this model
                            ("pca", "probes", "prune", or any registered analysis)}}, ...],
      "groups": [{"name", "arch", "depth", "width", "residual", "fraction", "runs": [...],
                  "test_accuracy_mean", "test_accuracy_std", "train_accuracy_mean", "block_fraction_mean",
                  "block_fraction_std", "block_strength_mean", "block_strength_std", "block_area_mean",
                  "block_area_std", "stability"}, ...],
      "grid": [{"residual", "fraction", "depths", "widths",
                "block_fraction": [[...]], "block_strength": [[...]], "block_area": [[...]],
                "test_accuracy": [[...]]}, ...],
      "cross_seed": [{"a", "b", "path"}, ...],
      "analyses": {"enabled": [...], "errors": path or null, "available": {table: kind, description, default_on}},
      "timings": {"train": s, "cka": s, ..., "total": s, "wall": s},
      "config": {...}
    }

`blocks` are inclusive index ranges into `layers` (the analysed layers of the
model's within-model heatmap); `block_fraction` is the share of those layers
inside a block, `block_strength` the same share weighted by each block's contrast score
(`block_scores`), `block_area` the contrast rule's block fraction averaged over min_score 0.05..1
(free of that threshold; the trend claims' statistic), and `peak_score` the best score of any run long
enough to be a block
(`ckatlas.analysis.BlockResult`). In "grid", `block_fraction[i][j]` is the mean over seeds at
`depths[i]`, `widths[j]` (null where the grid has no such model). Standard
deviations are null for groups of one model.
"""

from __future__ import annotations

import numpy as np

from ckatlas.analysis import BlockResult
from ckatlas.experiment.config import ExperimentConfig, RunSpec
from ckatlas.experiment.plan import cross_seed_pairs
from ckatlas.experiment.registry import analysis_catalogue
from ckatlas.experiment.store import ExperimentStore
from ckatlas.io.summary import CrossSeedPair, ExperimentSummary, GridTable, GroupEntry, ModelEntry


def build_summary(store: ExperimentStore, config: ExperimentConfig) -> ExperimentSummary:
    """The summary of a finished experiment (every step but the summary done); `.save` writes summary.json."""
    from ckatlas.experiment.plan import plan

    outputs: dict[str, dict[str, str]] = {}  # run -> {step kind: its output} for steps of one run
    by_key: dict[str, str] = {}  # every step's (first) output, by step key ("errors", "stability/<group>", ...)
    for step in plan(config):
        by_key[step.key] = step.outputs[0]
        if len(step.runs) == 1 and len(step.outputs) == 1:
            outputs.setdefault(step.runs[0].name, {})[step.kind] = step.outputs[0]
    models = [_model_entry(store, run, outputs.get(run.name, {})) for run in config.runs]
    by_name = {m.name: m for m in models}
    groups = [_group_entry(name, [by_name[r.name] for r in runs], by_key.get(f"stability/{name}"))
              for name, runs in config.groups.items()]
    first_run = store.run(config.runs[0].name)
    return ExperimentSummary(
        name=config.name,
        description=config.description,
        dataset=first_run.read_info()["data"],
        models=models,
        groups=groups,
        grid=_grid_tables(config, by_name),
        cross_seed=[CrossSeedPair(a.name, b.name, store.cka_file(a.name, b.name)) for a, b in cross_seed_pairs(config)],
        enabled=config.analyses.enabled,
        errors=by_key.get("errors"),
        available=analysis_catalogue(),  # what the report lists as not computed, without the registry
        timings=_timings(store),
        config=config.to_dict(),
    )


def _model_entry(store: ExperimentStore, run: RunSpec, outputs: dict[str, str]) -> ModelEntry:
    """One model's entry; `outputs` maps the kinds of its own steps (train, cka, blocks, ...) to their file."""
    files = store.run(run.name)
    metrics, info = files.read_metrics(), files.read_info()
    blocks = BlockResult.load(store.path(store.blocks_file(run.name)))
    paths = {("run" if kind == "train" else kind): path for kind, path in outputs.items()}
    return ModelEntry(
        **run.to_dict(),
        test_accuracy=metrics["final"]["test_accuracy"],
        train_accuracy=metrics["final"]["train_accuracy"],  # clean; None in runs of earlier releases
        block_fraction=blocks.block_fraction,
        block_strength=blocks.block_strength,
        peak_score=blocks.peak_score,
        block_area=blocks.block_area,
        blocks=[[b.start, b.end] for b in blocks.blocks],
        block_scores=[b.score for b in blocks.blocks],
        layers=blocks.layer_names,
        num_parameters=info["model"]["num_parameters"],
        train_seconds=metrics["final"]["train_seconds"],
        paths=paths,
    )


def _group_entry(name: str, members: list[ModelEntry], stability: str | None) -> GroupEntry:
    accuracy = np.array([m.test_accuracy for m in members])
    fraction = np.array([m.block_fraction for m in members])
    strength = np.array([m.block_strength for m in members])
    area = np.array([m.block_area for m in members], dtype=np.float64)
    first, several = members[0], len(members) > 1
    return GroupEntry(
        name=name, arch=first.arch, depth=first.depth, width=first.width, residual=first.residual,
        fraction=first.fraction, runs=[m.name for m in members],
        test_accuracy_mean=float(accuracy.mean()),
        test_accuracy_std=float(accuracy.std(ddof=1)) if several else None,
        train_accuracy_mean=_mean([m.train_accuracy for m in members]),
        block_fraction_mean=float(fraction.mean()),
        block_fraction_std=float(fraction.std(ddof=1)) if several else None,
        block_strength_mean=float(strength.mean()),
        block_strength_std=float(strength.std(ddof=1)) if several else None,
        block_area_mean=float(area.mean()),
        block_area_std=float(area.std(ddof=1)) if several else None,
        stability=stability,
    )


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def _grid_tables(config: ExperimentConfig, models: dict[str, ModelEntry]) -> list[GridTable]:
    """Depth x width tables of mean block fraction and accuracy, one per (family, residual, fraction)."""
    tables = []
    slices = sorted({(r.family, r.residual, r.fraction) for r in config.runs},
                    key=lambda s: (s[0] != "resnet", s[0], not s[1], -s[2]))
    for family, residual, fraction in slices:
        runs = [r for r in config.runs if (r.family, r.residual, r.fraction) == (family, residual, fraction)]
        depths = sorted({r.depth for r in runs})
        widths = sorted({r.width for r in runs})
        cells: dict[str, list[list[float | None]]] = {"block_fraction": [], "block_strength": [], "test_accuracy": [],
                                                  "block_area": []}
        for key in cells:
            for depth in depths:
                row = []
                for width in widths:
                    values = [getattr(models[r.name], key) for r in runs if (r.depth, r.width) == (depth, width)]
                    row.append(float(np.mean(values)) if values else None)
                cells[key].append(row)
        tables.append(GridTable(residual, fraction, depths, widths, cells["block_fraction"], cells["test_accuracy"],
                                family, cells["block_strength"], cells["block_area"]))
    return tables


def _timings(store: ExperimentStore) -> dict[str, float]:
    """Seconds per kind of step (train, cka, ...) and in total ("total": summed over steps, so
    steps run side by side count each), as recorded when each was computed; "wall": the
    wall-clock seconds during which steps ran (missing in experiments of earlier releases)."""
    out: dict[str, float] = {}
    for key, seconds in store.read_timings().items():
        kind = key.split("/", 1)[0]
        out[kind] = out.get(kind, 0.0) + seconds
    out["total"] = sum(out.values())
    wall = store.wall_seconds()
    if wall is not None:  # the spans' wall-clock stamps (~1.7e9 s) carry 0.2 us of rounding: never above the sum
        out["wall"] = min(wall, out["total"])
    return out


__all__ = ["build_summary"]
