"""Layer removal for transformers (`ckatlas.hf`): the layer stack, exact removal, the three
criteria against their formulas, the curves, saving a pruned model, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import transformers  # a dev dependency (the hf extra): a missing one fails here, never skips
from torch import nn

from ckatlas.cka import linear_cka
from ckatlas.cli import main
from ckatlas.errors import UserInputError
from ckatlas.experiment.executors import torch_threads
from ckatlas.hf import (
    LayerRemoval,
    evaluate,
    layer_redundancy,
    layer_stack,
    layers_removed,
    remove_layers,
    removal_curves,
    save_pruned,
    split,
)
from ckatlas.hf.stack import MERGEKIT_FILE, REMOVAL_FILE

transformers.logging.set_verbosity_error()


def _llama(layers: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return transformers.LlamaForCausalLM(config).eval()


def _gpt2(layers: int = 4) -> nn.Module:
    torch.manual_seed(1)
    config = transformers.GPT2Config(vocab_size=120, n_embd=32, n_layer=layers, n_head=4, n_positions=32,
                                     bos_token_id=0, eos_token_id=1)
    return transformers.GPT2LMHeadModel(config).eval()


def _ids(n: int = 24, seq: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 120, (n, seq), generator=torch.Generator().manual_seed(seed))


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 16)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + torch.tanh(self.linear(h))


class _Toy(nn.Module):
    """A token-wise stack, no Hugging Face: its boundaries are easy to compute by hand."""

    def __init__(self, layers: int = 5) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.embed = nn.Embedding(50, 16)
        self.layers = nn.ModuleList([_Block() for _ in range(layers)])
        self.head = nn.Linear(16, 50)

    def boundaries(self, ids: torch.Tensor) -> list[torch.Tensor]:
        h = [self.embed(ids)]
        for layer in self.layers:
            h.append(layer(h[-1]))
        return h

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.boundaries(input_ids)[-1])


# -- the layer stack -------------------------------------------------------------------------------
def test_the_layer_stack_of_common_architectures() -> None:
    assert layer_stack(_llama()).path == "model.layers" and layer_stack(_llama()).count == 5
    assert layer_stack(_gpt2()).path == "transformer.h"
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64))
    assert layer_stack(bert).path == "bert.encoder.layer"
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=64, num_channels=1, num_labels=3))
    assert layer_stack(vit).names() == [f"{layer_stack(vit).path}.{i}" for i in range(3)]
    assert layer_stack(_Toy()).path == "layers"
    with pytest.raises(UserInputError, match="has no module 'nope'"):
        layer_stack(_llama(), "nope")
    with pytest.raises(UserInputError, match="cannot find the layer stack"):
        layer_stack(nn.Sequential(nn.Linear(2, 2)))


# -- removal is exact ----------------------------------------------------------------------------
def _skipping(model: nn.Module, skip: set[int]) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks that make the layers in `skip` return their input: the model as if they were gone."""
    handles = []
    for i, layer in enumerate(model.get_submodule(layer_stack(model).path)):
        if i in skip:
            def identity(module, args, kwargs, output):
                x = args[0] if args else kwargs["hidden_states"]
                return (x, *output[1:]) if isinstance(output, tuple) else x
            handles.append(layer.register_forward_hook(identity, with_kwargs=True))
    return handles


