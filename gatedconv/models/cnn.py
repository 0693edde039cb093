"""Plain multilayer-perceptron and convolutional baselines: the MLP, the small ConvNets, and the ``cnn_base``
family (a VGG-style CNN, Simonyan & Zisserman 2015, arXiv:1409.1556, and its improvement iterations).

Parameter counts at the defaults (``num_classes=10``):

=======================  ===========  =====================================================================
model                    parameters   what it is
=======================  ===========  =====================================================================
``mlp``                      308,310  3072 -> 100 -> 10 multilayer perceptron
``convnet``                   42,362  two 3x3 convs (8, 16), one max-pool, linear classifier
``convnet_small``              5,538  two conv+pool stages (4, 8 channels), linear classifier
``convnet_tiny``               4,146  three conv+pool stages (4, 8, 16 channels), linear classifier
``cnn_small``                 51,898  three 5x5 conv+pool stages (8, 16, 32), MLP head 512-64-32-10
``cnn_base``                 620,362  three 3x3 conv+pool stages (32, 64, 128), MLP head 2048-256-10
``cnn_base_bn``              620,586  iteration 1: + BatchNorm after every conv
``cnn_base_bn_dropout``      620,586  iteration 2: + Dropout2d after every stage, Dropout in the head
``cnn_base_wide``          2,474,058  iteration 3: every width doubled
``cnn_base_deep``          3,249,098  iteration 4: two convs per stage
``cnn_medium``             2,791,434  five 3x3 convs (8..256), two pools, Dropout2d, MLP head 9216-...-10
=======================  ===========  =====================================================================
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._common import ParamCountMixin, check_common
from ._registry import register_model

__all__ = ["CNN", "CNNConfig", "SequentialNet"]


class SequentialNet(ParamCountMixin, nn.Module):
    """``head(features(x))``: the shape shared by the plain baselines (MLP, small conv nets, CNNs)."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_classes)


