"""ModelEma: the update rule, buffers, state round-trip, and trainf evaluating the average."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gatedconv.ema import ModelEma
from gatedconv.train import evaluate, trainf


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


def test_update_follows_the_rule_with_warmup():
    net = _net()
    ema = ModelEma(net, decay=0.99)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.add_(2.0)
        net[1].num_batches_tracked.add_(7)
    ema.update(net)
    d = min(0.99, 1 / 10)  # warm-up: the first update moves 90% of the way
    live = net.state_dict()
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, d * before[k] + (1 - d) * live[k])
        else:
            assert torch.equal(v, live[k])  # integer buffers are copied
    assert ema.updates == 1 and ema.current_decay() == pytest.approx(2 / 11)


def test_long_run_decay_reaches_the_setting_and_average_is_a_fixed_point():
    net = _net()
    ema = ModelEma(net, decay=0.9)
    for _ in range(200):
        ema.update(net)  # live weights never move: the average must stay equal to them
    assert ema.current_decay() == 0.9
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, net.state_dict()[k])


def test_average_needs_no_grad_and_is_separate_from_the_model():
    net = _net()
    ema = ModelEma(net)
    assert not ema.module.training and all(not p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        net[0].weight.zero_()
    assert ema.module[0].weight.abs().sum() > 0


def test_state_dict_round_trip_and_bad_decay():
    net = _net()
    a = ModelEma(net, decay=0.95)
    with torch.no_grad():
        net[0].weight.mul_(3)
    for _ in range(5):
        a.update(net)
    b = ModelEma(_net(), decay=0.5)
    b.load_state_dict(a.state_dict())
    assert b.updates == 5 and b.decay == 0.95
    for k, v in a.module.state_dict().items():
        assert torch.equal(v, b.module.state_dict()[k])
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            ModelEma(net, decay=bad)


def test_trainf_evaluates_the_average_and_reports_the_live_weights_too():
    torch.manual_seed(1)
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 3, (64,))
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    net = _net()
    ema = ModelEma(net, decay=0.9)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    hist = trainf(net, batches, batches, nn.CrossEntropyLoss(), 2, opt, "cpu", precision="fp32", animator=None,
                  ema=ema, eval_raw=True, quiet=True)
    assert ema.updates == 2 * len(batches)
    row = hist.epochs[-1]
    assert row["test_acc"] == evaluate(ema.module, batches, "cpu", "fp32")["acc"]
    assert row["test_acc_raw"] == evaluate(net, batches, "cpu", "fp32")["acc"]
    assert row["test_loss"] != row["test_loss_raw"]  # two different models were evaluated
