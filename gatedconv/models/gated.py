"""The five-block gated network of the original study and its sized variants.

Each stage is ``GatedConv2d -> BatchNorm2d -> MaxPool2d(2)``; five stages take a 32x32 image to 1x1. The head
is ``AdaptiveAvgPool2d(1) -> Flatten -> Linear -> ReLU -> Dropout -> Linear(num_classes)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import GatedConv2d
from ._registry import register_model

__all__ = ["GatedNet", "GatedNetConfig"]


@dataclass
class GatedNetConfig:
    """Everything that defines a GatedNet; saved with each run so the model can be rebuilt."""

    # the last block runs on a 2x2 map, so its width is cheap (the dense form makes it cheaper still;
    # benchmarks/bench_gemm.py times single blocks at these shapes); the 32x32 first block is what costs time
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_classes: int = 10
    in_channels: int = 3
    head_hidden: int = 256
    dropout: float = 0.5
    kernel_sizes: tuple[int, ...] = (3, 3, 3)
    gate: str = "relu"
    temperature: float = 1.0
    rd_ratio: float | None = None  # the gate's hidden layer (Dynamic Convolution's attention: 0.25); None: none
    activation: str = "per_path"
    impl: str = "auto"
    gate_bias_init: float | None = 1.0
    norm: str = "batch"

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.kernel_sizes = tuple(int(k) for k in self.kernel_sizes)
        if len(self.widths) != 5 or min(self.widths) < 1:
            raise ValueError(f"widths must be five positive ints, got {self.widths}")
        if self.num_classes < 1 or self.head_hidden < 1:
            raise ValueError(f"num_classes and head_hidden must be >= 1, got {self.num_classes}, {self.head_hidden}")
        if self.norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {self.norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class GatedNet(nn.Module):
    """Five ``GatedConv2d -> BatchNorm2d -> MaxPool2d(2)`` stages and an MLP head."""

    def __init__(self, config: GatedNetConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config = config if config is not None else GatedNetConfig(**kwargs)
        stages = []
        c_in = config.in_channels
        for w in config.widths:
            stages.append(nn.Sequential(
                GatedConv2d(
                    c_in, w,
                    kernel_sizes=config.kernel_sizes,
                    gate=config.gate,
                    temperature=config.temperature,
                    rd_ratio=config.rd_ratio,
                    activation=config.activation,
                    impl=config.impl,
                ),
                nn.BatchNorm2d(w) if config.norm == "batch" else nn.Identity(),
                nn.MaxPool2d(2),
            ))
            c_in = w
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c_in, config.head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.head_hidden, config.num_classes),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation for every layer, as the original used, then the optional gate bias.

        ``gate_bias_init`` (None = the original) sets every gate's bias, e.g. 1.0 so that ReLU gates start
        open: with a near-zero pre-activation about half the ReLU gates of a block start at exactly 0.
        """
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        if self.config.gate_bias_init is not None:
            for m in self.modules():
                if isinstance(m, GatedConv2d):
                    nn.init.constant_(m.gate.fc.bias, self.config.gate_bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_classes)

    def num_params(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def gated_blocks(self) -> list:
        return [m for m in self.modules() if isinstance(m, GatedConv2d)]


def _gated(config_defaults: dict, **kwargs) -> GatedNet:
    cfg = dict(config_defaults)
    cfg.update(kwargs)
    return GatedNet(GatedNetConfig(**cfg))


@register_model
def gatedconv(**kwargs) -> GatedNet:
    """The original design (ReLU gate, 3x3 paths, activation per path) at the package's default widths."""
    return _gated({}, **kwargs)


@register_model
def gatedconv_small(**kwargs) -> GatedNet:
    return _gated({"widths": (16, 32, 64, 64, 64), "head_hidden": 128}, **kwargs)


@register_model
def gatedconv_wide(**kwargs) -> GatedNet:
    return _gated({"widths": (64, 128, 256, 512, 512), "head_hidden": 512}, **kwargs)
