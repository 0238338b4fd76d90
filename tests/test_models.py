"""Model families: shapes, parameter counts, registry, layer names against the forward pass."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ckatlas.errors import UserInputError
from ckatlas.models import (
    MODEL_STYLES,
    Add,
    BottleneckResNet,
    BottleneckResNetConfig,
    CifarResNet,
    ResidualBlock,
    ResNetConfig,
    create_model,
    list_models,
    register_model,
    unregister_model,
)
from ckatlas.runtime.seeding import make_generator


def _capture(
    model: nn.Module, x: torch.Tensor
) -> tuple[list[str], dict[str, torch.Tensor], torch.Tensor]:
    """Run one forward with a hook on every "all" module: call order, outputs, logits."""
    calls: list[str] = []
    outputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            calls.append(name)
            outputs[name] = out.detach().clone()
        return record

    handles = [
        model.get_submodule(n).register_forward_hook(hook(n)) for n in model.layer_names("all")
    ]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return calls, outputs, logits.detach()


# --- the CIFAR ResNet ---------------------------------------------------------------

@pytest.mark.parametrize(
    "name, expected_millions",
    # He et al. (2016), Table 6: 0.27M, 0.85M, 1.7M (theirs with option-A shortcuts;
    # our 1x1 projections add 0.003M).
    [("resnet20", 0.27), ("resnet56", 0.85), ("resnet110", 1.7)],
)
def test_cifar_parameter_counts_match_he_et_al(name: str, expected_millions: float) -> None:
    model = create_model(name, width=1, num_classes=10, device="meta", style="torchvision")
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(expected_millions, rel=0.03)


def test_parameters_grow_with_width_squared() -> None:
    def count(width: float) -> int:
        model = create_model("resnet20", width=width, device="meta")
        return sum(p.numel() for p in model.parameters())

    # Conv weights dominate and scale as width^2.
    assert count(4) / count(2) == pytest.approx(4, rel=0.02)


@pytest.mark.parametrize("name", ["resnet8", "cnn8"])
@pytest.mark.parametrize("in_channels, num_classes", [(1, 10), (3, 10), (3, 100), (5, 2)])
def test_output_shapes(name: str, in_channels: int, num_classes: int) -> None:
    model = create_model(name, width=0.25, num_classes=num_classes, in_channels=in_channels)
    out = model(torch.randn(3, in_channels, 16, 16))
    assert out.shape == (3, num_classes)
    assert model.num_features == 16


@pytest.mark.parametrize(
    "width, channels",
    [
        (0.25, (4, 8, 16)),
        (1, (16, 32, 64)),
        (10, (160, 320, 640)),
        (0.01, (1, 1, 1)),
        (2.8, (45, 90, 179)),
    ],
)
def test_per_stage_channels_are_rounded_half_up(
    width: float, channels: tuple[int, int, int]
) -> None:
    config = ResNetConfig(depth=8, width=width, channel_rounding="per-stage")
    assert config.channels == channels
    model = CifarResNet(config, device="meta")
    assert model.stem.conv.out_channels == channels[0]
    assert model.stage3[0].branch.conv2.out_channels == channels[2]
    assert create_model("resnet8", width=width, style="torchvision").config.channels == channels


@pytest.mark.parametrize(
    "width, channels",
    # The paper's code: base = round(16 * width) (Python's round), stages base, 2 base, 4 base.
    [
        (0.25, (4, 8, 16)),
        (0.5, (8, 16, 32)),
        (1, (16, 32, 64)),
        (2.8, (45, 90, 180)),  # per-stage rounding gives 179 for stage 3
        (0.15625, (2, 4, 8)),  # 16 x 0.15625 = 2.5 rounds to even (per-stage: 3, 5, 10)
        (0.01, (1, 2, 4)),  # at least one channel
    ],
)
def test_paper_channels_double_a_rounded_base(
    width: float, channels: tuple[int, int, int]
) -> None:
    assert ResNetConfig(depth=8, width=width).channels == channels
    model = create_model("resnet8", width=width, device="meta")
    assert model.stem.conv.out_channels == channels[0]
    assert model.stage2[0].branch.conv1.out_channels == channels[1]
    assert model.stage3[0].branch.conv2.out_channels == channels[2]
    assert model.num_features == channels[2]


@pytest.mark.parametrize("depth", [8, 14, 20, 56, 164, 200])
def test_any_depth_6n_plus_2_builds(depth: int) -> None:
    for family, residual in [("resnet", True), ("cnn", False)]:
        model = create_model(f"{family}{depth}", width=0.25, device="meta")
        assert model.config.depth == depth and model.config.residual is residual
        assert len(model.residual_blocks()) == 3 * (depth - 2) // 6
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(convs) + 1 == depth  # 3x3 convs + the linear head


@pytest.mark.parametrize("depth", [0, 2, 7, 9, 21, 50.0, True, "20"])
def test_bad_depth_is_a_user_error(depth: object) -> None:
    with pytest.raises(UserInputError, match=r"6n\+2.*20"):
        ResNetConfig(depth=depth)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 0}, "width"),
        ({"width": -1.0}, "width"),
        ({"width": float("nan")}, "width"),
        ({"num_classes": 0}, "num_classes"),
        ({"in_channels": 2.0}, "in_channels"),
    ],
)
def test_bad_config_is_a_user_error(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        create_model("resnet8", **kwargs)


def test_cnn_has_no_residual_connections() -> None:
    model = create_model("cnn8", width=0.25)
    assert not any(isinstance(m, Add) for m in model.modules())
    for ref in model.residual_blocks():
        assert ref.block.shortcut is None and not ref.block.deletable
    assert model.layer_names("blocks") == create_model("resnet8", width=0.25).layer_names("blocks")


def test_relus_are_not_shared() -> None:
    model = create_model("resnet14", width=0.25)
    names = model.layer_names("all")
    assert len(names) == len(set(names))
    assert len({id(model.get_submodule(n)) for n in names}) == len(names)


# --- initialisation, device, dtype, memory format ------------------------------------

def test_torchvision_initialisation() -> None:
    model = create_model("resnet20", width=2, style="torchvision")
    conv = model.stage2[1].branch.conv1
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    bound = 1 / math.sqrt(model.fc.in_features)
    assert model.fc.weight.abs().max() <= bound and model.fc.weight.abs().max() > 0.9 * bound


def test_zero_init_residual_makes_blocks_identities() -> None:
    model = create_model("resnet8", width=0.25, zero_init_residual=True)
    for ref in model.residual_blocks():
        assert torch.all(ref.block.branch.bn2.weight == 0)
    assert torch.all(create_model("resnet8", width=0.25).stage1[0].branch.bn2.weight == 1)
    # A zeroed branch leaves an identity block equal to its (non-negative) input.
    model.eval()
    x = torch.relu(torch.randn(2, 4, 8, 8))
    assert torch.equal(model.stage1[0](x), x)


@pytest.mark.parametrize("style", ["paper", "torchvision"])
def test_generator_makes_weights_reproducible(style: str) -> None:
    def weights(seed: int, global_seed: int = 0) -> torch.Tensor:
        torch.manual_seed(global_seed)  # must not matter when a generator is given
        model = create_model("resnet8", width=0.25, generator=make_generator(seed), style=style)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(weights(1), weights(1, global_seed=7))
    assert not torch.equal(weights(1), weights(2))


def test_device_and_dtype_are_honoured() -> None:
    model = create_model("resnet8", width=0.25, dtype=torch.float64, device="cpu")
    assert all(p.dtype == torch.float64 for p in model.parameters())
    same = create_model("resnet8", width=0.25, generator=make_generator(3))
    double = create_model("resnet8", width=0.25, dtype=torch.float64, generator=make_generator(3))
    assert torch.equal(same.fc.weight.double(), double.fc.weight)
    meta = create_model("resnet110", width=4, device="meta")
    assert all(p.is_meta for p in meta.parameters())


def test_channels_last_gives_the_same_output() -> None:
    model = create_model("resnet8", width=0.5).eval()
    x = torch.randn(2, 3, 16, 16)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


# --- styles: the paper's Keras code and torchvision's conventions ------------------------

# resnet8 at width 0.25 as ckatlas built it before the paper style (recorded from that code):
# (module, weight shape) for convs and the head, (module, channels) for BatchNorms.
_TORCHVISION_RESNET8 = [
    ("stem.conv", (4, 3, 3, 3)), ("stem.bn", 4),
    ("stage1.0.branch.conv1", (4, 4, 3, 3)), ("stage1.0.branch.bn1", 4),
    ("stage1.0.branch.conv2", (4, 4, 3, 3)), ("stage1.0.branch.bn2", 4),
    ("stage2.0.branch.conv1", (8, 4, 3, 3)), ("stage2.0.branch.bn1", 8),
    ("stage2.0.branch.conv2", (8, 8, 3, 3)), ("stage2.0.branch.bn2", 8),
    ("stage2.0.shortcut.conv", (8, 4, 1, 1)), ("stage2.0.shortcut.bn", 8),
    ("stage3.0.branch.conv1", (16, 8, 3, 3)), ("stage3.0.branch.bn1", 16),
    ("stage3.0.branch.conv2", (16, 16, 3, 3)), ("stage3.0.branch.bn2", 16),
    ("stage3.0.shortcut.conv", (16, 8, 1, 1)), ("stage3.0.shortcut.bn", 16),
    ("fc", (10, 16)),
]


def _state_dict_shapes(layers: list[tuple[str, object]]) -> list[tuple[str, tuple[int, ...]]]:
    """Expand (module, shape or channels) into the state_dict's (key, shape) in order."""
    keys: list[tuple[str, tuple[int, ...]]] = []
    for name, shape in layers:
        if isinstance(shape, int):  # BatchNorm2d
            stats = ("weight", "bias", "running_mean", "running_var")
            keys += [(f"{name}.{k}", (shape,)) for k in stats]
            keys.append((f"{name}.num_batches_tracked", ()))
        else:
            keys.append((f"{name}.weight", shape))
            if name == "fc":
                keys.append(("fc.bias", (shape[0],)))
    return keys


