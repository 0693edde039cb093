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


def test_dense_form_needs_stride_one():
    m = GatedConv2d(4, 4, stride=2, impl="dense")
    with pytest.raises(ValueError, match="stride 1"):
        m(torch.randn(1, 4, 2, 2))


def test_auto_choice():
    m = GatedConv2d(8, 8)
    cl = torch.randn(2, 8, 2, 2).to(memory_format=torch.channels_last)
    assert m.choose_impl(torch.randn(1, 8, 32, 32)) == "reference"
    assert m.choose_impl(cl) == "reference"  # fp32: the GEMM form measured slower
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.choose_impl(cl) == "dense"  # bf16, channels_last, 2x2 map: the dense form measured fastest
        assert m.choose_impl(torch.randn(2, 8, 2, 2)) == "reference"  # NCHW
        assert m.choose_impl(torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last)) == "gemm"
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
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GatedConv2d(3, 4, **kwargs)



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
