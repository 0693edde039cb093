"""Input-gated convolution: ``GatedConv2d`` (the original ``Nth_Block``) and its ``Gate``.

The block runs P parallel convolutions ("paths") over the same input and mixes their outputs with per-sample
weights computed from the input itself::

    a      = gate(x)                              # (B, P): ReLU(Linear(global-average-pool(x)))
    out    = sum_p a[:, p] * act(conv_p(x))       # activation "per_path" (the original)
    out    = act(sum_p a[:, p] * conv_p(x))       # activation "after_sum" (CondConv-style)

It is a close relative of Selective Kernel Networks (Li et al., 2019, arXiv:1903.06586), CondConv (Yang et al.,
2019, arXiv:1904.04971) and Dynamic Convolution (Chen et al., 2020, arXiv:1912.03458); the original design uses
an unnormalised ReLU gate.

The block takes ``nn.Conv2d``'s arguments (kernel size, stride, padding, dilation, groups, bias, padding mode), so
it can stand in for a convolution; ``gatedconv.convert`` puts it in place of the convolutions of a whole model.

This file is the definition: ``impl="reference"`` computes the formula as written, one ``Conv2d`` per path.
Faster forms of the same function (``"fused"``, ``"gemm"``, ``"dense"``, ``"stacked"``, ``"condconv"``,
``"mixed"``, ``"mixed_gemm"``), the compiled gated sum and the rule ``impl="auto"`` follows live in
``gatedconv.kernels``.
"""
from __future__ import annotations

import copy
import numbers
import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels

