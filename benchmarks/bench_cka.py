"""All-pairs minibatch CKA engine vs a per-pair loop, for one update.

For L layers and one minibatch of 256 examples (each layer 16x8x8 = 1,024 features,
float32, the size of a mid-network ResNet activation), time
  * engine:   MinibatchCKA.update (Grams, U-centring, one matrix product for all pairs);
  * per-pair: the same Grams, then the unbiased HSIC of every layer pair in a Python
              loop (`ckatlas.cka.hsic_unbiased`), as a straightforward implementation does;
and check both give the same CKA matrix.

    python benchmarks/bench_cka.py            # L = 10, 50, 200
    python benchmarks/bench_cka.py --layers 10 50 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from ckatlas.cka import MinibatchCKA, gram_linear, hsic_unbiased


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def per_pair_cka(acts: list[torch.Tensor]) -> torch.Tensor:
    grams = [gram_linear(a) for a in acts]
    L = len(grams)
    h = torch.empty(L, L, dtype=torch.float64)
    for i in range(L):
        for j in range(L):
            h[i, j] = hsic_unbiased(grams[i], grams[j])
    d = h.diagonal()
    return h / torch.sqrt(d[:, None] * d[None, :])


def engine_cka(acts: list[torch.Tensor]) -> torch.Tensor:
    acc = MinibatchCKA(len(acts))
    acc.update(acts)
    return acc.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"batch {args.batch}, 1,024 features per layer, float32 activations, float64 sums; best of {args.repeats}")
    print(f"{'layers':>6} {'pairs':>7} {'engine (s)':>11} {'per-pair (s)':>13} {'speed-up':>9} {'max |diff|':>11}")
    for L in args.layers:
        base = torch.randn(args.batch, 16, 8, 8, generator=gen)
        acts = [torch.relu(base + 0.5 * torch.randn(base.shape, generator=gen)) for _ in range(L)]
        t_engine = _best(lambda: engine_cka(acts), args.repeats)
        t_loop = _best(lambda: per_pair_cka(acts), 1 if L > 50 else args.repeats)
        diff = float((engine_cka(acts) - per_pair_cka(acts)).abs().max())
        print(f"{L:>6} {L * L:>7} {t_engine:>11.3f} {t_loop:>13.3f} {t_loop / t_engine:>8.1f}x {diff:>11.1e}")
        assert math.isfinite(diff) and diff < 1e-10


if __name__ == "__main__":
    main()
