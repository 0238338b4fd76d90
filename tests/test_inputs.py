"""The inputs people actually have: a dict or BatchEncoding, NumPy arrays, small batches, compiled models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from transformers import BatchEncoding, BertConfig, BertModel

from ckatlas import heatmap
from ckatlas.capture import capture_activations, resolve_layers
from ckatlas.errors import UserInputError


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


def _bert() -> BertModel:
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=100)
    return BertModel(config).eval()


def test_a_dict_or_batch_encoding_is_sliced_like_a_tensor() -> None:
    model = _bert()
    ids = torch.randint(1, 100, (40, 12))
    mask = (torch.arange(12)[None] < torch.randint(4, 12, (40,))[:, None]).long()
    layers = ["embeddings", "encoder.layer.0", "encoder.layer.1"]
    # 40 examples at batch_size 16: three near-equal batches (14, 13, 13)
    batches = [{"input_ids": ids[i:j], "attention_mask": mask[i:j]} for i, j in ((0, 14), (14, 27), (27, 40))]
    expected = heatmap(model, batches, layers=layers)
    as_dict = heatmap(model, {"input_ids": ids, "attention_mask": mask}, layers=layers, batch_size=16, shuffle=False)
    np.testing.assert_allclose(as_dict.matrix, expected.matrix, atol=1e-6)
    encoding = BatchEncoding({"input_ids": ids, "attention_mask": mask})
    as_encoding = heatmap(model, encoding, layers=layers, batch_size=16, shuffle=False)
    np.testing.assert_allclose(as_encoding.matrix, expected.matrix, atol=1e-6)
    assert as_encoding.n == 40 and as_encoding.num_batches == 3
    shuffled = heatmap(model, encoding, layers=layers, batch_size=16, passes=2)
    assert shuffled.num_batches == 6 and np.isfinite(shuffled.matrix).all()


def test_a_dict_of_lists_or_of_unequal_tensors_is_one_clear_error() -> None:
    model = _bert()
    with pytest.raises(UserInputError, match="return_tensors='pt'"):
        heatmap(model, BatchEncoding({"input_ids": [[1, 2, 3]] * 8}), layers=["embeddings"])
    with pytest.raises(UserInputError, match="same number of examples"):
        heatmap(model, {"input_ids": torch.ones(8, 4, dtype=torch.long), "attention_mask": torch.ones(6, 4)},
                layers=["embeddings"])


def test_float64_arrays_and_lists_of_arrays_into_a_float32_model() -> None:
    model = _mlp()
    x64 = np.random.default_rng(0).normal(size=(64, 10))
    expected = heatmap(model, torch.from_numpy(x64).float(), layers="all", batch_size=16, shuffle=False)
    np.testing.assert_allclose(heatmap(model, x64, layers="all", batch_size=16, shuffle=False).matrix,
                               expected.matrix, atol=1e-6)
    listed = heatmap(model, [x64[i : i + 16] for i in range(0, 64, 16)], layers="all")
    np.testing.assert_allclose(listed.matrix, expected.matrix, atol=1e-6)
    acts = capture_activations(model, ["0"], x64[:8])
    assert acts["0"].dtype == torch.float32 and acts["0"].shape == (8, 32)
    with pytest.raises(UserInputError, match="dtype <U"):
        heatmap(model, np.array([["a"] * 10] * 8), layers="all")


def test_batch_size_below_four_is_an_error_before_any_work() -> None:
    model = _mlp()
    with pytest.raises(UserInputError, match="batch_size must be at least 4") as exc:
        heatmap(model, torch.randn(64, 10), layers="all", batch_size=3)
    assert "give more inputs" not in str(exc.value)


def test_a_compiled_model_gives_the_plain_models_heatmap() -> None:
    model = _mlp()
    compiled = torch.compile(model)
    x = torch.randn(64, 10)
    plain = heatmap(model, x, layers="all", batch_size=16)
    for spec in ("all", "_orig_mod.*", ["0", "_orig_mod.2"], nn.ReLU):
        res = heatmap(compiled, x, layers=spec, batch_size=16)
        rows = [plain.layers_a.index(n) for n in res.layers_a]
        np.testing.assert_allclose(res.matrix, plain.matrix[np.ix_(rows, rows)], rtol=0, atol=1e-12)
    whole = heatmap(compiled, x, layers="_orig_mod.*", batch_size=16)
    assert whole.layers_a == plain.layers_a
    np.testing.assert_array_equal(whole.matrix, plain.matrix)
    assert resolve_layers(compiled, "_orig_mod.4") == ["4"]
    assert heatmap(compiled, x, layers="all", batch_size=16).model_a == "Sequential"
    with pytest.raises(UserInputError, match="no module named '9'"):
        heatmap(compiled, x, layers=["_orig_mod.9"], batch_size=16)
