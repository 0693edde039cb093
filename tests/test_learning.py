"""Training learns: a few steps on tiny separable data made here halve the loss, for every registered model in the
bf16 autocast path that ``trainf`` takes on a CPU, and for every optimiser the package builds (``gatedconv-train
--opt adam|adamw|sgd|muon``, the fast recipe's SGD groups and its Muon + SGD, Muon alone, Muon + Adam's Adam).

The loss is measured before and after training on the same 20 images, in train mode (BatchNorm on batch
statistics) with dropout off: a deterministic number for the weights as they are. Skipping the optimiser's step
leaves it where it was (a ratio of 1); every model and optimiser here reaches 0.3 or less with the seed fixed.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gatedconv import create_model, list_models, trainf
from gatedconv.optim import Muon, MuonWithAdam, MuonWithSGD, build_optimizer, muon_param_groups
from gatedconv.run import RunConfig, _make_optimizer  # what gatedconv-train --opt NAME builds
from gatedconv.speedrun import SpeedrunConfig
from gatedconv.train import autocast_context, resolve_precision

MARGIN = 0.5  # loss after <= MARGIN x loss before
STEPS = 60

# Each model shrunk through its builder's own keywords, so it trains in well under a second (models not listed
# are small at their defaults). cnn_medium's widths are fixed: it gets 16x16 images instead.
SMALL = {
    "gatedconv": dict(widths=(4, 8, 16, 32, 64), head_hidden=64),
    "gatedconv_small": dict(widths=(4, 8, 16, 16, 16), head_hidden=64),
    "gatedconv_wide": dict(widths=(8, 16, 32, 64, 64), head_hidden=64),
    "gatedconv_fast": dict(widths=(8, 16, 32)),
    "cnn_base": dict(widths=(8, 16, 32), head_hidden=(64,)),
    "cnn_base_bn": dict(widths=(8, 16, 32), head_hidden=(64,)),
    "cnn_base_bn_dropout": dict(widths=(8, 16, 32), head_hidden=(64,)),
    "cnn_base_wide": dict(widths=(16, 32, 64), head_hidden=(128,)),
    "cnn_base_deep": dict(widths=(16, 32, 64), head_hidden=(128,)),
    "cnn_medium": dict(image_size=16),
    "resnet": dict(widths=(8, 8, 16, 16)),
    "resnet_small": dict(widths=(8, 8, 16)),
    "tv_resnet18": dict(layers=(1, 1, 1, 1)),
    "vit": dict(dim=32, depth=2, heads=2, stem_channels=(8,)),
    "previt": dict(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32),
}
# Adam's lr: 3e-3, except gatedconv_fast, whose logits are scaled by 1/9 (it needs larger steps), and cnn_medium,
# whose deep unnormalised MLP head overshoots at 3e-3
ADAM_LR = {"gatedconv_fast": 2e-2, "cnn_medium": 1e-3}


def separable_data(n_per_class: int = 2, size: int = 32, seed: int = 0):
    """Normalised images (10 n_per_class, 3, size, size) and labels: class c is the colour whose channels are c's
    three base-3 digits mapped to -1, 0, 1 (ten distinct colours, at least 1 apart), plus pixel noise of std 0.3."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[c // 9 % 3, c // 3 % 3, c % 3] for c in range(10)], dtype=torch.float32) - 1
    y = torch.arange(10).repeat(n_per_class)
    x = colours[y][:, :, None, None] + 0.3 * torch.randn(len(y), 3, size, size, generator=g)
    return x, y


