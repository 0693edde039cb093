"""gatedconv.convert: the convolutions of any model become gated blocks; upcycled, the model computes the same
function at conversion (eval and train mode), the copies move apart in training; what cannot be converted is left
alone and reported; bad filters are one-line errors."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

import gatedconv
from gatedconv import GatedConv2d, convert, reparameterize
from gatedconv import layers as L


pytestmark = pytest.mark.usefixtures("one_thread")


def _same_outputs(original: nn.Module, converted: nn.Module, x: torch.Tensor, atol: float = 1e-9) -> None:
    """Equal outputs (to ``atol`` of the largest output, float64) in eval mode and in train mode (BatchNorm on batch
    statistics; dropout drawing the same masks), and equal running statistics after the train-mode pass."""
    for training in (False, True):
        original.train(training)
        converted.train(training)
        with torch.no_grad():
            torch.manual_seed(1)
            y0 = original(x)
            torch.manual_seed(1)
            y1 = converted(x)
        scale = y0.abs().max()
        assert scale > 0 and (y1 - y0).abs().max() <= atol * scale, (training, (y1 - y0).abs().max() / scale)
    for (n0, b0), (n1, b1) in zip(original.named_buffers(), converted.named_buffers()):
        if "running" in n0:
            assert torch.allclose(b0, b1, atol=atol, rtol=0), n0


def _small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, (1, 3), stride=2, padding=(0, 1)), nn.ReLU(),
        nn.Conv2d(8, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def test_resnet18_computes_the_same_function_at_conversion():
    """torchvision's resnet18, stem and 1x1 convolutions left plain: the 16 3x3 convolutions become upcycled gated
    blocks, the model's outputs are unchanged in eval and train mode (float64), the report names what was left
    alone and why, and the original model is untouched."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).double()
    before = copy.deepcopy(net.state_dict())
    gated, report = convert(net, exclude=["conv1"], min_kernel_size=3)
    blocks = {n: m for n, m in gated.named_modules() if isinstance(m, GatedConv2d)}
    assert len(blocks) == 16 and set(blocks) == set(report.converted)
    assert report.skipped == {
        "conv1": "chosen by exclude",
        **{f"layer{i}.0.downsample.0": "kernel 1x1 smaller than min_kernel_size=3" for i in (2, 3, 4)},
    }
    block = blocks["layer2.0.conv1"]
    assert (block.num_paths, block.gate.gate, block.activation, block.stride, type(block.act)) == (
        4, "softmax", "after_sum", (2, 2), nn.Identity)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(isinstance(m, GatedConv2d) for m in net.modules())
    _same_outputs(net, gated, torch.randn(2, 3, 32, 32, dtype=torch.float64))


def test_mobilenet_v2_depthwise_convolutions_convert():
    """torchvision's mobilenet_v2: every convolution (depthwise, 1x1 and the stem) converted, the same function in
    eval and train mode (float64; a batch of 4, as BatchNorm over the 1x1 maps of a batch of 2 amplifies
    rounding)."""
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2(weights=None, num_classes=10).double()
    gated, report = convert(net, num_paths=2)
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert report.converted == convs and report.skipped == {}
    depthwise = gated.get_submodule("features.2.conv.1.0")
    assert isinstance(depthwise, GatedConv2d) and depthwise.groups == depthwise.in_channels == 96
    _same_outputs(net, gated, torch.randn(4, 3, 32, 32, dtype=torch.float64))