@pytest.mark.parametrize("build", [_llama, _gpt2])
def test_removing_layers_equals_skipping_them(build) -> None:
    model, ids = build(), _ids(4)
    pruned = remove_layers(model, [1, 3])
    assert pruned.config.num_hidden_layers == model.config.num_hidden_layers - 2
    handles = _skipping(model, {1, 3})
    try:
        with torch.no_grad():
            expected = model(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        torch.testing.assert_close(pruned(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
        # in place, for the duration: the same, and the model comes back whole
        before = model(input_ids=ids).logits
        with layers_removed(model, [1, 3]):
            assert model.config.num_hidden_layers == layer_stack(model).count == 2 + (build is _llama)
            torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(input_ids=ids).logits, before)
    assert layer_stack(model).count == model.config.num_hidden_layers


def test_the_kv_cache_of_a_pruned_model_generates_as_its_full_forward() -> None:
    pruned = remove_layers(_llama(), [0, 2])
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1, 2]
    ids = _ids(2, 6)
    with torch.no_grad():
        out = pruned.generate(input_ids=ids, max_new_tokens=4, do_sample=False, use_cache=True, pad_token_id=1)
        no_cache = pruned.generate(input_ids=ids, max_new_tokens=4, do_sample=False, use_cache=False, pad_token_id=1)
    assert torch.equal(out, no_cache)


def test_bad_removals_are_refused() -> None:
    with pytest.raises(UserInputError, match=r"layer indices \[7\] are outside the model's 5 layers"):
        remove_layers(_llama(), [7])
    with pytest.raises(UserInputError, match="cannot remove all 5 layers"):
        remove_layers(_llama(), range(5))


def test_a_saved_pruned_model_loads_with_from_pretrained(tmp_path) -> None:
    model, ids = _llama(), _ids(3)
    pruned = save_pruned(model, [2, 4], str(tmp_path / "pruned"))
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", local_files_only=True).eval()
    assert loaded.config.num_hidden_layers == 3 and len(loaded.model.layers) == 3
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, pruned(input_ids=ids).logits)
    assert model.config.num_hidden_layers == 5  # the original is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]  # no staging folder left behind
    record = json.loads((tmp_path / "pruned" / REMOVAL_FILE).read_text())
    assert (record["removed"], record["removed_modules"], record["kept"], record["kept_ranges"]) == (
        [2, 4], ["model.layers.2", "model.layers.4"], [0, 1, 3], [[0, 2], [3, 4]])
    # the mergekit passthrough config: the kept layers of the source as end-exclusive slices, in order
    config = (tmp_path / "pruned" / MERGEKIT_FILE).read_text()
    ranges = [[int(v) for v in line.split("[")[1].rstrip("]").split(",")] for line in config.splitlines()
              if "layer_range" in line]
    assert ranges == [[0, 2], [3, 4]] and "merge_method: passthrough" in config
    kept = [i for start, end in ranges for i in range(start, end)]
    assert kept == [i for i in range(5) if i not in (2, 4)]
    with pytest.raises(UserInputError, match="exists; expected a new folder"):
        save_pruned(model, [0], str(tmp_path / "pruned"))