__all__ = [
    "ACTIVATION_PLACEMENTS",
    "GATE_TYPES",
    "IMPLEMENTATIONS",
    "PADDING_MODES",
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
    """Input-gated sum of parallel convolutions (the original ``Nth_Block``), a drop-in for ``nn.Conv2d``.

    The first eleven arguments are ``nn.Conv2d``'s, in its order, so ``GatedConv2d(**conv_kwargs)`` builds a gated
    block with the convolution's geometry (groups, dilation, tuples, ``padding="same"``, ``padding_mode``); the
    gating knobs are keyword-only. Unlike ``nn.Conv2d``, ``padding`` defaults to None ("same size": each path
    padded by ``dilation * (k // 2)``), which is what the block has always done; pass ``padding=0`` for
    ``nn.Conv2d``'s default.

    Args:
        in_channels: channels of the input ``x`` (B, C_in, H, W).
        out_channels: channels of the output.
        kernel_size: an int or (kH, kW): the kernel of each of the ``num_paths`` paths (default 3; not together
            with ``kernel_sizes``).
        stride, dilation: an int or a pair, as ``nn.Conv2d``; every path.
        padding: None (default: same size, ``dilation * (k // 2)`` per path; odd kernels), ``"same"`` (the same,
            as ``nn.Conv2d``: stride 1 only), ``"valid"`` (none), an int or a pair (every path; the paths must then
            have one kernel size, so that their outputs have one size).
        groups: as ``nn.Conv2d``: ``in_channels`` and ``out_channels`` divisible by it (``groups=in_channels``:
            depthwise); every path.
        bias: whether the path convolutions have a bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``, as ``nn.Conv2d``.
        device, dtype: where and in which dtype the parameters are made.
        num_paths: how many paths (P), each with ``kernel_size`` (default 3; with ``kernel_sizes``, its length).
        kernel_sizes: one kernel size per path instead (an int or a pair each; ``(1, 3, 5)`` mixes sizes); its
            length is the number of paths. The original block is ``kernel_sizes=(3, 3, 3)``, the default.
        gate: ``"relu"`` (original), ``"softmax"``, ``"sigmoid"`` or ``"constant"`` (no gating).
        temperature: softmax temperature (only used by ``gate="softmax"``).
        rd_ratio: the gate's hidden layer, ``C_in * rd_ratio`` units (``Gate``); None (default): no hidden layer.
        activation: ``"per_path"`` (original: activation on each path before the gated sum) or ``"after_sum"``
            (one activation after the gated sum).
        act_layer: activation class, instantiated once; ``nn.ReLU`` in the original (``nn.Identity``: none, as a
            plain convolution).
        impl: which implementation computes the block: ``"reference"`` (the definition), one of the forms in
            ``gatedconv.kernels``, or ``"auto"`` (chosen per input by ``gatedconv.kernels.auto_impl``). A form
            that cannot compute the block's geometry is refused with a ``ValueError``
            (``block.unsupported_impls`` says which and why); ``"auto"`` never picks one.
        compiled_sum: run the reference form's gated sum through ``torch.compile`` in training steps (see
            ``gatedconv.kernels.compiled_sum`` to set it on a whole model).

    Attributes in ``nn.Conv2d``'s terms: ``kernel_size`` (the largest kernel, per dimension: every path's kernel
    zero-padded to it, centred, computes the same), ``stride``, ``padding`` (that kernel's padding, a pair),
    ``dilation``, ``groups``, ``padding_mode``. State dict: ``gate.fc.*`` (and ``gate.hidden.*``) and
    ``paths.N.weight`` / ``paths.N.bias``, one ``nn.Conv2d`` per path.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] | None = None,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        num_paths: int | None = None,
        kernel_sizes: Sequence[int | tuple[int, int]] | None = None,
        gate: str = "relu",
        temperature: float = 1.0,
        rd_ratio: float | None = None,
        activation: str = "per_path",
        act_layer: type[nn.Module] = nn.ReLU,
        impl: str = "auto",
        compiled_sum: bool = False,
    ) -> None:
        super().__init__()
        _check_arguments(in_channels, out_channels, groups, padding_mode, activation, impl)
        kernels_hw, self.kernel_sizes = _check_kernel_sizes(kernel_size, num_paths, kernel_sizes)
        self.stride = _pair("stride", stride, 1)
        self.dilation = _pair("dilation", dilation, 1)
        path_paddings, self.padding = _paddings(padding, kernels_hw, self.kernel_sizes, self.stride, self.dilation)
        self.kernel_size = (max(kh for kh, _ in kernels_hw), max(kw for _, kw in kernels_hw))
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = int(groups)
        self.padding_mode = padding_mode
        self._padding_arg = padding if isinstance(padding, str) or padding is None else self.padding
        self.activation = activation
        self.compiled_sum = bool(compiled_sum)
        self.num_paths = len(self.kernel_sizes)
        self.gate = Gate(in_channels, self.num_paths, gate, temperature, rd_ratio=rd_ratio)
        self.paths = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, k, stride=self.stride, padding=p, dilation=self.dilation,
                      groups=self.groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
            for k, p in zip(kernels_hw, path_paddings)
        )
        self.act = act_layer()
        if device is not None or dtype is not None:  # the paths are made there; the gate (small) is moved
            self.gate.to(device=device, dtype=dtype)
            self.act.to(device=device, dtype=dtype)
        # impl name -> why this block's geometry rules the form out (fixed at construction, like the geometry)
        self.unsupported_impls: dict[str, str] = kernels.unsupported_forms(self)
        self.impl = impl
        if impl in self.unsupported_impls:
            raise ValueError(f"impl={impl!r} cannot compute this block: {self.unsupported_impls[impl]}")
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
        * ``after_sum`` with an input-dependent gate: a ``DynamicConv2d`` mixing the P kernels per sample (square
          kernels, strides and paddings, no groups, no dilation, zero padding; any other such block stays as it is);
        * ``per_path`` otherwise: the block itself (an activation sits between each convolution and the sum, so
          it costs P convolutions deployed too).

        A bare ``Conv2d`` (no ``Sequential``) is returned when the activation is ``nn.Identity``, so that a
        BatchNorm right after it can be folded in (``gatedconv.reparameterize``).
        """
        from .dynamic import DynamicConv2d

        if self.gate.is_one or (self.activation == "after_sum" and self.gate.gate == "constant"):
            a = torch.full((1, self.num_paths), 1.0 / self.num_paths, dtype=self.paths[0].weight.dtype,
                           device=self.paths[0].weight.device)
            wm, bm = kernels.mixed_weight(self, a)  # (1, C_out, C_in/groups, kH, kW): the mean of the padded kernels
            conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, groups=self.groups,
                             bias=bm is not None, padding_mode=self.padding_mode).to(wm)
            conv.weight.copy_(wm[0])
            if bm is not None:
                conv.bias.copy_(bm[0])
            return conv if isinstance(self.act, nn.Identity) else nn.Sequential(conv, copy.deepcopy(self.act))
        if self.activation == "after_sum" and self._dynamic_conv_fits():
            w, b = kernels.stacked_weight(self)  # (P*C_out, C_in, K, K)
            gate = copy.deepcopy(self.gate)
            if gate.gate == "softmax" and gate.temperature != 1.0:  # softmax(z / T): fold 1 / T into the last layer
                gate.fc.weight.div_(gate.temperature)
                gate.fc.bias.div_(gate.temperature)
                gate.temperature = 1.0
            return DynamicConv2d(
                gate, w.reshape(self.num_paths, self.out_channels, *w.shape[1:]),
                None if b is None else b.view(self.num_paths, self.out_channels),
                stride=self.stride[0], padding=self.padding[0], act=copy.deepcopy(self.act),
            )
        return copy.deepcopy(self)

    def _dynamic_conv_fits(self) -> bool:
        """Whether ``DynamicConv2d`` (square kernels, strides and paddings; no groups, dilation or padding mode)
        can hold this block; an ``after_sum`` block it cannot hold is deployed as it is."""
        square = all(v[0] == v[1] for v in (self.kernel_size, self.stride, self.padding))
        return square and self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"

    def choose_impl(self, x: torch.Tensor) -> str:
        """The implementation the block uses for input ``x``: ``impl``, or for ``"auto"`` the measured choice."""
        if self.impl == "auto":
            return kernels.auto_impl(self, x)
        # impl set after construction (which refuses both of these)
        if self.impl in self.unsupported_impls:
            raise ValueError(f"impl={self.impl!r} cannot compute this block: {self.unsupported_impls[self.impl]}")
        if self.impl in kernels.AFTER_SUM_ONLY and self.activation != "after_sum":
            raise ValueError(f"impl={self.impl!r} needs activation='after_sum', got {self.activation!r}")
        return self.impl

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"GatedConv2d expects a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"GatedConv2d expects {self.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
            )

    def extra_repr(self) -> str:
        def show(v):  # a square pair as one int, as the block's arguments are usually written
            return v[0] if isinstance(v, tuple) and v[0] == v[1] else v

        geometry = "".join(
            f", {name}={value!r}" for name, value, default in (
                ("padding", show(self._padding_arg), None), ("dilation", show(self.dilation), 1),
                ("groups", self.groups, 1), ("padding_mode", self.padding_mode, "zeros"),
            ) if value != default
        )
        compiled = ", compiled_sum=True" if self.compiled_sum else ""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_sizes={self.kernel_sizes}, stride={show(self.stride)}"
            f"{geometry}, activation={self.activation!r}, impl={self.impl!r}{compiled}"
        )


