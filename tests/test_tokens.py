"""Token sequences: how a transformer layer's (n, seq, d) output becomes one example's representation.

Padding must never enter a Gram: with an attention mask, only the masked-out ids may differ
between two batches and every CKA value must stay the same, for every choice of `tokens`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel

from ckatlas import heatmap
from ckatlas.capture import capture_activations, resolve_layers
from ckatlas.cka import linear_cka
from ckatlas.errors import UserInputError
from ckatlas.capture.tokens import TOKEN_MODES, reduce_tokens


def _bert(layers: int = 4) -> BertModel:
    config = BertConfig(hidden_size=64, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=128,
                        vocab_size=200, initializer_range=0.5)
    return BertModel(config).eval()


def _masked_ids(n: int = 64, seq: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 200, (n, seq))
    lengths = torch.randint(3, 8, (n,))
    mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    return ids, mask


def _batches(ids: torch.Tensor, mask: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    return [{"input_ids": ids[i : i + 32], "attention_mask": mask[i : i + 32]} for i in range(0, len(ids), 32)]


@pytest.mark.parametrize("tokens", TOKEN_MODES)
def test_padding_ids_change_nothing(tokens: str) -> None:
    # The reproduction: with the old flattening CKA(embeddings, layer 0) moved from 0.233 to 0.088.
    model, (ids, mask) = _bert(), _masked_ids()
    layers = ["embeddings", "encoder.layer.0", "encoder.layer.3"]
    zeros = heatmap(model, _batches(ids * mask, mask), layers=layers, tokens=tokens)
    sevens = heatmap(model, _batches(torch.where(mask.bool(), ids, 7), mask), layers=layers, tokens=tokens)
    np.testing.assert_allclose(zeros.matrix, sevens.matrix, atol=1e-6)
    assert zeros.metadata["tokens"] == ("mean" if tokens == "auto" else tokens)
    assert zeros.metadata["attention_mask"] is True
    assert zeros.metadata["token_layers_a"] == layers


def test_each_mode_equals_a_loop_over_the_valid_tokens() -> None:
    model, (ids, mask) = _bert(2), _masked_ids(32)
    batch = {"input_ids": ids, "attention_mask": mask}
    raw = capture_activations(model, ["encoder.layer.1"], batch, tokens="flatten")["encoder.layer.1"]
    assert raw.shape == (32, 16 * 64)
    hidden = capture_activations(model, ["encoder.layer.1"], {"input_ids": ids}, tokens="flatten")
    assert hidden["encoder.layer.1"].shape == (32, 16, 64)  # no mask: as it is (a Gram flattens it)
    # the reference: per example, a plain Python loop over its real tokens
    full = model(input_ids=ids, attention_mask=mask).last_hidden_state.detach()
    expected = {"mean": [], "first": [], "last": [], "flatten": []}
    for i in range(32):
        valid = [t for t in range(16) if mask[i, t]]
        expected["mean"].append(full[i, valid].mean(0))
        expected["first"].append(full[i, valid[0]])
        expected["last"].append(full[i, valid[-1]])
        expected["flatten"].append(torch.cat([full[i, t] if mask[i, t] else torch.zeros(64) for t in range(16)]))
    for mode, rows in expected.items():
        got = capture_activations(model, ["encoder.layer.1"], batch, tokens=mode)["encoder.layer.1"]
        torch.testing.assert_close(got, torch.stack(rows), atol=1e-5, rtol=1e-5)


def test_first_and_last_follow_left_padding() -> None:
    t = torch.arange(2 * 4 * 3, dtype=torch.float64).reshape(2, 4, 3)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    torch.testing.assert_close(reduce_tokens(t, "first", mask), torch.stack([t[0, 2], t[1, 0]]))
    torch.testing.assert_close(reduce_tokens(t, "last", mask), torch.stack([t[0, 3], t[1, 2]]))
    torch.testing.assert_close(reduce_tokens(t, "mean", None), t.mean(1))


def test_auto_without_a_mask_flattens_as_before() -> None:
    model = _bert(2)
    ids = torch.randint(1, 200, (48, 8))
    res = heatmap(model, ids, layers=["embeddings", "encoder.layer.1"], batch_size=24, shuffle=False)
    acts = capture_activations(model, ["embeddings", "encoder.layer.1"], ids)
    assert acts["embeddings"].shape == (48, 8, 64) and res.metadata["tokens"] == "flatten"
    assert res.metadata["token_layers_a"] == []
    # flattened tokens, minibatch CKA of two consecutive batches of 24
    from ckatlas.cka import MinibatchCKA

    acc = MinibatchCKA(2)
    for i in (0, 24):
        acc.update([acts["embeddings"][i : i + 24], acts["encoder.layer.1"][i : i + 24]])
    np.testing.assert_allclose(res.matrix, acc.compute().numpy(), atol=1e-5)


def test_mean_tokens_match_full_batch_cka_of_the_pooled_features() -> None:
    model, (ids, mask) = _bert(2), _masked_ids(64)
    res = heatmap(model, {"input_ids": ids, "attention_mask": mask}, layers=["embeddings", "encoder.layer.1"],
                  batch_size=64, tokens="mean")
    acts = capture_activations(model, ["embeddings", "encoder.layer.1"], {"input_ids": ids, "attention_mask": mask},
                               tokens="mean")
    ref = linear_cka(acts["embeddings"].double(), acts["encoder.layer.1"].double(), debiased=True)
    assert res.matrix[0, 1] == pytest.approx(ref, abs=1e-5)


def test_all_leaves_out_modules_that_are_the_identity_in_eval_mode() -> None:
    model = _bert(6)
    ids = torch.randint(1, 200, (32, 8))
    res = heatmap(model, ids, layers="all", batch_size=16)
    dropouts = [n for n, m in model.named_modules() if isinstance(m, nn.Dropout)]
    assert dropouts and not set(dropouts) & set(res.layers_a)
    assert all(name in res.layers_a for name in ["embeddings.LayerNorm", "encoder.layer.5.output.dense"])
    off = res.matrix[np.arange(1, len(res.layers_a)), np.arange(len(res.layers_a) - 1)]
    assert not np.any(np.isclose(off, 1.0, atol=1e-9))  # no layer is an exact copy of the one before
    # named on purpose, an eval-mode Dropout is still measured
    named = resolve_layers(model, ["embeddings.dropout"])
    assert heatmap(model, ids, layers=named + ["embeddings.LayerNorm"], batch_size=16).matrix[0, 1] == pytest.approx(1.0)


def test_bad_token_settings_are_one_clear_error() -> None:
    model, (ids, mask) = _bert(2), _masked_ids(16)
    with pytest.raises(UserInputError, match="tokens must be one of auto, flatten, mean, first, last"):
        heatmap(model, {"input_ids": ids, "attention_mask": mask}, layers=["embeddings"], tokens="cls")
    with pytest.raises(UserInputError, match="all zeros"):
        heatmap(model, {"input_ids": ids, "attention_mask": mask * 0}, layers=["embeddings"], batch_size=8)
    with pytest.raises(UserInputError, match="attention_mask has shape"):
        heatmap(model, {"input_ids": ids, "attention_mask": mask[:, None]}, layers=["embeddings"], batch_size=8)