def _shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_torchvision_style_reproduces_the_previous_model() -> None:
    model = create_model("resnet8", width=0.25, style="torchvision", generator=make_generator(5))
    assert _shapes(model) == _state_dict_shapes(_TORCHVISION_RESNET8)
    # The same seed draws the same weights as before (values recorded from that code).
    expected = {
        "stem.conv": [0.43424132466316223, 0.12230287492275238, -0.4035037159919739],
        "stage3.0.shortcut.conv": [0.009003978222608566, 0.012154466472566128],
        "fc": [-0.14431941509246826, -0.12331897020339966],
    }
    for name, values in expected.items():
        got = model.get_submodule(name).weight.flatten()[: len(values)]
        torch.testing.assert_close(got, torch.tensor(values), rtol=1e-6, atol=0)
    bias = torch.tensor([-0.22558259963989258, 0.18170130252838135])
    torch.testing.assert_close(model.fc.bias[:2], bias, rtol=1e-6, atol=0)


def test_paper_style_keys_differ_by_conv_biases_and_shortcut_bns() -> None:
    paper = create_model("resnet8", width=0.25)
    kept = [(name, shape) for name, shape in _TORCHVISION_RESNET8 if ".shortcut.bn" not in name]
    biases = [(f"{name}.bias", (shape[0],)) for name, shape in kept if ".conv" in name]
    assert sorted(_shapes(paper)) == sorted(_state_dict_shapes(kept) + biases)


