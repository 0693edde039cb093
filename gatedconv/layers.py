"""Input-gated convolution: ``GatedConv2d`` (the original ``Nth_Block``) and its ``Gate``.

The block runs P parallel convolutions ("paths") over the same input and mixes their outputs with
per-sample weights computed from the input itself::

    a      = gate(x)                              # (B, P): ReLU(Linear(global-average-pool(x)))
    out    = sum_p a[:, p] * act(conv_p(x))       # activation "per_path" (the original)
    out    = act(sum_p a[:, p] * conv_p(x))       # activation "after_sum" (CondConv-style)

It is a close relative of Selective Kernel Networks (Li et al., 2019), CondConv (Yang et al., 2019) and
Dynamic Convolution (Chen et al., 2020); the original design uses an unnormalised ReLU gate.

Several implementations compute the same function (``impl=``); ``"auto"`` picks the one measured fastest
on the CPU for the input at hand (see ``scripts/bench_block.py`` and README):

* ``"reference"`` - one ``Conv2d`` per path, then the gated sum. Always available; the definition.
* ``"gemm"`` - all paths as ONE matrix multiply over unfolded patches (im2col) with ``P * C_out``
  outputs. Smaller kernels are zero-padded to the largest (exact for odd sizes). On small feature maps
  this avoids the convolution library's slow small-spatial kernels (especially in the backward pass).
* ``"dense"`` - stride 1, tiny maps: the convolution written as ONE dense matrix from the whole input map
  (H*W*C_in values) to all paths' outputs (H*W*P*C_out), gathered from the kernels (taps that fall off the
  map are zeros). On a 2x2 map with a 3x3 kernel every tap lands on the map, so it costs exactly the
  convolution's FLOPs, with no im2col/col2im copies; the backward is two plain GEMMs.
* ``"fused"`` - all paths as ONE ``conv2d`` with ``P * C_out`` outputs, then the gated sum.
* ``"stacked"`` - ``after_sum`` only: ``sum_p a_p (W_p * x) = [a_1 x, ..., a_P x] * [W_1 ... W_P]``, i.e. scale
  the input copies per sample and run one convolution with ``P * C_in`` input channels and ``C_out``
  outputs. Same FLOPs as P convolutions, but one large GEMM and a ``C_out``-sized output.
* ``"condconv"`` - ``after_sum`` only: mix the kernels per sample (``W_b = sum_p a_bp W_p``) and apply
  them with one grouped convolution (the CondConv trick; costs B x C_out x C_in x k x k memory).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Type

import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

__all__ = ["Gate", "GatedConv2d", "Nth_Block", "set_compiled_combine", "GATE_TYPES", "ACTIVATION_PLACEMENTS", "IMPLEMENTATIONS"]

GATE_TYPES = ("relu", "softmax", "sigmoid", "constant")
ACTIVATION_PLACEMENTS = ("per_path", "after_sum")
IMPLEMENTATIONS = ("auto", "reference", "fused", "gemm", "dense", "stacked", "condconv")

# "auto" uses the im2col GEMM form for feature maps with at most this many pixels (H_out * W_out), for bf16
# channels-last CPU tensors. Measured with scripts/bench_gemm.py on the 2-core AVX-512 CPU (one block, batch
# 128, forward + backward, the forms alternating step by step; two runs): 128->128 channels on a 2x2 map
# 1.44x / 1.59x faster than the reference (oneDNN's bf16 backward is slow on tiny maps), 64->128 on 4x4
# 1.08x / 1.14x, 32->64 on 8x8 0.43x / 0.45x (slower: not used there).
GEMM_MAX_PIXELS = 16
# ... and the dense form for maps of at most this many pixels (stride 1), where it wastes no FLOPs on
# off-map taps (2x2 map, 3x3 kernel). Measured with scripts/bench_gemm.py (README, "Fast implementations").
DENSE_MAX_PIXELS = 4


def _gated_sum_per_path(ys: List[torch.Tensor], a: torch.Tensor) -> torch.Tensor:
    """sum_p a[:, p] * relu(ys[p]) for a list of (B, C, H, W) path outputs and gates a (B, P)."""
    out = None
    for p, y in enumerate(ys):
        term = a[:, p, None, None, None].to(y.dtype) * F.relu(y)
        out = term if out is None else out + term
    return out


def _gated_sum(ys: Iterable[torch.Tensor], a: torch.Tensor) -> torch.Tensor:
    """sum_p a[:, p] * ys[p] over (B, C, H, W) path outputs and gates a (B, P); activations are the caller's."""
    out = None
    for p, y in enumerate(ys):
        term = a[:, p, None, None, None].to(y.dtype) * y
        out = term if out is None else out + term
    return out


