"""torchvision architectures adapted to CIFAR-10's 32x32 images, for gating anyone's model from the command line.

``tv_resnet18``: torchvision's ResNet-18 (He et al. 2016) with the usual CIFAR stem: a 3x3 stride-1 first
convolution and no max-pool (the ImageNet stem would shrink a 32x32 image to 8x8 before the first block). Built
with ``weights=None``: nothing is downloaded. Any registered model takes ``convert={...}`` (``create_model``):
``gatedconv.convert``'s keywords, applied after building, so a run of a converted network saves its conversion in
``config.json`` and ``load_model`` rebuilds it.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

from torch import nn

from ._common import ParamCountMixin
from ._registry import register_model

__all__ = ["tv_resnet18"]


@functools.lru_cache(maxsize=None)
def _resnet_class() -> type:
    from torchvision.models.resnet import ResNet  # here: torchvision loads only when such a model is built

    class TorchvisionResNet(ParamCountMixin, ResNet):
        """torchvision's ResNet with ``num_params()``, as every registered model has."""

    TorchvisionResNet.__qualname__ = "TorchvisionResNet"  # found by name (module __getattr__): picklable
    return TorchvisionResNet


def __getattr__(name: str):
    if name == "TorchvisionResNet":  # pickle and torch.save look the class up here by name
        return _resnet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@register_model
def tv_resnet18(num_classes: int = 10, layers: Sequence[int] = (2, 2, 2, 2), **kwargs) -> nn.Module:
    """torchvision's ResNet-18 for 32x32 inputs; ``layers`` blocks per stage (fewer for a quick look)."""
    from torchvision.models.resnet import BasicBlock

    net = _resnet_class()(BasicBlock, list(layers), num_classes=num_classes, **kwargs)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)  # CIFAR stem: keep 32x32
    net.maxpool = nn.Identity()
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision inits convs
    return net