@pytest.mark.parametrize("style", ["paper", "torchvision"])
def test_style_layers(style: str) -> None:
    paper = style == "paper"
    model = create_model("resnet8", width=0.25, style=style)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9
    assert all((c.bias is not None) == paper for c in convs)
    assert all(torch.all(c.bias == 0) for c in convs if c.bias is not None)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {(bn.eps, bn.momentum) for bn in bns} == {(1e-3, 0.01) if paper else (1e-5, 0.1)}
    for s in (2, 3):
        projection = model.get_submodule(f"stage{s}.0.shortcut")
        assert list(dict(projection.named_children())) == (["conv"] if paper else ["conv", "bn"])
        assert projection.conv.kernel_size == (1, 1) and projection.conv.stride == (2, 2)
    names = model.layer_names("all")
    assert "stage2.0.shortcut.conv" in names
    assert ("stage2.0.shortcut.bn" in names) is not paper
    fixed = [r.name for r in model.residual_blocks() if not r.block.deletable]
    assert fixed == ["stage2.0", "stage3.0"]
    calls, _, _ = _capture(model.eval(), torch.randn(2, 3, 16, 16))
    assert calls == names


def test_style_options_and_overrides() -> None:
    assert ResNetConfig() == ResNetConfig.from_style("paper")
    torchvision = ResNetConfig(8, **MODEL_STYLES["torchvision"])
    assert ResNetConfig.from_style("torchvision", depth=8) == torchvision
    assert set(MODEL_STYLES["paper"]) == set(MODEL_STYLES["torchvision"])
    model = create_model("resnet8", width=0.25, style="torchvision", conv_bias=True, bn_eps=1e-4)
    assert model.stem.conv.bias is not None and model.stage2[0].shortcut.bn.eps == 1e-4
    assert model.config.init == "kaiming-fan-out" and model.config.bn_momentum == 0.1
    cnn = create_model("cnn8", width=0.25, shortcut_bn=True, conv_bias=False)
    assert cnn.config.init == "he-normal" and cnn.stem.conv.bias is None


