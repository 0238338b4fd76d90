"""Start an experiment directory from the trained runs of another, so that nothing is trained twice.

Claims DIR for EXPERIMENT (a preset or TOML file; `--seed-offset` as `ckatlas run` takes it) and
copies every run of its grid from SOURCE/runs (with `--partial`, those SOURCE has); `ckatlas run EXPERIMENT --out DIR` then computes
only the rest (e.g. heatmaps under another `[cka] measure`).

    python scripts/measures/reuse_runs.py scripts/measures/fashion-procrustes.toml \\
        out/fashion-procrustes out/fashion-dynamics
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ckatlas.experiment import ExperimentStore, load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="a preset or TOML file")
    parser.add_argument("out", type=Path, help="the new experiment directory")
    parser.add_argument("source", type=Path, help="an experiment directory holding the same runs, trained")
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--partial", action="store_true",
                        help="copy the runs SOURCE has and leave the others to be trained (e.g. fashion-study from "
                             "the fashion-dynamics runs, which are its width x depth grid)")
    args = parser.parse_args()
    config = load_config(args.experiment)
    if args.seed_offset:
        config = config.with_seed_offset(args.seed_offset)
    missing = [r.name for r in config.runs if not (args.source / "runs" / r.name / "metrics.json").is_file()]
    if missing and not args.partial:
        parser.error(f"{args.source} lacks {len(missing)} of the runs, e.g. {missing[0]}")
    store = ExperimentStore(args.out)
    store.claim(config)
    copied = 0
    for run in config.runs:
        target = store.path(store.run_dir(run.name))
        if run.name not in missing and not target.exists():
            shutil.copytree(args.source / "runs" / run.name, target)
            copied += 1
    print(f"{args.out}: {copied} trained runs from {args.source}, {len(missing)} to train; now: "
          f"ckatlas run {args.experiment} "
          f"--out {args.out}" + (f" --seed-offset {args.seed_offset}" if args.seed_offset else ""))


if __name__ == "__main__":
    main()
