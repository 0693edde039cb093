"""gatedconv.speedrun (the airbench94-style recipe), the gatedconv_fast model and scripts/speedrun.py, on tiny tensors
and tiny generated data only."""
from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gatedconv
from gatedconv import augment, create_model, flops, optim
from gatedconv import ema as ema_mod
from gatedconv import speedrun as fast
from gatedconv.train import evaluate, evaluate_images, predict
from gatedconv.data import load_cifar10
from gatedconv.models.airbench import FrozenScaleBatchNorm, GatedFastNet, GatedFastNetConfig

from conftest import make_tiny_cifar

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "speedrun.py"
TINY = dict(widths=(8, 16, 16))
SUMMARY = re.compile(r"^mean (\d+\.\d\d)% \+- (\d+\.\d\d) over (\d+) seeds, (\d+\.\d) s per run$")


def _smooth_images(n: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """Float images with strong spatial and cross-channel correlation (their patches are far from white)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, 32, 32, generator=g, dtype=torch.float64)
    x = F.avg_pool2d(x, 3, stride=1, padding=1)
    mix = torch.eye(channels, dtype=torch.float64)
    mix = mix + 0.8 * torch.rand(channels, channels, generator=g, dtype=torch.float64)
    return torch.einsum("dc,nchw->ndhw", mix, x).float()


def _patches(x: torch.Tensor, k: int = 2) -> torch.Tensor:
    """All k x k patches as rows in (C, kh, kw) order, written independently of gatedconv.speedrun."""
    n, c, h, w = x.shape
    rows = [x[:, :, i:i + k, j:j + k].reshape(n, c * k * k) for i in range(h - k + 1) for j in range(w - k + 1)]
    return torch.cat(rows).double()


# ------------------------------------------------------------------------------------------------------
# whitening


def test_whitening_init_whitens_2x2_patches():
    x = _smooth_images(48)
    raw = _patches(x)
    raw_moment = raw.T @ raw / len(raw)
    assert (raw_moment - torch.eye(12, dtype=torch.float64)).abs().max() > 0.1  # not white to begin with

    conv = nn.Conv2d(3, 24, 2, bias=False)
    eps = 5e-4
    lam = fast.whitening_init(conv, x, eps)
    assert lam.shape == (12,) and bool((lam[:-1] >= lam[1:]).all())  # largest first
    assert torch.equal(conv.weight[12:], -conv.weight[:12])  # both signs of every eigenvector

    # the conv applied to the images whitens every 2x2 patch: second moment diag(lam / (lam + eps)) ~ I
    y = F.conv2d(x.double(), conv.weight.double())[:, :12]  # (N, 12, 31, 31)
    z = y.permute(0, 2, 3, 1).reshape(-1, 12)
    moment = z.T @ z / len(z)
    expected = torch.diag(lam / (lam + eps))
    assert torch.allclose(moment, expected, atol=1e-4), (moment - expected).abs().max()
    big = lam > 100 * eps
    assert big.sum() >= 6
    assert torch.allclose(moment.diagonal()[big], torch.ones(int(big.sum()), dtype=torch.float64), atol=1e-2)


def test_whitening_init_degenerate_directions_and_uint8():
    # identical channels: the 12-dim patch space has rank 4; whitening is the identity on those 4 directions
    # and maps the 8 degenerate ones to ~0
    x = _smooth_images(32, seed=1, channels=1).repeat(1, 3, 1, 1)
    w = torch.empty(24, 3, 2, 2)
    lam = fast.whitening_init(w, x, 5e-4)
    assert bool((lam[4:].abs() < 1e-6 * lam[0]).all()) and bool((lam[:4] > 1e-3).all())
    z = _patches(x) @ w[:12].double().reshape(12, 12).T  # whitened patches (M, 12)
    moment = z.T @ z / len(z)
    assert torch.allclose(moment[:4, :4], torch.eye(4, dtype=torch.float64), atol=2e-2)
    assert moment[4:, 4:].abs().max() < 1e-3

    # uint8 images are normalised with the given statistics first: same weights as normalising by hand
    data = torch.randint(0, 256, (16, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    w_u8, w_f = torch.empty(24, 3, 2, 2), torch.empty(24, 3, 2, 2)
    fast.whitening_init(w_u8, data, 5e-4, mean=mean, std=std)
    by_hand = (data.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    fast.whitening_init(w_f, by_hand, 5e-4)
    # eigenvectors are defined up to sign: compare each filter up to its sign
    signs = torch.sign((w_u8[:12] * w_f[:12]).flatten(1).sum(1)).view(-1, 1, 1, 1)
    assert torch.allclose(w_u8[:12], signs * w_f[:12], atol=1e-3)

    with pytest.raises(ValueError, match="2\\*C\\*k\\*k"):
        fast.whitening_init(nn.Conv2d(3, 16, 2), x)


# ------------------------------------------------------------------------------------------------------
# lookahead


def test_lookahead_ema_update_math():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ema_mod.LookaheadEMA(model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # the live weights move (as after some SGD steps), BatchNorm statistics too
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model[1].running_mean.add_(1.5)
        model[1].num_batches_tracked.fill_(7)
    moved = {k: v.clone() for k, v in model.state_dict().items()}

    ema.update(model, decay=0.75)
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            assert v.item() == 7 and k not in ema.average  # integer buffers are not averaged
            continue
        expected = 0.75 * start[k] + 0.25 * moved[k]
        assert torch.allclose(v, expected, atol=1e-6), k  # live weights reset to the average ...
        assert torch.allclose(ema.average[k], expected, atol=1e-6), k  # ... which moved a quarter of the way

    # decay 1: the live weights jump back to the average without moving it (the final update of a run)
    avg = {k: v.clone() for k, v in ema.average.items()}
    with torch.no_grad():
        model[0].weight.add_(3.0)
    ema.update(model, decay=1.0)
    assert torch.equal(model[0].weight, avg["0.weight"]) and torch.equal(ema.average["0.weight"], avg["0.weight"])
    # decay 0: the average becomes the live weights
    with torch.no_grad():
        model[0].weight.add_(3.0)
    live = model[0].weight.clone()
    ema.update(model, decay=0.0)
    assert torch.equal(ema.average["0.weight"], live) and torch.equal(model[0].weight, live)


def test_ema_decay_and_lr_schedules():
    assert ema_mod.ema_decay(0, 100) == 0.0
    assert ema_mod.ema_decay(100, 100) == pytest.approx(0.95 ** 5)
    assert ema_mod.ema_decay(50, 100) == pytest.approx(0.95 ** 5 / 8)
    total = 476  # airbench94: ceil(48 steps * 9.9 epochs)
    f = [optim.lr_factor(s, total) for s in range(total + 1)]
    warm = int(total * 0.23)
    assert f[0] == pytest.approx(0.2) and f[warm] == pytest.approx(1.0) and f[total] == pytest.approx(0.07)
    assert all(a < b for a, b in zip(f[:warm], f[1:warm + 1])) and all(a > b for a, b in zip(f[warm:], f[warm + 1:]))


# ------------------------------------------------------------------------------------------------------
# augmentation


def test_alternating_flip_alternates_and_is_deterministic():
    n, seed = 64, 3
    masks = [augment.alternating_flip_mask(n, e, seed) for e in range(4)]
    assert masks[0].any() and (~masks[0]).any()  # a random half in epoch 0
    assert torch.equal(masks[1], ~masks[0]) and torch.equal(masks[2], masks[0]) and torch.equal(masks[3], ~masks[0])
    assert torch.equal(augment.alternating_flip_mask(n, 0, seed), masks[0])  # recreated from the seed
    assert not torch.equal(augment.alternating_flip_mask(n, 0, seed + 1), masks[0])
    g = torch.Generator().manual_seed(seed)
    assert torch.equal(augment.alternating_flip_mask(n, 0, g), masks[0])
    assert torch.equal(augment.alternating_flip_mask(n, 2, g), masks[0])  # the generator was copied, not advanced

    x = torch.randn(n, 3, 4, 5)
    seen = []
    for e in range(2):
        y = augment.alternating_flip(x, e, seed)
        for i in range(n):
            assert torch.equal(y[i], x[i].flip(-1) if masks[e][i] else x[i])
        seen.append(y)
    # within two consecutive epochs every image is seen in both orientations
    for i in range(n):
        assert {bool(torch.equal(seen[0][i], x[i])), bool(torch.equal(seen[1][i], x[i]))} == {True, False}


def test_reflect_pad_and_translate():
    x = torch.randn(5, 3, 8, 8)
    for pad in (1, 2):
        assert torch.equal(augment.reflect_pad(x, pad), F.pad(x, (pad,) * 4, mode="reflect"))
        # the fallback for dtypes / devices without a reflect kernel gives the same pixels
        assert torch.equal(augment._reflect_pad_by_index(x, pad), F.pad(x, (pad,) * 4, mode="reflect"))
    xu8 = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(augment.reflect_pad(xu8, 2).float(), F.pad(xu8.float(), (2,) * 4, mode="reflect"))

    shifts = torch.tensor([[-2, 0], [2, 2], [0, -1], [1, -2], [0, 0]])
    out = augment.batch_translate(xu8, 2, shifts=shifts)
    ref = F.pad(xu8.float(), (2,) * 4, mode="reflect")
    assert out.dtype == torch.uint8 and out.shape == xu8.shape
    for i, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[i].float(), ref[i, :, 2 + dy:2 + dy + 8, 2 + dx:2 + dx + 8])
    assert torch.equal(out[4], xu8[4])  # no shift: the image itself

    a = augment.batch_translate(xu8, 2, torch.Generator().manual_seed(1))
    b = augment.batch_translate(xu8, 2, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------------
# test-time augmentation


class _Recorder(nn.Module):
    """Records every input it sees; its logits are a fixed linear map of the pixels (not flip-symmetric)."""

    def __init__(self, n_in: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_in, 4, generator=torch.Generator().manual_seed(0)), requires_grad=False)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return x.flatten(1) @ self.w


def test_tta_averages_exactly_the_intended_views():
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    model = _Recorder(3 * 8 * 8).train()
    f = lambda v: v.flatten(1) @ model.w  # noqa: E731

    out = torch.cat([predict(model, xb, 2) for xb in (x[:3], x[3:])])  # two chunks: 3 + 2 images
    expected_views, expected = [], []
    for xb in (x[:3], x[3:]):
        p = F.pad(xb, (1, 1, 1, 1), mode="reflect")
        up_left, down_right = p[:, :, :8, :8], p[:, :, 2:, 2:]  # windows moved up-left / down-right by 1 px
        views = [xb, xb.flip(3), up_left, up_left.flip(3), down_right, down_right.flip(3)]
        weights = [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
        expected_views += views
        expected.append(sum(w * f(v) for w, v in zip(weights, views)))
    assert len(model.seen) == len(expected_views) == 12
    for got, want in zip(model.seen, expected_views):
        assert torch.equal(got, want)
    assert torch.allclose(out, torch.cat(expected), atol=1e-5)
    assert not torch.allclose(out, f(x), atol=1e-3)  # the views matter

    model.seen.clear()
    out1 = predict(model, x, 1)
    assert len(model.seen) == 2 and torch.equal(model.seen[1], x.flip(3))
    assert torch.allclose(out1, 0.5 * f(x) + 0.5 * f(x.flip(3)), atol=1e-5)
    model.seen.clear()
    assert torch.allclose(predict(model, x, 0), f(x), atol=1e-5) and len(model.seen) == 1
    # evaluate() runs the same views in eval mode and restores the mode
    y = torch.zeros(5, dtype=torch.long)
    res = evaluate(model, [(x[:3], y[:3]), (x[3:], y[3:])], "cpu", "fp32", channels_last=False, tta_level=2)
    assert model.training and res["acc"] == pytest.approx(float((out.argmax(1) == 0).float().mean()))
    with pytest.raises(ValueError, match="TTA level"):
        augment.tta_views(x, 3)


# ------------------------------------------------------------------------------------------------------
# the model


def test_every_conv_after_the_stem_is_a_gated_block_with_two_paths():
    net = create_model("gatedconv_fast")
    assert isinstance(net, GatedFastNet)
    blocks = net.gated_blocks()
    assert len(blocks) == 6  # airbench94's six 3x3 convolutions
    path_convs = {id(c) for b in blocks for c in b.paths}
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0] is net.stem and net.stem.kernel_size == (2, 2) and net.stem.out_channels == 24
    assert all(id(c) in path_convs for c in convs[1:]) and len(convs) == 1 + len(path_convs)
    for b in blocks:
        assert b.num_paths >= 2 and b.kernel_sizes == (3, 1)
        assert b.impl == "auto" and b.activation == "after_sum" and isinstance(b.act, nn.Identity)
        assert b.gate.gate == "softmax" and all(c.bias is None for c in b.paths)
    # airbench's order: conv -> pool -> BN -> GELU -> conv -> BN -> GELU
    g = net.groups[0]
    assert isinstance(g.pool, nn.MaxPool2d) and isinstance(g.norm1, FrozenScaleBatchNorm) and isinstance(g.act, nn.GELU)
    assert not net.stem.weight.requires_grad and net.stem.bias.requires_grad
    assert all(not m.weight.requires_grad and m.bias.requires_grad
               for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert net.num_params() == sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert net.num_params(trainable_only=False) == net.num_params() + net.stem.weight.numel() + sum(
        m.weight.numel() for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    x = torch.randn(2, 3, 32, 32)
    out = net(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert net.stem.weight.grad is None and blocks[0].paths[1].weight.grad is not None


def test_model_init_dirac_zero_extra_path_uniform_gates():
    torch.manual_seed(0)
    net = create_model("gatedconv_fast", **TINY)
    for b in net.gated_blocks():
        w0 = b.paths[0].weight  # (C_out, C_in, 3, 3)
        c_in, n = b.in_channels, min(b.in_channels, b.out_channels)
        ident = torch.zeros(n, c_in, 3, 3)
        ident[torch.arange(n), torch.arange(n), 1, 1] = 1
        assert torch.equal(w0[:n], ident)  # output channel i passes input channel i through
        if b.out_channels > c_in:
            assert w0[c_in:].abs().sum() > 0  # the other output channels keep PyTorch's random init
        assert torch.equal(b.paths[1].weight, torch.zeros_like(b.paths[1].weight))
        a = b.gate(torch.randn(3, c_in, 5, 5))
        assert torch.allclose(a, torch.full_like(a, 0.5))
    sig = create_model("gatedconv_fast", gate="sigmoid", extra_path_init="dirac", **TINY)
    b = sig.gated_blocks()[1]
    assert torch.equal(b.paths[1].weight[:, :, 0, 0], torch.eye(b.out_channels))
    relu = create_model("gatedconv_fast", gate="relu", **TINY)
    assert torch.equal(relu.gated_blocks()[0].gate.fc.bias, torch.ones(2))  # ReLU gates must not start dead
    with pytest.raises(ValueError, match="three positive ints"):
        GatedFastNetConfig(widths=(8, 8))
    with pytest.raises(ValueError, match="stem"):
        GatedFastNetConfig(stem="nope")


def test_at_init_the_gated_net_computes_the_plain_airbench_net():
    # zero extra paths and uniform gates: every block is 1/2 x the dirac-initialised 3x3 conv, and the BatchNorm
    # after it (train mode) removes the constant; so the output equals single-conv blocks with the same weights
    torch.manual_seed(0)
    gated = create_model("gatedconv_fast", **TINY).double().train()
    plain = create_model("gatedconv_fast", kernel_sizes=(3,), gate="constant", **TINY).double().train()
    shared = {k: v for k, v in gated.state_dict().items() if "gate.fc" not in k and "paths.1" not in k}
    missing, unexpected = plain.load_state_dict(shared, strict=False)
    assert all("gate.fc" in k for k in missing) and not unexpected
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(gated(x), plain(x), rtol=1e-6, atol=1e-8)
    # and an independent airbench94-layout network of plain layers with the same weights (so a wrong layer
    # order, a missing activation or logit scale in GatedFastNet itself would show): stem conv -> GELU, then per
    # group conv -> maxpool(2) -> BN -> GELU -> conv -> BN -> GELU, then maxpool(3), linear, x 1/9
    cfg = gated.config
    layers = [nn.Conv2d(3, cfg.whiten_width, 2), nn.GELU()]
    c = cfg.whiten_width
    for w in cfg.widths:
        layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(w, eps=1e-12), nn.GELU(),
                   nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w, eps=1e-12), nn.GELU()]
        c = w
    layers += [nn.MaxPool2d(3), nn.Flatten(), nn.Linear(c, 10, bias=False)]
    ref = nn.Sequential(*layers).double().train()
    convs = [m for m in ref if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        convs[0].weight.copy_(gated.stem.weight)
        convs[0].bias.copy_(gated.stem.bias)
        for conv, block in zip(convs[1:], gated.gated_blocks()):
            conv.weight.copy_(block.paths[0].weight)  # the 3x3 path; the 1x1 path starts at zero
        ref[-1].weight.copy_(gated.head.weight)
    assert len(convs) == 1 + len(gated.gated_blocks()) == 7
    assert torch.allclose(gated(x), ref(x) / 9, rtol=1e-6, atol=1e-8)


def _randomise(net: nn.Module, seed: int = 0) -> None:
    """Random values everywhere (the dirac / zero / uniform-gate init would hide differences between forms)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


@pytest.mark.parametrize("kernel_sizes", [(3, 1), (3, 3)])
def test_gated_blocks_equal_the_reference_form_float64(kernel_sizes):
    net = create_model("gatedconv_fast", kernel_sizes=kernel_sizes, **TINY).double()
    _randomise(net)
    inputs = {}
    hooks = [b.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0].detach())) for b in net.gated_blocks()]
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    net.train()(x)
    for h in hooks:
        h.remove()
    assert len(inputs) == 6
    for block, xin in inputs.items():
        # what "auto" picks for this block's real input in training (bf16 autocast, channels-last, CPU) ...
        picked = block.choose_impl(xin.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
        # ... and every form it could pick, each equal to the reference form in float64
        forms = {picked, "fused", "gemm", "stacked", "condconv"}
        if xin.shape[-1] * xin.shape[-2] <= 16:
            forms.add("dense")
        ref = copy.deepcopy(block)
        ref.impl = "reference"
        want = ref(xin)
        for form in sorted(forms):
            b = copy.deepcopy(block)
            b.impl = form
            got = b(xin.contiguous(memory_format=torch.channels_last) if form in ("gemm", "dense") else xin)
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), (form, tuple(xin.shape))

    # whole network: impl="auto" against a reference-form copy with the same weights
    ref_net = create_model("gatedconv_fast", kernel_sizes=kernel_sizes, impl="reference", **TINY).double()
    ref_net.load_state_dict(net.state_dict())
    net.eval(), ref_net.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), ref_net(x), rtol=1e-10, atol=1e-10)
        # and in the training precision, where "auto" may take another form: close at bf16 accuracy
        xf = x.float().contiguous(memory_format=torch.channels_last)
        a_net = copy.deepcopy(net).float().to(memory_format=torch.channels_last)
        r_net = copy.deepcopy(ref_net).float().to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ya, yr = a_net(xf).float(), r_net(xf).float()
    assert (ya - yr).norm() <= 0.05 * yr.norm()


