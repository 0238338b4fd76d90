"""heatmap / population_heatmaps against a plain loop of the textbook minibatch estimator."""

from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from transformers import BertConfig, BertModel, ViTConfig, ViTModel

from ckatlas import CKAResult, heatmap, population_heatmaps
from ckatlas.capture import capture_activations
from ckatlas.errors import UserInputError
from ckatlas.heatmap import PopulationResult
from ckatlas.models import create_model
from ckatlas.report import plot_heatmap, plot_heatmap_grid
from ckatlas.runtime.seeding import make_generator


def _resnet(depth: int = 8, width: float = 0.25, **kw) -> nn.Module:
    return create_model(f"resnet{depth}", width=width, **kw)


def _images(n: int = 40, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, dtype=dtype)


def _hsic1(k: torch.Tensor, l: torch.Tensor) -> float:
    """Song et al. (2012), written out as in DESIGN.md."""
    n = k.shape[0]
    k, l = k.clone(), l.clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    one = torch.ones(n, dtype=torch.float64)
    value = torch.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (one @ k @ l @ one)
    return float(value / (n * (n - 3)))


def _loop_cka(model_a, batches, layers_a, model_b=None, layers_b=None) -> np.ndarray:
    """Minibatch CKA from activations captured batch by batch, one layer pair at a time."""
    model_b, layers_b = model_b or model_a, layers_b or layers_a
    la, lb = len(layers_a), len(layers_b)
    ab, aa, bb = np.zeros((la, lb)), np.zeros(la), np.zeros(lb)
    for x in batches:
        acts_a = capture_activations(model_a, layers_a, x)
        acts_b = capture_activations(model_b, layers_b, x)
        ka = [a.double().flatten(1) @ a.double().flatten(1).T for a in acts_a.values()]
        kb = [b.double().flatten(1) @ b.double().flatten(1).T for b in acts_b.values()]
        for i in range(la):
            aa[i] += _hsic1(ka[i], ka[i])
            for j in range(lb):
                ab[i, j] += _hsic1(ka[i], kb[j])
        for j in range(lb):
            bb[j] += _hsic1(kb[j], kb[j])
    return ab / np.sqrt(aa[:, None] * bb[None, :])


