"""The block detectors' cost: the contrast rule (the default) beside the threshold rule, on real heatmaps.

Times `BlockDetector().find` and `find_threshold_blocks` on every within-model CKAResult (.npz) found
under the given folders (e.g. an experiment's cka/), interleaved, best of --repeats, and prints one row
per heatmap size: layers, heatmaps, median milliseconds of each rule and their ratio.

    python benchmarks/bench_blocks.py out/gallery/fashion/cka out/gallery/digits/cka
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import defaultdict
from pathlib import Path

from ckatlas.analysis import BlockDetector, find_threshold_blocks
from ckatlas.heatmap import CKAResult


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows: dict[int, list[tuple[float, float]]] = defaultdict(list)
    detector = BlockDetector()
    for folder in args.folders:
        for path in sorted(folder.glob("*.npz")):
            cka = CKAResult.load(path)
            if not cka.is_square:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                contrast = best(lambda: detector.find(cka), args.repeats)
                threshold = best(lambda: find_threshold_blocks(cka), args.repeats)
            rows[len(cka.layers_a)].append((contrast, threshold))
    print(f"{'layers':>6} {'heatmaps':>8} {'contrast ms':>12} {'threshold ms':>13} {'ratio':>6}")
    for size in sorted(rows):
        contrast = statistics.median(c for c, _ in rows[size]) * 1e3
        threshold = statistics.median(t for _, t in rows[size]) * 1e3
        print(f"{size:>6} {len(rows[size]):>8} {contrast:>12.1f} {threshold:>13.1f} {contrast / threshold:>6.2f}")


if __name__ == "__main__":
    main()
