"""``DynamicConv2d``: the deployed form of an input-gated ``after_sum`` block.

CondConv (Yang et al. 2019, arXiv:1904.04971) and Dynamic Convolution (Chen et al. 2020, arXiv:1912.03458)
mix K kernels per sample with the gate and then run ONE convolution::

    a   = gate(x)                                  # (B, K)
    W_b = sum_k a[b, k] W_k,  b_b = sum_k a[b, k] bias_k
    out = act(conv(x_b, W_b) + b_b)  [+ post_bias]

which is ``GatedConv2d(..., activation="after_sum")`` computed in the other order. The layer holds the K kernels
as one matrix (K, C_out*k*k*C_in), rows in the channels-last order (O, kH, kW, I), so mixing is one matrix
multiply and its result is a channels-last kernel without a copy (the package runs channels-last; an NCHW input
costs the convolution one copy of the mixed kernel). ``model.to(memory_format=...)`` leaves the matrix alone.
The block's ``Gate`` is kept, with a softmax temperature folded into its last layer.
``post_bias`` (per output channel, not mixed) is where a BatchNorm folded into the layer puts its shift.

How the mixed kernels are applied (``impl``; every form computes the same function, proved against
``GatedConv2d``'s reference form in the tests):

* ``"conv"`` - plain ``conv2d`` with each sample's kernel (one call at batch 1): one convolution's FLOPs.
* ``"bmm"`` - one batched matrix multiply over unfolded patches: one convolution's FLOPs at any batch size.
* ``"grouped"`` - one grouped convolution, a group per sample (CondConv's trick).
* ``"output"`` - the K kernels unmixed as one convolution with K * C_out outputs, then the per-sample sum: K
  convolutions' FLOPs, but no per-sample kernels in memory (at batch 128 the mixed kernels of the network's last
  block are 150 MB of fp32).
* ``"auto"`` - the measured choice (``auto_impl``; ``benchmarks/bench_infer.py``).
"""
from __future__ import annotations

import torch
from torch import nn

from . import kernels

__all__ = ["DynamicConv2d", "DYNAMIC_IMPLEMENTATIONS"]

DYNAMIC_IMPLEMENTATIONS = ("auto", "conv", "bmm", "grouped", "output")

# "auto" (see auto_impl) for batches of more than one sample: the grouped convolution on maps of at least this many
# output pixels, the output-mixing form below it, where the per-sample kernels would cost as much memory traffic
# as the convolution itself (the last blocks: 4x4 and 2x2 maps). Measured with benchmarks/bench_infer.py --layers
# (fp32, eval, 2-core AVX-512 CPU).
GROUPED_MIN_PIXELS = 64


class DynamicConv2d(nn.Module):
    """K kernels mixed per sample by ``gate``, then one convolution and the activation.

    Args:
        gate: the module computing the (B, K) mixing weights from the input (a ``gatedconv.Gate``).
        weight: (K, C_out, C_in, k, k) kernels; bias: (K, C_out) or None.
        stride, padding: of the convolution.
        act: the activation module after the convolution (``nn.Identity()`` for none).
        impl: how the mixed kernels are applied (see the module docstring).
    """

    def __init__(
        self,
        gate: nn.Module,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        stride: int = 1,
        padding: int = 0,
        act: nn.Module | None = None,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if weight.dim() != 5:
            raise ValueError(f"weight must be (K, C_out, C_in, k, k), got shape {tuple(weight.shape)}")
        if impl not in DYNAMIC_IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {DYNAMIC_IMPLEMENTATIONS}, got {impl!r}")
        self.gate = gate
        self.kernel_shape = tuple(weight.shape[1:])  # (C_out, C_in, k, k)
        # (K, C_out, C_in, k, k) -> (K, C_out*k*k*C_in): each row a kernel in channels-last order
        self.weight = nn.Parameter(weight.detach().permute(0, 1, 3, 4, 2).reshape(weight.shape[0], -1).clone())
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.post_bias: nn.Parameter | None = None
        self.stride, self.padding = int(stride), int(padding)
        self.act = act if act is not None else nn.Identity()
        self.impl = impl

    @property
    def num_kernels(self) -> int:
        return self.weight.shape[0]

    @property
    def in_channels(self) -> int:
        return self.kernel_shape[1]

    @property
    def out_channels(self) -> int:
        return self.kernel_shape[0]

    def kernels(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """The K kernels (or rows ``w`` of mixed ones) as an (N, C_out, C_in, k, k) view, channels-last strided."""
        w = self.weight if w is None else w
        c_out, c_in, kh, kw = self.kernel_shape
        return w.view(w.shape[0], c_out, kh, kw, c_in).permute(0, 1, 4, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.gate(x)  # (B, K)
        impl = auto_impl(self, x) if self.impl == "auto" else self.impl
        if impl == "output":
            y = kernels.conv_output_mix(x, self.kernels(), self.bias, a, self.stride, self.padding)
        else:
            wm = self.kernels(a.to(self.weight.dtype) @ self.weight)  # (B, C_out, C_in, k, k)
            bm = a.to(self.bias.dtype) @ self.bias if self.bias is not None else None  # (B, C_out)
            apply = {"conv": kernels.conv_per_sample, "bmm": kernels.conv_bmm, "grouped": kernels.conv_grouped}[impl]
            y = apply(x, wm, bm, self.stride, self.padding)
        if self.post_bias is not None:
            y = y + self.post_bias.to(y.dtype)[:, None, None]
        return self.act(y)

    @torch.no_grad()
    def fold_batchnorm(self, bn: nn.BatchNorm2d) -> None:
        """Fold an eval-mode BatchNorm that directly follows this layer (its activation must be the identity):
        BN(sum_k a_k (W_k x + b_k)) = sum_k a_k (s W_k x + s b_k) + (beta - s mu), s = gamma / sqrt(var + eps)."""
        if not isinstance(self.act, nn.Identity):
            raise ValueError("a BatchNorm can be folded into a DynamicConv2d only when no activation comes between")
        s, shift = _bn_affine(bn)
        self.weight.view(self.num_kernels, self.out_channels, -1).mul_(s.view(1, -1, 1))  # rows are (O, ...)
        if self.bias is not None:
            self.bias.mul_(s.view(1, -1))
        post = shift if self.post_bias is None else self.post_bias * s + shift
        self.post_bias = nn.Parameter(post)

    def extra_repr(self) -> str:
        k, (c_out, c_in, kh, _) = self.num_kernels, self.kernel_shape
        return (f"{c_in}, {c_out}, num_kernels={k}, kernel_size={kh}, stride={self.stride}, padding={self.padding}, "
                f"impl={self.impl!r}")


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm2d as ``y = s * x + shift`` per channel."""
    s = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight
    shift = -bn.running_mean * s
    if bn.bias is not None:
        shift = shift + bn.bias
    return s, shift


def auto_impl(layer: DynamicConv2d, x: torch.Tensor) -> str:
    """The form ``impl="auto"`` uses for ``x`` (from its shape only): one convolution with the mixed kernel for a
    single sample; for a batch, the grouped convolution on large maps and output mixing on small ones."""
    if x.shape[0] == 1:
        return "conv"
    h, w = kernels._conv_out_size(x.shape[2], x.shape[3], layer.kernel_shape[-2:], layer.stride, layer.padding)
    return "grouped" if h * w >= GROUPED_MIN_PIXELS else "output"
