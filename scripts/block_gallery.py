"""The block-detector gallery: real heatmaps with the blocks each rule finds, for judging by eye.

    scripts/gallery/corpus.sh out/gallery          # trains the models (resumable; about an hour on 2 cores)
    python scripts/block_gallery.py out/gallery/fashion out/gallery/vit out/gallery/digits \
        --untrained out/gallery/fashion out/gallery/vit --lm out/gallery/lm/fortunes-12 \
        --cache out/gallery/cache --out docs/gallery

Every within-model heatmap of the given experiment directories (their cka/ files), the
heatmaps of the same architectures with fresh weights (--untrained: one per run of those
experiments, on the same data and layers, computed once and kept under --cache), and
the boundary heatmap of Hugging Face language models (--lm: a model folder, on held-out text of
Debian's fortunes), each drawn with the blocks of the default detector (the contrast rule, cyan,
each with its score) and of the threshold rule of earlier releases (dashed white). --pick keeps the
models whose names match a pattern. Writes gallery.png (all panels on CKA's 0..1 scale),
gallery-own-range.png (the same panels, each on its own off-diagonal range: what stands out in a
heatmap whose values all lie in a narrow band) and gallery.json (every heatmap's blocks by both rules).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ckatlas.analysis import BlockDetector, BlockResult
from ckatlas.io.files import atomic_open, atomic_write_json
from ckatlas.heatmap import CKAResult, heatmap
from ckatlas.report import outline_blocks
from ckatlas.heatmap.figures import colour_range, plot_heatmap

THRESHOLD_RULE = BlockDetector(method="threshold")


def picked(models: list[dict], patterns: list[str]) -> list[dict]:
    """The models whose names match one of the shell patterns (all of them when there are none)."""
    return [m for m in models if not patterns or any(fnmatch.fnmatchcase(m["name"], p) for p in patterns)]


def short(name: str) -> str:
    """An experiment's or model's name for a panel title: without the seed offset, the training fraction and a
    `gallery-` prefix."""
    return re.sub(r"-f[\d.]+(?=-s\d+$)|-seed[+-]\d+$", "", name).removeprefix("gallery-")


def experiment_heatmaps(root: Path, patterns: list[str] = ()) -> list[tuple[str, CKAResult, dict]]:
    """(label, heatmap, facts) of every (picked) model of a finished experiment."""
    summary = json.loads((root / "summary.json").read_text())
    out = []
    for m in picked(summary["models"], patterns):
        facts = {"experiment": summary["name"], "model": m["name"], "test_accuracy": m["test_accuracy"],
                 "trained": True}
        out.append((f"{short(summary['name'])}: {short(m['name'])}", CKAResult.load(root / m["paths"]["cka"]), facts))
    return out


def untrained_heatmaps(root: Path, cache: Path, patterns: list[str] = ()) -> list[tuple[str, CKAResult, dict]]:
    """The heatmap of each run's architecture with fresh weights (its own seed), on the experiment's
    CKA examples and layers; computed once into `cache`."""
    from ckatlas.runtime.seeding import make_generator
    from ckatlas.train import build_model, load_run

    summary = json.loads((root / "summary.json").read_text())
    cka_settings = summary["config"]["cka"]
    cache.mkdir(parents=True, exist_ok=True)
    out, data = [], None
    for m in picked(summary["models"], patterns):
        path = cache / f"{m['name']}.npz"
        if not path.is_file():
            run = load_run(root / m["paths"]["run"])
            data = data or run.config.load_data()
            fresh = build_model(run.config, run.info["data"]["num_classes"], run.info["data"]["image_shape"][0],
                                generator=make_generator(run.config.seed)).eval()
            x = data.x_test[: cka_settings["num_examples"]]
            heatmap(fresh, x, layers=cka_settings["layers"], batch_size=cka_settings["batch_size"],
                    progress=False).save(path)
        facts = {"experiment": summary["name"], "model": m["name"], "trained": False}
        out.append((f"untrained: {short(m['name'])}", CKAResult.load(path), facts))
    return out


def lm_heatmaps(folder: Path, cache: Path) -> list[tuple[str, CKAResult, dict]]:
    """The boundary heatmap (input of layer 0, then each layer's output) of a causal LM on the held-out
    end of Debian's fortunes, as `ckatlas layers` computes it."""
    path = cache / f"{folder.name}.npz"
    if not path.is_file():
        from ckatlas.hf import layer_redundancy, split, text_token_ids
        from ckatlas.hf.loading import load_model
        from ckatlas.hf.tiny_lm import fortunes_text

        model, tokenizer = load_model(str(folder))
        ids = text_token_ids(fortunes_text(), tokenizer, 128, 100_000)
        held_out = ids[int(0.9 * len(ids)):][:128]
        result = layer_redundancy(model, held_out, batch_size=16)
        names = [f"b{i}" for i in range(len(result.cka))]
        cache.mkdir(parents=True, exist_ok=True)
        CKAResult(result.cka, names, names, np.zeros_like(result.cka), n=len(held_out), num_batches=1, passes=1,
                  model_a=folder.name, model_b=folder.name, is_square=True).save(path)
    return [(f"language model: {folder.name}", CKAResult.load(path), {"model": folder.name, "trained": True})]


def _brief(result: BlockResult) -> dict:
    """A block result without its layer lists (they are the heatmap's)."""
    out = result.to_dict()
    for key in ("layer_names", "layer_indices", "detector", "format", "version"):
        out.pop(key, None)
    return out


def detect(entries: list[tuple[str, CKAResult, dict]]) -> list[tuple[BlockResult, BlockResult]]:
    """The blocks of each heatmap by the default detector and by the threshold rule."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [(BlockDetector().find(cka), THRESHOLD_RULE.find(cka)) for _, cka, _ in entries]


def records(entries: list[tuple[str, CKAResult, dict]], blocks: list[tuple[BlockResult, BlockResult]]) -> list[dict]:
    """gallery.json's entry of each heatmap: its facts and its blocks by both rules."""
    return [{"label": label, **facts, "layers": len(cka.layers_a), "contrast": _brief(new), "threshold": _brief(old)}
            for (label, cka, facts), (new, old) in zip(entries, blocks)]


def draw(entries: list[tuple[str, CKAResult, dict]], blocks: list[tuple[BlockResult, BlockResult]], columns: int = 6,
         value_range: tuple[float, float] | str = (0.0, 1.0)) -> Figure:
    rows = math.ceil(len(entries) / columns)
    fig = Figure(figsize=(3.0 * columns, 3.35 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (label, cka, facts), (found, old) in zip(axes.flat, entries, blocks):
        plot_heatmap(cka.matrix, ax, colorbar=False, groups=False, title="", value_range=value_range)
        outline_blocks(ax, old, color="white")
        for patch in ax.patches:
            patch.set_linestyle("--")
            patch.set_linewidth(0.8)
        outline_blocks(ax, found, color="cyan")
        for b in found.blocks:
            ax.text(b.start, b.end + 0.5, f"{b.score:.2f}", color="cyan", fontsize=7, va="bottom", ha="left")
        acc = f", acc {facts['test_accuracy']:.0%}" if "test_accuracy" in facts else ""
        low, high = colour_range(cka.matrix, value_range)
        shown = "" if (low, high) == (0.0, 1.0) else f" [{low:.2f}-{high:.2f}]"
        ax.set_title(f"{label}{acc}{shown}\narea {found.block_area:.2f} frac {found.block_fraction:.2f} "
                     f"peak {found.peak_score:.2f} | thr 0.9: {old.block_fraction:.2f}", fontsize=6.5)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(entries):]:
        ax.set_axis_off()
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiments", nargs="+", type=Path, help="finished experiment directories")
    p.add_argument("--untrained", nargs="*", type=Path, default=[], help="experiments whose runs to draw untrained")
    p.add_argument("--lm", nargs="*", type=Path, default=[], help="Hugging Face causal LM folders")
    p.add_argument("--pick", nargs="*", default=[], metavar="PATTERN",
                   help="draw only the models whose names match one of these shell patterns (e.g. '*-s0')")
    p.add_argument("--out", type=Path, required=True, help="where gallery.png and gallery.json go")
    p.add_argument("--cache", type=Path, required=True, help="where computed heatmaps are kept between runs")
    p.add_argument("--columns", type=int, default=6)
    args = p.parse_args(argv)
    entries = [e for root in args.experiments for e in experiment_heatmaps(root, args.pick)]
    for root in args.untrained:
        entries += untrained_heatmaps(root, args.cache / "untrained" / root.name, args.pick)
    for folder in args.lm:
        entries += lm_heatmaps(folder, args.cache / "lm")
    args.out.mkdir(parents=True, exist_ok=True)
    blocks = detect(entries)  # once, for both drawings and the listing
    for name, value_range in (("gallery.png", (0.0, 1.0)), ("gallery-own-range.png", "own")):
        with atomic_open(args.out / name, "wb") as fh:
            draw(entries, blocks, args.columns, value_range).savefig(fh, format="png", dpi=90)
    listed = records(entries, blocks)
    atomic_write_json(args.out / "gallery.json", {"detector": BlockDetector().to_dict(),
                                                  "threshold_rule": THRESHOLD_RULE.to_dict(), "heatmaps": listed})
    for r in listed:
        c, t = r["contrast"], r["threshold"]
        spans = ", ".join(f"{b['start']}-{b['end']} ({b['score']:.2f})" for b in c["blocks"]) or "none"
        print(f"{r['label']:<48} area {c['block_area']:.2f} frac {c['block_fraction']:.2f}  [{spans}]  "
              f"threshold {t['block_fraction']:.2f}")
    print(f"wrote {args.out / 'gallery.png'} and gallery-own-range.png ({len(listed)} heatmaps)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
