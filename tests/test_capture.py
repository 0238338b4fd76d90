"""Taps on named modules: layer specs, the tensor-picking rule, Grams computed in hooks."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.modeling_outputs import BaseModelOutput

from ckatlas.capture import (
    GramTaps,
    call_model,
    capture_activations,
    inference,
    pick_tensor,
    resolve_layers,
)
from ckatlas.cka.products import double_centred, full_precision, product_nt, self_product
from ckatlas.cka import MinibatchCKA, gram_linear
from ckatlas.errors import UserInputError
from ckatlas.models import create_model


def _resnet(**kw) -> nn.Module:
    return create_model("resnet8", width=0.25, **kw)


def _bert() -> BertModel:
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=100)
    return BertModel(config)


class _Shuffled(nn.Module):
    """Registration order (b, a) differs from forward order (a, b)."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Linear(6, 6)
        self.a = nn.Linear(5, 6)
        self.act_b = nn.ReLU()
        self.act_a = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_b(self.b(self.act_a(self.a(x))))


class _Shared(nn.Module):
    """One ReLU used twice, like torchvision's BasicBlock."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.relu = nn.Linear(4, 8), nn.Linear(8, 8), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.fc2(self.relu(self.fc1(x))))


def _grams(model: nn.Module, layers, x: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    with GramTaps(model, layers) as taps, inference(model):
        taps.expect(len(x))
        call_model(model, x)
        grams = taps.stacked()  # names are in their final order after the first batch
        return taps.names, grams


# -- layer specs ---------------------------------------------------------------------------
def test_resolve_names_globs_classes_and_kinds() -> None:
    model = _resnet()
    assert resolve_layers(model, "blocks") == model.layer_names("blocks")
    assert resolve_layers(model, "all") == model.layer_names("all")
    assert resolve_layers(model, "stage2.0.add") == ["stage2.0.add"]
    # `*` stays inside one dotted part; `**` crosses parts.
    assert resolve_layers(model, "stage*.*.relu") == ["stage1.0.relu", "stage2.0.relu", "stage3.0.relu"]
    assert resolve_layers(model, "**.add") == ["stage1.0.add", "stage2.0.add", "stage3.0.add"]
    assert resolve_layers(model, "stage1.0.branch.bn[12]") == ["stage1.0.branch.bn1", "stage1.0.branch.bn2"]
    relus = resolve_layers(model, nn.ReLU)
    assert relus == [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    assert resolve_layers(model, ["fc", "stage1.*.add", "fc"]) == ["fc", "stage1.0.add"]


def test_unknown_name_lists_close_matches() -> None:
    model = _resnet()
    with pytest.raises(UserInputError, match=r"no module named 'stage1\.0\.relux'.*close matches: stage1\.0\.relu"):
        resolve_layers(model, ["stage1.0.relux"])
    with pytest.raises(UserInputError, match=r"pattern 'stage9\.\*' matches no module"):
        resolve_layers(model, "stage9.*")
    with pytest.raises(UserInputError, match="Linear"):
        resolve_layers(nn.Sequential(nn.Linear(2, 2)), nn.Conv2d)
    with pytest.raises(UserInputError, match="module name, a glob pattern or an nn.Module class"):
        resolve_layers(model, [3])


def test_blocks_on_a_foreign_model_suggests_a_glob() -> None:
    with pytest.raises(UserInputError, match=r"layer_names\(\).*layers='encoder\.layer\.\*'"):
        resolve_layers(_bert(), "blocks")


def test_globs_and_classes_come_in_forward_order() -> None:
    model = _Shuffled()
    assert resolve_layers(model, nn.Linear) == ["b", "a"]  # registration order
    names, grams = _grams(model, nn.Linear, torch.randn(8, 5))
    assert names == ["a", "b"] and grams.shape == (2, 8, 8)
    names, _ = _grams(model, ["act_b", "a"], torch.randn(8, 5))  # plain names keep their order
    assert names == ["act_b", "a"]


# -- which tensor ----------------------------------------------------------------------------
def test_pick_tensor_rule() -> None:
    a, b = torch.ones(2), torch.zeros(2)
    assert pick_tensor(a) is a
    assert pick_tensor((None, a, b)) is a
    assert pick_tensor([[None, b], a]) is b
    assert pick_tensor({"x": None, "y": b, "last_hidden_state": a}) is a
    assert pick_tensor(OrderedDict(logits=b, hidden=a)) is b
    assert pick_tensor(BaseModelOutput(last_hidden_state=a, hidden_states=(b,))) is a
    assert pick_tensor((None, "text")) is None


# -- Grams in hooks ----------------------------------------------------------------------------
def test_hook_grams_equal_engine_on_captured_activations() -> None:
    model, x = _resnet(), torch.randn(24, 3, 16, 16)
    layers = model.layer_names("all")
    calls = {name: 0 for name in layers}
    for name in layers:
        model.get_submodule(name).register_forward_hook(lambda *a, name=name: calls.__setitem__(name, calls[name] + 1))
    names, grams = _grams(model, layers, x)
    assert set(calls.values()) == {1}  # each tapped module ran once in one forward
    acts = capture_activations(model, layers, x)
    assert names == list(acts) == layers
    for gram, act in zip(grams, acts.values()):
        ref = gram_linear(act.double())
        torch.testing.assert_close(gram.double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    # Naive path: MinibatchCKA.update on the activations gives the same CKA.
    naive, fast = MinibatchCKA(len(layers)), MinibatchCKA(len(layers))
    naive.update([a.double() for a in acts.values()])
    fast.update_grams(grams)
    torch.testing.assert_close(fast.compute(), naive.compute(), rtol=0, atol=1e-6)


def test_channels_last_and_half_precision_grams() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU())
    x = torch.randn(12, 3, 8, 8)
    _, ref = _grams(conv, ["0"], x)
    _, cl = _grams(conv.to(memory_format=torch.channels_last), ["0"], x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, ref, rtol=1e-5, atol=1e-4)
    half = nn.Sequential(nn.Identity())
    h = torch.randn(10, 7).half()
    _, g = _grams(half, ["0"], h)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g[0].double(), gram_linear(h.double()), rtol=1e-5, atol=1e-5)


def test_constant_layer_gives_zero_gram_and_nan_is_an_error() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([0.1, 0.3, 1.7]))
    _, grams = _grams(model, ["0", "1"], torch.randn(9, 4))
    assert bool((grams == 0).all())
    x = torch.randn(9, 4)
    x[3, 1] = float("nan")
    with pytest.raises(UserInputError, match=r"layer '0' of model produced NaN or Inf"):
        _grams(nn.Sequential(nn.Linear(4, 3)), ["0"], x)


def test_module_called_twice_is_an_error_or_left_out_of_all() -> None:
    model, x = _Shared(), torch.randn(8, 4)
    with pytest.raises(UserInputError, match=r"layer 'relu' of model is called more than once"):
        _grams(model, ["fc1", "relu"], x)
    with pytest.warns(UserWarning, match="more than once"):
        names, grams = _grams(model, "all", x)
    assert names == ["fc1", "fc2"] and grams.shape == (2, 8, 8)


def test_uncalled_layer_is_an_error() -> None:
    model = _Shared()
    model.unused = nn.ReLU()
    with pytest.raises(UserInputError, match=r"\['unused'\].*not called"):
        _grams(model, ["fc1", "unused"], torch.randn(6, 4))


def test_foreign_all_keeps_leaf_modules_with_a_batch_dimension() -> None:
    model = _bert()
    ids = torch.randint(0, 100, (6, 9))
    names, grams = _grams(model, "all", ids)
    assert "embeddings.position_embeddings" not in names  # output (1, seq, hidden): not per example
    assert names[0] == "embeddings.word_embeddings" and names[-1] == "pooler.activation"
    assert grams.shape == (len(names), 6, 6)


def test_hugging_face_tuple_and_model_outputs() -> None:
    model = _bert()
    ids = torch.randint(0, 100, (6, 9))
    names, grams = _grams(model, ["encoder.layer.*.attention", "encoder", ""], ids)
    assert names == ["encoder.layer.0.attention", "encoder.layer.1.attention", "encoder", ""]
    acts = capture_activations(model, ["encoder.layer.1.attention", "encoder", ""], {"input_ids": ids})
    with torch.no_grad():
        out = model.eval()(ids)
    torch.testing.assert_close(acts[""], out.last_hidden_state)
    torch.testing.assert_close(acts["encoder"], out.last_hidden_state)  # ModelOutput -> last_hidden_state
    torch.testing.assert_close(grams[3].double(), gram_linear(out.last_hidden_state.double()), rtol=1e-5, atol=1e-5)


# -- capture_activations ---------------------------------------------------------------------
def test_capture_activations_copies_and_batches() -> None:
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(inplace=True), nn.Linear(6, 2))
    model.train()
    x = torch.randn(20, 5)
    acts = capture_activations(model, ["1", "2", "3"], x)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    with torch.no_grad():
        bn = model[1](model[0](x))
    torch.testing.assert_close(acts["1"], bn)  # not overwritten by the in-place ReLU
    torch.testing.assert_close(acts["2"], bn.relu())
    sliced = capture_activations(model, ["1", "2", "3"], x, batch_size=7)
    for name in acts:
        torch.testing.assert_close(sliced[name], acts[name])
    labelled = capture_activations(model, "3", (x, torch.zeros(20)))
    torch.testing.assert_close(labelled["3"], acts["3"])


def test_inference_restores_each_flag_even_on_error() -> None:
    model = _resnet()
    model.train()
    model.stem.bn.eval()
    with pytest.raises(RuntimeError):
        with inference(model):
            assert not model.training and torch.is_inference_mode_enabled()
            model(torch.randn(2, 5, 16, 16))  # wrong channel count
    assert model.training and not model.stem.bn.training and model.stem.conv.training


@pytest.mark.parametrize("n,p", [(5, 300), (128, 300), (256, 1024), (300, 2048), (512, 1100)])
def test_blocked_self_product_equals_plain_product(n: int, p: int) -> None:
    x = torch.randn(n, p)
    gram, ref = self_product(x), x.double() @ x.double().T
    torch.testing.assert_close(gram.double(), ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    if n >= 256 and p >= 1024:  # the blocked path (a plain product need not be exactly symmetric)
        assert torch.equal(gram, gram.T)


@pytest.mark.parametrize("shape", [(7, 50), (256, 4096)])
def test_cpu_product_is_float32_accurate(shape: tuple[int, int]) -> None:
    a, b = torch.randn(*shape), torch.randn(shape[0] // 2 + 1, shape[1])
    ref = a.double() @ b.double().T
    got = product_nt(a, b)
    assert got.dtype == torch.float32
    # float32 accumulation: error well inside 1e-5 of the largest entry (bf16 would be ~1e-2)
    assert float((got.double() - ref).abs().max()) < 1e-5 * float(ref.abs().max())


def test_grams_stay_float32_under_reduced_matmul_precision() -> None:
    """`set_float32_matmul_precision("medium")` may mean bf16 products; Grams ignore it and restore it."""
    model, x = _resnet(), torch.randn(130, 3, 16, 16)
    ref_names, ref = _grams(model, "blocks", x)
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        before = torch.backends.mkldnn.matmul.fp32_precision
        with full_precision(torch.device("cpu")):
            assert torch.backends.mkldnn.matmul.fp32_precision == "ieee"
        names, grams = _grams(model, "blocks", x)
        assert torch.backends.mkldnn.matmul.fp32_precision == before
    finally:
        torch.set_float32_matmul_precision(old)
    assert names == ref_names
    for got, want in zip(grams, ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_large_batch_grams_through_the_hooks() -> None:
    model, x = _resnet(), torch.randn(260, 3, 16, 16)  # n >= 256, 1,024 features: the blocked product
    names, grams = _grams(model, "blocks", x)
    for gram, act in zip(grams, capture_activations(model, names, x).values()):
        ref = gram_linear(act.double())
        torch.testing.assert_close(gram.double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


class _ConvReluBN(nn.Module):
    """conv -> (optionally) an in-place ReLU no hook sees -> BatchNorm."""

    def __init__(self, inplace_between: bool) -> None:
        super().__init__()
        self.conv, self.bn, self.inplace_between = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), inplace_between

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.inplace_between:
            torch.relu_(y)
        return self.bn(y)


def _odd_batchnorm_stats(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.empty_like(m.running_mean).uniform_(-1, 1, generator=g))
            m.running_var.copy_(torch.empty_like(m.running_var).uniform_(0.2, 3, generator=g))
            m.weight.data.copy_(torch.empty_like(m.weight).uniform_(-2, 2, generator=g))


def _hook_grams_per_batch(
    model: nn.Module, layers, batches: list[torch.Tensor], paired: bool = True
) -> list[torch.Tensor]:
    """The Grams of each batch; checks whether the last batch took the paired conv -> BN route."""
    out, routes = [], []
    with GramTaps(model, layers) as taps, inference(model):
        for x in batches:
            taps.expect(len(x))
            model(x)
            out.append(taps.stacked())
            routes.append(taps.routes)
    assert ("paired" in routes[-1].values()) == paired, routes[-1]
    return out


@pytest.mark.parametrize("n", [40, 160])
def test_batchnorm_gram_from_the_conv_channel_grams(n: int) -> None:
    # From the second batch on, an eval BN fed by the tapped conv before it gets its Gram from
    # the conv's per-channel Grams: it must equal the Gram of the BN's own output.
    model = create_model("resnet8", width=0.5)
    _odd_batchnorm_stats(model)
    layers = model.layer_names("all")
    batches = [torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    for x, grams in zip(batches, _hook_grams_per_batch(model, layers, batches)):
        acts = capture_activations(model, layers, x)
        for name, gram in zip(layers, grams):
            ref = gram_linear(acts[name].double())
            torch.testing.assert_close(gram.double(), ref, rtol=1e-5, atol=2e-6 * float(ref.abs().max()), msg=name)


@pytest.mark.parametrize("inplace_between", [False, True])
def test_batchnorm_pairing_sees_an_inplace_change_between_the_hooks(inplace_between: bool) -> None:
    model = _ConvReluBN(inplace_between)
    _odd_batchnorm_stats(model)
    batches = [torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    # an in-place change of the conv's output before the BN is seen: the BN's Gram is its own
    for x, grams in zip(batches, _hook_grams_per_batch(model, ["conv", "bn"], batches, paired=not inplace_between)):
        with inference(model):
            pre = model.conv(x)
            if inplace_between:
                torch.relu_(pre)
            out = model.bn(pre)
        ref = gram_linear(out.double())
        torch.testing.assert_close(grams[1].double(), ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


def _calibrated(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """BatchNorm running statistics from `x`, as training leaves them (layers' means then small)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def test_double_centring_equals_centring_matrix_products() -> None:
    x = torch.randn(9, 30, dtype=torch.float64) + 5.0
    g = x @ x.T
    h = torch.eye(9, dtype=torch.float64) - 1.0 / 9
    torch.testing.assert_close(double_centred(g.clone()), h @ g @ h)


def test_uncentred_grams_are_used_while_accurate_and_dropped_when_a_mean_jumps() -> None:
    gen = torch.Generator().manual_seed(0)
    model = _calibrated(create_model("resnet8", width=0.5), torch.randn(256, 3, 16, 16, generator=gen))
    layers = model.layer_names("all")
    batches = [torch.randn(40, 3, 16, 16, generator=gen) for _ in range(3)]
    batches.append(batches[0] + 30.0)  # a large common offset: the early layers' means jump
    used = []
    with GramTaps(model, layers) as taps, inference(model):
        for x in batches:
            taps.expect(len(x))
            model(x)
            grams = taps.stacked()
            used.append({name for name, route in taps.routes.items() if route == "uncentred"})
            acts = capture_activations(model, layers, x)
            for name, gram in zip(layers, grams):
                ref = gram_linear(acts[name].double())
                torch.testing.assert_close(gram.double(), ref, rtol=1e-5, atol=2e-6 * float(ref.abs().max()), msg=name)
    # exact on every batch (above), whichever route each layer took; the test is only meaningful
    # if the uncentred route was taken at all
    assert any(used[1:]), "no layer took the uncentred route: this test would check nothing"


def test_importing_ckatlas_leaves_the_global_random_state_alone() -> None:
    code = (
        "import sys, torch\n"
        "torch.manual_seed(0)\n"
        "if sys.argv[1] == 'import':\n"
        "    import ckatlas, ckatlas.capture, ckatlas.heatmap, ckatlas.cli\n"
        "print(torch.rand(1).item())\n"
    )
    draws = [
        subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True).stdout
        for mode in ("import", "plain")
    ]
    assert draws[0] == draws[1]