def _mlp_head(in_features: int, hidden: Sequence[int], num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """``Flatten -> [Linear -> ReLU (-> Dropout)] * len(hidden) -> Linear(num_classes)``."""
    layers: list[nn.Module] = [nn.Flatten()]
    d = in_features
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = h
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


def _conv_pool_stages(in_channels: int, widths: Sequence[int], kernel_size: int = 3) -> nn.Sequential:
    """``[Conv(k, same padding) -> ReLU -> MaxPool2d(2)]`` per width."""
    layers: list[nn.Module] = []
    c = in_channels
    for w in widths:
        layers += [nn.Conv2d(c, w, kernel_size, padding=kernel_size // 2), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c = w
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------------------
# MLP and the small conv nets
# --------------------------------------------------------------------------------------------------------------

@register_model
def mlp(num_classes: int = 10, hidden: int = 100, in_channels: int = 3, image_size: int = 32) -> SequentialNet:
    """Multilayer perceptron (the classic single-hidden-layer MLP on flattened pixels): 3072 -> 100 -> ReLU -> 10."""
    check_common(num_classes, in_channels, image_size)
    return SequentialNet(nn.Identity(), _mlp_head(in_channels * image_size ** 2, (hidden,), num_classes))


@register_model
def convnet(num_classes: int = 10, widths: tuple[int, int] = (8, 16), in_channels: int = 3,
            image_size: int = 32) -> SequentialNet:
    """Minimal ConvNet (tutorial style): conv 3->8, ReLU, conv 8->16, ReLU (3x3, padding 1), one 2x2 max-pool,
    then a linear classifier 16*16*16 = 4096 -> 10."""
    check_common(num_classes, in_channels, image_size)
    c1, c2 = widths
    features = nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )
    return SequentialNet(features, _mlp_head(c2 * (image_size // 2) ** 2, (), num_classes))


@register_model
def convnet_small(num_classes: int = 10, widths: tuple[int, ...] = (4, 8), in_channels: int = 3,
                  image_size: int = 32) -> SequentialNet:
    """Small ConvNet: two [3x3 conv (padding 1) -> ReLU -> 2x2 max-pool] stages with 4 and 8 channels, then a
    linear classifier 8*8*8 = 512 -> 10."""
    check_common(num_classes, in_channels, image_size)
    side = image_size // 2 ** len(widths)
    return SequentialNet(_conv_pool_stages(in_channels, widths), _mlp_head(widths[-1] * side ** 2, (), num_classes))


@register_model
def convnet_tiny(num_classes: int = 10, widths: tuple[int, ...] = (4, 8, 16), in_channels: int = 3,
                 image_size: int = 32) -> SequentialNet:
    """Tiny ConvNet: three [3x3 conv (padding 1) -> ReLU -> 2x2 max-pool] stages with 4, 8 and 16 channels, then
    a linear classifier 16*4*4 = 256 -> 10."""
    check_common(num_classes, in_channels, image_size)
    side = image_size // 2 ** len(widths)
    return SequentialNet(_conv_pool_stages(in_channels, widths), _mlp_head(widths[-1] * side ** 2, (), num_classes))


@register_model
def cnn_small(num_classes: int = 10, widths: tuple[int, ...] = (8, 16, 32), head_hidden: tuple[int, ...] = (64, 32),
              in_channels: int = 3, image_size: int = 32) -> SequentialNet:
    """Small CNN of the original comparison: three [5x5 conv (padding 2) -> ReLU -> 2x2 max-pool] stages
    (3 -> 8 -> 16 -> 32 channels), then FC 512 -> 64 -> 32 -> 10 with ReLU."""
    check_common(num_classes, in_channels, image_size)
    side = image_size // 2 ** len(widths)
    return SequentialNet(_conv_pool_stages(in_channels, widths, kernel_size=5),
                         _mlp_head(widths[-1] * side ** 2, head_hidden, num_classes))


@register_model
def cnn_medium(num_classes: int = 10, dropout: float = 0.5, in_channels: int = 3,
               image_size: int = 32) -> SequentialNet:
    """Medium CNN of the original comparison: five 3x3 convs 3 -> 8 -> 32 -> 64 -> 128 -> 256 with ReLU (padding 1,
    except the last, unpadded), a 2x2 max-pool after the 2nd and 4th conv, Dropout2d(``dropout``) after the last
    conv, then FC 256*6*6 = 9216 -> 256 -> 128 -> 64 -> 10 with ReLU."""
    check_common(num_classes, in_channels, image_size)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    features = nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 32, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3), nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
    )
    side = image_size // 4 - 2
    return SequentialNet(features, _mlp_head(256 * side ** 2, (256, 128, 64), num_classes))


# --------------------------------------------------------------------------------------------------------------
# The cnn_base family: a baseline CNN and its improvement iterations
# --------------------------------------------------------------------------------------------------------------

@dataclass
class CNNConfig:
    """A VGG-like CNN: ``len(widths)`` stages of ``convs_per_stage`` 3x3 convs (each ``-> [BN] -> ReLU``), a 2x2
    max-pool and optional Dropout2d per stage; then ``Flatten -> [Linear -> ReLU -> Dropout] -> Linear``."""

    widths: tuple[int, ...] = (32, 64, 128)
    convs_per_stage: int = 1
    batchnorm: bool = False
    dropout2d: float = 0.0
    dropout: float = 0.0
    head_hidden: tuple[int, ...] = (256,)
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.head_hidden = tuple(int(h) for h in self.head_hidden)
        if not self.widths or min(self.widths) < 1 or (self.head_hidden and min(self.head_hidden) < 1):
            raise ValueError(f"widths and head_hidden must be positive ints, got {self.widths}, {self.head_hidden}")
        if self.convs_per_stage < 1:
            raise ValueError(f"convs_per_stage must be >= 1, got {self.convs_per_stage}")
        for name in ("dropout", "dropout2d"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        check_common(self.num_classes, self.in_channels, self.image_size)
        if self.image_size % 2 ** len(self.widths):
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2**{len(self.widths)} (one pool per stage)"
            )


class CNN(SequentialNet):
    """The ``cnn_base`` family, built from a :class:`CNNConfig`."""

    def __init__(self, config: CNNConfig | None = None, **kwargs) -> None:
        config = config if config is not None else CNNConfig(**kwargs)
        layers: list[nn.Module] = []
        c = config.in_channels
        for w in config.widths:
            for _ in range(config.convs_per_stage):
                layers.append(nn.Conv2d(c, w, 3, padding=1, bias=not config.batchnorm))  # BN has its own shift
                if config.batchnorm:
                    layers.append(nn.BatchNorm2d(w))
                layers.append(nn.ReLU(inplace=True))
                c = w
            layers.append(nn.MaxPool2d(2))
            if config.dropout2d > 0:
                layers.append(nn.Dropout2d(config.dropout2d))
        side = config.image_size // 2 ** len(config.widths)
        super().__init__(nn.Sequential(*layers),
                         _mlp_head(c * side ** 2, config.head_hidden, config.num_classes, config.dropout))
        self.config = config


def _cnn(defaults: dict, **kwargs) -> CNN:
    cfg = dict(defaults)
    cfg.update(kwargs)
    return CNN(CNNConfig(**cfg))


_BN = {"batchnorm": True}
_BN_DROPOUT = {**_BN, "dropout2d": 0.1, "dropout": 0.5}
_WIDE = {**_BN_DROPOUT, "widths": (64, 128, 256), "head_hidden": (512,)}
_DEEP = {**_WIDE, "convs_per_stage": 2}


@register_model
def cnn_base(**kwargs) -> CNN:
    """Baseline CNN of the original comparison: three [3x3 conv (padding 1) -> ReLU -> 2x2 max-pool] stages
    (3 -> 32 -> 64 -> 128), then Flatten 2048 -> Linear 256 -> ReLU -> Linear 10. No normalisation, no dropout.
    Keywords: any :class:`CNNConfig` field."""
    return _cnn({}, **kwargs)


@register_model
def cnn_base_bn(**kwargs) -> CNN:
    """Iteration 1 of ``cnn_base``. Changed: BatchNorm2d after every conv (before the ReLU); the convs lose their
    bias, which BN makes redundant. Everything else as ``cnn_base``."""
    return _cnn(_BN, **kwargs)


@register_model
def cnn_base_bn_dropout(**kwargs) -> CNN:
    """Iteration 2 of ``cnn_base``. Changed vs ``cnn_base_bn``: Dropout2d(0.1) after every pooling stage and
    Dropout(0.5) after the hidden layer of the head. Same parameters as ``cnn_base_bn``."""
    return _cnn(_BN_DROPOUT, **kwargs)


@register_model
def cnn_base_wide(**kwargs) -> CNN:
    """Iteration 3 of ``cnn_base``. Changed vs ``cnn_base_bn_dropout``: every width doubled, convs 64/128/256 and a
    512-unit hidden layer (BN and dropout kept)."""
    return _cnn(_WIDE, **kwargs)


@register_model
def cnn_base_deep(**kwargs) -> CNN:
    """Iteration 4 of ``cnn_base``. Changed vs ``cnn_base_wide``: two 3x3 convs (each with BN and ReLU) per stage
    instead of one, VGG style (widths, BN and dropout kept)."""
    return _cnn(_DEEP, **kwargs)
