"""Input-gated convolution: ``GatedConv2d`` (the original ``Nth_Block``) and its ``Gate``.

The block runs P parallel convolutions ("paths") over the same input and mixes their outputs with per-sample
weights computed from the input itself::

    a      = gate(x)                              # (B, P): ReLU(Linear(global-average-pool(x)))
    out    = sum_p a[:, p] * act(conv_p(x))       # activation "per_path" (the original)
    out    = act(sum_p a[:, p] * conv_p(x))       # activation "after_sum" (CondConv-style)

It is a close relative of Selective Kernel Networks (Li et al., 2019, arXiv:1903.06586), CondConv (Yang et al.,
2019, arXiv:1904.04971) and Dynamic Convolution (Chen et al., 2020, arXiv:1912.03458); the original design uses
an unnormalised ReLU gate.

This file is the definition: ``impl="reference"`` computes the formula as written, one ``Conv2d`` per path.
Faster forms of the same function (``"fused"``, ``"gemm"``, ``"dense"``, ``"stacked"``, ``"condconv"``), the
compiled gated sum and the rule ``impl="auto"`` follows live in ``gatedconv.kernels``.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels

__all__ = [
    "ACTIVATION_PLACEMENTS",
    "GATE_TYPES",
    "IMPLEMENTATIONS",
    "Gate",
    "GatedConv2d",
    "Nth_Block",
]

GATE_TYPES = ("relu", "softmax", "sigmoid", "constant")
ACTIVATION_PLACEMENTS = ("per_path", "after_sum")
IMPLEMENTATIONS = ("auto", "reference", "fused", "gemm", "dense", "stacked", "condconv", "mixed", "mixed_gemm")


class Gate(nn.Module):
    """Per-sample path weights: ``x (B, C, H, W) -> a (B, P)``.

    ``gate="relu"`` is the original ``ReLU(Linear(avgpool(x)))``; ``"softmax"`` normalises over paths (divided
    by ``temperature`` first); ``"sigmoid"`` squashes each weight into (0, 1); ``"constant"`` ignores the input
    and weights every path ``1 / P`` (the "no gating" control).

    ``rd_ratio`` (timm's name for a squeeze ratio; default None: the original single ``Linear``) puts a hidden
    layer in front: ``Linear(C -> max(rd_min, round(C * rd_ratio))) -> ReLU -> Linear(-> P)``, the attention of
    Dynamic Convolution (Chen et al. 2020: ``rd_ratio=0.25``). ``rd_min`` keeps a few hidden units where C is
    small (the first block sees 3 channels). ``fc`` is always the layer that outputs the P logits.
    """

    def __init__(
        self,
        in_channels: int,
        num_paths: int = 3,
        gate: str = "relu",
        temperature: float = 1.0,
        rd_ratio: float | None = None,
        rd_min: int = 4,
    ) -> None:
        super().__init__()
        if gate not in GATE_TYPES:
            raise ValueError(f"gate must be one of {GATE_TYPES}, got {gate!r}")
        if num_paths < 1:
            raise ValueError(f"num_paths must be >= 1, got {num_paths}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if rd_ratio is not None and not rd_ratio > 0:
            raise ValueError(f"rd_ratio must be > 0 (or None: no hidden layer), got {rd_ratio}")
        self.in_channels = in_channels
        self.num_paths = num_paths
        self.gate = gate
        self.temperature = float(temperature)
        self.rd_ratio = rd_ratio
        if rd_ratio is None:
            self.hidden = None
            self.fc = nn.Linear(in_channels, num_paths)
        else:
            rd = max(int(rd_min), round(in_channels * rd_ratio))
            self.hidden = nn.Sequential(nn.Linear(in_channels, rd), nn.ReLU())
            self.fc = nn.Linear(rd, num_paths)
        if gate == "constant" or self.is_one:
            # weights that cannot change the output do not train: the constant gate ignores its input and a
            # softmax over one path is identically 1. Frozen, DistributedDataParallel does not wait for their
            # gradients (it raises "parameters that were not used in producing loss" on the 2nd step otherwise)
            self.requires_grad_(False)

    @property
    def is_one(self) -> bool:
        """True when the gate is identically 1 whatever the input: a softmax or constant gate over one path."""
        return self.num_paths == 1 and self.gate in ("softmax", "constant")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate == "constant":
            return x.new_full((x.shape[0], self.num_paths), 1.0 / self.num_paths)
        s = x.mean((2, 3))  # (B, C): global average pool (a plain mean: einops' parsing costs ~10 us a call)
        if self.hidden is not None:
            s = self.hidden(s)  # (B, rd)
        z = self.fc(s)  # (B, P)
        if self.gate == "relu":
            return F.relu(z)
        if self.gate == "sigmoid":
            return torch.sigmoid(z)
        return torch.softmax(z / self.temperature, dim=1)

    def extra_repr(self) -> str:
        t = f", temperature={self.temperature}" if self.gate == "softmax" else ""
        rd = f", rd_ratio={self.rd_ratio}" if self.rd_ratio is not None else ""
        return f"{self.in_channels}, num_paths={self.num_paths}, gate={self.gate!r}{t}{rd}"


class GatedConv2d(nn.Module):
    """Input-gated sum of parallel convolutions (the original ``Nth_Block``).

    Args:
        in_channels: channels of the input ``x`` (B, C_in, H, W).
        out_channels: channels of the output.
        kernel_sizes: one odd kernel size per path; ``(3, 3, 3)`` is the original. Padding ``k // 2`` keeps the
            spatial size at stride 1, so paths of different sizes can be summed.
        stride: stride of every path.
        gate: ``"relu"`` (original), ``"softmax"``, ``"sigmoid"`` or ``"constant"`` (no gating).
        temperature: softmax temperature (only used by ``gate="softmax"``).
        rd_ratio: the gate's hidden layer, ``C_in * rd_ratio`` units (``Gate``); None (default): no hidden layer.
        activation: ``"per_path"`` (original: activation on each path before the gated sum) or ``"after_sum"``
            (one activation after the gated sum).
        act_layer: activation class, instantiated once; ``nn.ReLU`` in the original.
        bias: whether the path convolutions have a bias.
        impl: which implementation computes the block: ``"reference"`` (the definition), one of the forms in
            ``gatedconv.kernels``, or ``"auto"`` (chosen per input by ``gatedconv.kernels.auto_impl``).
        compiled_sum: run the reference form's gated sum through ``torch.compile`` in training steps (see
            ``gatedconv.kernels.compiled_sum`` to set it on a whole model).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_sizes: Sequence[int] = (3, 3, 3),
        stride: int = 1,
        gate: str = "relu",
        temperature: float = 1.0,
        rd_ratio: float | None = None,
        activation: str = "per_path",
        act_layer: type[nn.Module] = nn.ReLU,
        bias: bool = True,
        impl: str = "auto",
        compiled_sum: bool = False,
    ) -> None:
        super().__init__()
        _check_arguments(in_channels, out_channels, stride, activation, impl)
        self.kernel_sizes = _check_kernel_sizes(kernel_sizes)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.activation = activation
        self.impl = impl
        self.compiled_sum = bool(compiled_sum)
        self.num_paths = len(self.kernel_sizes)
        self.gate = Gate(in_channels, self.num_paths, gate, temperature, rd_ratio=rd_ratio)
        self.paths = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, k, stride=stride, padding=k // 2, bias=bias)
            for k in self.kernel_sizes
        )
        self.act = act_layer()
        self.record_gates = False  # set True (or use gatedconv.analysis) to keep the last gate values
        self.last_gates: torch.Tensor | None = None

    def forward(
        self, x: torch.Tensor, return_gates: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, C_in, H, W) -> output (B, C_out, H', W'), and the gates (B, P) if ``return_gates``."""
        self._check_input(x)
        if self.gate.is_one and not (return_gates or self.record_gates):
            # a softmax or constant gate over one path is identically 1, so the block is its convolution: skip the
            # gate and the multiply by 1 (an extra pass over the output each way), so a one-path network costs
            # exactly its plain convolutions (airbench94 itself, as a gated network with one path per block)
            return self.act(self.paths[0](x))
        a = self.gate(x)  # (B, P)
        if self.record_gates:
            self.last_gates = a.detach()
        impl = self.choose_impl(x)
        out = self._forward_reference(x, a) if impl == "reference" else kernels.FORMS[impl](self, x, a)
        return (out, a) if return_gates else out

    def _forward_reference(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The definition: one convolution per path, then the gated sum with the activation per the placement."""
        if kernels.uses_compiled_sum(self, a):
            return kernels.reference_compiled(self, x, a)
        # generators: each path's output is summed in and freed before the next path runs
        if self.activation == "per_path":
            return kernels.gated_sum((self.act(conv(x)) for conv in self.paths), a)  # sum_p a_p act(conv_p(x))
        return self.act(kernels.gated_sum((conv(x) for conv in self.paths), a))  # act(sum_p a_p conv_p(x))

    @torch.no_grad()
    def reparameterize(self) -> nn.Module:
        """This block's deployed form (a new module; the block is untouched), computing the same function in eval:

        * a gate that is identically 1 (softmax or constant over one path): its convolution and the activation;
        * ``after_sum`` with the constant gate: ONE ``Conv2d`` with the averaged kernel (and bias), then the
          activation (the over-parameterised block folds to a plain convolution, as in RepVGG);
        * ``after_sum`` with an input-dependent gate: a ``DynamicConv2d`` mixing the P kernels per sample;
        * ``per_path`` otherwise: the block itself (an activation sits between each convolution and the sum, so
          it costs P convolutions deployed too).

        A bare ``Conv2d`` (no ``Sequential``) is returned when the activation is ``nn.Identity``, so that a
        BatchNorm right after it can be folded in (``gatedconv.reparameterize``).
        """
        from .dynamic import DynamicConv2d

        kmax = max(self.kernel_sizes)
        if self.gate.is_one or (self.activation == "after_sum" and self.gate.gate == "constant"):
            a = torch.full((1, self.num_paths), 1.0 / self.num_paths, dtype=self.paths[0].weight.dtype,
                           device=self.paths[0].weight.device)
            wm, bm = kernels.mixed_weight(self, a)  # (1, C_out, C_in, K, K): the mean of the padded kernels
            conv = nn.Conv2d(self.in_channels, self.out_channels, kmax, stride=self.stride, padding=kmax // 2,
                             bias=bm is not None).to(wm)
            conv.weight.copy_(wm[0])
            if bm is not None:
                conv.bias.copy_(bm[0])
            return conv if isinstance(self.act, nn.Identity) else nn.Sequential(conv, copy.deepcopy(self.act))
        if self.activation == "after_sum":
            w, b = kernels.stacked_weight(self)  # (P*C_out, C_in, K, K)
            gate = copy.deepcopy(self.gate)
            if gate.gate == "softmax" and gate.temperature != 1.0:  # softmax(z / T): fold 1 / T into the last layer
                gate.fc.weight.div_(gate.temperature)
                gate.fc.bias.div_(gate.temperature)
                gate.temperature = 1.0
            return DynamicConv2d(
                gate, w.reshape(self.num_paths, self.out_channels, self.in_channels, kmax, kmax),
                None if b is None else b.view(self.num_paths, self.out_channels),
                stride=self.stride, padding=kmax // 2, act=copy.deepcopy(self.act),
            )
        return copy.deepcopy(self)

    def choose_impl(self, x: torch.Tensor) -> str:
        """The implementation the block uses for input ``x``: ``impl``, or for ``"auto"`` the measured choice."""
        return kernels.auto_impl(self, x) if self.impl == "auto" else self.impl

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"GatedConv2d expects a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"GatedConv2d expects {self.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
            )

    def extra_repr(self) -> str:
        compiled = ", compiled_sum=True" if self.compiled_sum else ""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_sizes={self.kernel_sizes}, stride={self.stride}, "
            f"activation={self.activation!r}, impl={self.impl!r}{compiled}"
        )


# The original name of the block.
Nth_Block = GatedConv2d


def _check_arguments(in_channels: int, out_channels: int, stride: int, activation: str, impl: str) -> None:
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"channels must be >= 1, got in_channels={in_channels}, out_channels={out_channels}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if activation not in ACTIVATION_PLACEMENTS:
        raise ValueError(f"activation must be one of {ACTIVATION_PLACEMENTS}, got {activation!r}")
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if impl in kernels.AFTER_SUM_ONLY and activation != "after_sum":
        raise ValueError(f"impl={impl!r} needs activation='after_sum', got {activation!r}")


def _check_kernel_sizes(kernel_sizes: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in kernel_sizes)
    if len(ks) == 0:
        raise ValueError("kernel_sizes must name at least one path, got an empty sequence")
    for k in ks:
        if k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_sizes must be odd positive ints (padding k//2 keeps the spatial size), got {ks}")
    return ks
