"""GatedConv2d / Gate: shapes, gate properties, gradients, implementation equivalence, bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from gatedconv import Gate, GatedConv2d, Nth_Block, kernels
from gatedconv import layers as L

odd_kernel = st.sampled_from([1, 3, 5])


@given(
    b=st.integers(1, 3), c_in=st.integers(1, 6), c_out=st.integers(1, 6),
    h=st.integers(1, 11), w=st.integers(1, 11), stride=st.sampled_from([1, 2]),
    kernel_sizes=st.lists(odd_kernel, min_size=1, max_size=4),
    activation=st.sampled_from(L.ACTIVATION_PLACEMENTS), gate=st.sampled_from(L.GATE_TYPES),
)
def test_output_shape(b, c_in, c_out, h, w, stride, kernel_sizes, activation, gate):
    m = GatedConv2d(c_in, c_out, kernel_sizes=kernel_sizes, stride=stride, activation=activation, gate=gate)
    y, a = m(torch.randn(b, c_in, h, w), return_gates=True)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1  # odd kernels, padding k // 2
    assert y.shape == (b, c_out, ho, wo)
    assert a.shape == (b, len(kernel_sizes))
    assert torch.isfinite(y).all()


@given(b=st.integers(1, 5), c=st.integers(1, 8), p=st.integers(1, 5), t=st.floats(0.1, 5.0))
def test_gate_properties(b, c, p, t):
    x = torch.randn(b, c, 5, 4) * 3
    relu = Gate(c, p, "relu")(x)
    assert relu.shape == (b, p) and (relu >= 0).all()
    soft = Gate(c, p, "softmax", temperature=t)(x)
    assert torch.allclose(soft.sum(1), torch.ones(b), atol=1e-5) and (soft >= 0).all()
    sig = Gate(c, p, "sigmoid")(x)
    assert ((sig > 0) & (sig < 1)).all()
    const = Gate(c, p, "constant")(x)
    assert torch.allclose(const, torch.full((b, p), 1.0 / p))


def test_gate_matches_original_formula():
    torch.manual_seed(0)
    g = Gate(4, 3)
    x = torch.randn(2, 4, 6, 6)
    expected = torch.relu(g.fc(nn.AdaptiveAvgPool2d(1)(x).flatten(1)))
    assert torch.allclose(g(x), expected, atol=1e-6)


def test_block_matches_original_definition():
    """Default block == a*ReLU(conv_1) + ... exactly as the original Nth_Block wrote it."""
    torch.manual_seed(0)
    m = Nth_Block(3, 5)
    x = torch.randn(4, 3, 9, 7)
    a = torch.relu(m.gate.fc(x.mean((2, 3))))
    ref = sum(a[:, p, None, None, None] * torch.relu(m.paths[p](x)) for p in range(3))
    assert torch.allclose(m(x), ref, atol=1e-5)
    assert [c.kernel_size for c in m.paths] == [(3, 3)] * 3 and [c.padding for c in m.paths] == [(1, 1)] * 3


def test_constant_gate_ignores_input():
    torch.manual_seed(0)
    m = GatedConv2d(3, 4, gate="constant")
    x1, x2 = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8) * 10
    assert torch.equal(m.gate(x1), m.gate(x2))


def _grads(m, x, impl, dtype=torch.float64):
    m = m.to(dtype)
    m.impl = impl
    m.zero_grad()
    x = x.to(dtype).clone().requires_grad_(True)
    y = m(x)
    g = torch.linspace(-1, 1, y.numel(), dtype=dtype).view_as(y)
    (y * g).sum().backward()
    return y.detach(), x.grad.detach(), {n: p.grad.detach().clone() for n, p in m.named_parameters()
                                         if p.requires_grad}  # a constant gate's weights do not train


@given(
    b=st.integers(1, 3), c_in=st.integers(1, 5), c_out=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9),
    stride=st.sampled_from([1, 2]), kernel_sizes=st.lists(odd_kernel, min_size=1, max_size=3),
    activation=st.sampled_from(L.ACTIVATION_PLACEMENTS), gate=st.sampled_from(L.GATE_TYPES),
    rd_ratio=st.sampled_from([None, 0.5]), seed=st.integers(0, 2**16),
)
def test_fast_implementations_equal_reference(b, c_in, c_out, h, w, stride, kernel_sizes, activation, gate,
                                              rd_ratio, seed):
    torch.manual_seed(seed)
    m = GatedConv2d(c_in, c_out, kernel_sizes=kernel_sizes, stride=stride, activation=activation, gate=gate,
                    rd_ratio=rd_ratio)
    nn.init.constant_(m.gate.fc.bias, 0.5)  # keep ReLU gates open so every gradient path is exercised
    x = torch.randn(b, c_in, h, w)
    y0, gx0, gp0 = _grads(m, x, "reference")
    impls = ["fused", "gemm"] + (["dense"] if stride == 1 else [])
    impls += list(kernels.AFTER_SUM_ONLY) if activation == "after_sum" else []
    for impl in impls:
        y, gx, gp = _grads(m, x, impl)
        assert torch.allclose(y, y0, atol=1e-9, rtol=1e-7), impl
        assert torch.allclose(gx, gx0, atol=1e-9, rtol=1e-7), impl
        for n in gp0:
            assert torch.allclose(gp[n], gp0[n], atol=1e-9, rtol=1e-7), (impl, n)


FORM_NAMES = [impl for impl in L.IMPLEMENTATIONS if impl not in ("auto", "reference")]


odd_pair = st.tuples(odd_kernel, odd_kernel)
pair = st.tuples


@st.composite
def conv2d_geometries(draw):
    """nn.Conv2d's arguments for a block: groups (depthwise included), dilation, strides, kernels and paddings as
    pairs (asymmetric ones too), padding modes; kernels per path with same-size padding, or one kernel size with
    an explicit padding (even kernels included)."""
    g = draw(st.sampled_from([1, 2, 3]))
    depthwise = draw(st.booleans())
    c_in = g if depthwise else g * draw(st.integers(1, 2))
    c_out = g * draw(st.integers(1, 2))
    stride = draw(pair(st.sampled_from([1, 2]), st.sampled_from([1, 2])))
    dilation = draw(pair(st.sampled_from([1, 2]), st.sampled_from([1, 2])))
    if draw(st.booleans()):  # kernels per path, same-size padding
        sizes = draw(st.lists(st.one_of(odd_kernel, odd_pair), min_size=1, max_size=3))
        padding = draw(st.sampled_from([None, "same"])) if stride == (1, 1) else None
        kernel = {"kernel_sizes": sizes}
    else:  # one kernel size for every path, explicit padding
        kernel = {"kernel_size": draw(pair(st.integers(1, 4), st.integers(1, 4))),
                  "num_paths": draw(st.integers(1, 3))}
        padding = draw(st.one_of(st.just("valid"), st.integers(0, 2), pair(st.integers(0, 2), st.integers(0, 2))))
    return dict(in_channels=c_in, out_channels=c_out, stride=stride, padding=padding, dilation=dilation, groups=g,
                padding_mode=draw(st.sampled_from(L.PADDING_MODES)), bias=draw(st.booleans()), **kernel)


def _input_size(m: GatedConv2d, dim: int, extra: int) -> int:
    """The smallest map side with a non-empty output (and a reflect padding narrower than the map), plus extra."""
    k, p, d = m.kernel_size[dim], m.padding[dim], m.dilation[dim]
    return max(1, d * (k - 1) + 1 - 2 * p, p + 1) + extra


@pytest.mark.usefixtures("one_thread")
@given(geometry=conv2d_geometries(), b=st.integers(1, 3), extra=pair(st.integers(0, 3), st.integers(0, 3)),
       activation=st.sampled_from(L.ACTIVATION_PLACEMENTS), gate=st.sampled_from(L.GATE_TYPES),
       seed=st.integers(0, 2**16))
def test_every_form_that_accepts_a_conv2d_geometry_equals_reference(geometry, b, extra, activation, gate, seed):
    """With nn.Conv2d's arguments (groups, depthwise, dilation, asymmetric kernels, strides and paddings, every
    padding mode), every form the block accepts gives the reference form's output and gradients (float64); a form
    it refuses is refused in one line naming it; and ``auto`` never picks a refused form, in fp32 or in bf16
    channels-last (where it picks the dense and GEMM forms)."""
    torch.manual_seed(seed)
    m = GatedConv2d(**geometry, activation=activation, gate=gate)
    nn.init.constant_(m.gate.fc.bias, 0.5)  # keep ReLU gates open so every gradient path is exercised
    x = torch.randn(b, m.in_channels, _input_size(m, 0, extra[0]), _input_size(m, 1, extra[1]))
    y0, gx0, gp0 = _grads(m, x, "reference")
    compared = 0
    for impl in FORM_NAMES:
        if impl in kernels.AFTER_SUM_ONLY and activation != "after_sum":
            continue
        if impl in m.unsupported_impls:
            with pytest.raises(ValueError, match=rf"^impl='{impl}' cannot compute this block: it needs") as e:
                GatedConv2d(**geometry, activation=activation, gate=gate, impl=impl)
            assert "\n" not in str(e.value)
            continue
        y, gx, gp = _grads(m, x, impl)
        assert torch.allclose(y, y0, atol=1e-9, rtol=1e-7), impl
        assert torch.allclose(gx, gx0, atol=1e-9, rtol=1e-7), impl
        for n in gp0:
            assert torch.allclose(gp[n], gp0[n], atol=1e-9, rtol=1e-7), (impl, n)
        compared += 1
    assert compared >= 1  # fused takes every geometry
    m.impl = "auto"
    cl = x.float().to(memory_format=torch.channels_last)
    assert m.choose_impl(x) not in m.unsupported_impls
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.choose_impl(cl) not in m.unsupported_impls


@pytest.mark.parametrize("kwargs, side, ruled_out, auto", [
    ({}, 2, set(), "dense"),
    ({"kernel_sizes": ((1, 3), (3, 1))}, 2, set(), "dense"),  # centred in a square 3x3: the dense form still fits
    ({"stride": 2}, 4, {"dense"}, "gemm"),
    ({"dilation": 2}, 2, {"dense"}, "gemm"),
    ({"padding_mode": "reflect"}, 2, {"dense"}, "gemm"),
    ({"kernel_size": (1, 3), "padding": (0, 1)}, 2, {"dense"}, "gemm"),
    ({"kernel_size": 3, "padding": 0}, 4, {"dense"}, "gemm"),
    ({"groups": 2}, 2, {"dense", "gemm", "mixed_gemm"}, "reference"),
    ({"groups": 4, "out_channels": 8}, 2, {"dense", "gemm", "mixed_gemm"}, "reference"),  # depthwise
])
def test_forms_ruled_out_by_geometry(kwargs, side, ruled_out, auto):
    """The forms each geometry rules out, as documented (gatedconv.kernels): groups suit neither GEMM form, the
    dense form needs the original geometry; on a 2x2 output map in bf16 channels-last, where ``auto`` picks the
    dense form, it falls back to the GEMM form, or to the reference form when that is ruled out too."""
    m = GatedConv2d(**{"in_channels": 4, "out_channels": 4, **kwargs})
    assert set(m.unsupported_impls) == ruled_out
    cl = torch.randn(2, 4, side, side).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.choose_impl(cl) == auto
        assert m(cl).shape[2:] == (2, 2)


def _copy_as_one_path(gated: nn.Module, conv: nn.Conv2d) -> None:
    with torch.no_grad():
        gated.paths[0].weight.copy_(conv.weight)
        if conv.bias is not None:
            gated.paths[0].bias.copy_(conv.bias)


def _drop_in_net(conv_cls, **extra) -> nn.Sequential:
    """A small network written against nn.Conv2d's arguments, by keyword and positionally."""
    return nn.Sequential(
        conv_cls(in_channels=4, out_channels=8, kernel_size=3, stride=1, padding=2, dilation=2, groups=4,
                 bias=False, **extra),
        nn.BatchNorm2d(8), nn.ReLU(),
        conv_cls(in_channels=8, out_channels=8, kernel_size=(1, 3), stride=(2, 1), padding=(0, 1), groups=8,
                 padding_mode="reflect", **extra),  # depthwise, asymmetric
        conv_cls(8, 6, 3, 1, "same", (1, 2), 2, True, "zeros", **extra),  # nn.Conv2d's positional order
        conv_cls(in_channels=6, out_channels=6, kernel_size=2, stride=2, padding="valid", **extra),  # even kernel
    )


