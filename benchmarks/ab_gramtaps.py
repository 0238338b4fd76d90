"""A/B of `GramTaps` across git revisions: hook cost over plain forward passes, interleaved.

This machine's speed drifts by up to 1.6x within minutes, so two separate benchmark runs
cannot show a 5-10% change. Here every revision's `ckatlas` package (read with
`git archive REV src/ckatlas`)
taps the same model in the same process (each revision's package imported under a name of
its own), round after round: plain forward passes, then
each revision's hooked forward passes with `stacked()`, the ratio taken within the round;
the median and the best over the rounds are printed side by side.

    python benchmarks/ab_gramtaps.py b7fcfc9 HEAD                 # ResNet-56, "all", random weights
    python benchmarks/ab_gramtaps.py b7fcfc9 HEAD --layers blocks --calibrated
    python benchmarks/ab_gramtaps.py HEAD WORKTREE --rounds 12     # WORKTREE: the package as it is now
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import shutil
import tarfile
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch

from ckatlas.capture import inference
from ckatlas.runtime.cpu import settle_allocator
from ckatlas.models import create_model
from ckatlas.runtime.seeding import make_generator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_heatmap import _calibrate  # noqa: E402  (a script beside this one)

ROOT = Path(__file__).resolve().parents[1]


def _module(rev: str, folder: Path) -> ModuleType:
    """`ckatlas.capture` as of `rev` ("WORKTREE": the working tree), from a copy of that
    revision's whole package under a name of its own (every `ckatlas` import renamed), so
    that revisions where capture is one file and where it is a package compare alike."""
    name = f"ckatlas_rev{len(list(folder.iterdir()))}"
    target = folder / name
    if rev == "WORKTREE":
        shutil.copytree(ROOT / "src" / "ckatlas", target, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(["git", "archive", rev, "src/ckatlas"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder / "extract", filter="data")
        shutil.move(folder / "extract" / "src" / "ckatlas", target)
    for path in target.rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\b(from|import) ckatlas\b", rf"\1 {name}", text))
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{name}.capture")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="+", help="git revisions (or WORKTREE) to compare")
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--layers", default="all", help='"all", "blocks" or a glob (default "all")')
    parser.add_argument("--batches", type=int, default=3, help="batches of 256 per measurement (default 3)")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    parser.add_argument("--calibrated", action="store_true", help="BatchNorm statistics as training leaves them")
    args = parser.parse_args()
    settle_allocator()
    model = create_model(args.arch, width=args.width, generator=make_generator(0))
    if args.calibrated:
        _calibrate(model)
    xs = [torch.randn(256, 3, 32, 32, generator=make_generator(2 + i)) for i in range(args.batches)]
    with tempfile.TemporaryDirectory() as tmp:
        taps = {rev: _module(rev, Path(tmp)).GramTaps for rev in args.revs}

        def forward() -> float:
            with inference(model):
                start = time.perf_counter()
                for x in xs:
                    model(x)
                return time.perf_counter() - start

        def hooked(cls: type) -> float:
            with cls(model, args.layers) as t, inference(model):
                t.expect(256)
                model(xs[0])  # the first batch settles the layers (and learns conv -> BN pairs)
                t.stacked()
                start = time.perf_counter()
                for x in xs:
                    t.expect(len(x))
                    model(x)
                    t.stacked()
                return time.perf_counter() - start

        ratios: dict[str, list[float]] = {rev: [] for rev in args.revs}
        for _ in range(args.rounds):
            base = forward()
            for rev, cls in taps.items():
                ratios[rev].append(hooked(cls) / base)
    print(f"{args.arch} width {args.width}, layers {args.layers!r}{', calibrated BatchNorm' if args.calibrated else ''}, "
          f"{args.batches} batches of 256, {args.rounds} rounds, {torch.get_num_threads()} threads, settled allocator")
    print(f"{'revision':>12s} {'median x':>9s} {'best x':>7s}   (hooked forward passes over plain ones, per round)")
    for rev, values in ratios.items():
        print(f"{rev:>12s} {statistics.median(values):9.2f} {min(values):7.2f}")


if __name__ == "__main__":
    sys.exit(main())