# ------------------------------------------------------------------------------------------------------
# optimiser, FLOPs, reporting


def test_optimizer_groups_follow_airbench():
    cfg = fast.SpeedrunConfig()
    net = create_model("gatedconv_fast", **TINY)
    opt = optim.build_optimizer(net, cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"bn_bias", "whiten_bias", "head", "other"}
    lr = 11.5 / (1024 * (1 + 1 / (1 - 0.85)))
    assert groups["other"]["lr"] == pytest.approx(lr) and groups["bn_bias"]["lr"] == pytest.approx(64 * lr)
    assert groups["head"]["lr"] == pytest.approx(lr) and groups["head"]["params"] == [net.head.weight]
    assert groups["whiten_bias"]["lr"] == pytest.approx(lr)
    decay = 0.0153 * 1024 / (1024 * (1 + 1 / (1 - 0.85)))  # per step, independent of the lr multiplier
    for g in opt.param_groups:
        assert g["lr"] * g["weight_decay"] == pytest.approx(decay) and g["nesterov"] and g["momentum"] == 0.85
    bn_biases = {id(m.bias) for m in net.modules() if isinstance(m, nn.BatchNorm2d)}
    assert {id(p) for p in groups["bn_bias"]["params"]} == bn_biases
    assert groups["whiten_bias"]["params"] == [net.stem.bias]
    in_groups = [id(p) for g in opt.param_groups for p in g["params"]]
    trainable = [id(p) for p in net.parameters() if p.requires_grad]
    assert sorted(in_groups) == sorted(trainable) and len(set(in_groups)) == len(in_groups)

    stem_conv = create_model("gatedconv_fast", stem="conv", **TINY)  # --no-whiten: trained stem + BatchNorm
    g2 = {g["name"]: g for g in optim.build_optimizer(stem_conv, cfg).param_groups}
    assert "whiten_bias" not in g2 and any(p is stem_conv.stem.weight for p in g2["other"]["params"])
    assert any(p is stem_conv.stem_norm.bias for p in g2["bn_bias"]["params"])