@pytest.mark.usefixtures("one_thread")
def test_gated_block_is_a_drop_in_for_conv2d():
    """A network written with nn.Conv2d(..., groups=..., dilation=..., padding=..., padding_mode=...) works with
    GatedConv2d swapped in by keyword: same output shapes, the same geometry attributes; a one-path block with
    a gate of 1 and no activation holding the convolution's weights computes exactly the convolution."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 12, 10)
    plain = _drop_in_net(nn.Conv2d).eval()
    gated = _drop_in_net(GatedConv2d).eval()
    y = gated(x)
    assert y.shape == plain(x).shape == (2, 6, 3, 5)
    y.square().sum().backward()  # trains: every trainable weight gets a gradient
    assert all(p.grad is not None for p in gated.parameters() if p.requires_grad)
    for conv, block in zip(plain, gated):
        if isinstance(conv, nn.Conv2d):
            for attr in ("in_channels", "out_channels", "kernel_size", "stride", "dilation", "groups",
                         "padding_mode"):
                assert getattr(block, attr) == getattr(conv, attr), attr
            numeric = {"same": (1, 2), "valid": (0, 0)}.get(conv.padding, conv.padding)  # (kernel 3, dilation (1, 2))
            assert block.num_paths == 3 and block.padding == block.paths[0].padding == numeric
    one = _drop_in_net(GatedConv2d, num_paths=1, gate="softmax", act_layer=nn.Identity).eval()
    for conv, block in zip(plain, one):
        if isinstance(conv, nn.Conv2d):
            _copy_as_one_path(block, conv)
    one[1].load_state_dict(plain[1].state_dict())
    assert torch.allclose(one(x), plain(x), atol=1e-6)


def test_state_dict_and_defaults_unchanged():
    """The default block is the original: three 3x3 paths padded by 1, the same state dict keys and shapes (old
    checkpoints load), and nn.Conv2d-style attributes describing it."""
    m = GatedConv2d(3, 16)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "gate.fc.weight": (3, 3), "gate.fc.bias": (3,),
        "paths.0.weight": (16, 3, 3, 3), "paths.0.bias": (16,),
        "paths.1.weight": (16, 3, 3, 3), "paths.1.bias": (16,),
        "paths.2.weight": (16, 3, 3, 3), "paths.2.bias": (16,),
    }
    assert m.kernel_sizes == (3, 3, 3) and m.num_paths == 3
    assert (m.kernel_size, m.stride, m.padding, m.dilation, m.groups, m.padding_mode) == (
        (3, 3), (1, 1), (1, 1), (1, 1), 1, "zeros")
    assert GatedConv2d(3, 16, kernel_sizes=(1, 3, 5)).padding == (2, 2)  # the largest kernel's
    assert [c.padding for c in GatedConv2d(3, 16, kernel_sizes=(1, 3, 5)).paths] == [(0, 0), (1, 1), (2, 2)]
    assert GatedConv2d(3, 16, kernel_size=5, num_paths=2).kernel_sizes == (5, 5)
    assert GatedConv2d(3, 4, dtype=torch.float64).paths[0].weight.dtype == torch.float64
    assert "kernel_sizes=(3, 3, 3), stride=1, activation='per_path'" in repr(m)


def test_fast_forms_close_in_float32_and_channels_last():
    torch.manual_seed(1)
    m = GatedConv2d(8, 16).to(memory_format=torch.channels_last)
    x = torch.randn(4, 8, 4, 4).to(memory_format=torch.channels_last)
    y_ref = m._forward_reference(x, m.gate(x))
    y_gemm = kernels.gemm(m, x, m.gate(x))
    assert torch.allclose(y_ref, y_gemm, atol=1e-5)
    y_dense = kernels.dense(m, x, m.gate(x))
    assert torch.allclose(y_ref, y_dense, atol=1e-5)
    assert y_dense.is_contiguous(memory_format=torch.channels_last)
    # the after_sum-only forms with channels-last weights (their kernel reshapes must not assume NCHW strides)
    m = GatedConv2d(8, 16, kernel_sizes=(3, 1), activation="after_sum").to(memory_format=torch.channels_last)
    y_ref = m._forward_reference(x, m.gate(x))
    for form in (kernels.stacked, kernels.condconv):
        assert torch.allclose(y_ref, form(m, x, m.gate(x)), atol=1e-5)


def test_dense_form_in_bf16_autocast_close_to_reference():
    torch.manual_seed(2)
    m = GatedConv2d(16, 8, kernel_sizes=(1, 3, 5)).to(memory_format=torch.channels_last)
    x = torch.randn(6, 16, 2, 2).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.choose_impl(x) == "dense"
        y_dense = m(x).float()
        m.impl = "reference"
        y_ref = m(x).float()
    assert (y_dense - y_ref).abs().max() < 0.05 * y_ref.abs().max()


def test_dense_form_needs_an_odd_kernel():
    """An even kernel with k // 2 padding grows the map by one: the dense form (a "same" convolution) cannot
    compute it, so it is refused and auto does not pick it where it would otherwise (bf16 channels-last, 1x1 map)."""
    with pytest.raises(ValueError, match=r"^impl='dense' cannot compute this block: it needs a square odd kernel"):
        GatedConv2d(4, 4, kernel_size=2, padding=1, num_paths=2, impl="dense")
    m = GatedConv2d(4, 4, kernel_size=2, padding=1, num_paths=2).to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 1, 1).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.choose_impl(x) != "dense"
        assert m(x).shape == (2, 4, 2, 2)


def test_mixing_form_set_after_construction_needs_after_sum():
    """A per_path block given a form that mixes before the activation would compute the after_sum function:
    refused when it runs, as at construction."""
    m = GatedConv2d(4, 4, num_paths=2, gate="softmax")
    for impl in kernels.AFTER_SUM_ONLY:
        m.impl = impl
        with pytest.raises(ValueError, match=rf"^impl='{impl}' needs activation='after_sum'"):
            m(torch.randn(1, 4, 5, 5))


def test_dense_form_needs_stride_one():
    """Refused in one line at construction, when set afterwards, and when the form is called directly."""
    with pytest.raises(ValueError, match=r"^impl='dense' cannot compute this block: it needs stride 1") as e:
        GatedConv2d(4, 4, stride=2, impl="dense")
    assert "\n" not in str(e.value)
    m = GatedConv2d(4, 4, stride=2)
    x = torch.randn(1, 4, 2, 2)
    m.impl = "dense"
    with pytest.raises(ValueError, match="stride 1"):
        m(x)
    with pytest.raises(ValueError, match="stride 1"):
        kernels.dense(m, x, m.gate(x))


def test_auto_choice():
    m = GatedConv2d(8, 8)
    cl = torch.randn(2, 8, 2, 2).to(memory_format=torch.channels_last)
    assert m.choose_impl(torch.randn(1, 8, 32, 32)) == "reference"
    assert m.choose_impl(cl) == "reference"  # fp32: the GEMM form measured slower
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.choose_impl(cl) == "dense"  # bf16, channels_last, 2x2 map: the dense form measured fastest
        assert m.choose_impl(torch.randn(2, 8, 2, 2)) == "reference"  # NCHW
        assert m.choose_impl(torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last)) == "gemm"
        with torch.no_grad():  # evaluation: no backward for the GEMM form to pay back its im2col
            assert m.choose_impl(torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last)) == "reference"
        assert m.choose_impl(torch.randn(2, 8, 16, 16).to(memory_format=torch.channels_last)) == "reference"
        assert GatedConv2d(8, 8, kernel_sizes=(1, 3)).choose_impl(cl) == "dense"  # mixed sizes are fine there
        assert GatedConv2d(8, 8, stride=2).choose_impl(cl) == "gemm"  # dense needs stride 1
        assert GatedConv2d(8, 8, kernel_sizes=(1, 3)).choose_impl(
            torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last)) == "reference"  # gemm: equal sizes only
    # the constant gate mixes every sample alike: one convolution with the averaged kernel, any shape and dtype
    fixed = GatedConv2d(8, 8, kernel_sizes=(3, 3, 3, 3), gate="constant", activation="after_sum")
    assert fixed.choose_impl(torch.randn(2, 8, 16, 16)) == "mixed" and fixed.choose_impl(cl) == "mixed"
    assert GatedConv2d(8, 8, gate="constant").choose_impl(torch.randn(2, 8, 16, 16)) == "reference"  # per_path


@pytest.mark.parametrize("activation", L.ACTIVATION_PLACEMENTS)
def test_compiled_sum_matches_eager(activation):
    torch.manual_seed(0)
    net = nn.Sequential(GatedConv2d(3, 4, kernel_sizes=(3, 1), activation=activation, impl="reference"))
    m = net[0]
    x = torch.randn(2, 3, 6, 6)
    y0 = net(x)
    g0 = torch.autograd.grad(y0.square().sum(), list(m.parameters()))
    with kernels.compiled_sum(net):
        assert kernels.uses_compiled_sum(m, m.gate(x))
        y1 = net(x)
        g1 = torch.autograd.grad(y1.square().sum(), list(m.parameters()))
    assert torch.allclose(y0, y1, atol=1e-5)
    for a, b in zip(g0, g1):
        assert torch.allclose(a, b, atol=1e-4)


def test_compiled_sum_restores_each_block_and_stays_in_its_model():
    net = nn.Sequential(GatedConv2d(3, 4), GatedConv2d(4, 4, compiled_sum=True), nn.ReLU())
    other = nn.Sequential(GatedConv2d(3, 4))
    with kernels.compiled_sum(net):
        assert [b.compiled_sum for b in net[:2]] == [True, True]
        assert not other[0].compiled_sum  # another model's setting does not change
        with kernels.compiled_sum(net, enabled=False):
            assert [b.compiled_sum for b in net[:2]] == [False, False]
        assert [b.compiled_sum for b in net[:2]] == [True, True]
    assert [b.compiled_sum for b in net[:2]] == [False, True]  # each block's own previous value
    with pytest.raises(RuntimeError), kernels.compiled_sum(net):
        raise RuntimeError("restored on error too")
    assert [b.compiled_sum for b in net[:2]] == [False, True]
    kernels.set_compiled_sum(other)
    assert other[0].compiled_sum and not net[0].compiled_sum
    kernels.set_compiled_sum(other, False)
    assert not other[0].compiled_sum


def test_compiled_sum_only_where_it_pays():
    x = torch.randn(2, 3, 6, 6)
    m = GatedConv2d(3, 4, compiled_sum=True)
    a = m.gate(x)
    assert kernels.uses_compiled_sum(m, a)
    with torch.no_grad():  # evaluation stays eager
        assert not kernels.uses_compiled_sum(m, m.gate(x))
    assert not kernels.uses_compiled_sum(m, a.detach())  # no gradient into the gates
    constant = GatedConv2d(3, 4, gate="constant", compiled_sum=True)
    assert not kernels.uses_compiled_sum(constant, constant.gate(x))  # the constant gate: no gradient into a
    assert not kernels.uses_compiled_sum(GatedConv2d(3, 4, act_layer=nn.GELU, compiled_sum=True), a)  # ReLU only
    assert kernels.uses_compiled_sum(GatedConv2d(3, 4, act_layer=nn.GELU, activation="after_sum", compiled_sum=True), a)
    assert not kernels.uses_compiled_sum(GatedConv2d(3, 4), a)


@pytest.mark.parametrize("activation", L.ACTIVATION_PLACEMENTS)
@pytest.mark.parametrize("gate", L.GATE_TYPES)
def test_every_parameter_gets_a_gradient(activation, gate):
    torch.manual_seed(0)
    m = GatedConv2d(3, 4, kernel_sizes=(1, 3, 5), activation=activation, gate=gate)
    nn.init.constant_(m.gate.fc.bias, 1.0)
    m(torch.randn(3, 3, 7, 7)).square().sum().backward()
    for n, p in m.named_parameters():
        if gate == "constant" and n.startswith("gate."):
            # the constant gate has no input-dependent weights by design: frozen, so that DDP does not wait
            assert not p.requires_grad and p.grad is None, n
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n


def test_records_last_gates():
    m = GatedConv2d(3, 4)
    m.record_gates = True
    m(torch.randn(5, 3, 8, 8))
    assert m.last_gates.shape == (5, 3) and not m.last_gates.requires_grad


@pytest.mark.parametrize("activation", L.ACTIVATION_PLACEMENTS)
@pytest.mark.parametrize("gate", L.GATE_TYPES)
def test_one_path_block_is_its_convolution(activation, gate):
    # a softmax / constant gate over one path is 1: the block skips the gate and equals act(conv(x)) exactly;
    # relu / sigmoid gates over one path still scale the output per sample and must not take the shortcut
    torch.manual_seed(0)
    m = GatedConv2d(3, 4, kernel_sizes=(3,), activation=activation, gate=gate)
    nn.init.constant_(m.gate.fc.bias, 0.3)
    x = torch.randn(2, 3, 6, 6)
    y = m(x)
    plain = F.relu(m.paths[0](x))
    y_gated, a = m(x, return_gates=True)  # asking for the gates takes the full path
    assert torch.equal(y, y_gated)
    y.sum().backward()
    # every trainable weight gets a gradient (what DistributedDataParallel needs); the trivial gates' do not train
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    assert m.gate.fc.weight.requires_grad == (gate in ("relu", "sigmoid"))
    if gate in ("softmax", "constant"):
        assert torch.equal(y, plain) and torch.equal(a, torch.ones(2, 1))
    else:
        assert not torch.allclose(y, plain)
        assert torch.allclose(y, a[:, :, None, None] * plain)  # ReLU(a * conv) = a * ReLU(conv) for a >= 0


@pytest.mark.parametrize("bad, match", [
    (torch.randn(3, 8, 8), "4-D"),
    (torch.randn(1, 2, 3, 8, 8), "4-D"),
    (torch.randn(2, 4, 8, 8), "expects 3 input channels, got 4"),
])
def test_bad_input_raises(bad, match):
    with pytest.raises(ValueError, match=match):
        GatedConv2d(3, 4)(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"kernel_sizes": ()}, "at least one path"),
    ({"kernel_sizes": (3, 2)}, r"odd.*\(3, 2\)"),
    ({"gate": "tanh"}, "gate must be one of"),
    ({"activation": "before"}, "activation must be one of"),
    ({"stride": 0}, "stride must be >= 1"),
    ({"impl": "condconv"}, "needs activation='after_sum'"),
    ({"gate": "softmax", "temperature": 0.0}, "temperature"),
    ({"groups": 2}, r"in_channels \(3\) and out_channels \(4\) must be divisible by groups \(2\)"),
    ({"groups": 0}, "groups must be an int >= 1"),
    ({"kernel_size": 2}, r"kernel_sizes must be odd for padding=None .*\(2, 2, 2\)"),
    ({"kernel_size": (3, 4), "padding": "same"}, r"kernel_sizes must be odd for padding='same'"),
    ({"padding": "same", "stride": 2}, r"padding='same' needs stride 1"),
    ({"padding": "full"}, r"padding must be None, 'same', 'valid'"),
    ({"padding": -1}, "padding must be >= 0"),
    ({"padding": (1, 2, 3)}, "padding must be an int or a pair of ints"),
    ({"dilation": 0}, "dilation must be >= 1"),
    ({"stride": 1.5}, "stride must be an int or a pair of ints"),
    ({"kernel_size": (3, 3, 3)}, "kernel_size must be an int or a pair of ints"),
    ({"padding_mode": "mirror"}, "padding_mode must be one of"),
    ({"kernel_sizes": (1, 3), "padding": 1}, r"padding=1 needs one kernel size for every path"),
    ({"kernel_sizes": (3, 3), "num_paths": 4}, r"num_paths=4 disagrees with kernel_sizes \(2 paths\)"),
    ({"kernel_sizes": (3, 3), "kernel_size": 5}, "give kernel_size or kernel_sizes, not both"),
    # the defaults' own values given explicitly are still arguments (not "left at the default")
    ({"kernel_sizes": (3, 5), "num_paths": 3}, r"num_paths=3 disagrees with kernel_sizes \(2 paths\)"),
    ({"kernel_sizes": (3, 5), "kernel_size": 3}, "give kernel_size or kernel_sizes, not both"),
    ({"kernel_sizes": 3}, "kernel_sizes must be a sequence"),
    ({"num_paths": 0}, "num_paths must be an int >= 1"),
    ({"impl": "gemm", "groups": 2, "in_channels": 4}, r"impl='gemm' cannot compute this block: it needs groups=1"),
    ({"impl": "dense", "dilation": 2}, r"impl='dense' cannot compute this block"),
])
def test_bad_arguments_raise(kwargs, match):
    """Each bad argument or combination is one line naming the argument."""
    kwargs = {"in_channels": 3, "out_channels": 4, **kwargs}
    with pytest.raises(ValueError, match=match) as e:
        GatedConv2d(**kwargs)
    assert "\n" not in str(e.value)



def test_gate_hidden_layer_is_dynamic_convolutions_attention():
    """rd_ratio puts Linear -> ReLU -> Linear in front of the gate's output, with at least rd_min hidden units."""
    torch.manual_seed(0)
    g = Gate(64, 4, "softmax", temperature=2.0, rd_ratio=0.25)
    assert (g.hidden[0].in_features, g.hidden[0].out_features, g.fc.in_features) == (64, 16, 16)
    assert Gate(3, 4, rd_ratio=0.25).fc.in_features == 4  # the first block's 3 channels still get rd_min units
    x = torch.randn(5, 64, 3, 3)
    expected = torch.softmax(g.fc(torch.relu(g.hidden[0](x.mean((2, 3))))) / 2.0, dim=1)
    assert torch.allclose(g(x), expected, atol=1e-6)
    assert not any(p.requires_grad for p in Gate(8, 4, "constant", rd_ratio=0.5).parameters())
    with pytest.raises(ValueError, match="rd_ratio"):
        Gate(8, 4, rd_ratio=0.0)
