"""`ckatlas probes` standalone, before and after the commands' thread policy, quiet and loaded.

Before: a git revision from before the policy (its `src/` in a temporary worktree, put first
on PYTHONPATH), where a standalone command left NumPy's and SciPy's BLAS pools at one thread
per core beside PyTorch's, and the probes' fits on that pool. After: the working tree. Both
run the same command on the same trained run, one after the other, first on a quiet machine,
then with `--load N` busy processes (pure-Python loops) beside them. The chosen C of every
layer is compared too: it must not depend on the thread setting.

    python benchmarks/bench_probes.py                        # before = 4145acc, ResNet-20 on digits
    python benchmarks/bench_probes.py --before 4145acc --load 1 --layers all
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    sum(i * i for i in range(10000))\n"


def _train(run_dir: Path) -> None:
    if (run_dir / "metrics.json").is_file():
        return
    subprocess.run([sys.executable, "-m", "ckatlas.cli", "train", "--arch", "resnet20", "--dataset", "digits",
                    "--seed", "0", "--quiet", "--out", str(run_dir)], check=True)


def _probes(src: Path, run_dir: Path, out: Path, layers: str, load: int) -> tuple[float, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    busy = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(load)]
    try:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ckatlas.cli", "probes", str(run_dir), "--layers", layers,
                        "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
    finally:
        for proc in busy:
            proc.kill()
    return seconds, json.loads((out / "probes.json").read_text())["chosen_c"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="4145acc", help="git revision before the thread policy")
    parser.add_argument("--layers", default="all", help="layers to probe (default all: 72 layers of ResNet-20)")
    parser.add_argument("--load", type=int, default=1, help="busy processes beside the loaded runs (default 1)")
    parser.add_argument("--work", default=None, help="folder for the trained run (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_probes_"))
    run_dir = work / "r20"
    _train(run_dir)
    before = work / "before"
    if not before.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=ROOT, check=True,
                       capture_output=True)
    sources = {"before": before / "src", "after": ROOT / "src"}
    rows = []
    try:
        for load in (0, args.load):
            for name, src in sources.items():
                seconds, chosen = _probes(src, run_dir, work / f"{name}-{load}", args.layers, load)
                rows.append((name, load, seconds, chosen))
                print(f"{name:<6} load {load}: {seconds:7.1f} s", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True)
    print(f"\n`ckatlas probes` (ResNet-20 on digits, --layers {args.layers}), {os.cpu_count()} CPUs")
    print("| code | busy processes beside | seconds |\n|---|---:|---:|")
    for name, load, seconds, _ in rows:
        print(f"| {name} | {load} | {seconds:.1f} |")
    first = {name: next(r[3] for r in rows if r[0] == name) for name in sources}
    same = {name: all(r[3] == first[name] for r in rows if r[0] == name) for name in sources}
    print(f"\nchosen C the same in every run of a revision: {same}")
    differ = sum(x != y for x, y in zip(first["before"], first["after"]))
    print(f"layers whose chosen C differs between before and after (quiet): {differ} of {len(first['after'])}")


if __name__ == "__main__":
    main()