def test_truncated_normal_constant_is_the_std_of_a_normal_cut_at_two_sigma() -> None:
    pdf2 = math.exp(-2) / math.sqrt(2 * math.pi)  # standard normal density at 2
    mass = math.erf(2 / math.sqrt(2))  # P(|z| < 2)
    assert math.sqrt(1 - 2 * 2 * pdf2 / mass) == pytest.approx(0.87962566103423978, rel=1e-12)


def test_paper_init_is_keras_he_normal() -> None:
    model = create_model("resnet8", width=4, generator=make_generator(0))  # 64/128/256 channels
    for name in ("stage3.0.branch.conv1", "fc"):  # 295k and 2.6k weights; fan_in != fan_out
        weight = model.get_submodule(name).weight.detach()
        fan_in = weight[0].numel()  # 128 * 3 * 3 and 256
        std = math.sqrt(2 / fan_in)
        # std of a sample std: about std / sqrt(2n): 0.1% for the conv, 1.4% for fc.
        rel = 0.01 if weight.numel() > 1e5 else 0.08
        assert weight.std().item() == pytest.approx(std, rel=rel)
        assert abs(weight.mean().item()) < 5 * std / math.sqrt(weight.numel())
        cut = 2 * std / 0.87962566103423978  # two stds of the untruncated normal
        assert weight.abs().max().item() <= cut * (1 + 1e-6)
        if weight.numel() > 1e5:  # cut at 2 stds, not closer: the largest draw comes near it
            assert weight.abs().max().item() > 0.99 * cut
    assert torch.all(model.fc.bias == 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"style": "keras"}, "style must be one of 'paper', 'torchvision', got 'keras'"),
        ({"init": "he_normal"}, "init must be one of 'he-normal', 'kaiming-fan-out'"),
        ({"channel_rounding": "round"}, "channel_rounding must be one of 'paper', 'per-stage'"),
        ({"bn_eps": 0}, "bn_eps must be a number > 0"),
        ({"bn_eps": "1e-3"}, "bn_eps must be a number > 0"),
        ({"bn_momentum": 0.99 + 1}, r"bn_momentum must be a number in \(0, 1\]"),
        ({"bn_momentum": 0}, "bn_momentum must be"),
        ({"conv_bias": "yes"}, "conv_bias must be True or False"),
        ({"shortcut_bn": 1}, "shortcut_bn must be True or False"),
        ({"use_bias": True}, "unknown ResNet option 'use_bias'; expected one of depth, width"),
        ({"depth": 14}, "depth is set by the model name"),
    ],
)
def test_bad_option_is_one_clear_user_error(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match) as info:
        create_model("resnet8", width=0.25, device="meta", **kwargs)
    assert "\n" not in str(info.value)


