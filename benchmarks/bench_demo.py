"""`ckatlas demo` end to end, stage by stage: train, CKA, analyses, report.

Runs the `demo` preset (or `--quick`: the `tiny` one) into a fresh directory through the
same code path as `ckatlas demo`, then reads the seconds each step took from the
experiment's timings.json and prints them by stage beside the wall-clock total, with
the headline numbers the report states (block fraction over the depth x width grid).
With several jobs the steps overlap, so the stage seconds (summed over steps) add up to
more than the wall-clock time. The demo's budget is 5 minutes end to end on a 2-core CPU.

    python benchmarks/bench_demo.py                   # as `ckatlas demo`: a process per core, 1 thread each
    python benchmarks/bench_demo.py --jobs 1          # everything in this process, one step after another
    python benchmarks/bench_demo.py --quick --keep out/bench-demo
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ckatlas.cli import default_jobs
from ckatlas.runtime.cpu import settle_allocator
from ckatlas.experiment import run_experiment
from ckatlas.report.headline import headline_text
from ckatlas.report.html import REPORT_FILE

BUDGET_S = 300.0
# Step kinds (the part of a step key before "/") by stage.
STAGES = {
    "train": ("train",),
    "CKA": ("cka", "cross"),
    "analyses": ("blocks", "stability", "pca", "probes", "prune", "errors", "summary"),
    "report": ("report",),
}


def stage_seconds(timings: dict[str, float]) -> dict[str, float]:
    """Seconds per stage, summed over the recorded steps."""
    out = {stage: 0.0 for stage in STAGES}
    for key, seconds in timings.items():
        kind = key.split("/", 1)[0]
        stage = next(s for s, kinds in STAGES.items() if kind in kinds)
        out[stage] += seconds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny preset instead of the demo")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads (default 1: torch 2.13's oneDNN CPU convolutions can crash with 2)")
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help=f"worker processes (default, as the demo's: one per core, at most 4: {default_jobs()})")
    parser.add_argument("--keep", metavar="DIR", help="write the experiment here and keep it (must not exist)")
    args = parser.parse_args()
    settle_allocator()  # as the ckatlas command does

    preset = "tiny" if args.quick else "demo"
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-demo-")) / preset
    load = os.getloadavg()
    print(f"ckatlas demo benchmark: preset {preset!r}, torch {torch.__version__}, {args.jobs} job(s) of {args.threads} thread(s), "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
          f"load average before {load[0]:.2f}")
    started = time.perf_counter()
    result = run_experiment(preset, workdir, threads=args.threads, jobs=args.jobs, quiet=True)
    wall = time.perf_counter() - started
    timings = json.loads((workdir / "timings.json").read_text(encoding="utf-8"))
    stages = stage_seconds(timings)
    counted = sum(stages.values())

    print(f"\n{'stage':<10} {'seconds':>8} {'share':>6}")
    for stage, seconds in stages.items():
        print(f"{stage:<10} {seconds:8.1f} {seconds / wall:6.0%}")
    print(f"{'steps':<10} {counted:8.1f} {counted / wall:6.0%}   (summed over {args.jobs} job(s))")
    print(f"{'wall':<10} {wall:8.1f}")
    verdict = "within" if wall <= BUDGET_S else "OVER"
    print(f"{len(result.computed)} steps; {verdict} the {BUDGET_S:.0f} s budget; "
          f"load average after {os.getloadavg()[0]:.2f}")
    print(f"report: {workdir / REPORT_FILE} ({(workdir / REPORT_FILE).stat().st_size / 1e6:.2f} MB)\n")
    print(headline_text(json.loads(result.summary_path.read_text(encoding="utf-8"))))
    if not args.keep:
        shutil.rmtree(workdir.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
