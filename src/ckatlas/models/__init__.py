"""Model families: the paper's CIFAR ResNet (depth x width), its plain-CNN twin, and
ImageNet-style bottleneck ResNets, behind a registry.

    model = create_model("resnet20", width=1, num_classes=10, in_channels=3)
    model.layer_names("blocks")   # stem, each block's output, pool, fc
    list_models("resnet*")
    create_model("resnet20", style="torchvision")   # default style="paper" (MODEL_STYLES)
"""

from ckatlas.models.base import INIT_SCHEMES, LAYER_KINDS, BlockRef, LayeredModel, init_weights
from ckatlas.models.bottleneck_resnet import BottleneckResNet, BottleneckResNetConfig
from ckatlas.models.cifar_resnet import (
    CHANNEL_ROUNDINGS,
    MODEL_STYLES,
    STANDARD_DEPTHS,
    CifarResNet,
    ResNetConfig,
)
from ckatlas.models.modules import Add, GlobalAvgPool, ResidualBlock
from ckatlas.models.registry import (
    ModelBuilder,
    create_model,
    is_cifar_family,
    list_models,
    register_model,
    unregister_model,
)

__all__ = [
    "Add",
    "BlockRef",
    "BottleneckResNet",
    "BottleneckResNetConfig",
    "CHANNEL_ROUNDINGS",
    "CifarResNet",
    "GlobalAvgPool",
    "INIT_SCHEMES",
    "LAYER_KINDS",
    "LayeredModel",
    "MODEL_STYLES",
    "ModelBuilder",
    "ResNetConfig",
    "ResidualBlock",
    "STANDARD_DEPTHS",
    "create_model",
    "init_weights",
    "is_cifar_family",
    "list_models",
    "register_model",
    "unregister_model",
]