# The original name of the block.
Nth_Block = GatedConv2d

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _check_arguments(in_channels: int, out_channels: int, groups: int, padding_mode: str, activation: str,
                     impl: str) -> None:
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"channels must be >= 1, got in_channels={in_channels}, out_channels={out_channels}")
    _int("groups", groups, 1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by "
                         f"groups ({groups})")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if activation not in ACTIVATION_PLACEMENTS:
        raise ValueError(f"activation must be one of {ACTIVATION_PLACEMENTS}, got {activation!r}")
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
    if impl in kernels.AFTER_SUM_ONLY and activation != "after_sum":
        raise ValueError(f"impl={impl!r} needs activation='after_sum', got {activation!r}")


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _pair(name: str, value, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``minimum``, as a pair (as ``nn.Conv2d`` takes its geometry)."""
    v = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    try:
        if len(v) != 2 or any(isinstance(i, bool) for i in v):
            raise TypeError
        v = tuple(operator.index(i) for i in v)  # ints, numpy ints; not floats
    except TypeError:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if min(v) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return v


def _check_kernel_sizes(kernel_size, num_paths, kernel_sizes) -> tuple[tuple, tuple]:
    """Per path (kH, kW), and the sizes as the block shows them (an int for a square kernel, else the pair)."""
    if kernel_sizes is None:
        n = _int("num_paths", 3 if num_paths is None else num_paths, 1)
        hw = (_pair("kernel_size", 3 if kernel_size is None else kernel_size, 1),) * n
    else:
        if isinstance(kernel_sizes, (int, str)):
            raise ValueError(f"kernel_sizes must be a sequence, one kernel size per path, got {kernel_sizes!r}")
        hw = tuple(_pair("kernel_sizes", k, 1) for k in kernel_sizes)
        if len(hw) == 0:
            raise ValueError("kernel_sizes must name at least one path, got an empty sequence")
        if num_paths is not None and num_paths != len(hw):
            raise ValueError(f"num_paths={num_paths} disagrees with kernel_sizes ({len(hw)} paths); give one of them")
        if kernel_size is not None:
            raise ValueError(f"give kernel_size or kernel_sizes, not both (kernel_size={kernel_size!r}, "
                             f"kernel_sizes={tuple(kernel_sizes)!r})")
    return hw, tuple(kh if kh == kw else (kh, kw) for kh, kw in hw)


def _paddings(padding, hw: tuple, shown: tuple, stride: tuple, dilation: tuple) -> tuple[list, tuple[int, int]]:
    """Each path's padding, and the padding of the largest kernel (every path's kernel zero-padded to it)."""
    (dh, dw), kh, kw = dilation, max(k[0] for k in hw), max(k[1] for k in hw)
    if padding is None or padding == "same":
        if padding == "same" and stride != (1, 1):
            raise ValueError(f"padding='same' needs stride 1 (as nn.Conv2d), got stride={stride}; use padding=None "
                             "(k // 2 per path) for a strided block")
        if any(k % 2 == 0 for pair in hw for k in pair):
            raise ValueError(f"kernel_sizes must be odd for padding={padding!r} (k // 2 on each side keeps the "
                             f"spatial size), got {shown}; give an explicit padding for even kernels")
        return [(dh * (h // 2), dw * (w // 2)) for h, w in hw], (dh * (kh // 2), dw * (kw // 2))
    if isinstance(padding, str):
        if padding != "valid":
            raise ValueError(f"padding must be None, 'same', 'valid', an int or a pair of ints, got {padding!r}")
        pad = (0, 0)
    else:
        pad = _pair("padding", padding, 0)
    if len(set(hw)) > 1:
        raise ValueError(f"padding={padding!r} needs one kernel size for every path (their outputs must have one "
                         f"size), got kernel_sizes={shown}; use padding=None (k // 2 per path)")
    return [pad] * len(hw), pad
