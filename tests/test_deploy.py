"""Deployed forms: ``reparameterize`` and ``DynamicConv2d`` compute the trained model's function at deployed cost."""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import gatedconv
from gatedconv import DynamicConv2d, GatedConv2d, create_model, reparameterize
from gatedconv import layers as L
from gatedconv.deploy import DeployError, fold_conv_bn
from gatedconv.dynamic import DYNAMIC_IMPLEMENTATIONS
from gatedconv.study import variant_kwargs


def _randomize_bn(bn: nn.BatchNorm2d) -> None:
    """Running statistics and affine weights far from their defaults, so that a fold that ignores any of them
    fails."""
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)


def _block(c_in, c_out, kernel_sizes, stride, gate, activation, act, seed, groups=1, dilation=1):
    torch.manual_seed(seed)
    m = GatedConv2d(c_in, c_out, kernel_sizes=kernel_sizes, stride=stride, gate=gate, activation=activation,
                    act_layer=act, groups=groups, dilation=dilation)
    with torch.no_grad():
        m.gate.fc.bias.uniform_(0.2, 1.0)  # keep ReLU gates open, so a wrong mix cannot hide behind zeros
    return m


@given(
    b=st.integers(1, 3), c_in=st.integers(1, 5), c_out=st.integers(1, 5), h=st.integers(1, 8), w=st.integers(1, 8),
    stride=st.sampled_from([1, 2]), kernel_sizes=st.lists(st.sampled_from([1, 3, 5]), min_size=1, max_size=4),
    gate=st.sampled_from(L.GATE_TYPES), activation=st.sampled_from(L.ACTIVATION_PLACEMENTS),
    act=st.sampled_from([nn.ReLU, nn.Identity, nn.GELU]), bn=st.booleans(), seed=st.integers(0, 2**16),
    groups=st.sampled_from([1, 1, 2, "depthwise"]), dilation=st.sampled_from([1, 1, 2, (1, 2)]),
)
def test_deployed_block_computes_the_same_function(b, c_in, c_out, h, w, stride, kernel_sizes, gate, activation, act,
                                                   bn, seed, groups, dilation):
    """Every block kind (grouped, depthwise and dilated ones too), with and without a BatchNorm after it, in
    float64: equal outputs, the right fused kind (a dynamic convolution only without groups or dilation: other
    input-gated after_sum blocks stay as they are)."""
    if groups == "depthwise":
        groups, c_out = c_in, c_in * (1 + c_out % 2)  # one or two filters per input channel
    else:
        c_in, c_out = c_in * groups, c_out * groups
    block = _block(c_in, c_out, kernel_sizes, stride, gate, activation, act, seed, groups=groups, dilation=dilation)
    net = nn.Sequential(block, nn.BatchNorm2d(c_out) if bn else nn.Identity()).double().eval()
    if bn:
        _randomize_bn(net[1])
    x = torch.randn(b, c_in, h, w, dtype=torch.float64)
    deployed = reparameterize(net)
    assert torch.allclose(deployed(x), net(x), atol=1e-10, rtol=1e-8)
    fused = deployed[0]
    one_conv = block.gate.is_one or (activation == "after_sum" and gate == "constant")
    if one_conv:
        conv = fused if isinstance(fused, nn.Conv2d) else fused[0]
        assert isinstance(conv, nn.Conv2d) and conv.out_channels == c_out
        assert (conv.groups, conv.dilation) == (block.groups, block.dilation)
        if bn:  # folded exactly when no activation comes between
            assert isinstance(deployed[1], nn.Identity) == (act is nn.Identity)
    elif activation == "after_sum" and block.groups == 1 and block.dilation == (1, 1):
        assert isinstance(fused, DynamicConv2d) and fused.num_kernels == len(kernel_sizes)
    elif activation == "after_sum":
        assert isinstance(fused, GatedConv2d) and fused.activation == "after_sum"
    else:
        assert isinstance(fused, GatedConv2d) and fused.activation == "per_path"


@given(b=st.integers(1, 4), c_in=st.integers(1, 5), c_out=st.integers(1, 5), hw=st.integers(1, 7),
       stride=st.sampled_from([1, 2]), k=st.integers(1, 4), gate=st.sampled_from(["relu", "softmax", "sigmoid"]),
       seed=st.integers(0, 2**16))
def test_dynamic_conv_forms_equal(b, c_in, c_out, hw, stride, k, gate, seed):
    """The four ways of applying per-sample mixed kernels agree with the block's reference form (float64)."""
    block = _block(c_in, c_out, [3] * k, stride, gate, "after_sum", nn.ReLU, seed).double().eval()
    dyn = block.reparameterize()
    x = torch.randn(b, c_in, hw, hw + 1, dtype=torch.float64)
    ref = block(x)
    for impl in DYNAMIC_IMPLEMENTATIONS:
        dyn.impl = impl
        assert torch.allclose(dyn(x), ref, atol=1e-10, rtol=1e-8), impl