def test_training_step_flops_and_matmul_peak():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 64, 5, bias=False))
    b = 10
    conv_fwd = 2 * b * 4 * 3 * 9 * 64
    lin_fwd = 2 * b * 256 * 5
    # backward: the linear needs grads for its input and weight, the first conv only for its weight
    expected = conv_fwd * 2 + lin_fwd * 3
    assert flops.training_step_flops(net, (b, 3, 8, 8), channels_last=False, sample=2) == expected
    assert flops.training_step_flops(net, (b, 3, 8, 8), channels_last=False, sample=10) == expected
    assert all(p.grad is None for p in net.parameters())  # counted on a copy
    peak = flops.matmul_peak_flops(torch.float32, n=128, repeats=2)
    assert 1e6 < peak < 1e15


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_synthetic_train_step_trains_only_what_requires_grad(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 64, 5))
    net[0].bias.requires_grad_(False)  # frozen, like the whitening stem's weight
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    before = [p.detach().clone() for p in net.parameters()]
    step = flops.synthetic_train_step(net, x, y, label_smoothing=0.2, autocast_dtype=dtype)
    loss0 = F.cross_entropy(net(x), y).item()
    # a stale gradient on the frozen bias: an optimizer that held it would clear it (zero_grad) or step on it
    net[0].bias.grad = torch.ones(4)
    for _ in range(5):
        step()
    moved = [not torch.equal(b, p) for b, p in zip(before, net.parameters())]
    assert moved == [True, False, True, True]
    assert torch.equal(net[0].bias.grad, torch.ones(4))
    assert F.cross_entropy(net(x), y).item() < loss0  # SGD on one fixed batch lowers its loss