def test_timm_model_computes_the_same_function_at_conversion():
    """A timm model (when timm is installed): its 3x3 and 5x5 convolutions (stem, depthwise) converted, the 1x1
    ones (pointwise, squeeze-excitation, head) left alone; the same function in eval and train mode."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10).double()
    gated, report = convert(net, min_kernel_size=3)
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert report.converted == [n for n, m in convs if max(m.kernel_size) >= 3] and len(report.converted) >= 10
    assert set(report.skipped) == {n for n, m in convs if m.kernel_size == (1, 1)}
    _same_outputs(net, gated, torch.randn(4, 3, 32, 32, dtype=torch.float64))


@pytest.mark.parametrize("num_paths", [1, 2, 3])
@pytest.mark.parametrize("activation", L.ACTIVATION_PLACEMENTS)
@pytest.mark.parametrize("gate", L.GATE_TYPES)
def test_upcycle_is_exact_for_every_gate(gate, activation, num_paths):
    """Whatever the gate (softmax, ReLU, sigmoid, constant, over one path too) and activation placement, the upcycled
    model equals the original at conversion (float64). A softmax gate keeps its input-dependent initialisation over
    exact copies; the other gates start uniform over perturbed copies (noise 0.5: copies that did not sum back to
    the kernel would show)."""
    torch.manual_seed(0)
    net = _small_net().double()
    gated, report = convert(net, gate=gate, activation=activation, num_paths=num_paths, noise=0.5)
    assert len(report.converted) == 4
    x = torch.randn(3, 3, 9, 9, dtype=torch.float64)
    _same_outputs(net, gated, x)
    block = gated[0]
    a = block.gate(x)
    same = [torch.equal(p.weight, block.paths[0].weight) for p in block.paths]
    if gate == "softmax" and num_paths > 1:
        assert all(same) and not torch.allclose(a, a[:1, :1].expand_as(a))  # copies; the gate depends on the input
    else:
        assert torch.equal(a, a[:1, :1].expand_as(a))  # every path, every sample alike
        assert not any(same[1:])  # the perturbed copies differ


@pytest.mark.parametrize("gate", ["softmax", "relu"])
def test_upcycle_with_a_hidden_gate_layer(gate):
    """A gate with a hidden layer (rd_ratio) is initialised as a new gate's (finite, not all zero: the blocks are
    made without initialising their kernels, which the copies then fill) and the function is unchanged."""
    torch.manual_seed(0)
    net = _small_net().double()
    gated, _ = convert(net, gate=gate, rd_ratio=0.5)
    hidden = gated[0].gate.hidden[0]
    assert torch.isfinite(hidden.weight).all() and hidden.weight.abs().max() > 0
    assert hidden.weight.abs().max() <= 1 / hidden.in_features ** 0.5  # nn.Linear's own initialisation bound
    _same_outputs(net, gated, torch.randn(3, 3, 9, 9, dtype=torch.float64))


def _train(gate: str, noise: float, steps: int = 5):
    """The gated blocks of a converted small network before and after a few SGD steps on random data (float64)."""
    torch.manual_seed(0)
    gated, _ = convert(_small_net().double(), gate=gate, noise=noise)
    blocks = [m for m in gated.modules() if isinstance(m, GatedConv2d)]
    before = copy.deepcopy(blocks)
    opt = torch.optim.SGD(gated.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 9, 9, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (8,), generator=g)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(gated(x), y).backward()
        opt.step()
    return before, blocks


def _differences(block: GatedConv2d) -> torch.Tensor:
    """Each path kernel but the first minus the first, stacked."""
    return torch.stack([p.weight.detach() - block.paths[0].weight.detach() for p in block.paths[1:]])


def test_upcycled_copies_and_gates_move_apart_in_training():
    """Softmax (the default): exact copies at conversion; after five SGD steps on random data they differ by a fair
    part of how far they moved, and the gates have moved. A ReLU gate started uniform over perturbed copies: the
    copies get different updates and the gate leaves zero (slowly: its gradient is proportional to the
    perturbation). Without the perturbation (noise=0) the copies stay identical and the gate stays uniform over the
    paths (its rows move alike): the symmetry the perturbation breaks."""
    before, after = _train("softmax", noise=0.0)
    for b0, b1 in zip(before, after):
        assert _differences(b0).abs().max() == 0
        moved = (b1.paths[0].weight - b0.paths[0].weight).norm()
        assert _differences(b1).flatten(1).norm(dim=1).min() > 0.01 * moved
        assert not torch.equal(b1.gate.fc.weight, b0.gate.fc.weight)

    before, after = _train("relu", noise=0.01)
    for b0, b1 in zip(before, after):
        d0, d1 = _differences(b0), _differences(b1)
        assert (d1 - d0).flatten(1).norm(dim=1).min() > 1e-8 * d0.norm()  # different updates (1e-6 seen)
        assert b0.gate.fc.weight.abs().max() == 0
        assert _row_spread(b1.gate.fc.weight) > 1e-7  # the paths' gate weights differ (1e-5 seen): not uniform

    before, after = _train("relu", noise=0.0)
    for b0, b1 in zip(before, after):
        assert not torch.equal(b1.paths[0].weight, b0.paths[0].weight)  # trained...
        assert _differences(b1).abs().max() == 0  # ...but the copies are still identical
        # uniform: the rows moved alike (but for the order of floating-point sums: 1e-19 seen)
        assert _row_spread(b1.gate.fc.weight) < 1e-15 and _row_spread(b1.gate.fc.bias[:, None]) < 1e-15


def _row_spread(w: torch.Tensor) -> float:
    """How far the gate's per-path rows are from the first (0: every path weighted alike)."""
    return (w - w[:1]).abs().max().item()