def test_bad_config_field_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="init must be one of"):
        ResNetConfig(depth=8, init="glorot")


# --- bottleneck ResNets ------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, expected_millions, depth",
    # torchvision's ResNet-50 / -101 with 1000 classes: 25.557M and 44.549M parameters.
    [("resnet50", 25.557, 50), ("resnet101", 44.549, 101)],
)
def test_bottleneck_parameter_counts(name: str, expected_millions: float, depth: int) -> None:
    model = create_model(name, num_classes=1000, device="meta")
    assert isinstance(model, BottleneckResNet) and model.config.depth == depth
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(expected_millions, abs=0.001)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    projections = 4  # one 1x1 projection shortcut per stage
    assert len(convs) - projections + 1 == depth


def test_resnet83_adds_eleven_blocks_to_stage3() -> None:
    r50 = create_model("resnet50", device="meta")
    r83 = create_model("resnet83", device="meta")
    assert [len(r83.get_submodule(f"stage{s}")) for s in (1, 2, 3, 4)] == [3, 4, 17, 3]
    assert [len(r50.get_submodule(f"stage{s}")) for s in (1, 2, 3, 4)] == [3, 4, 6, 3]
    assert r83.config.depth == 83


def test_stage_widths_scale_one_stage() -> None:
    base = create_model("resnet50", device="meta")
    wide = create_model("resnet50_stage3_w2.8", device="meta")
    assert wide.config.stage_widths == (1, 1, 2.8, 1)
    assert wide.stage3[1].branch.conv2.out_channels == 717  # round(256 * 2.8)
    assert wide.stage3[1].branch.conv3.out_channels == 4 * 717
    for s in (1, 2, 4):
        assert wide.get_submodule(f"stage{s}.1.branch.conv2").out_channels == \
            base.get_submodule(f"stage{s}.1.branch.conv2").out_channels
    assert wide.stage4[0].branch.conv1.in_channels == 4 * 717


@pytest.mark.parametrize("in_channels, num_classes", [(1, 10), (3, 1000)])
def test_bottleneck_output_shapes(in_channels: int, num_classes: int) -> None:
    model = create_model(
        "bottleneck_tiny", width=0.25, num_classes=num_classes, in_channels=in_channels
    )
    assert model(torch.randn(2, in_channels, 32, 32)).shape == (2, num_classes)
    assert model.num_features == 4 * 32  # 512 * 0.25 (tiny's stage width) * 0.25