def test_time_to_accuracy_summary_and_lines():
    series = [(10.0, 0.50), (20.0, 0.84), (30.0, 0.90)]
    assert fast.time_to_accuracy(series, 0.835) == 20.0 and fast.time_to_accuracy(series, 0.95) is None
    rs = [dict(seed=s, acc=a - 0.01, acc_tta=a, tta_level=2, seconds=sec, train_seconds=sec - 1, target_acc=0.835,
               time_to_target=t, series=series) for s, a, sec, t in ((0, 0.94, 100.0, 20.0), (1, 0.92, 110.0, None))]
    s = fast.summarize(rs)
    assert s["acc_mean"] == pytest.approx(0.93) and s["acc_std"] == pytest.approx(0.0141421, rel=1e-4)
    assert s["seconds_mean"] == 105.0 and s["reached_target"] == 1 and s["time_to_target_mean"] == 20.0
    line = fast.format_summary_line(s)
    assert SUMMARY.match(line) and line == "mean 93.00% +- 1.41 over 2 seeds, 105.0 s per run"
    assert "not reached" in fast.format_seed_line(rs[1]) and "20.0 s" in fast.format_seed_line(rs[0])


def test_speedrun_is_deterministic_given_the_seed(tmp_path):
    root = make_tiny_cifar(tmp_path / "data", n_per_batch=20, n_test=20)
    data = load_cifar10(str(root))
    # bf16 autocast, the default training precision (the CLI smoke run below uses fp32 to compare numbers exactly)
    cfg = fast.SpeedrunConfig(epochs=1.5, batch_size=25, eval_batch_size=20, whiten_images=50, precision="bf16",
                              model_kwargs=dict(TINY), measure_flops=False, ema_every=2)
    quiet = lambda *a, **k: None  # noqa: E731
    r1 = fast.speedrun(cfg, data, 5, tmp_path / "a", print_fn=quiet)
    r2 = fast.speedrun(cfg, data, 5, tmp_path / "b", print_fn=quiet)
    assert r1["steps"] == r2["steps"] == 6 and len(r1["series"]) == 2  # 4 steps per epoch, 1.5 epochs: the second stops half way
    w1 = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model_state"]
    w2 = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model_state"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    # the whitening weight never trains; its bias trains only in the first whiten_bias_epochs (here: all of them) ...
    assert w1["stem.bias"].abs().sum() > 0
    frozen = fast.speedrun(dataclasses.replace(cfg, whiten_bias_epochs=0), data, 5, tmp_path / "f", print_fn=quiet)
    assert frozen["steps"] == 6
    w0 = torch.load(tmp_path / "f" / "checkpoint.pt", weights_only=True)["model_state"]
    assert torch.equal(w0["stem.bias"], torch.zeros_like(w0["stem.bias"]))  # ... and with 0 epochs, never
    net = create_model("gatedconv_fast", **TINY)
    fast.whitening_init(net.stem, data.train_x[:50], 5e-4, mean=data.mean_std()[0], std=data.mean_std()[1])
    assert torch.allclose(w1["stem.weight"], net.stem.weight, atol=1e-6)
    with pytest.raises(fast.SpeedrunError, match="already holds a run"):
        fast.speedrun(cfg, data, 5, tmp_path / "a", print_fn=quiet)
    with pytest.raises(fast.SpeedrunError, match="exceeds"):
        fast.speedrun(fast.SpeedrunConfig(batch_size=1000), data, 0, tmp_path / "c", print_fn=quiet)