def test_fresh_init_is_a_new_block():
    """init='fresh' keeps the new block's own initialisation: the same weights as GatedConv2d built with the
    convolution's arguments from the same random state, nothing copied from the convolution."""
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    torch.manual_seed(3)
    block, report = convert(conv, init="fresh", gate="relu")
    torch.manual_seed(3)
    expected = GatedConv2d(4, 6, 3, 2, 1, 1, 2, True, num_paths=4, gate="relu", activation="after_sum",
                           act_layer=nn.Identity)
    assert report.converted == [""]
    assert block.state_dict().keys() == expected.state_dict().keys()
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in block.state_dict().items())
    assert not torch.equal(block.paths[0].weight, conv.weight)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_what_cannot_be_converted_is_left_alone_and_reported():
    """A Conv2d subclass, a transposed and a 1-D convolution, a convolution with hooks, a geometry the block
    refuses (an even kernel with padding 'same') and an existing gated block are left as they are (the very
    modules), named with the reason; a convolution used at two places becomes one block at both."""

    class MyConv(nn.Conv2d):
        pass

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            shared = nn.Conv2d(4, 4, 3, padding=1)
            hooked = nn.Conv2d(4, 4, 3, padding=1)
            hooked.register_forward_hook(lambda m, i, o: o * 2)
            self.body = nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1), shared, shared, MyConv(4, 4, 3, padding=1), hooked,
                nn.Conv2d(4, 4, 4, padding="same"), GatedConv2d(4, 4), nn.ConvTranspose2d(4, 4, 3, padding=1),
            )
            self.side = nn.Conv1d(4, 4, 3)

        def forward(self, x):
            return self.body(x)

    net = Holder()
    gated, report = convert(net)
    assert report.converted == ["body.0", "body.1"]
    skipped = report.skipped
    assert skipped.keys() == {f"body.{i}" for i in range(3, 8)} | {"side"}
    assert skipped["body.3"].startswith("a subclass of nn.Conv2d")
    assert "hooks" in skipped["body.4"]
    assert skipped["body.5"].startswith("kernel_sizes must be odd for padding='same'")
    assert skipped["body.6"] == "already a gated block" and skipped["body.7"] == "a transposed convolution"
    assert skipped["side"] == "not a 2-D convolution"
    assert gated.body[1] is gated.body[2] and isinstance(gated.body[1], GatedConv2d)
    for i in range(3, 8):
        assert type(gated.body[i]) is type(net.body[i])
    assert "left alone  body.3" in str(report) and "\n" not in skipped["body.5"]
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(gated(x), net(x), atol=1e-5)


