"""``gatedconv_fast``: the airbench94 layout with every convolution after the stem a ``GatedConv2d``.

airbench94 (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv:2404.00498) is a VGG-like
net: a 2x2 patch-whitening convolution, then three groups ``conv -> maxpool -> BN -> GELU -> conv -> BN ->
GELU`` of widths 64 / 256 / 256, a 3x3 max-pool and a bias-free linear head whose logits are scaled by 1/9.
Here each of the six 3x3 convolutions is an input-gated sum of parallel convolutions (``GatedConv2d``), by
default a 3x3 path and a cheap 1x1 path (~1.11x the FLOPs of the 3x3 alone), so the gating is real and
input-dependent while the step cost stays close to the reference's.

The model owns its initialisation (``reset_parameters``): the first path of every block gets airbench's
dirac (identity) init, the other paths start at zero and the gates start uniform, so at initialisation the
network computes airbench94's function (every block scaled by one constant, which the BatchNorm after it
removes). The whitening stem needs training images and is initialised by ``gatedconv.speedrun.whitening_init``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..layers import ACTIVATION_PLACEMENTS, GATE_TYPES, GatedConv2d
from ._registry import register_model

__all__ = ["EXTRA_PATH_INITS", "HEAD_INITS", "STEMS", "FastConvGroup", "FrozenScaleBatchNorm", "GatedFastNet",
           "GatedFastNetConfig"]

STEMS = ("whiten", "conv")
HEAD_INITS = ("default", "unit_std")
EXTRA_PATH_INITS = ("zero", "default", "dirac")


@dataclass
class GatedFastNetConfig:
    """Everything that defines a GatedFastNet (saved in each run's checkpoint so ``load_model`` rebuilds it).

    Sources: widths, BatchNorm momentum / eps, whitening patch size, logit scale and the MaxPool2d(3) head are
    airbench94's ``hyp['net']`` and ``make_net`` (KellerJordan/cifar10-airbench, legacy/airbench94.py).
    """

    widths: tuple[int, int, int] = (64, 256, 256)  # airbench94 hyp['net']['widths'] block1..3
    num_classes: int = 10
    in_channels: int = 3
    # the 2x2 whitening stem (airbench94 whiten_kernel_size = 2); its width is 2 * C * k * k = 24: each
    # eigenvector of the patch covariance with both signs, so the GELU after it loses no information
    whiten_kernel_size: int = 2
    # "whiten": frozen weight, set from the training patches by gatedconv.speedrun.whitening_init (airbench94);
    # "conv": an ordinary trained conv + BatchNorm, the ablation airbench's main0_baseline starts from
    stem: str = "whiten"
    # one odd kernel size per path; (3, 1): a 1x1 path beside the 3x3 costs 1/9 more FLOPs than the 3x3 alone
    kernel_sizes: tuple[int, ...] = (3, 1)
    # softmax: with 2 paths it is a per-sample mixing ratio whose weights sum to
    # 1, so the block's output keeps the scale of one convolution, the scale airbench's lr / dirac init were
    # tuned for; "sigmoid" gives independent per-path gains, "constant" is the no-gating control
    gate: str = "softmax"
    temperature: float = 1.0
    # "after_sum" with an Identity inside the block keeps airbench's order conv -> pool -> BN -> GELU;
    # "per_path" puts a GELU on each path inside the block (and none after the BatchNorm)
    activation: str = "after_sum"
    impl: str = "auto"
    # init of paths 2..P: "zero" (the block starts as airbench's conv; extra paths grow from nothing),
    # "default" (PyTorch's kaiming-uniform), "dirac" (identity, like the first path)
    extra_path_init: str = "zero"
    bn_momentum: float = 0.6  # airbench94 hyp['net']['batchnorm_momentum'], in its convention: PyTorch's 1 - 0.6
    bn_eps: float = 1e-12  # airbench94 BatchNorm(eps=1e-12)
    logit_scale: float = 1 / 9  # airbench94 hyp['net']['scaling_factor']; airbench94_muon: 1 / width (1 / 256)
    # "default": PyTorch's init of the head; "unit_std": then rescaled to standard deviation 1 (airbench94_muon)
    head_init: str = "default"

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.kernel_sizes = tuple(int(k) for k in self.kernel_sizes)
        if len(self.widths) != 3 or min(self.widths) < 1:
            raise ValueError(f"widths must be three positive ints, got {self.widths}")
        if len(self.kernel_sizes) < 1 or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive ints, one per path, got {self.kernel_sizes}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
        if self.gate not in GATE_TYPES:
            raise ValueError(f"gate must be one of {GATE_TYPES}, got {self.gate!r}")
        if self.activation not in ACTIVATION_PLACEMENTS:
            raise ValueError(f"activation must be one of {ACTIVATION_PLACEMENTS}, got {self.activation!r}")
        if self.extra_path_init not in EXTRA_PATH_INITS:
            raise ValueError(f"extra_path_init must be one of {EXTRA_PATH_INITS}, got {self.extra_path_init!r}")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {self.head_init!r}")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if self.num_classes < 1 or self.in_channels < 1 or self.whiten_kernel_size < 1:
            raise ValueError("num_classes, in_channels and whiten_kernel_size must be >= 1")

    @property
    def whiten_width(self) -> int:
        return 2 * self.in_channels * self.whiten_kernel_size ** 2


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose scale is fixed at 1 (not trained), only the bias learns: airbench94's ``BatchNorm``
    (weight=False, bias=True). ``momentum`` is given in airbench's convention (weight of the old running
    value), PyTorch's is ``1 - momentum``."""

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.6,
        eps: float = 1e-12,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=1.0 - momentum)
        self.weight.requires_grad_(False)