# ------------------------------------------------------------------------------------------------------
# the command line


def run_cli(args, cwd, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(p):
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("speedrun")
    data_dir = make_tiny_cifar(cwd / "data", n_per_batch=40, n_test=40)
    args = ["--seeds", 2, "--data-dir", data_dir, "--out", cwd / "out", "--epochs", 2, "--batch-size", 50,
            "--eval-batch-size", 40, "--widths", "8,16,16", "--whiten-images", 100, "--figures", cwd / "figs",
            "--precision", "fp32", "-q"]
    p = run_cli(args, cwd)
    assert p.returncode == 0, p.stderr
    return cwd, data_dir, p, args


def test_cli_smoke_run(cli_run):
    cwd, data_dir, p, _ = cli_run
    lines = p.stdout.strip().splitlines()
    m = SUMMARY.match(lines[-1])
    assert m and m.group(3) == "2", lines[-1]
    assert sum(bool(SUMMARY.match(l)) for l in lines) == 1
    seed_lines = [l for l in lines if l.startswith("seed ")]
    assert len(seed_lines) == 2 and all("TTA2" in l and "time-to-83.5%" in l for l in seed_lines)
    assert any(l.startswith("efficiency:") and "square-matmul peak" in l for l in lines)
    assert (cwd / "figs" / "time_to_accuracy.png").exists()
    finals = [json.loads((cwd / "out" / f"seed{s}" / "final.json").read_text()) for s in (0, 1)]
    mean_tta = sum(f["acc_tta"] for f in finals) / 2
    assert float(m.group(1)) == pytest.approx(100 * mean_tta, abs=0.006)
    assert float(m.group(4)) == pytest.approx(sum(f["seconds"] for f in finals) / 2, abs=0.06)


def test_cli_run_directory_loads_with_load_model(cli_run):
    cwd, data_dir, _, _ = cli_run
    data = load_cifar10(str(data_dir))
    for s in (0, 1):
        run = cwd / "out" / f"seed{s}"
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["model"] == "gatedconv_fast" and cfg["seed"] == s and cfg["model_kwargs"]["widths"] == [8, 16, 16]
        assert cfg["mean"] == list(data.mean_std()[0])
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["epoch"]) for r in rows] == [1, 2] and all(0 <= float(r["test_acc"]) <= 1 for r in rows)
        final = json.loads((run / "final.json").read_text())
        model = gatedconv.load_model(run)
        assert isinstance(model.net, GatedFastNet)
        # the saved model reproduces the run's final accuracies (fp32 run: same numbers)
        assert evaluate_images(model, data.test_x, data.test_y)["top1"] == pytest.approx(final["acc"])
        with torch.no_grad():
            logits = predict(model.eval(), data.test_x.float() / 255, 2)
        assert (logits.argmax(1) == data.test_y).float().mean().item() == pytest.approx(final["acc_tta"])
        assert final["series"][-1][1] == final["acc"] and len(final["series"]) == 2
        # timed seconds = whitening + training loop + final TTA evaluation; the series is on the same clock
        timed_training = final["whiten_seconds"] + final["train_seconds"]
        assert final["seconds"] == pytest.approx(timed_training + final["eval_seconds"])
        assert final["series"][0][0] < final["series"][1][0] == pytest.approx(timed_training)
        assert final["wall_seconds"] >= final["seconds"] + final["monitor_seconds"]
        assert final["flops_per_step"] > 0 and 0 < final["efficiency"] < 1


