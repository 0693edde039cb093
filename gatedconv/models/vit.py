"""Vision transformers (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", arXiv:2010.11929): a small ViT
trained from scratch with a convolutional stem (Xiao et al. 2021, "Early Convolutions Help Transformers See
Better", arXiv:2106.14881), and torchvision's ``vit_b_16`` fine-tuned from a local weights file.

=======================  ===========  =====================================================================
model                    parameters   what it is
=======================  ===========  =====================================================================
``vit``                    1,905,834  small ViT with a convolutional stem, 4x4 patches, pre-norm blocks
``previt``                ~85.8M      torchvision ``vit_b_16`` fine-tuned from a local weights file
=======================  ===========  =====================================================================

Only ``torch`` (and ``einops``) are imported here; ``previt`` imports torchvision when it is built.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._common import ParamCountMixin, check_common
from ._registry import register_model

__all__ = ["Attention", "PretrainedViT", "TransformerBlock", "ViT", "ViTConfig"]


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
    stem_channels: tuple[int, ...] = (32, 32)
    pool: str = "cls"
    dropout: float = 0.0
    attention_dropout: float = 0.0
    num_classes: int = 10
    in_channels: int = 3

    def __post_init__(self) -> None:
        self.stem_channels = tuple(int(c) for c in self.stem_channels)
        check_common(self.num_classes, self.in_channels, self.image_size)
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.dim < 1 or self.depth < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValueError(
                f"need dim, depth, heads >= 1 and dim divisible by heads, got {self.dim}, {self.depth}, {self.heads}"
            )
        if self.mlp_ratio <= 0 or (self.stem_channels and min(self.stem_channels) < 1):
            raise ValueError(
                f"mlp_ratio must be > 0 and stem_channels positive, got {self.mlp_ratio}, {self.stem_channels}"
            )
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
        hidden = round(dim * mlp_ratio)
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
        stem: list[nn.Module] = []
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
    token. Keywords: any :class:`ViTConfig` field (``dim``, ``depth``, ``heads``, ``mlp_ratio``, ``patch_size``,
    ...)."""
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


def _read_state_dict(path: Path) -> OrderedDict[str, torch.Tensor]:
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
