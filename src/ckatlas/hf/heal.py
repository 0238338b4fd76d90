"""Healing a pruned language model: a short fine-tune on the user's text (``ckatlas layers --heal``).

Removing layers costs perplexity; a few hundred steps of training on in-domain text win much
of it back (Gromov et al. 2024 heal with QLoRA; here all weights, for a small model on a CPU).
`heal` trains the model in place with AdamW on the causal-LM loss of real tokens (padding left
out, as `evaluate` scores them), over consecutive batches of the given token ids, repeated
until `steps` optimiser steps are done.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ckatlas.capture.calls import call_model
from ckatlas.runtime.devices import run_device
from ckatlas.errors import UserInputError
from ckatlas.hf.data import batches, without_labels
from ckatlas.hf.removal import output_logits, token_losses


def heal(
    model: nn.Module,
    inputs: Any,
    *,
    steps: int,
    lr: float = 1e-4,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> list[float]:
    """Fine-tune `model` in place for `steps` AdamW steps on `inputs` (token ids (N, seq) or a dict with
    ``input_ids`` and ``attention_mask``); returns the training loss of each step.

    Raises:
        UserInputError: no steps, a learning rate that is not positive, inputs with labels
            (a classifier: only causal language models are healed), or no batch.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserInputError(f"steps must be a positive number of optimiser steps, got {steps!r}")
    if not lr > 0:
        raise UserInputError(f"the healing learning rate must be positive, got {lr!r}")
    if isinstance(inputs, dict) and "labels" in inputs:
        raise UserInputError("healing fine-tunes a causal language model on text; these inputs carry labels")
    device = run_device(model, device)
    order = list(batches(inputs, batch_size, min_size=2))
    if not order:
        raise UserInputError("no batch of token ids to heal on")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    was_training = model.training
    model.train()
    losses: list[float] = []
    disable = None if progress is None else not progress  # None: a bar on a terminal only
    try:
        for step in tqdm(range(steps), desc="healing", unit="step", disable=disable, leave=False):
            batch = order[step % len(order)]
            per_token, mask = token_losses(batch, output_logits(call_model(model, without_labels(batch), device)), device)
            loss = per_token[mask].mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        model.train(was_training)
    return losses


__all__ = ["heal"]