def _slices(x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive batches of near-equal size: the nearest whole number of batches of `batch_size`."""
    return list(x.tensor_split(max(1, math.floor(len(x) / batch_size + 0.5))))


# -- against the loop --------------------------------------------------------------------------
def test_within_model_equals_textbook_loop_float64() -> None:
    model, x = _resnet(dtype=torch.float64), _images(dtype=torch.float64)
    layers = model.layer_names("all")
    res = heatmap(model, x, layers="all", batch_size=16, shuffle=False)
    ref = _loop_cka(model, _slices(x, 16), layers)
    np.testing.assert_allclose(res.matrix, ref, rtol=0, atol=1e-10)
    assert res.layers_a == res.layers_b == layers and res.is_square
    np.testing.assert_allclose(res.matrix, res.matrix.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(res.matrix), 1.0, atol=1e-12)
    assert (res.n, res.num_batches, res.passes) == (40, 3, 1)


def test_float32_model_agrees_with_float64_reference() -> None:
    model, x = _resnet(), _images(64)
    layers = model.layer_names("all")
    res = heatmap(model, x, layers="all", batch_size=32, shuffle=False)
    ref = _loop_cka(model, _slices(x, 32), layers)  # float64 Grams of the same activations
    np.testing.assert_allclose(res.matrix, ref, rtol=0, atol=1e-5)


def test_shuffled_batches_come_from_a_seeded_permutation() -> None:
    model, x = _resnet(dtype=torch.float64), _images(36, torch.float64)
    res = heatmap(model, x, layers="blocks", batch_size=16, seed=3)
    order = torch.randperm(36, generator=make_generator(3))
    ref = _loop_cka(model, [x[order[s : s + 18]] for s in (0, 18)], model.layer_names("blocks"))
    np.testing.assert_allclose(res.matrix, ref, atol=1e-10)
    assert (res.n, res.num_batches) == (36, 2)  # 36 / 16 rounds to two batches of 18, not 16 + 16 + 4
    assert res.metadata["batches_per_pass"] == 2 and res.metadata["batch_sizes"] == [18, 18]


def test_cross_model_shapes_names_and_values() -> None:
    a, b = _resnet(8, 0.25, dtype=torch.float64), _resnet(14, 0.5, dtype=torch.float64)
    x = _images(32, torch.float64)
    res = heatmap(a, x, model_b=b, layers="blocks", layers_b="all", batch_size=16, shuffle=False)
    assert res.shape == (len(a.layer_names("blocks")), len(b.layer_names("all")))
    assert res.layers_a == a.layer_names("blocks") and res.layers_b == b.layer_names("all")
    assert not res.is_square and res.model_a == res.model_b == "CifarResNet"
    ref = _loop_cka(a, _slices(x, 16), a.layer_names("blocks"), b, b.layer_names("all"))
    np.testing.assert_allclose(res.matrix, ref, atol=1e-10)
    flipped = heatmap(b, x, model_b=a, layers="all", layers_b="blocks", batch_size=16, shuffle=False)
    np.testing.assert_allclose(flipped.matrix, res.matrix.T, atol=1e-12)


# -- modes, autograd, passes, batching ---------------------------------------------------------
def test_modes_restored_and_no_autograd() -> None:
    model = _resnet()
    model.train()
    seen = []
    model.fc.register_forward_hook(
        lambda m, i, o: seen.append((m.training, torch.is_inference_mode_enabled(), o.requires_grad))
    )
    heatmap(model, _images(16), batch_size=8)
    assert model.training and all(m.training for m in model.modules())
    assert seen and all(s == (False, True, False) for s in seen)
    with pytest.raises(UserInputError, match="cannot take 5-channel inputs"):
        heatmap(model, torch.randn(16, 5, 16, 16), batch_size=8)  # wrong channel count: one clear error
    assert model.training and all(m.training for m in model.modules())
    assert not any(p.grad is not None for p in model.parameters())


def test_inputs_a_model_cannot_take_are_named_before_its_first_forward_pass() -> None:
    model = _resnet()  # built for 3 channels
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape))
    cases = [
        (torch.randn(16, 1, 16, 16), r"CifarResNet' \(built for 3-channel images\) cannot take 1-channel inputs "
                                     r"\(shape \(8, 1, 16, 16\), float32\); build the model with in_channels=1"),
        ((torch.rand(16, 3, 16, 16) * 255).to(torch.uint8), r"takes float images; the inputs hold uint8 .* x.float\(\) / 255"),
        (torch.randn(16, 3 * 16 * 16), r"takes images \(n, 3, H, W\); the inputs have shape \(8, 768\)"),
    ]
    for x, message in cases:
        with pytest.raises(UserInputError, match=message):
            heatmap(model, x, batch_size=8)
    assert calls == []  # checked before any forward pass
    other = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 2))  # no check of its own
    with pytest.raises(UserInputError, match=r"model 'Sequential' cannot take the inputs \(shape \(8, 3, 16, 16\)"):
        heatmap(model, _images(16), model_b=other, batch_size=8)
    with pytest.raises(UserInputError, match=r"model 'CifarResNet' \(built for 1-channel images\) cannot take 3-channel inputs"):
        heatmap(model, _images(16), model_b=_resnet(in_channels=1), batch_size=8)


def test_two_passes_reshuffle() -> None:
    # the torchvision style: its random-weight logits vary less between batches than the paper style's
    model, x = _resnet(style="torchvision"), _images(48)
    one = heatmap(model, x, layers="blocks", batch_size=16, passes=1)
    two = heatmap(model, x, layers="blocks", batch_size=16, passes=2)
    assert (two.n, two.num_batches, two.passes) == (48, 6, 2)
    assert not np.allclose(one.matrix, two.matrix, atol=1e-6)
    np.testing.assert_allclose(one.matrix, two.matrix, atol=0.1)
    assert np.isfinite(two.standard_error).all() and (two.standard_error >= 0).all()


def test_unshuffled_batches_are_consecutive_near_equal_and_use_every_example() -> None:
    model, x = _resnet(), _images(35)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left out, so nothing to warn about
        res = heatmap(model, x, batch_size=16, shuffle=False)
    assert [len(b) for b in seen] == [18, 17]
    torch.testing.assert_close(torch.cat(seen), x)
    assert res.n == 35 and res.num_batches == 2
    assert (res.metadata["examples"], res.metadata["batches_per_pass"], res.metadata["batch_sizes"]) == (35, 2, [17, 18])


def _mlp_on_digits() -> tuple[nn.Module, torch.Tensor]:
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    parts: list[nn.Module] = []
    for _ in range(6):
        parts += [nn.Linear(64, 64), nn.ReLU()]
    model = nn.Sequential(*parts, nn.Linear(64, 10)).eval()
    return model, torch.tensor(load_digits().data[:325], dtype=torch.float32)


@pytest.mark.parametrize("measure", ["cka", "rsa", "knn", "procrustes"])
def test_a_few_extra_examples_move_the_estimate_no_more_than_a_few_moved_inside_full_batches(measure) -> None:
    # 320 examples are five full batches of 64; 5 more used to be a sixth batch of 5 that weighed as much as a
    # full one in the minibatch sums (the CKA heatmap moved by ~0.08 on the digits, and knn failed outright)
    model, x = _mlp_on_digits()
    layers = [str(i) for i in range(len(model))]

    def cells(inputs: torch.Tensor) -> np.ndarray:
        return heatmap(model, inputs, layers=layers, batch_size=64, shuffle=False, measure=measure).matrix

    base = cells(x[:320])
    swapped = x[:320].clone()
    swapped[100:105] = x[320:325]  # the same 5 examples moved inside full batches
    added = np.nanmax(np.abs(cells(x) - base))
    moved = np.nanmax(np.abs(cells(swapped) - base))
    assert added <= max(3 * moved, 0.005), (added, moved)


def test_equal_batches_give_the_minibatch_estimator_of_those_batches_exactly() -> None:
    model, x = _resnet(dtype=torch.float64), _images(48, torch.float64)
    layers = model.layer_names("blocks")
    res = heatmap(model, x, layers="blocks", batch_size=16, shuffle=False)
    np.testing.assert_allclose(res.matrix, _loop_cka(model, list(x.split(16)), layers), atol=1e-10)
    assert res.metadata["batch_sizes"] == [16, 16] and res.num_batches == 3


def test_each_measure_runs_on_any_count_at_its_minimum_and_names_what_to_change_below_it() -> None:
    model, x = _mlp_on_digits()
    layers = ["1", "3", "5"]
    for n in (11, 12, 21, 23, 37):  # knn (k = 10) needs 11 per batch; batch_size 11 makes no batch under it
        res = heatmap(model, x[:n], layers=layers, batch_size=11, shuffle=False, measure="knn")
        assert np.isfinite(res.matrix).all() and res.n == n and min(res.metadata["batch_sizes"]) >= 11
    with pytest.raises(UserInputError, match=r"at least 11 examples .*measure 'knn' needs 11 per minibatch.*give more"):
        heatmap(model, x[:10], layers=layers, batch_size=16, measure="knn")
    with pytest.raises(UserInputError, match=r"batch_size must be at least 11 \(measure 'knn' needs 11"):
        heatmap(model, x[:40], layers=layers, batch_size=8, measure="knn")
    for measure in ("cka", "rsa", "procrustes", "svcca", "cka-rbf"):
        res = heatmap(model, x[:5], layers=layers, batch_size=4, measure=measure)
        assert res.n == 5 and res.num_batches == 1


def test_iterable_of_batches_equals_tensor_input() -> None:
    model, x = _resnet(), _images(32)
    ref = heatmap(model, x, batch_size=16, shuffle=False)
    as_list = heatmap(model, list(x.split(16)), shuffle=True)  # shuffle does not apply to iterables
    labelled = heatmap(model, [(b, torch.zeros(len(b))) for b in x.split(16)], passes=2)
    np.testing.assert_allclose(as_list.matrix, ref.matrix, atol=1e-12)
    # The second pass may take a layer's Gram without the centring pass (GramTaps): float32 rounding apart
    np.testing.assert_allclose(labelled.matrix, ref.matrix, atol=1e-6)
    assert labelled.num_batches == 4 and labelled.metadata["batch_size"] is None
    with pytest.warns(UserWarning, match="a batch of 2 example"):
        with_small = heatmap(model, [*x.split(16), x[:2]])
    np.testing.assert_allclose(with_small.matrix, ref.matrix, atol=1e-12)
    with pytest.raises(UserInputError, match="one-shot iterator"):
        heatmap(model, (b for b in x.split(16)), passes=2)
    with pytest.raises(UserInputError, match="at least 4 examples"):
        heatmap(model, x[:3])
    with pytest.raises(UserInputError, match="batch_size must be a positive integer"):
        heatmap(model, x, batch_size=0)


# -- models we did not write -------------------------------------------------------------------
def test_hugging_face_bert_and_vit() -> None:
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=100)
    bert = BertModel(config)
    ids = torch.randint(0, 100, (24, 10))
    res = heatmap(bert, ids, layers=["embeddings", "encoder.layer.*", "encoder.layer.*.attention"], batch_size=12)
    assert res.layers_a == [
        "embeddings",
        "encoder.layer.0.attention",
        "encoder.layer.0",
        "encoder.layer.1.attention",
        "encoder.layer.1",
    ]
    ref = _loop_cka(bert, [ids[i] for i in torch.randperm(24, generator=make_generator(0)).split(12)], res.layers_a)
    np.testing.assert_allclose(res.matrix, ref, atol=1e-5)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=16, patch_size=4))
    res = heatmap(vit, _images(16), layers=[type(vit.layers[0]), ""], batch_size=8)
    assert res.layers_a == ["layers.0", "layers.1", ""] and np.isfinite(res.matrix).all()
    assert heatmap(vit, _images(16), layers="layers.*", batch_size=8).layers_a == ["layers.0", "layers.1"]


def test_sequential_mlp() -> None:
    mlp = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)).double()
    x = torch.randn(48, 10, dtype=torch.float64)
    res = heatmap(mlp, x, layers="all", batch_size=16, shuffle=False)
    assert res.layers_a == ["0", "1", "2", "3", "4"]
    np.testing.assert_allclose(res.matrix, _loop_cka(mlp, _slices(x, 16), res.layers_a), atol=1e-10)
    assert heatmap(mlp, x, layers=nn.ReLU, batch_size=16).layers_a == ["1", "3"]


def test_dead_layer_is_nan_with_one_warning() -> None:
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
    with torch.no_grad():
        mlp[0].bias.fill_(-100.0)  # the ReLU never fires
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = heatmap(mlp, torch.randn(32, 4), layers="all", batch_size=16)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "['1', '2']" in messages[0]  # '2' is a constant (bias-only) output
    assert np.isnan(res.matrix[1:]).all() and res.matrix[0, 0] == pytest.approx(1.0)


# -- populations -------------------------------------------------------------------------------
def test_population_equals_pairwise_with_one_forward_per_model_per_batch() -> None:
    models = {"r8": _resnet(8, 0.25), "r14": _resnet(14, 0.25), "r8w": _resnet(8, 0.5)}
    calls = {name: 0 for name in models}
    for name, model in models.items():
        model.register_forward_hook(lambda *a, name=name: calls.__setitem__(name, calls[name] + 1))
    x = _images(48)
    pop = population_heatmaps(models, x, layers="blocks", batch_size=16, passes=2)
    assert calls == {name: 6 for name in models}  # 3 batches x 2 passes, not one per pair
    assert set(pop.results) == {(a, b) for i, a in enumerate(models) for b in list(models)[i:]}
    for (a, b), res in pop.results.items():
        single = heatmap(models[a], x, model_b=None if a == b else models[b], batch_size=16, passes=2)
        np.testing.assert_allclose(res.matrix, single.matrix, atol=1e-12)
        assert res.is_square == (a == b) and (res.model_a, res.model_b) == (a, b)
    np.testing.assert_allclose(pop["r14", "r8"].matrix, pop["r8", "r14"].matrix.T)
    assert pop.within("r8w").is_square


def test_population_of_a_list_with_layers_per_model() -> None:
    pop = population_heatmaps([_resnet(), _resnet()], _images(16), layers={"model_0": "blocks", "model_1": "stage1.*.add"}, batch_size=8)
    assert pop["model_0", "model_1"].shape == (len(_resnet().layer_names("blocks")), 1)
    with pytest.raises(UserInputError, match="layers must name every model"):
        population_heatmaps([_resnet()], _images(16), layers={"x": "all"})


# -- results on disk ---------------------------------------------------------------------------
def test_result_save_load_round_trip(tmp_path) -> None:
    model = _resnet()
    res = heatmap(model, _images(32), model_b=_resnet(14), layers="blocks", batch_size=8, model_names=("r8", "r14"))
    path = res.save(tmp_path / "cka.npz")
    with np.load(path, allow_pickle=False) as data:
        assert json.loads(str(data["header"]))["model_b"] == "r14"
    back = CKAResult.load(path)
    np.testing.assert_array_equal(back.matrix, res.matrix)
    np.testing.assert_array_equal(back.standard_error, res.standard_error)
    assert back.to_dict() == json.loads(json.dumps(res.to_dict()))
    assert (back.layers_a, back.layers_b, back.n, back.num_batches) == (res.layers_a, res.layers_b, 32, 4)
    pop = population_heatmaps({"a": model, "b": _resnet(14)}, _images(16), batch_size=8)
    pop_back = PopulationResult.load(pop.save(tmp_path / "pop.npz"))
    assert pop_back.names == ["a", "b"] and set(pop_back.results) == set(pop.results)
    np.testing.assert_array_equal(pop_back["b", "a"].matrix, pop["a", "b"].matrix.T)
    with pytest.raises(UserInputError, match="does not exist"):
        CKAResult.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(UserInputError, match="is not a CKAResult|missing"):
        CKAResult.load(tmp_path / "other.npz")
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "other.npz").read_bytes()[:40])  # a cut-off copy
    with pytest.raises(UserInputError, match=r"truncated\.npz: not a readable \.npz file"):
        CKAResult.load(tmp_path / "truncated.npz")


# -- figures -----------------------------------------------------------------------------------
def test_heatmap_figures() -> None:
    res = heatmap(_resnet(), _images(16), layers="all", batch_size=8)
    ax = plot_heatmap(res, layer_ticks=True)
    image = ax.images[0]
    assert image.origin == "lower" and image.get_clim() == (0.0, 1.0)
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == res.layers_a[:2]
    assert ax.get_title() == "CifarResNet" and len(ax.figure.axes) == 2  # heatmap + colour bar
    fig = Figure()
    ax2 = plot_heatmap(np.eye(3), ax=fig.subplots(), colorbar=False, title="eye")
    assert ax2.figure is fig and ax2.get_title() == "eye"
    grid = plot_heatmap_grid({"a": res, "b": res.matrix, "c": np.eye(4)}, nrows=1)
    panels = [a for a in grid.axes if a.images]
    assert len(panels) == 3 and [a.get_title() for a in panels] == ["a", "b", "c"]
    assert len(plot_heatmap_grid([res] * 5, ncols=2).axes) == 3 * 2 + 1
    with pytest.raises(UserInputError, match="room for 2"):
        plot_heatmap_grid([res] * 3, nrows=1, ncols=2)
    assert math.isfinite(float(res.matrix.mean()))


def test_a_heatmap_on_its_own_range() -> None:
    """value_range="own" spans the off-diagonal values (the diagonal's 1 and NaN cells left out), so that a
    bright heatmap whose values lie in 0.8-0.95 shows its structure; a given pair is used as it is."""
    matrix = np.full((5, 5), 0.8)
    matrix[1:3, 1:3] = 0.95
    matrix[4, :] = matrix[:, 4] = np.nan
    np.fill_diagonal(matrix, 1.0)
    own = plot_heatmap(matrix, colorbar=False, value_range="own").images[0].get_clim()
    assert own == pytest.approx((0.8, 0.95))
    assert plot_heatmap(matrix, colorbar=False, value_range=(0.5, 0.9)).images[0].get_clim() == (0.5, 0.9)
    assert plot_heatmap(np.eye(3), colorbar=False, value_range="own").images[0].get_clim() == (0.0, 1.0)  # flat
    ax = plot_heatmap(matrix, value_range="own")
    assert ax.figure.axes[1].get_ylabel().endswith("(this heatmap's range)")
    for bad in ("mine", (0.9, 0.5), (0.0, float("nan")), (1,)):
        with pytest.raises(UserInputError, match="value_range"):
            plot_heatmap(matrix, value_range=bad)


def _named_result(names: list[str]) -> CKAResult:
    size = len(names)
    matrix = np.random.default_rng(0).uniform(0, 1, (size, size))
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 1.0)
    return CKAResult(matrix, names, names, np.zeros((size, size)), 256, 1, 1, "net", "net", True)


@pytest.mark.parametrize("arch, kind", [("resnet8", "blocks"), ("resnet8", "all"), ("resnet56", "all")])
def test_the_default_figure_is_readable_for_few_and_many_layers(arch: str, kind: str) -> None:
    names = create_model(arch, width=0.25, num_classes=10, in_channels=1, style="torchvision").layer_names(kind)
    assert len(names) in (6, 30, 198)
    res = _named_result(names)
    ax = res.plot()
    fig = ax.figure
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)  # the whole canvas: nothing may stick out of it
    assert png.getvalue().startswith(b"\x89PNG")
    canvas_agg = FigureCanvasAgg(fig)
    canvas_agg.draw()
    renderer = canvas_agg.get_renderer()
    canvas = fig.bbox
    for axis in (ax.xaxis, ax.yaxis):
        labels = [t for t in axis.get_ticklabels() if t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in labels]
        for text, box in zip(labels, boxes):
            assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1, (
                text.get_text())
        for first, second in zip(boxes, boxes[1:]):
            assert not first.overlaps(second), "tick labels overlap"
        if len(names) <= 48:
            assert [t.get_text() for t in labels] == names  # every layer named, none dropped
            assert min(t.get_fontsize() for t in labels) >= 4
        else:  # labelled by stage, the stage boundaries drawn
            assert {t.get_text() for t in labels} == {"stage1", "stage2", "stage3"}
    if kind == "all":
        assert len(ax.lines) >= 2 * 3  # stem | stage1 | stage2 | stage3 | pool, fc on both axes
    assert ax.images[0].origin == "lower"
    colorbar = [a for a in fig.axes if a is not ax]
    assert len(colorbar) == 1 and "CKA" in colorbar[0].get_ylabel()
    assert res._repr_png_().startswith(b"\x89PNG")


def test_the_default_layers_are_a_models_blocks_or_else_every_leaf_module() -> None:
    """`heatmap(model, x)` works on any model: ckatlas's models give their blocks, others every leaf."""
    from torch import nn

    from ckatlas.models import create_model

    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = create_model("resnet8", width=0.25, num_classes=10, in_channels=1)
    assert heatmap(ours, x, batch_size=16).layers_a == ours.layer_names("blocks")
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    res = heatmap(plain, x, batch_size=16)
    assert res.layers_a == ["0", "1", "2", "3"] and res.matrix.shape == (4, 4)
    with pytest.raises(UserInputError, match="layers='blocks' needs a model with a layer_names"):
        heatmap(plain, x, layers="blocks", batch_size=16)


def test_inputs_the_model_cannot_take_are_one_line_before_any_batch_is_counted() -> None:
    from ckatlas.data import load_dataset
    from ckatlas.models import create_model

    model = create_model("resnet20", width=0.25, num_classes=10)  # three input channels by default
    digits = load_dataset("digits").x_test[:64]  # one channel
    with pytest.raises(UserInputError) as info:
        heatmap(model, digits, batch_size=32)
    message = str(info.value)
    assert "\n" not in message and "ResNet" in message
    assert f"shape (32, {', '.join(str(d) for d in digits.shape[1:])})" in message and "float32" in message
    assert "channels" in message


def test_a_list_of_single_examples_says_what_it_was_taken_as_and_what_to_pass() -> None:
    model = _resnet()
    images = [torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    with pytest.raises(UserInputError, match=r"list of 8 tensors \(\(3, 16, 16\)\).*8 batches.*torch\.stack"):
        heatmap(model, images, batch_size=4)
    stacked = heatmap(model, torch.stack(images), batch_size=4, shuffle=False)  # what the message says to do
    assert stacked.n == 8
    batches = heatmap(model, [torch.stack(images[:4]), torch.stack(images[4:])])  # a list of batches is fine
    assert batches.n == 8 and batches.num_batches == 2
