"""Model families: the paper's CIFAR ResNet (depth x width), its plain-CNN twin, and
ImageNet-style bottleneck ResNets, behind a registry.

    model = create_model("resnet20", width=1, num_classes=10, in_channels=3)
    model.layer_names("blocks")   # stem, each block's output, pool, fc
    list_models("resnet*")
"""

from ckatlas.models.base import LAYER_KINDS, BlockRef, LayeredModel, init_weights
from ckatlas.models.bottleneck_resnet import BottleneckResNet, BottleneckResNetConfig
from ckatlas.models.cifar_resnet import STANDARD_DEPTHS, CifarResNet, ResNetConfig
from ckatlas.models.modules import Add, GlobalAvgPool, ResidualBlock
from ckatlas.models.registry import ModelBuilder, create_model, list_models, register_model

__all__ = [
    "Add",
    "BlockRef",
    "BottleneckResNet",
    "BottleneckResNetConfig",
    "CifarResNet",
    "GlobalAvgPool",
    "LAYER_KINDS",
    "LayeredModel",
    "ModelBuilder",
    "ResNetConfig",
    "ResidualBlock",
    "STANDARD_DEPTHS",
    "create_model",
    "init_weights",
    "list_models",
    "register_model",
]