# -- the criteria --------------------------------------------------------------------------------------
def test_the_criteria_equal_their_formulas_with_padding_left_out() -> None:
    model = _Toy()
    ids = torch.randint(0, 50, (12, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(12, 7, dtype=torch.bool)
    mask[::3, 4:] = False  # some sequences padded after 4 tokens
    result = layer_redundancy(model, {"input_ids": ids, "attention_mask": mask.long()}, batch_size=12, max_remove=3)
    with torch.no_grad():
        h = [b.double() for b in model.boundaries(ids)]
    pooled = [(b * mask[..., None]).sum(1) / mask.sum(1, keepdim=True) for b in h]
    for a in range(6):
        for b in range(6):
            assert result.cka[a, b] == pytest.approx(linear_cka(pooled[a], pooled[b], debiased=True), abs=1e-5)
    last = mask.long().cumsum(1).argmax(1)
    for i in range(5):
        cos = torch.nn.functional.cosine_similarity(h[i], h[i + 1], dim=-1)[mask]
        assert result.block_influence[i] == pytest.approx(float((1 - cos).mean()), abs=1e-6)
    ends = [b[torch.arange(12), last] for b in h]
    for a, b in [(0, 1), (1, 4), (2, 5)]:
        cos = torch.nn.functional.cosine_similarity(ends[a], ends[b], dim=-1).clamp(-1, 1)
        assert result.angular[a, b] == pytest.approx(float(torch.arccos(cos).mean() / math.pi), abs=1e-6)
    # the removal sets follow from those numbers
    bi_order = np.argsort(result.block_influence)
    assert result.removals["block_influence"] == [sorted(bi_order[:n].tolist()) for n in (1, 2, 3)]
    for n, removed in enumerate(result.removals["angular"], start=1):
        start = int(np.argmin([result.angular[s, s + n] for s in range(6 - n)]))
        assert removed == list(range(start, start + n))
    nested = result.removals["cka"]
    assert all(set(nested[k]) < set(nested[k + 1]) for k in range(2))
    # padding is left out: changing padded tokens changes nothing
    other = ids.clone()
    other[~mask] = 0
    again = layer_redundancy(model, {"input_ids": other, "attention_mask": mask.long()}, batch_size=12, max_remove=3)
    np.testing.assert_allclose(again.cka, result.cka, atol=1e-6)
    np.testing.assert_allclose(again.block_influence, result.block_influence, atol=1e-6)


def test_the_cka_order_takes_layers_inside_blocks_first() -> None:
    model = _Toy(6)
    with torch.no_grad():  # layers 2-4 nearly the identity: boundaries 2..5 form a block
        for i in (2, 3, 4):
            model.layers[i].linear.weight.mul_(0.01)
            model.layers[i].linear.bias.zero_()
    result = layer_redundancy(model, torch.randint(0, 50, (32, 6), generator=torch.Generator().manual_seed(0)),
                              batch_size=16, max_remove=3)
    assert [2, 5] in result.blocks or any(a <= 2 and b >= 5 for a, b in result.blocks), result.blocks
    assert result.removals["cka"][2] == [2, 3, 4]
    assert result.removals["block_influence"][2] == [2, 3, 4]
    assert result.removals["angular"][2] == [2, 3, 4]


def test_settings_are_checked_before_any_work() -> None:
    with pytest.raises(UserInputError, match=r"max_remove must be an integer in \[1, 4\]"):
        layer_redundancy(_llama(), _ids(), max_remove=5)
    with pytest.raises(UserInputError, match="batch_size must be >= 4"):
        layer_redundancy(_llama(), _ids(), batch_size=2)
    with pytest.raises(UserInputError, match="holdout must be in"):
        split(_ids(), 1.5)


# -- the curves ------------------------------------------------------------------------------------------
def test_curves_are_the_held_out_loss_of_each_removal() -> None:
    model = _llama()
    calibration, held_out = split(_ids(32), 0.5)
    result = removal_curves(model, layer_redundancy(model, calibration, batch_size=8, max_remove=2), held_out,
                            batch_size=8)
    with torch.no_grad():  # the library's own next-token loss: all sequences of one length, batches equal
        reference = model(input_ids=held_out, labels=held_out).loss.item()
    assert result.metric == "loss"
    for name in ("cka", "angular", "block_influence"):
        assert result.curves[name][0] == pytest.approx(reference, rel=1e-5)
        for n, removed in enumerate(result.removals[name], start=1):
            assert result.curves[name][n] == pytest.approx(evaluate(remove_layers(model, removed), held_out), rel=1e-6)
    assert layer_stack(model).count == 5 and model.config.num_hidden_layers == 5
    text = result.summary()
    assert "held-out perplexity" in text and f"{math.exp(reference):.2f}" in text


def test_a_classifier_gets_accuracy_curves() -> None:
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
        num_labels=3)).eval()
    ids = _ids(24, 8)
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.arange(24) % 3}
    calibration, held_out = split(data, 0.5)
    result = removal_curves(bert, layer_redundancy(bert, calibration, batch_size=6, max_remove=1), held_out)
    with torch.no_grad():
        predicted = bert(input_ids=held_out["input_ids"], attention_mask=held_out["attention_mask"]).logits.argmax(-1)
    assert result.metric == "accuracy"
    assert result.curves["cka"][0] == pytest.approx(float((predicted == held_out["labels"]).float().mean()))


def test_a_vision_transformer_from_pixel_values() -> None:
    torch.manual_seed(0)
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=64, num_channels=1, num_labels=3)).eval()
    data = {"pixel_values": torch.randn(24, 1, 16, 16, generator=torch.Generator().manual_seed(1)),
            "labels": torch.arange(24) % 3}
    calibration, held_out = split(data, 0.5)
    result = removal_curves(vit, layer_redundancy(vit, calibration, batch_size=6, max_remove=2), held_out)
    assert result.cka.shape == (5, 5) and result.metric == "accuracy"
    pruned = remove_layers(vit, result.removed("block_influence", 2))
    with torch.no_grad():
        accuracy = float((pruned(pixel_values=held_out["pixel_values"]).logits.argmax(-1) == held_out["labels"])
                         .float().mean())
    assert result.curves["block_influence"][2] == pytest.approx(accuracy)


def test_a_result_round_trips_and_a_bad_file_is_one_error(tmp_path) -> None:
    model = _llama()
    result = removal_curves(model, layer_redundancy(model, _ids(16), batch_size=8, max_remove=2), _ids(8, seed=1))
    result.save(tmp_path / "removal.json")
    back = LayerRemoval.load(tmp_path / "removal.json")
    np.testing.assert_allclose(back.cka, result.cka)
    assert back.removals == result.removals and back.curves == result.curves
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(UserInputError, match="not a layer removal result"):
        LayerRemoval.load(tmp_path / "bad.json")
    with pytest.raises(UserInputError, match=r"n must be in \[1, 2\]"):
        result.removed("cka", 3)


