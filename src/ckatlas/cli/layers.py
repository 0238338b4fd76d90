"""`ckatlas layers`: which layers of a Hugging Face model are redundant, and removing them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ckatlas.cli._common import add_detector_options, command, detector_from_args, positive_float, positive_int, write_png
from ckatlas.errors import UserInputError


def add_layers(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "layers", "redundant layers of a Hugging Face model: CKA, angular distance, Block Influence; removal",
        """
        Which layers of a transformer can go. On calibration data: the CKA heatmap of the
        layer stack's boundaries and its blocks, the angular distance between them (Gromov et
        al. 2024) and each layer's Block Influence (ShortGPT, Men et al. 2024); each gives a
        removal order. On held-out data: the loss (perplexity; accuracy for a classifier)
        after each removal, per criterion. Writes OUT/removal.json and OUT/removal.png;
        with --save N, the model without the N layers --criterion picks, to
        OUT/pruned-<criterion>-<N>/ (from_pretrained loads it). MODEL is a folder that
        save_pretrained wrote, or a hub name (gpt2, org/model) as from_pretrained takes it: from
        the Hugging Face cache, downloaded first when it is not there and HF_HUB_OFFLINE is unset.
        """,
        [
            "ckatlas layers ./my-lm --text corpus.txt --out lm-layers",
            "ckatlas layers gpt2 --text corpus.txt --out gpt2-layers      # a hub name: cached, or downloaded",
            "ckatlas layers ./my-lm --text corpus.txt --out lm-layers --save 3 --criterion cka",
            "ckatlas layers ./my-vit --inputs images.npz --out vit-layers   # pixel_values, labels",
        ],
    )
    p.add_argument("model", help="a Hugging Face model folder (save_pretrained) or a hub name such as gpt2")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--text", help="a UTF-8 text file, tokenised by the model's tokenizer")
    data.add_argument("--inputs", help=".npy of token ids (N, seq), or .npz of arrays (input_ids, attention_mask, "
                                       "pixel_values, labels, ...)")
    p.add_argument("--out", required=True, help="folder for removal.json, removal.png and pruned models")
    p.add_argument("--seq-len", type=positive_int, default=128, help="tokens per sequence cut from --text (128)")
    p.add_argument("--sequences", type=positive_int, default=512, help="at most this many examples (512)")
    p.add_argument("--holdout", type=float, default=0.5, help="share of the examples held out for the curves (0.5)")
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="sequences per forward pass, at least 4 (default 16; the CKA batches are near-equal around it)")
    p.add_argument("--max-remove", type=positive_int, help="removals measured per criterion (default: half the layers)")
    p.add_argument("--layers-path", help="the ModuleList of layers (e.g. model.layers) when the guess is wrong")
    p.add_argument("--save", type=positive_int, metavar="N", help="save the model without N layers")
    p.add_argument("--criterion", choices=["cka", "angular", "block_influence"], default="cka",
                   help="which criterion's N layers --save removes (cka)")
    p.add_argument("--heal", type=positive_int, metavar="STEPS",
                   help="with --save and --text: fine-tune the pruned model for STEPS steps on the calibration "
                        "text (causal-LM loss) and save it too, as pruned-<criterion>-<N>-healed/")
    p.add_argument("--heal-lr", type=positive_float, default=1e-4, help="learning rate of --heal (AdamW, 1e-4)")
    p.add_argument("--quiet", action="store_true", help="print only where the results are (no summary, no progress bars)")
    add_detector_options(p)
    p.set_defaults(func=_run_layers)


def _run_layers(args: argparse.Namespace) -> int:
    from ckatlas.hf.heal import heal
    from ckatlas.hf.stack import MERGEKIT_FILE, REMOVAL_FILE, save_removed
    from ckatlas.hf import (evaluate, layer_redundancy, layer_stack, load_inputs, read_text, removal_curves, save_pruned, split,
                            text_token_ids)
    from ckatlas.hf.data import take
    from ckatlas.hf.loading import load_model
    from ckatlas.report.removal_figures import removal_figure

    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; expected a folder")
    pruned_dir = out / f"pruned-{args.criterion}-{args.save}" if args.save else None
    healed_dir = out / f"pruned-{args.criterion}-{args.save}-healed" if args.save and args.heal else None
    if args.heal and not args.save:
        raise UserInputError("--heal fine-tunes the model --save N writes; give --save N too")
    if args.heal and not args.text:
        raise UserInputError("--heal fine-tunes a causal language model on text; give --text FILE")
    for folder in (pruned_dir, healed_dir):
        if folder is not None and folder.exists():
            raise UserInputError(f"{folder} exists; delete it or choose another --out")
    if not 0 < args.holdout < 1:
        raise UserInputError(f"--holdout must be in (0, 1), got {args.holdout}")
    try:  # progress bars of saving and loading would interleave with the summary
        import transformers
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass  # load_model says what to install
    text = read_text(args.text) if args.text else None
    inputs = load_inputs(args.inputs) if args.inputs else None
    model, tokenizer = load_model(args.model)
    detector = detector_from_args(args)
    stack = layer_stack(model, args.layers_path)
    count = stack.count
    measured = args.max_remove if args.max_remove is not None else count // 2
    if args.save and args.save > measured:  # checked before the analysis, not after it
        raise UserInputError(f"--save {args.save} is more than the {measured} removals measured (the model has "
                             f"{count} layers; --max-remove, default half of them); raise --max-remove")
    if text is not None:
        if tokenizer is None:
            raise UserInputError(f"{args.model} holds no tokenizer to read --text with; give --inputs token ids")
        inputs = text_token_ids(text, tokenizer, args.seq_len, args.sequences)
    else:
        inputs = take(inputs, slice(0, args.sequences))
    calibration, held_out = split(inputs, args.holdout)
    progress = False if args.quiet else None  # bars on a terminal only
    result = layer_redundancy(model, calibration, batch_size=args.batch_size, layers_path=args.layers_path,
                              detector=detector, max_remove=args.max_remove, progress=progress)
    result = removal_curves(model, result, held_out, batch_size=args.batch_size, progress=progress)
    pruned = None
    if pruned_dir is not None:
        removed = result.removed(args.criterion, args.save)
        pruned = save_pruned(model, removed, str(pruned_dir), tokenizer, stack, source=str(args.model))
        names = ", ".join(result.layers[i] for i in removed)
        print(f"saved the model without layers {removed} ({names}) to {pruned_dir}; the removal: "
              f"{pruned_dir / REMOVAL_FILE}, as a mergekit passthrough config: {pruned_dir / MERGEKIT_FILE}",
              file=sys.stderr)
    if healed_dir is not None and pruned is not None:  # (a healed folder implies a saved one)
        losses = heal(pruned, calibration, steps=args.heal, lr=args.heal_lr, batch_size=args.batch_size,
                      progress=progress)
        result.healing = {"criterion": args.criterion, "n": args.save, "steps": args.heal, "lr": args.heal_lr,
                          "loss_before": result.curves[args.criterion][args.save],
                          "loss_after": evaluate(pruned, held_out, batch_size=args.batch_size),
                          "train_loss_first": losses[0], "train_loss_last": losses[-1], "folder": healed_dir.name}
        save_removed(pruned.eval(), str(healed_dir), stack, removed, tokenizer, source=str(args.model))
        print(f"saved it healed ({args.heal} steps) to {healed_dir}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "removal.json")
    write_png(removal_figure(result), out / "removal.png")
    if not args.quiet:
        print(result.summary())
    print(f"wrote {out / 'removal.json'} and {out / 'removal.png'}", file=sys.stderr)
    return 0


__all__ = ["add_layers"]