def data_loss(net: nn.Module, x, y, precision: str) -> float:
    """Cross-entropy of ``net`` on ``(x, y)`` in train mode with dropout off (deterministic), no gradient."""
    dropouts = [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    net.train()
    for m in dropouts:
        m.eval()
    with torch.no_grad(), autocast_context(torch.device("cpu"), resolve_precision(precision, torch.device("cpu"))):
        loss = nn.functional.cross_entropy(net(x).float(), y).item()
    for m in dropouts:
        m.train()
    return loss


def train_with_trainf(net: nn.Module, opt, x, y, precision: str, steps: int = STEPS) -> None:
    """``steps`` optimiser steps on the one batch ``(x, y)`` through ``trainf`` (one epoch of repeated batches)."""
    trainf(net, [(x, y)] * steps, [(x, y)], nn.CrossEntropyLoss(), 1, opt, "cpu", precision=precision,
           animator=None, progress=False, quiet=True)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_vit_weights(tmp_path_factory):
    """``previt`` loads pretrained weights from a file: a random tiny torchvision ViT's, saved here."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("previt") / "tiny_vit.pth"
    torch.save(VisionTransformer(**SMALL["previt"]).state_dict(), path)
    return str(path)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_halves_its_loss_in_bf16(name, tiny_vit_weights):
    """60 Adam steps through trainf with CPU bf16 autocast (what the harness runs on a CPU with bf16) take the
    model's loss on 20 images of 10 separable classes to half its starting value or less."""
    kwargs = dict(SMALL.get(name, {}), **({"weights": tiny_vit_weights} if name == "previt" else {}))
    x, y = separable_data(size=16 if name == "cnn_medium" else 32)
    torch.manual_seed(0)
    net = create_model(name, **kwargs)
    before = data_loss(net, x, y, "bf16")
    train_with_trainf(net, torch.optim.Adam(net.parameters(), lr=ADAM_LR.get(name, 3e-3)), x, y, "bf16")
    after = data_loss(net, x, y, "bf16")
    assert after <= MARGIN * before, (before, after)


def _gated_net() -> nn.Module:
    torch.manual_seed(0)
    return create_model("gatedconv", **SMALL["gatedconv"])


@pytest.mark.parametrize("optimizer, expected", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                                 ("sgd", torch.optim.SGD), ("muon", MuonWithAdam)])
def test_every_train_optimiser_halves_the_loss(optimizer, expected):
    """``gatedconv-train --opt NAME`` as the harness builds it (RunConfig's defaults: lr 1e-3, weight decay 1e-4,
    Muon lr 0.02 with Adam for the rest; SGD at lr 0.01, Nesterov momentum 0.9) halves the gated network's loss
    in 60 fp32 steps through trainf."""
    x, y = separable_data()
    net = _gated_net()
    opt = _make_optimizer(RunConfig(optimizer=optimizer, **({"lr": 0.01} if optimizer == "sgd" else {})), net)
    assert type(opt) is expected
    before = data_loss(net, x, y, "fp32")
    train_with_trainf(net, opt, x, y, "fp32")
    after = data_loss(net, x, y, "fp32")
    assert after <= MARGIN * before, (before, after)


@pytest.mark.parametrize("part", ["muon_alone", "adam_of_muon_with_adam"])
def test_each_half_of_muon_with_adam_learns_alone(part):
    """Each half of ``--opt muon`` learns by itself, so neither can hide behind the other: ``Muon`` on the body's
    >= 2-D weights alone (biases, norms and the head stay at their initial values), and ``MuonWithAdam``'s own
    Adam on every parameter (no Muon group)."""
    x, y = separable_data()
    net = _gated_net()
    muon, other = muon_param_groups(net)
    if part == "muon_alone":
        opt = Muon(muon, lr=0.02)
    else:
        opt = MuonWithAdam([], muon + other, lr=1e-3)
        assert [g["muon"] for g in opt.param_groups] == [False]
    before = data_loss(net, x, y, "fp32")
    train_with_trainf(net, opt, x, y, "fp32")
    after = data_loss(net, x, y, "fp32")
    assert after <= MARGIN * before, (before, after)


@pytest.mark.parametrize("optimizer, expected", [("sgd", torch.optim.SGD), ("muon", MuonWithSGD)])
def test_fast_recipe_optimisers_halve_the_loss(optimizer, expected):
    """The fast recipe's optimiser as ``gatedconv-speedrun`` builds it (``build_optimizer``: airbench94's Nesterov
    SGD groups, or with ``--opt muon`` Muon on the filters and SGD on the rest), on the recipe's summed loss,
    halves gatedconv_fast's loss in 60 steps. The lr per 1024 examples is 4x airbench94's 11.5: the batch here
    is 20 images, not 1024, and the decoupled form scales each step by the batch."""
    x, y = separable_data()
    torch.manual_seed(0)
    net = create_model("gatedconv_fast", **SMALL["gatedconv_fast"])
    opt = build_optimizer(net, SpeedrunConfig(optimizer=optimizer, batch_size=len(y), lr=46.0))
    assert type(opt) is expected
    before = data_loss(net, x, y, "fp32")
    loss = nn.CrossEntropyLoss(reduction="sum")
    net.train()
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss(net(x), y).backward()
        opt.step()
    after = data_loss(net, x, y, "fp32")
    assert after <= MARGIN * before, (before, after)