_compiled_gated_sum = None
_compiled_gated_sum_after = None
_use_compiled = False


def set_compiled_combine(enabled: bool = True) -> bool:
    """Compile the gated sum of the reference form with ``torch.compile`` (one fused elementwise kernel for
    forward and one for backward instead of ~4 memory passes per path): per-path ReLU (the original) and
    ``after_sum`` (the activation then runs eagerly). Measured ~10% faster end to end for the five-block
    network on the 2-core CPU (README, "Fast implementations"; ``scripts/bench_fast.py`` for the fast recipe's
    network); first calls pay ~5 s of
    compilation per feature-map shape. Returns the previous setting. Falls back to eager if compilation fails.
    """
    global _compiled_gated_sum, _compiled_gated_sum_after, _use_compiled
    previous = _use_compiled
    if enabled and _compiled_gated_sum is None:
        _compiled_gated_sum = torch.compile(_gated_sum_per_path)
        _compiled_gated_sum_after = torch.compile(_gated_sum)
    _use_compiled = bool(enabled)
    return previous


class Gate(nn.Module):
    """Per-sample path weights: ``x (B, C, H, W) -> a (B, P)``.

    ``gate="relu"`` is the original ``ReLU(Linear(avgpool(x)))``; ``"softmax"`` normalises over paths
    (divided by ``temperature`` first); ``"sigmoid"`` squashes each weight into (0, 1); ``"constant"``
    ignores the input and weights every path ``1 / P`` (the "no gating" control).
    """

    def __init__(
        self,
        in_channels: int,
        num_paths: int = 3,
        gate: str = "relu",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if gate not in GATE_TYPES:
            raise ValueError(f"gate must be one of {GATE_TYPES}, got {gate!r}")
        if num_paths < 1:
            raise ValueError(f"num_paths must be >= 1, got {num_paths}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.in_channels = in_channels
        self.num_paths = num_paths
        self.gate = gate
        self.temperature = float(temperature)
        self.fc = nn.Linear(in_channels, num_paths)
        if gate == "constant" or self.is_one:
            # weights that cannot change the output do not train: the constant gate ignores its input and a
            # softmax over one path is identically 1. Frozen, DistributedDataParallel does not wait for their
            # gradients (it raised "parameters that were not used in producing loss" on the 2nd step)
            self.fc.requires_grad_(False)

    @property
    def is_one(self) -> bool:
        """True when the gate is identically 1 whatever the input: a softmax or constant gate over one path."""
        return self.num_paths == 1 and self.gate in ("softmax", "constant")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate == "constant":
            return x.new_full((x.shape[0], self.num_paths), 1.0 / self.num_paths)
        s = reduce(x, "b c h w -> b c", "mean")  # (B, C)
        z = self.fc(s)  # (B, P)
        if self.gate == "relu":
            return F.relu(z)
        if self.gate == "sigmoid":
            return torch.sigmoid(z)
        return torch.softmax(z / self.temperature, dim=1)

    def extra_repr(self) -> str:
        t = f", temperature={self.temperature}" if self.gate == "softmax" else ""
        return f"{self.in_channels}, num_paths={self.num_paths}, gate={self.gate!r}{t}"


def _check_kernel_sizes(kernel_sizes: Sequence[int]) -> tuple:
    ks = tuple(int(k) for k in kernel_sizes)
    if len(ks) == 0:
        raise ValueError("kernel_sizes must name at least one path, got an empty sequence")
    for k in ks:
        if k < 1 or k % 2 == 0:
            raise ValueError(
                f"kernel_sizes must be odd positive ints (padding k//2 keeps the spatial size), got {ks}"
            )
    return ks


class _DenseKernel(torch.autograd.Function):
    """Kernels (P*C_out, C_in, K, K) -> the dense matrix of the stride-1 'same' convolution over an H x W map,
    rows (input pixel, C_in), columns (output pixel, P*C_out).

    Output pixel (oy, ox) reads input (iy, ix) through tap (iy - oy + K//2, ix - ox + K//2). With the kernel
    zero-padded by H-1 / W-1 (off-kernel taps read zeros), an output pixel's taps over the whole map are one
    H x W window of the padded kernel. Written as a Function because autograd's backward of H*W slices
    materialises H*W full-size zero tensors; here the windows are summed into one padded gradient.
    """

    @staticmethod
    def _starts(h: int, w: int, k: int):
        return [(oy * w + ox, h - 1 + k // 2 - oy, w - 1 + k // 2 - ox) for oy in range(h) for ox in range(w)]

    @staticmethod
    def forward(ctx, weight: torch.Tensor, h: int, w: int) -> torch.Tensor:
        pc, c_in, k, _ = weight.shape
        ctx.shape = (h, w, pc, c_in, k)
        # (H_pad, W_pad, C_in, P*C_out): pixels outermost so every window copy moves whole (C_in, P*C_out) planes
        wp = F.pad(weight, (w - 1, w - 1, h - 1, h - 1)).permute(2, 3, 1, 0).contiguous()
        big = weight.new_empty(h, w, c_in, h * w, pc)  # (H_in, W_in, C_in, HW_out, P*C_out)
        for o, sy, sx in _DenseKernel._starts(h, w, k):
            big[:, :, :, o, :] = wp[sy:sy + h, sx:sx + w]
        return big.view(h * w * c_in, h * w * pc)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, w, pc, c_in, k = ctx.shape
        g = grad.reshape(h, w, c_in, h * w, pc)
        gp = grad.new_zeros(k + 2 * (h - 1), k + 2 * (w - 1), c_in, pc)  # (H_pad, W_pad, C_in, P*C_out)
        for o, sy, sx in _DenseKernel._starts(h, w, k):
            gp[sy:sy + h, sx:sx + w] += g[:, :, :, o, :]
        gw = gp[h - 1:h - 1 + k, w - 1:w - 1 + k].permute(3, 2, 0, 1).contiguous()  # (P*C_out, C_in, K, K)
        return gw, None, None


class GatedConv2d(nn.Module):
    """Input-gated sum of parallel convolutions (the original ``Nth_Block``).

    Args:
        in_channels: channels of the input ``x`` (B, C_in, H, W).
        out_channels: channels of the output.
        kernel_sizes: one odd kernel size per path; ``(3, 3, 3)`` is the original. Padding ``k // 2`` keeps
            the spatial size at stride 1, so paths of different sizes can be summed.
        stride: stride of every path.
        gate: ``"relu"`` (original), ``"softmax"``, ``"sigmoid"`` or ``"constant"`` (no gating).
        temperature: softmax temperature (only used by ``gate="softmax"``).
        activation: ``"per_path"`` (original: activation on each path before the gated sum) or
            ``"after_sum"`` (one activation after the gated sum).
        act_layer: activation class, instantiated once; ``nn.ReLU`` in the original.
        bias: whether the path convolutions have a bias.
        impl: which implementation computes the block; ``"auto"`` chooses (see module docstring).
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
        activation: str = "per_path",
        act_layer: Type[nn.Module] = nn.ReLU,
        bias: bool = True,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, got in_channels={in_channels}, out_channels={out_channels}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if activation not in ACTIVATION_PLACEMENTS:
            raise ValueError(f"activation must be one of {ACTIVATION_PLACEMENTS}, got {activation!r}")
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
        if impl in ("stacked", "condconv") and activation != "after_sum":
            raise ValueError(f"impl={impl!r} needs activation='after_sum', got {activation!r}")
        self.kernel_sizes = _check_kernel_sizes(kernel_sizes)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.activation = activation
        self.impl = impl
        self.num_paths = len(self.kernel_sizes)
        self.gate = Gate(in_channels, self.num_paths, gate, temperature)
        self.paths = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, k, stride=stride, padding=k // 2, bias=bias)
            for k in self.kernel_sizes
        )
        self.act = act_layer()
        self.record_gates = False  # set True (or use gatedconv.analysis) to keep the last gate values
        self.last_gates: Optional[torch.Tensor] = None

    # ----------------------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"GatedConv2d expects a 4-D input (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"GatedConv2d expects {self.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
            )

    def _stacked_weight(self) -> tuple:
        """All path kernels zero-padded to the largest size: (P * C_out, C_in, K, K) and bias (P * C_out,)."""
        kmax = max(self.kernel_sizes)
        ws = []
        for conv, k in zip(self.paths, self.kernel_sizes):
            p = (kmax - k) // 2
            ws.append(F.pad(conv.weight, (p, p, p, p)) if p else conv.weight)
        w = torch.cat(ws, 0)  # (P * C_out, C_in, K, K)
        b = torch.cat([c.bias for c in self.paths], 0) if self.paths[0].bias is not None else None
        return w, b

    def choose_impl(self, x: torch.Tensor) -> str:
        """The implementation ``impl="auto"`` uses for input ``x`` (decided from shapes only)."""
        if self.impl != "auto":
            return self.impl
        if self.num_paths == 1:
            return "reference"
        kmax = max(self.kernel_sizes)
        equal = len(set(self.kernel_sizes)) == 1
        h = (x.shape[2] + 2 * (kmax // 2) - kmax) // self.stride + 1
        w = (x.shape[3] + 2 * (kmax // 2) - kmax) // self.stride + 1
        # measured (README, "Fast implementations"): the GEMM form wins only with bf16 on channels-last CPU
        # tensors (1.6x for the network); in fp32 or NCHW the unfold costs more than it saves
        bf16 = x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                             and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        fast_cpu = x.device.type == "cpu" and bf16 and x.is_contiguous(memory_format=torch.channels_last)
        if fast_cpu and self.stride == 1 and h * w <= DENSE_MAX_PIXELS:
            return "dense"
        if fast_cpu and equal and h * w <= GEMM_MAX_PIXELS:
            return "gemm"
        return "reference"

    def _combine(self, y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Gated sum over paths of y (B, P, C, H, W) with a (B, P); activation per the placement."""
        a = a.to(y.dtype)[:, :, None, None, None]  # (B, P, 1, 1, 1)
        if self.activation == "per_path":
            return (self.act(y) * a).sum(1)
        return self.act((y * a).sum(1))

    def _forward_reference(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        # compiled only when training: the gain is the fused backward; in no-grad evaluation the eager sum is
        # close, and compiling inference graphs (new batch sizes too) would only add start-up time. Only for
        # gates that learn: with a constant gate (no gradient into ``a``) the compiled kernels ran ~2x slower
        # end to end than eager (600 vs 1,200 img/s in the 5-epoch ablation, profile in the session-2 notes)
        if _use_compiled and torch.is_grad_enabled() and a.requires_grad:
            if self.activation == "per_path" and isinstance(self.act, nn.ReLU):
                return _compiled_gated_sum([conv(x) for conv in self.paths], a)
            if self.activation == "after_sum":
                return self.act(_compiled_gated_sum_after([conv(x) for conv in self.paths], a))
        # eager: a generator, so each path's output is summed in and freed before the next path runs
        if self.activation == "per_path":
            return _gated_sum((self.act(conv(x)) for conv in self.paths), a)
        return self.act(_gated_sum((conv(x) for conv in self.paths), a))

    def _forward_fused(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        w, b = self._stacked_weight()
        kmax = max(self.kernel_sizes)
        y = F.conv2d(x, w, b, stride=self.stride, padding=kmax // 2)  # (B, P * C_out, H', W')
        bsz, _, h, wd = y.shape
        y = y.reshape(bsz, self.num_paths, self.out_channels, h, wd)  # (B, P, C_out, H', W')
        return self._combine(y, a)

    def _forward_gemm(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        w, b = self._stacked_weight()
        kmax = max(self.kernel_sizes)
        bsz, _, hin, win = x.shape
        h = (hin + 2 * (kmax // 2) - kmax) // self.stride + 1
        wd = (win + 2 * (kmax // 2) - kmax) // self.stride + 1
        cols = F.unfold(x, kmax, padding=kmax // 2, stride=self.stride)  # (B, C_in*K*K, L)
        cols = cols.transpose(1, 2)  # (B, L, C_in*K*K)
        wm = w.flatten(1).t()  # (C_in*K*K, P*C_out)
        if b is not None:
            y = torch.addmm(b, cols.reshape(-1, cols.shape[-1]), wm)  # (B*L, P*C_out)
        else:
            y = cols.reshape(-1, cols.shape[-1]) @ wm
        # (B*L, P*C_out) -> (B, L, P, C_out): the gated sum runs over the P axis of this channels-last layout
        y = y.view(bsz, h * wd, self.num_paths, self.out_channels)
        at = a.to(y.dtype)[:, None, :, None]  # (B, 1, P, 1)
        if self.activation == "per_path":
            out = (self.act(y) * at).sum(2)
        else:
            out = self.act((y * at).sum(2))
        # (B, L, C_out) -> (B, C_out, H', W') as a channels-last view (no copy)
        return out.view(bsz, h, wd, self.out_channels).permute(0, 3, 1, 2)

    def _forward_dense(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            raise ValueError(f"impl='dense' needs stride 1, got {self.stride}")
        w, b = self._stacked_weight()  # (P*C_out, C_in, K, K)
        if torch.is_autocast_enabled(x.device.type):
            w = w.to(torch.get_autocast_dtype(x.device.type))  # build the big matrix at half the bytes
        bsz, c_in, h, wd = x.shape
        pc, k = w.shape[0], w.shape[-1]
        # output pixel (oy, ox) reads input (iy, ix) through tap (iy - oy + k//2, ix - ox + k//2): after padding
        # the kernel by H-1 / W-1 (off-kernel taps are zeros), its taps over the whole map are one H x W window
        big = _DenseKernel.apply(w, h, wd)  # (H*W*C_in, H*W*P*C_out)
        xf = x.permute(0, 2, 3, 1).reshape(bsz, h * wd * c_in)  # (B, HW*C_in): a view when channels-last
        if b is not None:
            y = torch.addmm(b.repeat(h * wd), xf, big)  # (B, HW*P*C_out)
        else:
            y = xf @ big
        y = y.view(bsz, h * wd, self.num_paths, self.out_channels)  # (B, L, P, C_out)
        at = a.to(y.dtype)[:, None, :, None]  # (B, 1, P, 1)
        if self.activation == "per_path":
            out = (self.act(y) * at).sum(2)
        else:
            out = self.act((y * at).sum(2))
        return out.view(bsz, h, wd, self.out_channels).permute(0, 3, 1, 2)  # channels-last (B, C_out, H, W)

    def _forward_stacked(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        kmax = max(self.kernel_sizes)
        w, b = self._stacked_weight()  # (P*C_out, C_in, K, K)
        # (P*C_out, C_in, K, K) -> (C_out, P*C_in, K, K): path p's kernel sees input copy p
        w = w.view(self.num_paths, self.out_channels, self.in_channels, kmax, kmax).transpose(0, 1)
        w = w.reshape(self.out_channels, self.num_paths * self.in_channels, kmax, kmax)
        xs = (x.unsqueeze(1) * a.to(x.dtype)[:, :, None, None, None]).flatten(1, 2)  # (B, P*C_in, H, W)
        y = F.conv2d(xs, w, None, stride=self.stride, padding=kmax // 2)
        if b is not None:
            bias = a.to(b.dtype) @ b.view(self.num_paths, self.out_channels)  # (B, C_out)
            y = y + bias.to(y.dtype)[:, :, None, None]
        return self.act(y)

    def _forward_condconv(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        kmax = max(self.kernel_sizes)
        w, b = self._stacked_weight()
        bsz = x.shape[0]
        wp = w.reshape(self.num_paths, -1)  # (P, C_out*C_in*K*K); reshape: channels-last weights are not views
        wb = (a.to(wp.dtype) @ wp).view(bsz * self.out_channels, self.in_channels, kmax, kmax)  # per-sample kernels
        y = F.conv2d(
            x.reshape(1, bsz * self.in_channels, *x.shape[2:]), wb, None,
            stride=self.stride, padding=kmax // 2, groups=bsz,
        )
        y = y.view(bsz, self.out_channels, *y.shape[2:])
        if b is not None:
            y = y + (a.to(b.dtype) @ b.view(self.num_paths, self.out_channels)).to(y.dtype)[:, :, None, None]
        return self.act(y)

    def forward(self, x: torch.Tensor, return_gates: bool = False):
        self._check_input(x)
        if self.gate.is_one and not (return_gates or self.record_gates):
            # a softmax or constant gate over one path is identically 1, so the block is its convolution: skip the
            # gate and the multiply by 1 (an extra pass over the output each way), so a one-path network costs
            # exactly its plain convolutions (the speedrun's airbench94 reference, `--paths 3`)
            return self.act(self.paths[0](x))
        a = self.gate(x)  # (B, P)
        if self.record_gates:
            self.last_gates = a.detach()
        impl = self.choose_impl(x)
        if impl == "reference":
            out = self._forward_reference(x, a)
        elif impl == "fused":
            out = self._forward_fused(x, a)
        elif impl == "gemm":
            out = self._forward_gemm(x, a)
        elif impl == "dense":
            out = self._forward_dense(x, a)
        elif impl == "stacked":
            out = self._forward_stacked(x, a)
        else:
            out = self._forward_condconv(x, a)
        return (out, a) if return_gates else out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_sizes={self.kernel_sizes}, stride={self.stride}, "
            f"activation={self.activation!r}, impl={self.impl!r}"
        )


# The original name of the block.
Nth_Block = GatedConv2d