def test_dynamic_conv_folds_a_following_batchnorm_for_any_gate():
    """A BatchNorm after an activation-free dynamic layer folds exactly, also for gates that do not sum to one
    (the shift is added once, not mixed)."""
    torch.manual_seed(0)
    for gate in ("relu", "sigmoid", "softmax"):
        block = _block(4, 6, (3, 3, 1), 1, gate, "after_sum", nn.Identity, 1)
        bn = nn.BatchNorm2d(6)
        _randomize_bn(bn)
        net = nn.Sequential(block, bn).double().eval()
        deployed = reparameterize(net)
        assert isinstance(deployed[0], DynamicConv2d) and isinstance(deployed[1], nn.Identity)
        x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
        assert torch.allclose(deployed(x), net(x), atol=1e-10)


def test_fold_conv_bn_and_unfoldable_pairs():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5)
    _randomize_bn(bn)
    seq = nn.Sequential(conv, bn).double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert torch.allclose(fold_conv_bn(seq[0], seq[1])(x), seq(x), atol=1e-12)
    # BatchNorm after an activation is not folded (it is not affine through the ReLU)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.BatchNorm2d(5)).eval()
    deployed = reparameterize(net)
    assert isinstance(deployed[2], nn.BatchNorm2d)


@pytest.mark.parametrize("converted", [False, True])
def test_batchnorms_behind_a_custom_forward_fold_too(converted):
    """torchvision's ResNet-18 calls its BatchNorms from its blocks' own forward: every one follows a convolution
    whose output nothing else reads, so none is left after deployment (plain, and converted: there into the
    dynamic convolutions), and the function is the same to float64 rounding."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).double()
    if converted:
        net, _ = gatedconv.convert(net, exclude=["conv1"], min_kernel_size=3)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            _randomize_bn(m)
    net.eval()
    deployed = reparameterize(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    assert isinstance(deployed.layer1[0].conv1, DynamicConv2d if converted else nn.Conv2d)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(deployed(x), net(x), atol=1e-9)


class _Branching(nn.Module):
    """conv -> bn, and the conv's output read a second time: the fold would change that second reader."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class _Untraceable(nn.Module):
    """A forward with control flow on a tensor's value (fx cannot trace it) around a Sequential conv -> bn."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))

    def forward(self, x):
        return self.body(x) if x.sum() > 0 else -self.body(x)


@pytest.mark.parametrize("model, folded", [(_Branching, False), (_Untraceable, True)])
def test_batchnorm_fold_only_where_the_function_stays(model, folded):
    """A convolution whose output has a second reader keeps its BatchNorm; a forward fx cannot trace still gets
    its Sequential pairs folded. Both compute the same function deployed."""
    torch.manual_seed(0)
    net = model().double()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            _randomize_bn(m)
    net.eval()
    deployed = reparameterize(net)
    assert any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules()) is not folded
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert torch.allclose(deployed(x), net(x), atol=1e-10)


def test_a_single_block_deploys_as_the_model_itself():
    """reparameterize(block): the block's own deployed form (one convolution for a constant-gate mix), not a copy
    of the block; a reflect-padded convolution's BatchNorm folds too (it acts on the output)."""
    torch.manual_seed(0)
    block = GatedConv2d(4, 6, num_paths=4, gate="constant", activation="after_sum", padding_mode="reflect").double()
    deployed = reparameterize(block)
    assert not any(isinstance(m, GatedConv2d) for m in deployed.modules()) and not deployed.training
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    assert torch.allclose(deployed(x), block(x), atol=1e-12)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4)).double()
    _randomize_bn(net[1])
    net.eval()
    folded = reparameterize(net)
    assert isinstance(folded[1], nn.Identity)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert torch.allclose(folded(x), net(x), atol=1e-12)


def test_inference_flops_leaves_a_training_model_as_it_was():
    """Counting runs an eval-mode forward: the BatchNorm statistics do not move and the mode comes back."""
    from gatedconv.flops import inference_flops

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    before = copy.deepcopy(net.state_dict())
    assert inference_flops(net, (1, 3, 6, 6)) == 2 * 4 * 27 * 16
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("variant", ["relu", "plain", "fixed_mix", "dyconv", "condconv"])
def test_study_networks_deploy_to_their_deployed_cost(variant):
    """The study's networks: plain and the constant-mix control become plain convolutions, the input-gated mixes
    dynamic convolutions, the per-path ReLU gate stays; outputs equal (float64) and the trained model untouched."""
    torch.manual_seed(0)
    net = create_model("gatedconv", widths=(4, 8, 8, 16, 16), **variant_kwargs(variant)).double()
    net(torch.randn(8, 3, 32, 32, dtype=torch.float64))  # train mode: BatchNorm statistics move off their defaults
    before = copy.deepcopy(net.state_dict())
    net.eval()
    deployed = reparameterize(net)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(deployed(x), net(x), atol=1e-10)
    kinds = {type(stage[0]).__name__ for stage in deployed.features}
    expected = {"relu": "GatedConv2d", "plain": "Sequential", "fixed_mix": "Sequential", "dyconv": "DynamicConv2d",
                "condconv": "DynamicConv2d"}[variant]
    assert kinds == {expected}
    assert not deployed.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the trained model is untouched
    assert not any(isinstance(m, GatedConv2d) for m in deployed.modules()) or variant == "relu"


