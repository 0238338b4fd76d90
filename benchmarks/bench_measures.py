"""Cost of each similarity measure (`ckatlas.cka.measures`) for one all-layer heatmap, side by side.

One ResNet-20 (fresh weights, seed 0) on the same random 16x16 images, every layer, batches of
256: each measure's heatmap timed in one process, interleaved over `--repeats` rounds, and its
CPU time printed with its ratio to linear CKA's (ratios measured in one run; compare nothing else).

    python benchmarks/bench_measures.py                   # 512 images, 2 rounds
    python benchmarks/bench_measures.py --examples 1024 --threads 1
    python benchmarks/bench_measures.py --device cuda     # wall seconds on a GPU (device_check.sh runs this)
"""

from __future__ import annotations

import argparse
import time

import torch

from ckatlas import heatmap
from ckatlas.cka.measures import MEASURES
from ckatlas.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as set)")
    parser.add_argument("--measures", nargs="*", default=[m for m in MEASURES if not MEASURES[m].all_examples])
    parser.add_argument("--device", default="cpu", help="cpu (CPU seconds) or cuda (wall seconds, synchronised)")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    clock = time.perf_counter if cuda else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    model = create_model("resnet20", width=1, in_channels=1, generator=torch.Generator().manual_seed(0)).eval().to(device)
    x = torch.randn(args.examples, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    seconds = {m: [] for m in args.measures}
    for _ in range(args.repeats):
        for measure in args.measures:
            if cuda:
                torch.cuda.synchronize()
            started = clock()
            res = heatmap(model, x, layers="all", batch_size=256, shuffle=False, measure=measure)
            if cuda:
                torch.cuda.synchronize()
            seconds[measure].append(clock() - started)
    layers = res.matrix.shape[0]
    base = min(seconds["cka"]) if "cka" in seconds else None
    print(f"ResNet-20, {layers} layers, {args.examples} images in batches of 256, {torch.get_num_threads()} thread(s); "
          f"{'wall seconds on ' + torch.cuda.get_device_name(device) if cuda else 'CPU seconds'}, best of {args.repeats}")
    print(f"{'measure':<12} {'s':>8} {'x CKA':>7}")
    for measure, times in seconds.items():
        ratio = f"{min(times) / base:7.1f}" if base else "      –"
        print(f"{measure:<12} {min(times):8.2f} {ratio}")


if __name__ == "__main__":
    main()
