"""A small Llama-style causal language model trained on a local text on the CPU, in minutes.

For trying the layer-removal analysis where nothing can be downloaded, and for its tests
and benchmark: a byte-level BPE tokenizer is learnt from the text, and a Llama config of
the given depth and width is trained on consecutive sequences of it with AdamW and a
cosine schedule. The folder written is a Hugging Face model folder (config, safetensors
weights, tokenizer): ``AutoModelForCausalLM.from_pretrained(folder)`` and
``AutoTokenizer.from_pretrained(folder)`` load it. Needs ``transformers`` (the ``hf`` extra).

Debian's ``fortunes`` package is such a text (``fortunes_text``: 2.5 MB of quotations).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ckatlas.errors import UserInputError
from ckatlas.hf.data import text_token_ids

FORTUNES_DIR = "/usr/share/games/fortunes"


def fortunes_text(folder: str | os.PathLike = FORTUNES_DIR) -> str:
    """The quotations of Debian's ``fortunes`` package as one text (the ``%`` separators as blank lines)."""
    root = Path(folder)
    files = sorted(p for p in root.glob("*") if p.is_file() and not p.is_symlink() and p.suffix != ".dat")
    if not files:
        raise UserInputError(f"no fortune files in {root}; install Debian's fortunes package (apt-get install fortunes)")
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    return text.replace("\n%\n", "\n\n")


@dataclass(frozen=True)
class TinyLMConfig:
    """The model and its training: `layers` x `width` (heads of 32 dimensions), `steps` of `batch_size`
    sequences of `seq_len` tokens, a BPE vocabulary of `vocab` tokens."""

    layers: int = 8
    width: int = 128
    vocab: int = 1024
    seq_len: int = 128
    batch_size: int = 32
    steps: int = 600
    lr: float = 3e-3
    seed: int = 0


def train_tiny_lm(text: str, out: str | os.PathLike, config: TinyLMConfig = TinyLMConfig(),
                  held_out: float = 0.1, quiet: bool = False) -> dict[str, Any]:
    """Train a tiny causal LM on `text` and save it (and its tokenizer) to the folder `out`.

    The last `held_out` share of the text's sequences is never trained on. Returns what
    was done: the config, the training time, and the held-out loss before and after.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from ckatlas.hf.removal import evaluate

    out = Path(out).expanduser()
    if out.exists():
        raise UserInputError(f"{out} exists; expected a new folder for the model")
    torch.manual_seed(config.seed)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=config.vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    ids = text_token_ids(text, tokenizer, config.seq_len)
    cut = len(ids) - max(1, round(len(ids) * held_out))
    train_ids, test_ids = ids[:cut], ids[cut:]
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.width, intermediate_size=4 * config.width,
        num_hidden_layers=config.layers, num_attention_heads=max(1, config.width // 32),
        max_position_embeddings=config.seq_len, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id))
    before = evaluate(model, test_ids[:64])
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, config.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, config.steps - warmup))))))
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    model.train()
    for step in range(config.steps):
        batch = train_ids[torch.randint(len(train_ids), (config.batch_size,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if not quiet and (step % 50 == 0 or step == config.steps - 1):
            print(f"step {step:>5}  loss {loss.item():.3f}  ({time.perf_counter() - started:.0f} s)", flush=True)
    seconds = time.perf_counter() - started
    model.eval()
    after = evaluate(model, test_ids[:64])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"config": asdict(config), "train_seconds": seconds, "sequences": len(ids),
            "num_tokens": int(ids.numel()), "held_out_loss_before": before, "held_out_loss_after": after}


__all__ = ["FORTUNES_DIR", "TinyLMConfig", "fortunes_text", "train_tiny_lm"]
