"""Baseline model families to compare the gated network against.

Every registered builder maps a ``(B, 3, 32, 32)`` float batch to ``(B, num_classes)`` logits, takes
``num_classes=10`` as a keyword and returns a module with ``num_params()``. Parameter counts at the defaults:

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
``resnet``                11,173,962  CIFAR ResNet-18 (BasicBlocks, 3x3 stem, no stem max-pool)
``resnet_small``             272,474  CIFAR ResNet-20 (widths 16/32/64, three blocks per stage)
``vit``                    1,905,834  small ViT with a convolutional stem, 4x4 patches, pre-norm blocks
``previt``                ~85.8M      torchvision ``vit_b_16`` fine-tuned from a local weights file
=======================  ===========  =====================================================================

Only ``torch`` (and ``einops``) are imported here; ``previt`` imports torchvision when it is built.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._registry import register_model

__all__ = [
    "ParamCountMixin", "SequentialNet", "CNNConfig", "CNN", "ResNetConfig", "ResNet", "BasicBlock",
    "ViTConfig", "ViT", "PretrainedViT",
]


class ParamCountMixin:
    """Adds ``num_params()`` to an ``nn.Module``, as on ``GatedNet``."""

    def num_params(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)  # type: ignore[attr-defined]


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
    layers: List[nn.Module] = [nn.Flatten()]
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
    layers: List[nn.Module] = []
    c = in_channels
    for w in widths:
        layers += [nn.Conv2d(c, w, kernel_size, padding=kernel_size // 2), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c = w
    return nn.Sequential(*layers)


def _check_common(num_classes: int, in_channels: int, image_size: int) -> None:
    if num_classes < 1 or in_channels < 1 or image_size < 1:
        raise ValueError(f"num_classes, in_channels and image_size must be >= 1, got {num_classes}, {in_channels}, {image_size}")


# --------------------------------------------------------------------------------------------------------------
# MLP and the small conv nets
# --------------------------------------------------------------------------------------------------------------

@register_model
def mlp(num_classes: int = 10, hidden: int = 100, in_channels: int = 3, image_size: int = 32) -> SequentialNet:
    """Multilayer perceptron (the classic single-hidden-layer MLP on flattened pixels): 3072 -> 100 -> ReLU -> 10."""
    _check_common(num_classes, in_channels, image_size)
    return SequentialNet(nn.Identity(), _mlp_head(in_channels * image_size ** 2, (hidden,), num_classes))


@register_model
def convnet(num_classes: int = 10, widths: Tuple[int, int] = (8, 16), in_channels: int = 3,
            image_size: int = 32) -> SequentialNet:
    """Minimal ConvNet (tutorial style): conv 3->8, ReLU, conv 8->16, ReLU (3x3, padding 1), one 2x2 max-pool,
    then a linear classifier 16*16*16 = 4096 -> 10."""
    _check_common(num_classes, in_channels, image_size)
    c1, c2 = widths
    features = nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )
    return SequentialNet(features, _mlp_head(c2 * (image_size // 2) ** 2, (), num_classes))


@register_model
def convnet_small(num_classes: int = 10, widths: Tuple[int, ...] = (4, 8), in_channels: int = 3,
                  image_size: int = 32) -> SequentialNet:
    """Small ConvNet: two [3x3 conv (padding 1) -> ReLU -> 2x2 max-pool] stages with 4 and 8 channels, then a
    linear classifier 8*8*8 = 512 -> 10."""
    _check_common(num_classes, in_channels, image_size)
    side = image_size // 2 ** len(widths)
    return SequentialNet(_conv_pool_stages(in_channels, widths), _mlp_head(widths[-1] * side ** 2, (), num_classes))


@register_model
def convnet_tiny(num_classes: int = 10, widths: Tuple[int, ...] = (4, 8, 16), in_channels: int = 3,
                 image_size: int = 32) -> SequentialNet:
    """Tiny ConvNet: three [3x3 conv (padding 1) -> ReLU -> 2x2 max-pool] stages with 4, 8 and 16 channels, then
    a linear classifier 16*4*4 = 256 -> 10."""
    _check_common(num_classes, in_channels, image_size)
    side = image_size // 2 ** len(widths)
    return SequentialNet(_conv_pool_stages(in_channels, widths), _mlp_head(widths[-1] * side ** 2, (), num_classes))


@register_model
def cnn_small(num_classes: int = 10, widths: Tuple[int, ...] = (8, 16, 32), head_hidden: Tuple[int, ...] = (64, 32),
              in_channels: int = 3, image_size: int = 32) -> SequentialNet:
    """Small CNN of the original comparison: three [5x5 conv (padding 2) -> ReLU -> 2x2 max-pool] stages
    (3 -> 8 -> 16 -> 32 channels), then FC 512 -> 64 -> 32 -> 10 with ReLU."""
    _check_common(num_classes, in_channels, image_size)
    side = image_size // 2 ** len(widths)
    return SequentialNet(_conv_pool_stages(in_channels, widths, kernel_size=5),
                         _mlp_head(widths[-1] * side ** 2, head_hidden, num_classes))


@register_model
def cnn_medium(num_classes: int = 10, dropout: float = 0.5, in_channels: int = 3, image_size: int = 32) -> SequentialNet:
    """Medium CNN of the original comparison: five 3x3 convs 3 -> 8 -> 32 -> 64 -> 128 -> 256 with ReLU (padding 1,
    except the last, unpadded), a 2x2 max-pool after the 2nd and 4th conv, Dropout2d(``dropout``) after the last
    conv, then FC 256*6*6 = 9216 -> 256 -> 128 -> 64 -> 10 with ReLU."""
    _check_common(num_classes, in_channels, image_size)
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

    widths: Tuple[int, ...] = (32, 64, 128)
    convs_per_stage: int = 1
    batchnorm: bool = False
    dropout2d: float = 0.0
    dropout: float = 0.0
    head_hidden: Tuple[int, ...] = (256,)
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
        _check_common(self.num_classes, self.in_channels, self.image_size)
        if self.image_size % 2 ** len(self.widths):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**{len(self.widths)} (one pool per stage)")


class CNN(SequentialNet):
    """The ``cnn_base`` family, built from a :class:`CNNConfig`."""

    def __init__(self, config: CNNConfig | None = None, **kwargs) -> None:
        config = config if config is not None else CNNConfig(**kwargs)
        layers: List[nn.Module] = []
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


# --------------------------------------------------------------------------------------------------------------
# ResNet
# --------------------------------------------------------------------------------------------------------------

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
    widths: Tuple[int, ...] = (64, 128, 256, 512)
    blocks: Optional[Tuple[int, ...]] = None
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
        _check_common(self.num_classes, self.in_channels, 1)


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


# --------------------------------------------------------------------------------------------------------------
# Vision transformer from scratch
# --------------------------------------------------------------------------------------------------------------

@dataclass
class ViTConfig:
    """A small ViT: 3x3 conv stem (``Conv -> BN -> ReLU`` per ``stem_channels`` entry, stride 1), cut into
    ``patch_size`` x ``patch_size`` patches, each flattened and linearly embedded to ``dim``; learned position
    embeddings; ``depth`` pre-norm transformer blocks; ``pool`` = "cls" (class token) or "mean" (mean of tokens)."""

    image_size: int = 32
    patch_size: int = 4
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 2.0
    stem_channels: Tuple[int, ...] = (32, 32)
    pool: str = "cls"
    dropout: float = 0.0
    attention_dropout: float = 0.0
    num_classes: int = 10
    in_channels: int = 3

    def __post_init__(self) -> None:
        self.stem_channels = tuple(int(c) for c in self.stem_channels)
        _check_common(self.num_classes, self.in_channels, self.image_size)
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.dim < 1 or self.depth < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"need dim, depth, heads >= 1 and dim divisible by heads, got {self.dim}, {self.depth}, {self.heads}")
        if self.mlp_ratio <= 0 or (self.stem_channels and min(self.stem_channels) < 1):
            raise ValueError(f"mlp_ratio must be > 0 and stem_channels positive, got {self.mlp_ratio}, {self.stem_channels}")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {self.pool!r}")
        for name in ("dropout", "attention_dropout"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class Attention(nn.Module):
    """Multi-head self-attention over ``(B, N, dim)`` tokens (``F.scaled_dot_product_attention``)."""

    def __init__(self, dim: int, heads: int, attention_dropout: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.attention_dropout = attention_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        p = self.attention_dropout if self.training else 0.0
        if x.device.type == "cpu":
            # Why not SDPA here: for our short sequences (65 tokens) PyTorch's CPU flash-attention kernel is slow
            # in bf16, its backward above all; measured on this 2-core CPU (batch 128, 3 heads, 65 tokens,
            # head dim 64, forward + backward): SDPA 131 ms, these three ops 20 ms, which made the whole ViT
            # training step ~3x slower. Same function: softmax(q k^T / sqrt(d)) v.
            attn = torch.softmax((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5, dim=-1)  # (B, h, N, N)
            out = F.dropout(attn, p) @ v if p > 0 else attn @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.drop(self.proj(rearrange(out, "b h n d -> b n (h d)")))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))`` with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attention_dropout, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(ParamCountMixin, nn.Module):
    """Vision transformer (Dosovitskiy et al. 2021) with a small convolutional stem, built from a :class:`ViTConfig`."""

    def __init__(self, config: ViTConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config = config if config is not None else ViTConfig(**kwargs)
        stem: List[nn.Module] = []
        c = config.in_channels
        for w in config.stem_channels:
            stem += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.stem = nn.Sequential(*stem)
        self.patch_embed = nn.Linear(c * config.patch_size ** 2, config.dim)
        n_tokens = config.num_patches + (1 if config.pool == "cls" else 0)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim)) if config.pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, config.dim))
        self.pos_drop = nn.Dropout(config.dropout)
        self.blocks = nn.Sequential(*[
            TransformerBlock(config.dim, config.heads, config.mlp_ratio, config.dropout, config.attention_dropout)
            for _ in range(config.depth)
        ])
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal(0.02) for the linear layers and embeddings, zero biases; defaults for the stem."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.config.image_size
        if x.shape[-2:] != (s, s):
            raise ValueError(f"vit was built for {s}x{s} images, got {tuple(x.shape[-2:])}")
        p = self.config.patch_size
        tokens = self.patch_embed(rearrange(self.stem(x), "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p))
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = self.norm(self.blocks(self.pos_drop(tokens + self.pos_embed)))
        pooled = tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)
        return self.head(pooled)


@register_model
def vit(**kwargs) -> ViT:
    """Small ViT trained from scratch (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", with a
    convolutional stem as in Xiao et al. 2021, "Early Convolutions Help Transformers See Better"): two 3x3 conv
    layers (32 channels), 4x4 patches (64 tokens), dim 192, 6 pre-norm blocks with 3 heads, MLP ratio 2, class
    token. Keywords: any :class:`ViTConfig` field (``dim``, ``depth``, ``heads``, ``mlp_ratio``, ``patch_size``, ...)."""
    return ViT(ViTConfig(**kwargs))


# --------------------------------------------------------------------------------------------------------------
# Fine-tuning a pretrained torchvision ViT
# --------------------------------------------------------------------------------------------------------------

class PretrainedViT(ParamCountMixin, nn.Module):
    """A torchvision ``VisionTransformer`` behind a bilinear resize of the input to its ``image_size``."""

    def __init__(self, vit_model: nn.Module, image_size: int) -> None:
        super().__init__()
        self.vit = vit_model
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return self.vit(x)


def _read_state_dict(path: Path) -> "OrderedDict[str, torch.Tensor]":
    if not path.is_file():
        raise ValueError(f"previt: {path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (any unreadable file gets the same one-line error)
        raise ValueError(f"previt: {path}: not a state dict saved with torch.save ({type(e).__name__})") from None
    if isinstance(state, dict):
        for key in ("model_state", "state_dict", "model"):  # a checkpoint that wraps the state dict
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"previt: {path}: not a state dict of tensors")
    return state


@register_model
def previt(weights: str | None = None, num_classes: int = 10, image_size: int = 224, patch_size: int = 16,
           num_layers: int = 12, num_heads: int = 12, hidden_dim: int = 768, mlp_dim: int = 3072,
           dropout: float = 0.0, attention_dropout: float = 0.0, freeze_backbone: bool = False) -> PretrainedViT:
    """Fine-tuning a pretrained ViT-B/16 (torchvision ``vit_b_16``, Dosovitskiy et al. 2021).

    ``weights`` is a local file holding a torchvision ``VisionTransformer`` state dict saved with ``torch.save``
    (e.g. ``torch.save(vit_b_16(weights=...).state_dict(), path)``, or torchvision's downloaded ``.pth``); nothing
    is downloaded. All weights except the classifier are loaded strictly; ``heads`` becomes a new zero-initialised
    ``Linear(hidden_dim, num_classes)``. Inputs are resized bilinearly to ``image_size`` (32 -> 224) inside the
    model. The architecture keywords default to ViT-B/16 and must match the file. ``freeze_backbone`` trains the
    new head only. The weights file is also needed to rebuild the model from a saved run.
    """
    if weights is None or str(weights) == "":
        raise ValueError("previt needs pretrained weights: pass a local file, weights='path/to/vit_b_16.pth' "
                         "(a torchvision vit_b_16 state dict saved with torch.save; nothing is downloaded here)")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    path = Path(weights).expanduser()
    state = _read_state_dict(path)

    from torchvision.models import VisionTransformer  # imported here: torchvision is slow to import

    model = VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                              num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim, dropout=dropout,
                              attention_dropout=attention_dropout)
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.")}
    loaded = {k: v for k, v in state.items() if not k.startswith("heads.")}
    missing = [k for k in backbone if k not in loaded]
    unexpected = [k for k in loaded if k not in backbone]
    mismatched = [f"{k} {tuple(loaded[k].shape)} vs {tuple(v.shape)}" for k, v in backbone.items()
                  if k in loaded and loaded[k].shape != v.shape]
    if missing or unexpected or mismatched:
        arch = (f"image_size={image_size}, patch_size={patch_size}, num_layers={num_layers}, num_heads={num_heads}, "
                f"hidden_dim={hidden_dim}, mlp_dim={mlp_dim}")
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys (first {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys (first {unexpected[0]})")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches (first {mismatched[0]})")
        raise ValueError(f"previt: {path} does not fit a VisionTransformer({arch}): {'; '.join(problems)}")
    model.load_state_dict(loaded, strict=False)  # strict apart from the classifier, checked above

    head = nn.Linear(hidden_dim, num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    model.heads = head
    if freeze_backbone:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("heads."))
    return PretrainedViT(model, image_size)