@pytest.mark.parametrize("batch", [1, 4])
def test_deployed_dynamic_network_within_bf16_tolerance(batch):
    """bf16 autocast on channels-last tensors (how the harness runs), every form of the dynamic layers."""
    torch.manual_seed(0)
    net = create_model("gatedconv", **variant_kwargs("dyconv")).eval()
    deployed = reparameterize(net).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    ref = net(x)
    for impl in DYNAMIC_IMPLEMENTATIONS:
        for m in deployed.modules():
            if isinstance(m, DynamicConv2d):
                m.impl = impl
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = deployed(x).float()
        assert (y - ref).abs().max() < 0.05 * ref.abs().max(), impl


def test_model_without_gated_blocks_comes_back_as_an_equal_copy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(2, 3, 6, 6)
    net(x)
    deployed = reparameterize(net)
    assert deployed is not net and torch.equal(deployed(x), net.eval()(x))
    assert set(deployed.state_dict()) == set(net.state_dict())


def test_deployed_model_passes_torch_export():
    torch.manual_seed(0)
    for variant in ("dyconv", "fixed_mix"):
        deployed = reparameterize(create_model("gatedconv", widths=(8, 8, 16, 16, 16), **variant_kwargs(variant)).eval())
        x = torch.randn(2, 3, 32, 32)
        program = torch.export.export(deployed, (x,))
        assert torch.allclose(program.module()(x), deployed(x), atol=1e-5)


def test_block_that_cannot_be_deployed_is_named_in_one_line():
    class Custom(GatedConv2d):
        def forward(self, x, return_gates=False):
            return super().forward(x) * 2

    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sequential(Custom(3, 4)))
    with pytest.raises(DeployError, match=r"^cannot deploy 1\.0 \(Custom\)") as e:
        reparameterize(net)
    assert "\n" not in str(e.value)


def test_load_model_and_evaluate_deploy(tmp_path, tiny_cifar, capsys):
    """A trained run's deployed form evaluates to the same accuracy as the trained one."""
    from gatedconv.cli.evaluate import main as evaluate_main
    from gatedconv.run import RunConfig, run_training

    out = tmp_path / "run"
    run_training(RunConfig(epochs=1, batch_size=50, data_dir=str(tiny_cifar), out=str(out), ema_decay=0.0,
                           compile="off", model_kwargs={**variant_kwargs("dyconv"), "widths": [8, 8, 16, 16, 16]}), print_fn=lambda *a, **k: None)
    trained, deployed = gatedconv.load_model(out), gatedconv.load_model(out, deploy=True)
    assert any(isinstance(m, DynamicConv2d) for m in deployed.modules())
    x = torch.rand(5, 3, 32, 32)
    assert torch.allclose(deployed(x), trained(x), atol=1e-4)
    lines = []
    for extra, where in (([], "trained"), (["--deploy"], "deployed")):
        argv = [str(out), "--data-dir", str(tiny_cifar), *extra, "--output", str(tmp_path / "eval" / where)]
        assert evaluate_main(argv) == 0
        lines.append(capsys.readouterr().out.splitlines()[0])
    assert "(deployed)" in lines[1]
    assert lines[0].split("test top-1")[1] == lines[1].split("test top-1")[1]
    # the two evaluations as records, and the table that sets them side by side
    from gatedconv import report
    into = tmp_path / "results" / "deploy_check.json"
    assert report.collect([tmp_path / "eval" / "trained", tmp_path / "eval" / "deployed"], into) == 2
    recs = report.Results(report.load_results(tmp_path)).file("deploy_check")
    assert [r["deployed"] for r in recs] == [False, True] and recs[1]["command"].endswith("--deploy --output " +
                                                                                         str(tmp_path / "eval" / "deployed"))
    assert recs[0]["correct"] == recs[1]["correct"] and recs[0]["test_images"] == 40
    assert f"| `{out}` | {recs[0]['acc_pct']:.2f}% ({recs[0]['correct']}/40) |" in report.TABLES["deploy_check"](
        report.Results(report.load_results(tmp_path)))