def test_filters_choose_the_convolutions():
    """fnmatch patterns (a name also covers the modules under it) and predicates choose what is converted."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    _, report = convert(net, include="layer1", inplace=False, init="fresh")
    assert report.converted == [f"layer1.{i}.conv{j}" for i in (0, 1) for j in (1, 2)]
    assert report.skipped["conv1"] == "not chosen by include"
    _, report = convert(net, include=["layer4.*"], exclude=lambda name, m: m.stride != (1, 1), init="fresh")
    assert report.converted == ["layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"]
    assert report.skipped["layer4.0.conv1"] == "chosen by exclude"


def test_inplace_converts_the_model_itself():
    net = _small_net()
    same, report = convert(net, inplace=True)
    assert same is net and isinstance(net[0], GatedConv2d) and len(report.converted) == 4


@pytest.mark.parametrize("kwargs, match", [
    ({"include": 3}, r"include must be an fnmatch pattern, a list of them or a predicate"),
    ({"exclude": ["stem"]}, r"exclude pattern 'stem' matches no convolution of the model \(names look like"),
    ({"include": [""]}, r"include patterns must be non-empty strings"),
    ({"include": ["0", 1]}, r"include patterns must be non-empty strings, got 1"),
    ({"init": "copy"}, r"init must be one of \('upcycle', 'fresh'\)"),
    ({"min_kernel_size": 0}, r"min_kernel_size must be an int >= 1"),
    ({"noise": -1.0}, r"noise must be a finite number >= 0"),
    ({"gate": "tanh"}, r"gate must be one of"),
    ({"num_paths": 0}, r"num_paths must be an int >= 1"),
    ({"impl": "condconv", "activation": "per_path"}, r"impl='condconv' needs activation='after_sum'"),
])
def test_bad_arguments_are_one_line_errors(kwargs, match):
    """A bad filter or block argument: a one-line ValueError before anything changes."""
    net = _small_net()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match=match) as e:
        convert(net, inplace=True, **kwargs)
    assert "\n" not in str(e.value)
    assert isinstance(net[0], nn.Conv2d) and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_converted_model_deploys_to_the_same_function():
    """Upcycled softmax blocks deploy (gatedconv.reparameterize) to dynamic convolutions with the BatchNorms folded
    in where nothing comes between; blocks with groups stay gated; the function is unchanged (float64, eval)."""
    torch.manual_seed(0)
    net = _small_net().double()
    gated, _ = convert(net, min_kernel_size=3)
    for m in gated.modules():  # move off the uniform start so that the deployed gate matters
        if isinstance(m, GatedConv2d):
            nn.init.normal_(m.gate.fc.weight)
    gated.eval()
    deployed = reparameterize(gated)
    kinds = [type(deployed[i]).__name__ for i in (0, 3, 6, 8)]
    assert kinds == ["DynamicConv2d", "GatedConv2d", "GatedConv2d", "Conv2d"]  # groups; a 1x3 kernel; 1x1 left
    assert isinstance(deployed[1], nn.Identity)  # the BatchNorm folded into the dynamic convolution
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert torch.allclose(deployed(x), gated(x), atol=1e-10)


def test_converted_model_reloads_into_the_same_model_converted_again():
    """The documented way to reload: build the same model, convert it with the same arguments (any init), load the
    state dict: the same function."""
    torch.manual_seed(0)
    gated, _ = convert(_small_net(), min_kernel_size=3)
    rebuilt, _ = convert(_small_net(), min_kernel_size=3, init="fresh")
    rebuilt.load_state_dict(gated.state_dict())
    x = torch.randn(2, 3, 9, 9)
    assert torch.equal(rebuilt.eval()(x), gated.eval()(x))


def test_convert_is_exported():
    assert gatedconv.convert is convert and "convert" in gatedconv.__all__


def test_converted_registry_model_trains_saves_reloads_and_deploys(tmp_path, tiny_cifar):
    """A converted torchvision ResNet-18 (``create_model(..., convert=...)``) trains through the harness, its
    conversion is saved with the run's model keywords, ``load_model`` rebuilds it with the trained weights, and
    its deployed form (dynamic convolutions without an activation of their own) computes the same function."""
    import gatedconv
    from gatedconv import DynamicConv2d
    from gatedconv.run import RunConfig, run_training

    kwargs = {"layers": [1, 1, 1, 1], "convert": {"exclude": ["conv1"], "min_kernel_size": 3}}
    out = tmp_path / "run"
    run_training(RunConfig(model="tv_resnet18", epochs=1, batch_size=50, data_dir=str(tiny_cifar), out=str(out),
                           compile="off", precision="fp32", model_kwargs=kwargs), print_fn=lambda *a, **k: None)
    model = gatedconv.load_model(out)
    assert sum(isinstance(m, GatedConv2d) for m in model.modules()) == 8  # 2 convs x 4 blocks; stem and 1x1 plain
    deployed = gatedconv.load_model(out, deploy=True)
    dyn = [m for m in deployed.modules() if isinstance(m, DynamicConv2d)]
    assert len(dyn) == 8 and all(isinstance(m.act, nn.Identity) for m in dyn)  # the model's BN and ReLU follow
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(deployed(x), model(x), atol=1e-4)
    # the BatchNorm after each dynamic convolution is folded into it (called from BasicBlock.forward)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())


def test_torchvision_model_pickles_like_any_registered_model(tmp_path):
    """torch.save / pickle of the whole model (not only its state dict) finds the class by name."""
    import pickle

    from gatedconv import create_model

    net = create_model("tv_resnet18", layers=(1, 1, 1, 1))
    clone = pickle.loads(pickle.dumps(net))
    assert type(clone) is type(net) and clone.num_params() == net.num_params()
    torch.save(net, tmp_path / "net.pt")
    again = torch.load(tmp_path / "net.pt", weights_only=False)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(again.eval()(x), net.eval()(x))