def test_bottleneck_config_from_lists_and_without_residual() -> None:
    config = BottleneckResNetConfig(
        blocks=[1, 2, 1, 1], stage_widths=[0.125] * 4, width=0.25, num_classes=5, residual=False
    )
    assert config.blocks == (1, 2, 1, 1) and config.depth == 17
    model = BottleneckResNet(config)
    assert not any(isinstance(m, Add) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    calls, _, _ = _capture(model, torch.randn(2, 3, 32, 32))
    assert calls == model.layer_names("all")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"blocks": (3, 4, 6)}, "blocks"),
        ({"blocks": (3, 4, 0, 3)}, "blocks"),
        ({"blocks": (3, 4, 6.0, 3)}, "blocks"),
        ({"stage_widths": (1, 1, 0, 1)}, "stage_widths"),
        ({"stage_widths": (1, 1, 1)}, "stage_widths"),
        ({"width": 0}, "width"),
        ({"num_classes": -1}, "num_classes"),
    ],
)
def test_bad_bottleneck_config_is_a_user_error(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        BottleneckResNetConfig(**kwargs)


def test_bottleneck_residual_blocks() -> None:
    model = create_model("resnet50", width=0.125)
    refs = model.residual_blocks()
    assert [r.stage for r in refs] == [1] * 3 + [2] * 4 + [3] * 6 + [4] * 3
    # Stage 1 also starts with a projection (64 -> 256 channels at width 1).
    assert [r.name for r in refs if not r.block.deletable] == [f"stage{s}.0" for s in (1, 2, 3, 4)]
    assert model.layer_names("blocks")[0] == "stem.pool"


# --- registry -----------------------------------------------------------------------

def test_list_models() -> None:
    names = list_models()
    for expected in ["resnet14", "resnet56", "resnet110", "resnet164", "cnn20", "cnn164"]:
        assert expected in names
    resnets = list_models("resnet*")
    assert resnets and all(n.startswith("resnet") for n in resnets)
    assert "cnn20" not in resnets
    assert list_models("cnn1*") == ["cnn14", "cnn110", "cnn164"]  # natural order
    assert list_models("nothing*") == []
    named = ["resnet50", "resnet101", "resnet83", "resnet50_stage3_w2.8", "bottleneck_tiny"]
    assert set(named) <= set(names)


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UserInputError, match="resnet20"):
        create_model("resnt20")
    with pytest.raises(UserInputError, match="unknown model 'vgg16'"):
        create_model("vgg16")
    with pytest.raises(UserInputError, match=r"6n\+2"):
        create_model("resnet21")


def test_register_model_adds_a_named_entry() -> None:
    @register_model(name="_test_resnet8_plain")
    def _builder(width: float, num_classes: int, in_channels: int, **kwargs) -> nn.Module:
        config = ResNetConfig(8, width, num_classes, in_channels, residual=False)
        return CifarResNet(config, **kwargs)

    try:
        assert "_test_resnet8_plain" in list_models()
        model = create_model("_test_resnet8_plain", width=0.25, num_classes=3)
        assert model.config.residual is False and model.fc.out_features == 3
        with pytest.raises(ValueError, match="already registered"):
            register_model(_builder, name="_test_resnet8_plain")
    finally:
        unregister_model("_test_resnet8_plain")
    assert "_test_resnet8_plain" not in list_models()
    with pytest.raises(ValueError, match="unknown model"):
        create_model("_test_resnet8_plain", width=0.25, num_classes=3)
    with pytest.raises(KeyError, match="no model '_test_resnet8_plain' is registered"):
        unregister_model("_test_resnet8_plain")


def test_is_cifar_family_is_what_takes_a_style() -> None:
    from ckatlas.models import is_cifar_family

    for name in ("resnet20", "cnn8", "cifar_resnet50"):
        assert is_cifar_family(name)
        create_model(name, width=0.25, device="meta", style="torchvision")
    for name in ("resnet50", "bottleneck_tiny", "vgg16", "resnet"):
        assert not is_cifar_family(name)
    assert isinstance(create_model("bottleneck_tiny", device="meta"), BottleneckResNet)


def test_cifar_prefix_reaches_depths_shadowed_by_named_entries() -> None:
    assert isinstance(create_model("resnet50", device="meta"), BottleneckResNet)
    model = create_model("cifar_resnet50", width=0.25, device="meta")
    assert isinstance(model, CifarResNet) and model.config.depth == 50


# --- layer names against the forward pass (every registered family) -------------------

