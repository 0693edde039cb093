"""CIFAR ResNets with BasicBlocks (He et al. 2016, "Deep Residual Learning for Image Recognition",
arXiv:1512.03385; the common 32x32 adaptation: 3x3 stem, no stem max-pool).

=======================  ===========  =====================================================================
model                    parameters   what it is
=======================  ===========  =====================================================================
``resnet``                11,173,962  CIFAR ResNet-18 (BasicBlocks, 3x3 stem, no stem max-pool)
``resnet_small``             272,474  CIFAR ResNet-20 (widths 16/32/64, three blocks per stage)
=======================  ===========  =====================================================================
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._common import ParamCountMixin, check_common
from ._registry import register_model

__all__ = ["BasicBlock", "ResNet", "ResNetConfig"]


class BasicBlock(nn.Module):
    """``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``; the shortcut is a strided 1x1 conv + BN when
    the shape changes, else the identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


# Depths whose block counts are not uniform across stages (torchvision's ResNet-34 layout).
_RESNET_BLOCKS = {(34, 4): (3, 4, 6, 3)}


@dataclass
class ResNetConfig:
    """A CIFAR ResNet: 3x3 stem conv (no max-pool), one stage of BasicBlocks per width (stride 1 for the first,
    2 after), global average pool, linear classifier.

    ``blocks`` (per stage) wins over ``depth``; otherwise ``depth = 2 * total blocks + 2`` is split evenly over the
    stages (18 -> 2,2,2,2 for four stages; 20 -> 3,3,3 for three), and 34 with four stages is 3,4,6,3.
    """

    depth: int = 18
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] | None = None
    num_classes: int = 10
    in_channels: int = 3

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be positive ints, got {self.widths}")
        if self.blocks is None:
            n_stages = len(self.widths)
            if (self.depth, n_stages) in _RESNET_BLOCKS:
                self.blocks = _RESNET_BLOCKS[(self.depth, n_stages)]
            elif self.depth >= 2 + 2 * n_stages and (self.depth - 2) % (2 * n_stages) == 0:
                self.blocks = ((self.depth - 2) // (2 * n_stages),) * n_stages
            else:
                raise ValueError(f"depth {self.depth} does not split into {n_stages} stages of BasicBlocks "
                                 f"(need depth = 2 + 2*{n_stages}*k); pass blocks=... instead")
        self.blocks = tuple(int(b) for b in self.blocks)
        if len(self.blocks) != len(self.widths) or min(self.blocks) < 1:
            raise ValueError(f"blocks must be one positive int per width, got {self.blocks} for widths {self.widths}")
        self.depth = 2 * sum(self.blocks) + 2
        check_common(self.num_classes, self.in_channels, 1)


class ResNet(ParamCountMixin, nn.Module):
    """CIFAR-style ResNet with BasicBlocks (He et al. 2016), built from a :class:`ResNetConfig`."""

    def __init__(self, config: ResNetConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config = config if config is not None else ResNetConfig(**kwargs)
        w0 = config.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, w0, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        stages = []
        c = w0
        for i, (w, n) in enumerate(zip(config.widths, config.blocks)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c, w, stride=2 if (i > 0 and j == 0) else 1))
                c = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, config.num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _resnet(defaults: dict, **kwargs) -> ResNet:
    cfg = dict(defaults)
    cfg.update(kwargs)
    return ResNet(ResNetConfig(**cfg))


@register_model
def resnet(**kwargs) -> ResNet:
    """ResNet-18 for CIFAR (He et al. 2016, "Deep Residual Learning"; the common 32x32 adaptation): 3x3 stem, no
    stem max-pool, BasicBlocks 2/2/2/2 at widths 64/128/256/512. Keywords: ``depth``, ``widths``, ``blocks``,
    ``num_classes`` (see :class:`ResNetConfig`)."""
    return _resnet({}, **kwargs)


@register_model
def resnet_small(**kwargs) -> ResNet:
    """ResNet-20 of He et al. 2016 (section 4.2, CIFAR-10): three stages of three BasicBlocks at widths 16/32/64
    (projection shortcuts instead of the paper's zero-padding ones). Same keywords as ``resnet``."""
    return _resnet({"depth": 20, "widths": (16, 32, 64)}, **kwargs)
