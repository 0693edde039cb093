"""Faster forms of ``GatedConv2d``'s function, the compiled gated sum, and the rule ``impl="auto"`` follows.

``gatedconv.layers.GatedConv2d`` holds the definition (one ``Conv2d`` per path, then the gated sum). Every form
here computes the same function from the block's own weights; each takes the block as its first argument
(``form(block, x, a)`` with the gate values ``a`` of shape (B, P)) and returns the block's output:

* ``gemm`` - all paths as ONE matrix multiply over unfolded patches (im2col) with ``P * C_out`` outputs.
  Smaller kernels are zero-padded to the largest (exact for odd sizes). On small feature maps this avoids the
  convolution library's slow small-spatial kernels (especially in the backward pass).
* ``dense`` - stride 1, tiny maps: the convolution written as ONE dense matrix from the whole input map
  (H*W*C_in values) to all paths' outputs (H*W*P*C_out), gathered from the kernels (taps that fall off the map
  are zeros). On a 2x2 map with a 3x3 kernel every tap lands on the map, so it costs exactly the convolution's
  FLOPs, with no im2col/col2im copies; the backward is two plain GEMMs.
* ``fused`` - all paths as ONE ``conv2d`` with ``P * C_out`` outputs, then the gated sum.
* ``stacked`` - ``after_sum`` only: ``sum_p a_p (W_p * x) = [a_1 x, ..., a_P x] * [W_1 ... W_P]``, i.e. scale the
  input copies per sample and run one convolution with ``P * C_in`` input channels and ``C_out`` outputs. Same
  FLOPs as P convolutions, but one large GEMM and a ``C_out``-sized output.
* ``condconv`` - ``after_sum`` only: mix the kernels per sample (``W_b = sum_p a_bp W_p``) and apply them with
  one grouped convolution (the CondConv trick; costs B x C_out x C_in x k x k memory).
* ``mixed`` - ``after_sum`` only: mix the kernels, then plain convolutions: ONE ``conv2d`` for the whole batch
  when every sample gets the same mix (the constant gate: the over-parameterised block is one convolution) and
  for batch 1; one ``conv2d`` per sample otherwise. Costs one convolution plus the mixing (P x C_out x C_in x
  k x k multiply-adds per distinct kernel).
* ``mixed_gemm`` - ``after_sum`` only: per-sample mixed kernels applied as one batched matrix multiply over the
  unfolded patches (B x L x C_in*k*k @ B x C_in*k*k x C_out); one convolution's FLOPs plus the mixing at any
  batch size, without the grouped convolution's slow kernels.

The reference form itself can run its gated sum through ``torch.compile`` (``compiled_sum(model)``), and
``auto_impl`` is the measured rule that picks a form from the input's shape, dtype and layout.

Geometry (the block's ``nn.Conv2d`` arguments): every form takes strides, dilations, paddings and kernels given as
pairs, and a ``padding_mode`` other than zeros (the input is padded first); ``fused``, ``stacked``, ``condconv``
and ``mixed`` take groups too. ``gemm`` and ``mixed_gemm`` need ``groups=1``; ``dense`` needs the original
geometry (stride 1, square kernel with ``k // 2`` zero padding, no dilation, no groups). ``unsupported_forms``
says, per block, which forms are ruled out and why; the block refuses them and ``auto_impl`` never picks them.

This module does not import ``gatedconv.layers`` at import time (``layers`` imports it); blocks are passed in.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DENSE_MAX_PIXELS",
    "FORMS",
    "GEMM_MAX_PIXELS",
    "auto_impl",
    "unsupported_forms",
    "compiled_sum",
    "condconv",
    "dense",
    "fused",
    "gated_sum",
    "gated_sum_relu",
    "gemm",
    "mixed",
    "mixed_gemm",
    "mixed_weight",
    "mix_kernels",
    "conv_per_sample",
    "conv_bmm",
    "conv_grouped",
    "conv_output_mix",
    "reference_compiled",
    "set_compiled_sum",
    "stacked",
    "stacked_weight",
    "uses_compiled_sum",
]

# "auto" uses the im2col GEMM form for feature maps with at most this many pixels (H_out * W_out), for bf16
# channels-last CPU tensors. Measured with benchmarks/bench_gemm.py on a 2-core AVX-512 CPU (one block, batch
# 128, forward + backward, the forms alternating step by step; two runs): 128->128 channels on a 2x2 map
# 1.44x / 1.59x faster than the reference (oneDNN's bf16 backward is slow on tiny maps), 64->128 on 4x4
# 1.08x / 1.14x, 32->64 on 8x8 0.43x / 0.45x (slower: not used there).
GEMM_MAX_PIXELS = 16
# ... and the dense form for maps of at most this many pixels (stride 1), where it wastes no FLOPs on off-map
# taps (2x2 map, 3x3 kernel). Measured with benchmarks/bench_gemm.py.
DENSE_MAX_PIXELS = 4


# ------------------------------------------------------------------------------------------------------------
# The auto rule
# ------------------------------------------------------------------------------------------------------------

def auto_impl(block: nn.Module, x: torch.Tensor) -> str:
    """The form ``impl="auto"`` uses for ``block`` on input ``x``, decided from the block's geometry, the input's
    shape, dtype (or autocast dtype), device and layout, and whether a backward follows (grad mode)."""
    if block.num_paths == 1:
        return "reference"
    if block.activation == "after_sum" and block.gate.gate == "constant":
        # the same mix for every sample: one convolution with the averaged kernel instead of P (the K = 4
        # network's training step at 2.1x the reference form's images/s, bf16 channels-last, batch 128, 2-core
        # AMD EPYC: benchmarks/bench_block.py --model-kwargs, results/bench_block.json)
        return "mixed"
    equal = len(set(block.kernel_sizes)) == 1
    h, w = _conv_out_size(x.shape[2], x.shape[3], block.kernel_size, block.stride, block.padding, block.dilation)
    # measured (benchmarks/bench_block.py): the GEMM and dense forms win only with bf16 on channels-last CPU
    # tensors (1.6x for the network); in fp32 or NCHW the unfold costs more than it saves
    bf16 = x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                         and torch.get_autocast_dtype("cpu") == torch.bfloat16)
    fast_cpu = x.device.type == "cpu" and bf16 and x.is_contiguous(memory_format=torch.channels_last)
    ruled_out = block.unsupported_impls  # "dense" among them unless stride 1 (and the original geometry)
    if fast_cpu and "dense" not in ruled_out and h * w <= DENSE_MAX_PIXELS:
        return "dense"
    # the GEMM form only where a backward follows: its gain is the backward (measured on training steps), while
    # a no-grad forward spent most of its time in im2col (a study run's per-epoch evaluation, sampled with a
    # profiler: the unfold of block 4 took ~80% of it)
    if fast_cpu and equal and "gemm" not in ruled_out and h * w <= GEMM_MAX_PIXELS and torch.is_grad_enabled():
        return "gemm"
    return "reference"


def unsupported_forms(block: nn.Module) -> dict[str, str]:
    """The forms that cannot compute ``block`` (its geometry), each with the reason in a few words."""
    out = {}
    if block.groups != 1:
        for name in ("gemm", "mixed_gemm"):  # one matrix multiply over all input channels
            out[name] = f"it needs groups=1, got groups={block.groups}"
    kh, kw = block.kernel_size
    if block.stride != (1, 1):
        out["dense"] = f"it needs stride 1, got stride={block.stride}"
    elif not (kh == kw and kh % 2 == 1 and block.padding == (kh // 2, kw // 2) and block.dilation == (1, 1)
              and block.groups == 1 and block.padding_mode == "zeros"):
        out["dense"] = ("it needs a square odd kernel with k // 2 zero padding, no dilation and groups=1, got "
                        f"kernel_size={block.kernel_size}, padding={block.padding}, dilation={block.dilation}, "
                        f"groups={block.groups}, padding_mode={block.padding_mode!r}")
    return out


def _require(block: nn.Module, name: str) -> None:
    """Refuse a form called directly on a block it cannot compute."""
    reason = block.unsupported_impls.get(name)
    if reason is not None:
        raise ValueError(f"impl={name!r} cannot compute this block: {reason}")


# ------------------------------------------------------------------------------------------------------------
# Shared pieces
# ------------------------------------------------------------------------------------------------------------

def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv_out_size(h: int, w: int, kernel, stride, padding, dilation=1) -> tuple[int, int]:
    """The output size of a convolution (as ``nn.Conv2d`` documents it); ints or pairs."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel, stride, padding, dilation))
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def _pad_input(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """``x`` and the padding the convolution applies: for a padding mode other than zeros, ``x`` padded by that mode
    (as ``nn.Conv2d`` does) and no padding left to apply. Every path's padding is the inner ring of the largest
    kernel's, and reflecting, replicating or wrapping gives the inner ring the same values at any width."""
    if block.padding_mode == "zeros":
        return x, block.padding
    ph, pw = block.padding
    return F.pad(x, (pw, pw, ph, ph), mode=block.padding_mode), (0, 0)


def _group_major(t: torch.Tensor, paths: int, groups: int) -> torch.Tensor:
    """Rows (P * C_out, ...) ordered (path, channel) -> ordered (group, path, channel in group): ``conv2d`` with
    ``groups`` splits its outputs into contiguous groups, and each group's rows must see that group's inputs."""
    c_out = t.shape[0] // paths
    t = t.reshape(paths, groups, c_out // groups, *t.shape[1:]).transpose(0, 1)
    return t.reshape(paths * c_out, *t.shape[3:])


def stacked_weight(block: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All path kernels zero-padded (centred) to the largest size: (P * C_out, C_in / groups, kH, kW) and bias
    (P * C_out,) or None."""
    kh, kw = block.kernel_size
    ws = []
    for conv in block.paths:
        ph, pw = (kh - conv.weight.shape[2]) // 2, (kw - conv.weight.shape[3]) // 2
        ws.append(F.pad(conv.weight, (pw, pw, ph, ph)) if ph or pw else conv.weight)
    w = torch.cat(ws, 0)  # (P * C_out, C_in / groups, kH, kW)
    b = torch.cat([c.bias for c in block.paths], 0) if block.paths[0].bias is not None else None
    return w, b


def _mix_paths(block: nn.Module, y: torch.Tensor, a: torch.Tensor, dim: int) -> torch.Tensor:
    """Gated sum over the path axis ``dim`` of ``y`` (batch first) with ``a`` (B, P); activation per the placement."""
    shape = [1] * y.dim()
    shape[0], shape[dim] = a.shape
    at = a.to(y.dtype).reshape(shape)
    if block.activation == "per_path":
        return (block.act(y) * at).sum(dim)
    return block.act((y * at).sum(dim))


def _mixed_bias(block: nn.Module, a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``sum_p a_p b_p`` as a (B, C_out, 1, 1) tensor: the bias of a per-sample mixture of the paths."""
    return (a.to(b.dtype) @ b.view(block.num_paths, block.out_channels)).to(dtype)[:, :, None, None]


# ------------------------------------------------------------------------------------------------------------
# The forms
# ------------------------------------------------------------------------------------------------------------

def fused(block: nn.Module, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """All paths as one ``conv2d`` with ``P * C_out`` outputs, then the gated sum."""
    w, b = stacked_weight(block)
    g, p = block.groups, block.num_paths
    if g > 1:
        w, b = _group_major(w, p, g), None if b is None else _group_major(b, p, g)
    x, padding = _pad_input(block, x)
    y = F.conv2d(x, w, b, stride=block.stride, padding=padding, dilation=block.dilation,
                 groups=g)  # (B, P * C_out, H', W'); with groups the channels run (group, path, channel)
    bsz, _, h, wd = y.shape
    if g == 1:
        y = y.reshape(bsz, p, block.out_channels, h, wd)  # (B, P, C_out, H', W')
        return _mix_paths(block, y, a, dim=1)
    y = y.reshape(bsz, g, p, block.out_channels // g, h, wd)  # (B, G, P, C_out / G, H', W')
    return _mix_paths(block, y, a, dim=2).reshape(bsz, block.out_channels, h, wd)


def gemm(block: nn.Module, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """All paths as one matrix multiply over im2col patches (groups=1); the output is a channels-last view."""
    _require(block, "gemm")
    w, b = stacked_weight(block)
    x, padding = _pad_input(block, x)
    bsz = x.shape[0]
    h, wd = _conv_out_size(x.shape[2], x.shape[3], block.kernel_size, block.stride, padding, block.dilation)
    cols = F.unfold(x, block.kernel_size, dilation=block.dilation, padding=padding,
                    stride=block.stride)  # (B, C_in*K*K, L)
    cols = cols.transpose(1, 2)  # (B, L, C_in*K*K)
    cols = cols.reshape(-1, cols.shape[-1])  # (B*L, C_in*K*K)
    wm = w.flatten(1).t()  # (C_in*K*K, P*C_out)
    y = torch.addmm(b, cols, wm) if b is not None else cols @ wm  # (B*L, P*C_out)
    # (B*L, P*C_out) -> (B, L, P, C_out): the gated sum runs over the P axis of this channels-last layout
    out = _mix_paths(block, y.view(bsz, h * wd, block.num_paths, block.out_channels), a, dim=2)
    # (B, L, C_out) -> (B, C_out, H', W') as a channels-last view (no copy)
    return out.view(bsz, h, wd, block.out_channels).permute(0, 3, 1, 2)


class _DenseKernel(torch.autograd.Function):
    """Kernels (P*C_out, C_in, K, K) -> the dense matrix of the stride-1 'same' convolution over an H x W map,
    rows (input pixel, C_in), columns (output pixel, P*C_out).

    Output pixel (oy, ox) reads input (iy, ix) through tap (iy - oy + K//2, ix - ox + K//2). With the kernel
    zero-padded by H-1 / W-1 (off-kernel taps read zeros), an output pixel's taps over the whole map are one
    H x W window of the padded kernel. Written as a Function because autograd's backward of H*W slices
    materialises H*W full-size zero tensors; here the windows are summed into one padded gradient.
    """

    @staticmethod
    def _starts(h: int, w: int, k: int) -> list[tuple[int, int, int]]:
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


def dense(block: nn.Module, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Stride 1, the original geometry only: the whole map's convolution as one dense matrix (see
    ``_DenseKernel``); channels-last out."""
    _require(block, "dense")
    w, b = stacked_weight(block)  # (P*C_out, C_in, K, K)
    if torch.is_autocast_enabled(x.device.type):
        w = w.to(torch.get_autocast_dtype(x.device.type))  # build the big matrix at half the bytes
    bsz, c_in, h, wd = x.shape
    big = _DenseKernel.apply(w, h, wd)  # (H*W*C_in, H*W*P*C_out)
    xf = x.permute(0, 2, 3, 1).reshape(bsz, h * wd * c_in)  # (B, HW*C_in): a view when channels-last
    y = torch.addmm(b.repeat(h * wd), xf, big) if b is not None else xf @ big  # (B, HW*P*C_out)
    out = _mix_paths(block, y.view(bsz, h * wd, block.num_paths, block.out_channels), a, dim=2)  # (B, L, C_out)
    return out.view(bsz, h, wd, block.out_channels).permute(0, 3, 1, 2)  # channels-last (B, C_out, H, W)


def stacked(block: nn.Module, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``after_sum`` only: input copies scaled per sample, one convolution with ``P * C_in`` input channels."""
    (kh, kw), g = block.kernel_size, block.groups
    p, c_out, c_in = block.num_paths, block.out_channels, block.in_channels // g
    w, b = stacked_weight(block)  # (P*C_out, C_in/G, kH, kW)
    # (P*C_out, C_in/G, kH, kW) -> (C_out, P*C_in/G, kH, kW): path p's kernel sees input copy p
    w = w.view(p, c_out, c_in, kh, kw).transpose(0, 1).reshape(c_out, p * c_in, kh, kw)
    x, padding = _pad_input(block, x)
    if g == 1:
        xs = (x.unsqueeze(1) * a.to(x.dtype)[:, :, None, None, None]).flatten(1, 2)  # (B, P*C_in, H, W)
    else:  # each group's inputs copied per path: channels (group, path, channel in group)
        bsz, _, h, wd = x.shape
        xs = (x.reshape(bsz, g, 1, c_in, h, wd) * a.to(x.dtype)[:, None, :, None, None, None]).flatten(1, 3)
    y = F.conv2d(xs, w, None, stride=block.stride, padding=padding, dilation=block.dilation, groups=g)
    if b is not None:
        y = y + _mixed_bias(block, a, b, y.dtype)
    return block.act(y)


def mix_kernels(a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row mixed kernels ``sum_p a_p W_p``: gates (N, P), kernels (P, C_out, C_in, K, K), biases (P, C_out)
    -> (N, C_out, C_in, K, K) and (N, C_out) or None. The mixing runs in the weights' dtype (under autocast the
    convolution casts after it)."""
    p = weight.shape[0]
    wm = (a.to(weight.dtype) @ weight.reshape(p, -1)).view(a.shape[0], *weight.shape[1:])
    bm = a.to(bias.dtype) @ bias if bias is not None else None
    return wm, bm


def mixed_weight(block: nn.Module, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``mix_kernels`` over the block's path kernels (zero-padded to the largest size)."""
    w, b = stacked_weight(block)
    w = w.reshape(block.num_paths, block.out_channels, *w.shape[1:])  # (P, C_out, C_in/G, kH, kW)
    return mix_kernels(a, w, None if b is None else b.view(block.num_paths, block.out_channels))


def conv_per_sample(x: torch.Tensor, wm: torch.Tensor, bm: torch.Tensor | None, stride: int, padding: int,
                    dilation: int | tuple[int, int] = 1, groups: int = 1) -> torch.Tensor:
    """Mixed kernels (N, C_out, C_in / groups, kH, kW) applied by plain ``conv2d``: one call for the whole batch
    when N == 1 (a mix shared by every sample), else one call a sample."""
    if wm.shape[0] == 1:
        return F.conv2d(x, wm[0], None if bm is None else bm[0], stride=stride, padding=padding, dilation=dilation,
                        groups=groups)
    return torch.cat([F.conv2d(x[i:i + 1], wm[i], None if bm is None else bm[i], stride=stride, padding=padding,
                               dilation=dilation, groups=groups)
                      for i in range(x.shape[0])], 0)


def conv_bmm(x: torch.Tensor, wm: torch.Tensor, bm: torch.Tensor | None, stride: int, padding: int,
             dilation: int | tuple[int, int] = 1) -> torch.Tensor:
    """Per-sample kernels (B, C_out, C_in, kH, kW) as one batched matrix multiply over unfolded patches (no groups);
    the output is a channels-last view."""
    bsz, c_out, _, kh, kw = wm.shape
    h, wd = _conv_out_size(x.shape[2], x.shape[3], (kh, kw), stride, padding, dilation)
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride).transpose(1, 2)  # (B, L, C_in*K*K)
    wt = wm.flatten(2).transpose(1, 2)  # (B, C_in*K*K, C_out)
    if torch.is_autocast_enabled(x.device.type):
        wt = wt.to(torch.get_autocast_dtype(x.device.type))
    y = torch.baddbmm(bm.to(wt.dtype)[:, None, :], cols.to(wt.dtype), wt) if bm is not None \
        else torch.bmm(cols.to(wt.dtype), wt)  # (B, L, C_out)
    return y.view(bsz, h, wd, c_out).permute(0, 3, 1, 2)  # channels-last (B, C_out, H', W')


def conv_grouped(x: torch.Tensor, wm: torch.Tensor, bm: torch.Tensor | None, stride: int, padding: int,
                 dilation: int | tuple[int, int] = 1, groups: int = 1) -> torch.Tensor:
    """Per-sample kernels (B, C_out, C_in / groups, kH, kW) as one grouped convolution, ``groups`` groups per
    sample (CondConv)."""
    bsz, c_out = wm.shape[:2]
    y = F.conv2d(x.reshape(1, -1, *x.shape[2:]), wm.reshape(bsz * c_out, *wm.shape[2:]),
                 None if bm is None else bm.reshape(-1), stride=stride, padding=padding, dilation=dilation,
                 groups=bsz * groups)
    y = y.view(bsz, c_out, *y.shape[2:])
    # the groups need NCHW; hand a channels-last caller channels-last back (BatchNorm and pooling after it ran
    # several times slower on NCHW tensors in a channels-last network)
    return y.contiguous(memory_format=torch.channels_last) if _channels_last(x) else y


def conv_output_mix(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, a: torch.Tensor,
                    stride: int, padding: int) -> torch.Tensor:
    """The unmixed alternative: all P kernels as one ``conv2d`` with P * C_out outputs, then the per-sample sum
    over paths (P convolutions' FLOPs, but no per-sample kernels in memory)."""
    p, c_out = weight.shape[:2]
    y = F.conv2d(x, weight.reshape(p * c_out, *weight.shape[2:]), None if bias is None else bias.reshape(-1),
                 stride=stride, padding=padding)  # (B, P*C_out, H', W')
    bsz, _, h, w = y.shape
    if _channels_last(y):  # sum over the paths inside each pixel's channel vector: the result stays channels-last
        yl = y.permute(0, 2, 3, 1).reshape(bsz, h * w, p, c_out)  # a view: (B, L, P, C_out)
        out = (yl * a.to(y.dtype)[:, None, :, None]).sum(2)  # (B, L, C_out)
        return out.view(bsz, h, w, c_out).permute(0, 3, 1, 2)
    y = y.view(bsz, p, c_out, h, w)
    return (y * a.to(y.dtype)[:, :, None, None, None]).sum(1)


def _channels_last(x: torch.Tensor) -> bool:
    """Channels-last and not also NCHW-contiguous (a 1x1 map or one channel is both)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _shared_mix(block: nn.Module, a: torch.Tensor) -> bool:
    """Every sample gets the same mix: a constant gate (or a batch of one)."""
    return a.shape[0] == 1 or block.gate.gate == "constant"


def mixed(block: nn.Module, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``after_sum`` only: mixed kernels applied by plain ``conv2d``: one call when the mix is shared, else one a
    sample."""
    wm, bm = mixed_weight(block, a[:1] if _shared_mix(block, a) else a)
    x, padding = _pad_input(block, x)
    return block.act(conv_per_sample(x, wm, bm, block.stride, padding, block.dilation, block.groups))


def mixed_gemm(block: nn.Module, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``after_sum`` only, groups=1: per-sample mixed kernels as one batched matrix multiply over unfolded
    patches."""
    _require(block, "mixed_gemm")
    wm, bm = mixed_weight(block, a)
    x, padding = _pad_input(block, x)
    return block.act(conv_bmm(x, wm, bm, block.stride, padding, block.dilation))


def condconv(block: nn.Module, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``after_sum`` only: per-sample kernels ``sum_p a_p W_p`` applied with one grouped convolution."""
    wm, bm = mixed_weight(block, a)
    x, padding = _pad_input(block, x)
    return block.act(conv_grouped(x, wm, bm, block.stride, padding, block.dilation, block.groups))


Form = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

# impl name -> form; "reference" (the definition) and "auto" (the choice) live in gatedconv.layers
FORMS: dict[str, Form] = {"fused": fused, "gemm": gemm, "dense": dense, "stacked": stacked, "condconv": condconv,
                          "mixed": mixed, "mixed_gemm": mixed_gemm}
AFTER_SUM_ONLY = ("stacked", "condconv", "mixed", "mixed_gemm")  # forms that mix before the activation


# ------------------------------------------------------------------------------------------------------------
# The gated sum of the reference form, eager and compiled
# ------------------------------------------------------------------------------------------------------------

def gated_sum(ys: Iterable[torch.Tensor], a: torch.Tensor) -> torch.Tensor:
    """``sum_p a[:, p] * ys[p]`` over (B, C, H, W) path outputs and gates a (B, P); activations are the caller's.

    ``ys`` may be a generator: each path's output is summed in and can be freed before the next one is made.
    """
    out = None
    for p, y in enumerate(ys):
        term = a[:, p, None, None, None].to(y.dtype) * y
        out = term if out is None else out + term
    return out


def gated_sum_relu(ys: list[torch.Tensor], a: torch.Tensor) -> torch.Tensor:
    """``sum_p a[:, p] * relu(ys[p])``: the original per-path ReLU folded into the sum (compiled as one kernel)."""
    out = None
    for p, y in enumerate(ys):
        term = a[:, p, None, None, None].to(y.dtype) * F.relu(y)
        out = term if out is None else out + term
    return out


_compiled: dict[str, Callable[..., torch.Tensor]] = {}  # torch.compile'd gated sums, made on first use


def _compiled_fn(name: str) -> Callable[..., torch.Tensor]:
    if name not in _compiled:
        _compiled[name] = torch.compile({"per_path": gated_sum_relu, "after_sum": gated_sum}[name])
    return _compiled[name]


def uses_compiled_sum(block: nn.Module, a: torch.Tensor) -> bool:
    """Whether ``block``'s reference form runs its gated sum compiled for gates ``a``.

    Only when the block's ``compiled_sum`` flag is on, and only in training: the
    gain is the fused backward; in no-grad evaluation the eager sum is close, and compiling inference graphs (new
    batch sizes too) would only add start-up time. Only for gates that learn: with a constant gate (no gradient
    into ``a``) the compiled kernels ran ~2x slower end to end than eager (600 vs 1,200 img/s in a 5-epoch
    training run), and a one-path softmax or constant gate skips the sum altogether. ``per_path`` needs ReLU,
    the activation compiled into the sum.
    """
    if not block.compiled_sum:
        return False
    if not (torch.is_grad_enabled() and a.requires_grad):
        return False
    return block.activation == "after_sum" or isinstance(block.act, nn.ReLU)


def reference_compiled(block: nn.Module, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The reference form (one convolution per path) with the gated sum compiled: one fused elementwise kernel
    forward and one backward instead of ~4 memory passes per path. Check ``uses_compiled_sum`` first."""
    ys = [conv(x) for conv in block.paths]
    if block.activation == "per_path":
        return _compiled_fn("per_path")(ys, a)
    return block.act(_compiled_fn("after_sum")(ys, a))


def _gated_blocks(model: nn.Module) -> list:
    from .layers import GatedConv2d  # here, not at import time: layers imports this module

    return [m for m in model.modules() if isinstance(m, GatedConv2d)]


def set_compiled_sum(model: nn.Module, enabled: bool = True) -> None:
    """Compile the gated sum of the reference form in every ``GatedConv2d`` of ``model`` (or turn it off).

    One fused elementwise kernel for forward and one for backward instead of ~4 memory passes per path, for the
    per-path ReLU (the original) and for ``after_sum`` (the activation then runs eagerly). Measured ~10% faster
    end to end for the five-block network on a 2-core CPU (``benchmarks/bench_block.py``;
    ``benchmarks/bench_fast.py`` for the fast recipe's network); the first calls pay ~5 s of compilation per
    feature-map shape. Applies to training steps only (see ``uses_compiled_sum``).
    """
    for block in _gated_blocks(model):
        block.compiled_sum = bool(enabled)


@contextlib.contextmanager
def compiled_sum(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """``set_compiled_sum(model, enabled)`` for the ``with`` block; every block's previous setting is restored."""
    blocks = _gated_blocks(model)
    previous = [block.compiled_sum for block in blocks]
    try:
        for block in blocks:
            block.compiled_sum = bool(enabled)
        yield model
    finally:
        for block, was in zip(blocks, previous):
            block.compiled_sum = was