@pytest.mark.parametrize("name", list_models())
def test_every_listed_model_calls_its_layers_once_in_order(name: str) -> None:
    """Each "all" module runs exactly once per forward, in listed order (shapes only, on meta)."""
    model = create_model(name, width=0.125, num_classes=7, device="meta")
    x = torch.empty(2, 3, 32, 32, device="meta")  # ImageNet-style stems downsample by 4
    all_names, block_names = model.layer_names("all"), model.layer_names("blocks")
    calls, outputs, logits = _capture(model, x)
    assert calls == all_names
    assert [n for n in calls if n in block_names] == block_names  # blocks fire in forward order
    assert block_names[-2:] == ["pool", model.head] == all_names[-2:]
    assert block_names[0] == model.stem_output
    ending = ".add2" if name.startswith("vit") else ".relu"  # a transformer block ends in its second sum
    assert all(n.endswith(ending) for n in block_names[1:-2])
    assert outputs["pool"].shape == (2, model.num_features) and logits.shape == (2, 7)


@pytest.mark.parametrize(
    "name, size",
    [("resnet8", 16), ("cnn8", 16), ("resnet20", 16), ("bottleneck_tiny", 32), ("resnet50", 32)],
)
def test_intermediate_outputs_agree_with_forward(name: str, size: int) -> None:
    """Hooked outputs agree with model(x) and with the modules applied to them (one per family)."""
    model = create_model(name, width=0.25 if name != "resnet50" else 0.125, num_classes=7).eval()
    x = torch.randn(2, 3, size, size)
    block_names = model.layer_names("blocks")

    calls, outputs, logits = _capture(model, x)
    assert calls == model.layer_names("all")
    torch.testing.assert_close(logits, model(x), rtol=0, atol=0)
    torch.testing.assert_close(model.get_submodule(model.head)(outputs["pool"]), logits)
    torch.testing.assert_close(outputs["pool"], outputs[block_names[-3]].mean(dim=(-2, -1)))
    for i, ref in enumerate(model.residual_blocks()):
        block_out = outputs[f"{ref.name}.relu"]
        assert block_out.dim() == 4 and block_out.min() >= 0
        if ref.block.add is not None:
            torch.testing.assert_close(block_out, torch.relu(outputs[f"{ref.name}.add"]))
        block_in = outputs[block_names[i]]  # the previous block's (or the stem's) output
        torch.testing.assert_close(ref.block(block_in), block_out)


def test_every_module_with_parameters_is_a_layer() -> None:
    model = create_model("resnet14", width=0.25)
    names = set(model.layer_names("all"))
    for name, module in model.named_modules():
        if list(module.parameters(recurse=False)):
            assert name in names


# --- residual blocks and deleting them ---------------------------------------------------

def test_residual_blocks() -> None:
    model = create_model("resnet20", width=0.25)
    refs = model.residual_blocks()
    assert [r.name for r in refs] == [f"stage{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    assert [r.stage for r in refs] == [1] * 3 + [2] * 3 + [3] * 3
    assert all(isinstance(r.block, ResidualBlock) for r in refs)
    # Projection shortcuts (first block of stages 2 and 3) cannot be deleted.
    assert [r.name for r in refs if not r.block.deletable] == ["stage2.0", "stage3.0"]


def test_deleting_a_block_equals_zeroing_its_branch() -> None:
    model = create_model("resnet20", width=0.25).eval()
    x = torch.randn(2, 3, 16, 16)
    name = "stage2.1"
    bn = model.get_submodule(f"{name}.branch.bn2")
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()
    zeroed = model(x)
    model.set_submodule(name, nn.Identity())
    torch.testing.assert_close(model(x), zeroed)
    assert name not in [r.name for r in model.residual_blocks()]
    assert f"{name}.relu" not in model.layer_names("blocks")
    assert not any(n.startswith(f"{name}.") for n in model.layer_names("all"))
    calls, _, _ = _capture(model, x)
    assert calls == model.layer_names("all")


def test_unknown_layer_kind_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="'all', 'blocks'"):
        create_model("resnet8", width=0.25).layer_names("every")