class FastConvGroup(nn.Module):
    """airbench94's ConvGroup with gated convolutions: ``gconv -> maxpool(2) -> BN -> GELU -> gconv -> BN -> GELU``.

    With ``activation="per_path"`` the GELU moves inside each block (on every path) and the group has none after
    its BatchNorms.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_sizes: tuple[int, ...] = (3, 1),
        gate: str = "softmax",
        temperature: float = 1.0,
        activation: str = "after_sum",
        impl: str = "auto",
        bn_momentum: float = 0.6,
        bn_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        inner = nn.Identity if activation == "after_sum" else nn.GELU
        common = {"kernel_sizes": kernel_sizes, "gate": gate, "temperature": temperature, "activation": activation,
                  "act_layer": inner, "bias": False, "impl": impl}  # bias-free: a BatchNorm follows (airbench Conv)
        self.conv1 = GatedConv2d(in_channels, out_channels, **common)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBatchNorm(out_channels, momentum=bn_momentum, eps=bn_eps)
        self.conv2 = GatedConv2d(out_channels, out_channels, **common)
        self.norm2 = FrozenScaleBatchNorm(out_channels, momentum=bn_momentum, eps=bn_eps)
        self.act = nn.GELU() if activation == "after_sum" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class GatedFastNet(nn.Module):
    """Whitening stem, three gated ``FastConvGroup``s, ``MaxPool2d(3)``, bias-free linear head, logits x 1/9.

    Input: normalised images (B, C, 32, 32). Spatial sizes: 32 -> 31 (2x2 stem, no padding) -> 15 -> 7 -> 3 -> 1.
    """

    def __init__(self, config: GatedFastNetConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else GatedFastNetConfig(**kwargs)
        k = cfg.whiten_kernel_size
        self.stem = nn.Conv2d(cfg.in_channels, cfg.whiten_width, k, padding=0, bias=True)
        # without whitening, the BatchNorm that airbench94's whitening replaced (airbench's ablation main1_whiten)
        self.stem_norm = (FrozenScaleBatchNorm(cfg.whiten_width, momentum=cfg.bn_momentum, eps=cfg.bn_eps)
                          if cfg.stem == "conv" else nn.Identity())
        self.stem_act = nn.GELU()
        groups, c_in = [], cfg.whiten_width
        for w in cfg.widths:
            groups.append(FastConvGroup(
                c_in, w,
                kernel_sizes=cfg.kernel_sizes,
                gate=cfg.gate,
                temperature=cfg.temperature,
                activation=cfg.activation,
                impl=cfg.impl,
                bn_momentum=cfg.bn_momentum,
                bn_eps=cfg.bn_eps,
            ))
            c_in = w
        self.groups = nn.Sequential(*groups)
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(c_in, cfg.num_classes, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """airbench94's init for the layout, plus the gated blocks' own:

        * stem: PyTorch default (overwritten by ``gatedconv.speedrun.whitening_init`` for ``stem="whiten"``), bias 0;
          with ``stem="whiten"`` its weight is frozen (airbench94 ``net[0].weight.requires_grad = False``).
        * first path of every block: PyTorch default, then dirac on the first ``C_in`` output channels (airbench94
          ``Conv.reset_parameters``): the block starts by passing its input through.
        * other paths: ``extra_path_init`` (default zero: the block starts as exactly the airbench conv, and the
          extra path grows only as far as the loss asks for it).
        * gates: zero weight, so every sample starts with the same mixture (1/P for softmax, 1/2 each for
          sigmoid); bias 0, except 1.0 for the ReLU gate, which would start dead at 0 (the package's
          ``GatedNetConfig.gate_bias_init``).
        * BatchNorm: scale 1 (frozen), bias 0; head: PyTorch default, rescaled to unit std with
          ``head_init="unit_std"``.
        """
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters") and not isinstance(m, GatedConv2d):
                m.reset_parameters()
        nn.init.zeros_(self.stem.bias)
        self.stem.weight.requires_grad_(self.config.stem != "whiten")
        for block in self.gated_blocks():
            for i, conv in enumerate(block.paths):
                conv.reset_parameters()
                mode = "dirac" if i == 0 else self.config.extra_path_init
                if mode == "zero":
                    nn.init.zeros_(conv.weight)
                elif mode == "dirac":
                    # identity on the first C_in output channels; the rest keep the default init (airbench94)
                    nn.init.dirac_(conv.weight[:conv.in_channels])
            nn.init.zeros_(block.gate.fc.weight)
            nn.init.constant_(block.gate.fc.bias, 1.0 if block.gate.gate == "relu" else 0.0)
        if self.config.head_init == "unit_std":
            self.head.weight.div_(self.head.weight.std())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem_norm(self.stem(x)))
        x = self.pool(self.groups(x))  # (B, C, 1, 1) for 32x32 inputs
        x = rearrange(x, "b c 1 1 -> b c")
        return self.head(x) * self.config.logit_scale  # (B, num_classes)

    def gated_blocks(self) -> list:
        return [m for m in self.modules() if isinstance(m, GatedConv2d)]

    def num_params(self, trainable_only: bool = True) -> int:
        """Parameter count; ``trainable_only`` leaves out the frozen whitening weight and BatchNorm scales."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


@register_model
def gatedconv_fast(**kwargs) -> GatedFastNet:
    """airbench94's layout with gated (3x3 + 1x1, softmax) convolutions; see ``GatedFastNetConfig``."""
    return GatedFastNet(GatedFastNetConfig(**kwargs))
