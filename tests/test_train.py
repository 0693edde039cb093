"""trainf, evaluate, Timer/Accumulator/Animator, and the models in the registry."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from gatedconv import Accumulator, Animator, GatedConv2d, Timer, create_model, evaluate, list_models, trainf
from gatedconv.data import TensorBatches, load_cifar10
from gatedconv.models import GatedNet, GatedNetConfig, register_model
from gatedconv.train import resolve_precision

TINY = dict(widths=(4, 8, 8, 8, 8), head_hidden=16)


@pytest.mark.parametrize("name", [n for n in list_models() if n != "previt"])
def test_every_registered_model_maps_to_logits(name):
    torch.manual_seed(0)
    m = create_model(name).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_gated_models_registered_with_parameter_count():
    assert {"gatedconv", "gatedconv_small", "gatedconv_wide"} <= set(list_models())
    m = create_model("gatedconv")
    assert m.num_params() == sum(p.numel() for p in m.parameters())
    assert len(m.gated_blocks()) == 5
    assert isinstance(m.features[0][1], nn.BatchNorm2d) and isinstance(m.features[0][2], nn.MaxPool2d)
    assert create_model("gatedconv", widths=(8, 8, 8, 8, 8)).config.widths == (8, 8, 8, 8, 8)


def test_bad_model_config():
    with pytest.raises(ValueError, match="five positive ints"):
        GatedNetConfig(widths=(8, 8))
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope")

    def gatedconv(**kwargs):  # same name as the original: must not silently replace it
        return None

    with pytest.raises(ValueError, match="already registered"):
        register_model(gatedconv)


def test_gate_bias_init_opens_relu_gates():
    torch.manual_seed(0)
    m = GatedNet(GatedNetConfig(**TINY))
    x = torch.randn(4, 3, 32, 32)
    assert (m.features[0][0].gate(x) > 0).all()  # package default: bias 1, all paths start open
    torch.manual_seed(0)
    orig = GatedNet(GatedNetConfig(**TINY, gate_bias_init=None))  # PyTorch's default init, as the original
    assert not torch.equal(orig.features[0][0].gate.fc.bias, torch.ones(3))


def test_user_model_with_block_trains_a_step():
    """A user-written model with GatedConv2d(5, 7, kernel_sizes=(1, 3, 5),
    stride=2) on a (3, 5, 17, 23) input trains a step."""
    torch.manual_seed(0)
    net = nn.Sequential(GatedConv2d(5, 7, kernel_sizes=(1, 3, 5), stride=2), nn.BatchNorm2d(7),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 4))
    nn.init.constant_(net[0].gate.fc.bias, 1.0)
    x, y = torch.randn(3, 5, 17, 23), torch.tensor([0, 1, 3])
    assert net[0](x).shape == (3, 7, 9, 12)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, net.parameters()))


def test_timer_and_accumulator():
    """Timer records each start-stop interval (a 20 ms sleep between them is counted) and sums, accumulates and
    averages them; Accumulator sums numbers and tensors per slot."""
    t = Timer()
    t.stop()
    t.start()
    time.sleep(0.02)
    t.stop()
    assert len(t.times) == 2 and t.times[1] >= 0.02
    assert t.sum() == pytest.approx(t.times[0] + t.times[1]) and t.cumsum() == pytest.approx([t.times[0], t.sum()])
    assert t.avg() == pytest.approx(t.sum() / 2)
    a = Accumulator(2)
    a.add(1, torch.tensor(2.0))
    a.add(3, torch.tensor(4.0))
    assert a[0] == 4 and a[1] == 6.0
    a.reset()
    assert a[0] == 0


def test_animator_writes_png_headless(tmp_path):
    path = tmp_path / "curve.png"
    an = Animator(xlabel="epoch", legend=["a", "b"], xlim=[0, 2], path=str(path))
    for i in range(5):
        an.add(i / 2, (1.0 / (i + 1), None if i % 2 else 0.5))
    an.save()
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert an.X[0] == [0, 0.5, 1.0, 1.5, 2.0] and len(an.X[1]) == 3
    an.close()


def _iters(tiny_cifar, bs=20):
    d = load_cifar10(str(tiny_cifar))
    mean, std = d.mean_std()
    tr = TensorBatches(d.train_x, d.train_y, bs, mean=mean, std=std, train=True, augment=False, seed=0)
    te = TensorBatches(d.test_x, d.test_y, 50, mean=mean, std=std)
    return tr, te


def test_trainf_lowers_loss_and_returns_history(tiny_cifar, tmp_path, capsys):
    torch.manual_seed(0)
    net = create_model("gatedconv", **TINY)
    tr, te = _iters(tiny_cifar)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    hist = trainf(net, tr, te, nn.CrossEntropyLoss(), 6, opt, "cpu", precision="fp32", log_every=5,
                  figure_path=str(tmp_path / "c.png"), progress=False)
    out = capsys.readouterr().out
    assert "examples/sec" in out and "test acc" in out
    assert len(hist.epochs) == 6 and len(hist.iters) >= 6
    assert hist.epochs[-1]["train_loss"] < hist.epochs[0]["train_loss"]
    assert (tmp_path / "c.png").exists()
    # evaluate() agrees with the history's last test accuracy
    assert evaluate(net, te, "cpu", "fp32")["acc"] == pytest.approx(hist.epochs[-1]["test_acc"])


def test_trainf_accepts_d2l_style_animator_and_dataloader(tiny_cifar):
    from gatedconv import get_loaders

    class Recorder:  # anything with d2l's add(x, ys)
        def __init__(self):
            self.points = []

        def add(self, x, ys):
            self.points.append((x, ys))

    rec = Recorder()
    train, test = get_loaders(20, data_dir=str(tiny_cifar))
    net = create_model("gatedconv", **TINY)
    trainf(net, train, test, nn.CrossEntropyLoss(), 1, torch.optim.Adam(net.parameters()), "cpu",
           precision="fp32", animator=rec, log_every=5, progress=False)
    assert len(rec.points) >= 2 and rec.points[-1][1][2] is not None


def test_trainf_bf16_on_cpu(tiny_cifar):
    """precision="bf16" runs every training forward under CPU bf16 autocast: each step's logits are bf16 (that
    training in this path learns, for every model, is tests/test_learning.py's)."""
    if resolve_precision("auto", torch.device("cpu")) is None:
        pytest.skip("this CPU has no native bf16")
    net = create_model("gatedconv", **TINY)
    tr, te = _iters(tiny_cifar)
    seen = []
    net.register_forward_hook(lambda module, args, out: seen.append((module.training, out.dtype)))
    trainf(net, tr, te, nn.CrossEntropyLoss(), 1, torch.optim.Adam(net.parameters()), "cpu",
           precision="bf16", animator=None, progress=False, quiet=True)
    train_dtypes = [dtype for training, dtype in seen if training]
    assert len(train_dtypes) == len(tr) and set(train_dtypes) == {torch.bfloat16}


def test_evaluate_topk(tiny_cifar):
    net = create_model("gatedconv", **TINY)
    _, te = _iters(tiny_cifar)
    r = evaluate(net, te, "cpu", "fp32", topk=(1, 3, 5))
    assert 0 <= r["top1"] <= r["top3"] <= r["top5"] <= 1 and r["acc"] == r["top1"]


def test_plot_runs_draws_metrics_columns_and_rejects_missing_ones(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,test_acc,test_acc_raw\n1,0.5,0.4\n2,0.6,0.55\n")
    script = Path(__file__).resolve().parent.parent / "scripts" / "plot_runs.py"
    out = tmp_path / "figs" / "p.png"
    p = subprocess.run([sys.executable, str(script), str(run), "--columns", "test_acc,test_acc_raw", "--out", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for args, needle in (([str(run), "--columns", "nope"], "no column 'nope'"),
                         ([str(tmp_path / "missing")], "no metrics.csv")):
        p = subprocess.run([sys.executable, str(script), *args, "--out", str(tmp_path / "x.png")],
                           capture_output=True, text=True)
        assert p.returncode == 1 and "Traceback" not in p.stderr and needle in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