# -- the command line ----------------------------------------------------------------------------------------
def _model_folder(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = "the quick brown fox jumps over the lazy dog. " * 200
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=64, bos_token_id=0, eos_token_id=0))
    folder = tmp_path / "lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    return folder, corpus


def test_the_cli_writes_the_result_the_figure_and_a_loadable_pruned_model(tmp_path, capsys) -> None:
    folder, corpus = _model_folder(tmp_path)
    out = tmp_path / "out"
    code = main(["layers", str(folder), "--text", str(corpus), "--out", str(out), "--seq-len", "16",
                 "--sequences", "32", "--batch-size", "8", "--save", "1", "--criterion", "block_influence"])
    assert code == 0
    result = LayerRemoval.load(out / "removal.json")
    printed = capsys.readouterr()
    assert (out / "removal.png").stat().st_size > 0 and "held-out perplexity" in printed.out
    assert "calibration" not in printed.err and "held-out models" not in printed.err  # no bar: not a terminal
    pruned = transformers.AutoModelForCausalLM.from_pretrained(out / "pruned-block_influence-1", local_files_only=True)
    assert pruned.config.num_hidden_layers == 3
    assert transformers.AutoTokenizer.from_pretrained(out / "pruned-block_influence-1", local_files_only=True)
    assert len(result.removals["cka"]) == 2
    removed = result.removed("block_influence", 1)
    record = json.loads((out / "pruned-block_influence-1" / REMOVAL_FILE).read_text())
    assert record["removed"] == removed and record["removed_modules"] == [result.layers[i] for i in removed]
    assert record["source"] == str(folder) and str(folder) in (out / "pruned-block_influence-1" / MERGEKIT_FILE).read_text()
    assert f"without layers {removed} ({result.layers[removed[0]]})" in printed.err
    first = next(i for i in result.removals["cka"][0])
    assert f"removes, in order: {first} ({result.layers[first]})" in printed.out  # indices with module names
    # a second save to the same place is refused before any work
    again = main(["layers", str(folder), "--text", str(corpus), "--out", str(out), "--save", "1",
                  "--criterion", "block_influence"])
    assert again == 2 and "pruned-block_influence-1 exists" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["config", "weights"])