def test_cli_bad_input_gives_one_line(cli_run, tmp_path):
    cwd, data_dir, _, args = cli_run
    line = assert_one_line_error(run_cli(["--data-dir", tmp_path / "nothing", "--out", tmp_path / "o"], tmp_path))
    assert line.startswith("error:") and "nothing" in line
    line = assert_one_line_error(run_cli(args, cwd))  # the same --out again: refuses to overwrite
    assert "already holds a run" in line
    p = run_cli(["--tta", "5"], tmp_path)
    assert p.returncode == 2 and assert_one_line_error(p).startswith("error:")
    line = assert_one_line_error(run_cli(["--data-dir", data_dir, "--out", tmp_path / "o2", "--batch-size", 100000],
                                         tmp_path))
    assert "exceeds" in line


def test_speedrun_table_reads_the_runs(cli_run, tmp_path):
    """scripts/speedrun_table.py: means over seeds from final.json, same-seed differences, the changed knobs."""
    import shutil
    cwd, _, _, _ = cli_run
    out = cwd / "out"
    finals = {s: json.loads((out / f"seed{s}" / "final.json").read_text()) for s in (0, 1)}
    # a one-seed "ablation" of seed 1: another label smoothing, accuracy moved by a known amount
    abl = tmp_path / "abl_ls" / "seed1"
    shutil.copytree(out / "seed1", abl)
    cfg = json.loads((abl / "config.json").read_text())
    cfg["speedrun"]["label_smoothing"] = 0.0
    (abl / "config.json").write_text(json.dumps(cfg))
    final = dict(finals[1], acc_tta=finals[1]["acc_tta"] - 0.0125, acc=finals[1]["acc"] + 0.005)
    (abl / "final.json").write_text(json.dumps(final))
    script = ROOT / "scripts" / "speedrun_table.py"
    p = subprocess.run([sys.executable, str(script), str(out), str(abl.parent), "--baseline", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| run |")
    base_row = [c.strip() for c in lines[2].strip("|").split("|")]
    tta = [100 * finals[s]["acc_tta"] for s in (0, 1)]
    mean, std = sum(tta) / 2, abs(tta[0] - tta[1]) / 2 ** 0.5
    assert base_row[:4] == ["out", "(baseline)", "0,1", f"{mean:.2f} ± {std:.2f}"]
    assert base_row[5] == "+0.00 (+0.00)"
    abl_row = [c.strip() for c in lines[3].strip("|").split("|")]
    # compared with the baseline's seed 1 only, not with its mean
    assert abl_row[:3] == ["abl_ls", "label_smoothing=0.0", "1"] and abl_row[5] == "-1.25 (+0.50)"
    assert abl_row[7] == f"{finals[1]['train_seconds'] / finals[1]['steps']:.2f}"
    # a run split across two calls (--first-seed) is summarised, and drawn, as one
    split = tmp_path / "split"
    shutil.copytree(out / "seed0", split / "seed0")
    shutil.copytree(out / "seed1", split / "seed1")
    (split / "seed2").mkdir()  # an interrupted seed: no final.json, left out
    fig = tmp_path / "figs" / "split.png"
    p = subprocess.run([sys.executable, str(script), str(split), "--figure", str(fig)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    split_row = [c.strip() for c in p.stdout.splitlines()[2].strip("|").split("|")]
    assert split_row[:3] == ["split", "0,1", f"{mean:.2f} ± {std:.2f}"]
    assert fig.stat().st_size > 0 and p.stdout.strip().endswith(str(fig))
    (tmp_path / "empty").mkdir()
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "empty")], capture_output=True, text=True)
    assert p.returncode == 1 and "no finished run" in p.stderr and "Traceback" not in p.stderr
