"""Layer removal on a small causal LM trained here: the three criteria's curves and their cost.

Trains (once; the folder is reused) a Llama-style LM on Debian's fortunes corpus
(`ckatlas.hf.tiny_lm`), then on held-out sequences the model never trained on:
calibration for the criteria (CKA blocks, angular distance, Block Influence), and
evaluation for the removal curves (perplexity after n layers removed). Prints the
curves side by side, a random-removal baseline, and the time of each part next to a
plain forward pass over the same calibration data.

    python benchmarks/bench_layer_removal.py --model-dir /tmp/fortunes-lm [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ckatlas.hf import evaluate, layer_redundancy, layers_removed, removal_curves, text_token_ids
    from ckatlas.hf.tiny_lm import TinyLMConfig, fortunes_text, train_tiny_lm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="/tmp/fortunes-lm")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=128, help="calibration sequences")
    parser.add_argument("--evaluation", type=int, default=256, help="held-out sequences for the curves")
    parser.add_argument("--random-orders", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    text = fortunes_text()
    folder = Path(args.model_dir)
    if not folder.exists():
        config = TinyLMConfig(layers=args.layers, width=args.width, steps=args.steps)
        info = train_tiny_lm(text, folder, config)
        (folder / "training.json").write_text(json.dumps(info, indent=1))
    info = json.loads((folder / "training.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    seq_len = info["config"]["seq_len"]
    ids = text_token_ids(text, tokenizer, seq_len)
    held = ids[len(ids) - max(1, round(len(ids) * 0.1)):]  # the sequences training never saw
    calib, evaluation = held[: args.calibration], held[args.calibration: args.calibration + args.evaluation]
    print(f"corpus: Debian fortunes, {len(text) / 1e6:.2f} MB, {ids.numel()} tokens; model: {info['config']['layers']} "
          f"layers x {info['config']['width']}, trained {info['train_seconds']:.0f} s; held-out loss "
          f"{info['held_out_loss_before']:.2f} -> {info['held_out_loss_after']:.2f}")
    print(f"calibration {len(calib)} x {seq_len} tokens, evaluation {len(evaluation)} x {seq_len} tokens, "
          f"{torch.get_num_threads()} threads")

    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(calib), 16):
            model(input_ids=calib[start:start + 16])
    forward = time.perf_counter() - started
    result = layer_redundancy(model, calib, batch_size=16, max_remove=info["config"]["layers"] - 1)
    criteria_seconds = result.metadata["seconds"]
    result = removal_curves(model, result, evaluation, batch_size=16)
    print(result.summary())

    rng = np.random.default_rng(0)
    count = len(result.layers)
    random_curves = []
    for _ in range(args.random_orders):
        order = rng.permutation(count).tolist()
        curve = []
        for n in range(1, count):
            with layers_removed(model, order[:n]):
                curve.append(evaluate(model, evaluation, batch_size=16))
        random_curves.append(curve)
    mean_random = np.exp(np.array(random_curves)).mean(0)
    print("random order (mean perplexity over", args.random_orders, "orders):",
          " ".join(f"{v:.1f}" for v in mean_random))
    print(f"\ntime: forward pass over the calibration data {forward:.2f} s; the three criteria in one pass "
          f"{criteria_seconds:.2f} s ({criteria_seconds / forward:.2f}x); curves "
          f"{result.metadata['curve_seconds']:.1f} s for {sum(len(v) for v in result.curves.values())} points "
          f"(distinct removal sets evaluated once)")
    out = folder / "removal.json"
    result.save(out)
    print("perplexity rows (n, cka, angular, block_influence, random):")
    for n in range(count):
        row = [math.exp(result.curves[c][n]) for c in ("cka", "angular", "block_influence")]
        rand = mean_random[n - 1] if n else math.exp(result.curves["cka"][0])
        print(f"| {n} | " + " | ".join(f"{v:.1f}" for v in row) + f" | {rand:.1f} |")
    print("saved", out)


if __name__ == "__main__":
    main()