def test_a_folder_that_is_no_model_is_one_line_and_exit_2(tmp_path, capsys, damage) -> None:
    folder, corpus = _model_folder(tmp_path)
    if damage == "config":  # a folder that is not a Hugging Face model: its config.json names no model_type
        (folder / "config.json").write_text('{"hidden_size": 32}')
        message = "is not a Hugging Face model config"
    else:  # a truncated model.safetensors
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        message = "its weights do not load"
    capsys.readouterr()
    assert main(["layers", str(folder), "--text", str(corpus), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(folder) in err[0], err


def test_a_save_beyond_the_removals_measured_is_refused_before_the_analysis(tmp_path, capsys, monkeypatch) -> None:
    import ckatlas.hf

    folder, corpus = _model_folder(tmp_path)

    def analysed(*args, **kwargs):
        raise AssertionError("the analysis ran before --save was checked")

    monkeypatch.setattr(ckatlas.hf, "layer_redundancy", analysed)
    capsys.readouterr()
    assert main(["layers", str(folder), "--text", str(corpus), "--out", str(tmp_path / "o"), "--save", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--save 3 is more than the 2 removals measured (the model has 4 layers" in err[0], err


@pytest.mark.parametrize("args, message", [
    (["layers", "{tmp}/missing", "--text", "{corpus}", "--out", "{tmp}/o"], "no such folder"),
    (["layers", "{folder}", "--text", "{tmp}/none.txt", "--out", "{tmp}/o"], "none.txt: no such file"),
    (["layers", "{folder}", "--inputs", "{corpus}", "--out", "{tmp}/o"], "expected a .npy of token ids"),
    (["layers", "{folder}", "--text", "{corpus}", "--out", "{tmp}/o", "--holdout", "1"], "--holdout must be in"),
])
def test_cli_mistakes_are_one_line_and_exit_2(tmp_path, capsys, args, message) -> None:
    folder, corpus = _model_folder(tmp_path)
    argv = [a.format(tmp=tmp_path, corpus=corpus, folder=folder) for a in args]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


# -- a language model trained here on real text ------------------------------------------------------------
@pytest.mark.slow
def test_a_small_lm_trained_on_fortunes_gets_curves_and_a_pruned_model_that_scores_as_measured(tmp_path, capsys):
    from ckatlas.hf.tiny_lm import TinyLMConfig, fortunes_text, train_tiny_lm

    text = fortunes_text()  # Debian's fortunes package (make system-packages installs it)
    with torch_threads(1):
        info = train_tiny_lm(text, tmp_path / "lm", TinyLMConfig(layers=4, width=64, seq_len=64, steps=150),
                             quiet=True)
    assert info["held_out_loss_after"] < info["held_out_loss_before"] - 1.0  # it learnt the text
    corpus = tmp_path / "held-out.txt"
    corpus.write_text(text[-60_000:])  # the end of the text: the model's held-out sequences
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["layers", str(tmp_path / "lm"), "--text", str(corpus), "--out", str(out), "--seq-len", "64",
                 "--sequences", "96", "--save", "2", "--criterion", "angular"]) == 0
    result = LayerRemoval.load(out / "removal.json")
    assert result.curves["angular"][0] < info["held_out_loss_before"] - 1.0
    pruned = transformers.AutoModelForCausalLM.from_pretrained(out / "pruned-angular-2", local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "pruned-angular-2", local_files_only=True)
    from ckatlas.hf import text_token_ids
    _, held_out = split(text_token_ids(corpus.read_text(), tokenizer, 64, 96), 0.5)
    assert evaluate(pruned, held_out) == pytest.approx(result.curves["angular"][2], rel=1e-5)


def test_the_perplexity_axis_reads_as_plain_numbers_over_a_narrow_range() -> None:
    from ckatlas.report.removal_figures import removal_figure

    cka = np.eye(4)
    result = LayerRemoval(["l0", "l1", "l2"], cka, np.zeros((4, 4)), np.array([0.5, 0.1, 0.2]), [],
                          {"cka": [[1]]}, curves={"cka": [math.log(512.0), math.log(518.0)]}, metric="loss")
    fig = removal_figure(result)
    fig.canvas.draw()
    curve = next(ax for ax in fig.axes if ax.get_ylabel() == "held-out perplexity")
    labels = [t.get_text() for t in curve.get_yticklabels(minor=False) + curve.get_yticklabels(minor=True)]
    shown = [text for text in labels if text]
    assert shown and all("10^" not in text and "\\times" not in text and "$" not in text for text in shown), shown
    assert all(float(text) > 0 for text in shown)


def test_two_criteria_with_the_same_curve_both_show_and_the_legend_says_so() -> None:
    from ckatlas.report.removal_figures import removal_figure

    curve = [math.log(500.0), math.log(520.0), math.log(600.0)]
    result = LayerRemoval(["l0", "l1", "l2"], np.eye(4), np.zeros((4, 4)), np.array([0.5, 0.1, 0.2]), [],
                          {"cka": [[1], [1, 2]], "angular": [[1], [1, 2]]},
                          curves={"cka": curve, "angular": list(curve), "block_influence": [curve[0], 5.0, 6.0]},
                          metric="loss")
    ax = next(a for a in removal_figure(result).axes if a.get_ylabel() == "held-out perplexity")
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    twin = next(label for label in lines if label.startswith("angular distance"))
    assert "(= CKA (blocks))" in twin  # the legend says the two curves coincide
    first, second = lines["CKA (blocks)"], lines[twin]
    assert (first.get_marker(), first.get_linestyle()) != (second.get_marker(), second.get_linestyle())


def test_progress_bars_on_a_terminal_only(tmp_path) -> None:
    from terminal import ckatlas_stderr

    folder, corpus = _model_folder(tmp_path)
    argv = ["layers", str(folder), "--text", str(corpus), "--seq-len", "16", "--sequences", "32", "--batch-size", "8"]
    code, err = ckatlas_stderr([*argv, "--out", str(tmp_path / "a")], terminal=True)
    assert code == 0 and "calibration:" in err and "held-out models:" in err
    code, err = ckatlas_stderr([*argv, "--quiet", "--out", str(tmp_path / "b")], terminal=True)
    assert code == 0 and "calibration" not in err and "held-out models" not in err  # (not a terminal: the test above)


# -- healing ----------------------------------------------------------------------------------------------
def test_healing_lowers_the_loss_it_trains_on_and_refuses_what_it_cannot_heal() -> None:
    from ckatlas.hf.heal import heal

    model = remove_layers(_llama(), [1, 3])
    ids = torch.randint(0, 120, (4, 12), generator=torch.Generator().manual_seed(3)).repeat(4, 1)  # 16 rows, 4 distinct
    before = evaluate(model, ids, batch_size=8)
    losses = heal(model, ids, steps=30, lr=3e-3, batch_size=8)
    assert len(losses) == 30 and losses[-1] < losses[0]
    assert evaluate(model, ids, batch_size=8) < before  # it learnt the sequences it was healed on
    assert not model.training  # left in the mode it was in
    with pytest.raises(UserInputError, match="steps must be a positive number"):
        heal(model, ids, steps=0)
    with pytest.raises(UserInputError, match="these inputs carry labels"):
        heal(model, {"input_ids": ids, "labels": torch.zeros(16, dtype=torch.long)}, steps=1)


def test_the_cli_heals_the_pruned_model_and_records_it(tmp_path, capsys) -> None:
    from ckatlas.hf import text_token_ids

    folder, corpus = _model_folder(tmp_path)
    out = tmp_path / "out"
    argv = ["layers", str(folder), "--text", str(corpus), "--out", str(out), "--seq-len", "16", "--sequences", "32",
            "--batch-size", "8", "--save", "1", "--heal", "4", "--heal-lr", "1e-3", "--quiet"]
    assert main(argv) == 0
    result = LayerRemoval.load(out / "removal.json")
    healing = result.healing
    assert (healing["criterion"], healing["n"], healing["steps"], healing["lr"]) == ("cka", 1, 4, 1e-3)
    assert healing["loss_before"] == pytest.approx(result.curves["cka"][1])
    healed = transformers.AutoModelForCausalLM.from_pretrained(out / "pruned-cka-1-healed", local_files_only=True)
    unhealed = transformers.AutoModelForCausalLM.from_pretrained(out / "pruned-cka-1", local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    _, held_out = split(text_token_ids(corpus.read_text(), tokenizer, 16, 32), 0.5)
    assert evaluate(healed.eval(), held_out, batch_size=8) == pytest.approx(healing["loss_after"], rel=1e-5)
    assert evaluate(unhealed.eval(), held_out, batch_size=8) == pytest.approx(healing["loss_before"], rel=1e-5)
    assert json.loads((out / "pruned-cka-1-healed" / REMOVAL_FILE).read_text())["removed"] == result.removed("cka", 1)
    assert "healed (4 steps)" in capsys.readouterr().err
    for extra, message in ((["--heal", "2"], "give --save N too"),):
        capsys.readouterr()
        bad = ["layers", str(folder), "--text", str(corpus), "--out", str(tmp_path / "o2"), *extra]
        assert main(bad) == 2 and message in capsys.readouterr().err


def _hub_cache(tmp_path, repo: str = "tiny-org/tiny-lm"):
    """A Hugging Face hub cache folder, as huggingface_hub lays it out, holding `repo` at one commit."""
    folder, corpus = _model_folder(tmp_path)
    cache = tmp_path / "hub-cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    snapshot.parent.mkdir(parents=True)
    folder.rename(snapshot)  # the model and tokenizer files, as a snapshot holds them
    (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text(commit)
    return cache, snapshot, corpus


def test_a_hub_name_loads_from_the_cache_offline(tmp_path, capsys, monkeypatch) -> None:
    from ckatlas.hf.loading import load_model, resolve_model

    cache, snapshot, corpus = _hub_cache(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the test never reaches for the network
    assert resolve_model("tiny-org/tiny-lm") == snapshot
    model, tokenizer = load_model("tiny-org/tiny-lm")
    assert model.config.num_hidden_layers == 4 and tokenizer is not None
    out = tmp_path / "out"
    assert main(["layers", "tiny-org/tiny-lm", "--text", str(corpus), "--out", str(out), "--seq-len", "16",
                 "--sequences", "32", "--batch-size", "8"]) == 0
    assert LayerRemoval.load(out / "removal.json").layers
    capsys.readouterr()
    assert main(["layers", "tiny-org/not-there", "--text", str(corpus), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'tiny-org/not-there' is no folder here and no model in the Hugging Face cache" in err[0]
    assert "HF_HUB_OFFLINE is set" in err[0]
    assert resolve_model(str(tmp_path / "missing-folder")) == tmp_path / "missing-folder"  # a path stays a path
