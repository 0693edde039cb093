"""The Animator: no global matplotlib state, the loss on its own unclipped axis, labels, PNG, notebook display."""
from __future__ import annotations

import subprocess
import sys
import types

import matplotlib
import pytest
import torch
from torch import nn

from gatedconv import create_model, trainf
from gatedconv.data import TensorBatches, load_cifar10
from gatedconv.plot import Animator, in_notebook
from gatedconv.train import History, default_animator

PNG = b"\x89PNG\r\n\x1a\n"
TINY = dict(widths=(4, 8, 8, 8, 8), head_hidden=16)


def test_creating_and_drawing_leaves_matplotlib_state_alone(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    fig = plt.figure()
    backend = matplotlib.get_backend()

    def refuse(*args, **kwargs):
        raise AssertionError("the Animator must not switch backends or close pyplot figures")

    monkeypatch.setattr(matplotlib, "use", refuse)
    monkeypatch.setattr(plt, "switch_backend", refuse)
    monkeypatch.setattr(plt, "close", refuse)
    an = Animator.for_training(2, path=str(tmp_path / "c.png"), live=False)
    an.add(0.5, (2.3, 0.1, None))
    an.save()
    an.close()
    monkeypatch.undo()
    assert matplotlib.get_backend() == backend
    assert plt.fignum_exists(fig.number)
    assert an.fig not in [plt.figure(n) for n in plt.get_fignums()]
    plt.close(fig)


def _trained_points(an: Animator) -> Animator:
    an.add(0.5, (2.3, 0.12, None))
    an.add(1.0, (2.1, 0.20, None))
    an.add(1, (None, None, 0.25))
    an._render()
    return an


@pytest.mark.parametrize("make", [lambda: Animator.for_training(2, live=False),
                                  lambda: default_animator(2, None, History())],
                         ids=["for_training", "trainf_default"])
def test_loss_has_its_own_unclipped_axis(make):
    an = _trained_points(make())
    loss_ax, acc_ax = an.axes
    assert loss_ax.get_ylim()[1] >= 2.3 and loss_ax.get_ylim()[0] <= 2.1  # not clipped to [0, 1]
    assert loss_ax.dataLim.ymax == pytest.approx(2.3)
    assert acc_ax.get_ylim() == (0.0, 1.0)
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train loss"]
    assert [line.get_label() for line in acc_ax.get_lines()] == ["train acc", "test acc"]
    assert [ax.get_xlabel() for ax in an.axes] == ["epoch", "epoch"]
    assert [ax.get_ylabel() for ax in an.axes] == ["loss", "accuracy"]
    an.close()


def test_d2l_call_without_loss_keeps_one_axis_and_ylim():
    an = Animator(xlabel="epoch", ylabel="accuracy", legend=["train acc", "test acc"], xlim=[1, 3], ylim=[0.3, 0.9],
                  live=False)
    an.add(1, (0.5, 0.4))
    an._render()
    assert len(an.axes) == 1 and an.axes[0].get_ylim() == (0.3, 0.9) and an.axes[0].get_ylabel() == "accuracy"
    assert len(Animator(legend=["train loss", "acc"], split_loss=False, live=False).axes) == 1


def test_png_written_as_training_goes(tmp_path):
    path = tmp_path / "sub" / "curve.png"
    an = Animator.for_training(3, path=str(path), live=False, min_interval=0.0)
    an.add(0.5, (2.3, 0.1, None))
    assert path.read_bytes()[:8] == PNG  # written by add itself, before save()
    an.min_interval = 3600.0
    an.add(1.0, (2.0, 0.2, 0.3))
    held_back = path.read_bytes()  # the second point is not drawn yet
    an.close()  # writes the point that add() held back
    written = path.read_bytes()
    assert written != held_back and not an._dirty
    assert written == an.png(dpi=120)  # the file is the figure with both points


class _Shell:
    def __init__(self, config=None, kernel=None):
        self.config, self.kernel = config or {}, kernel


@pytest.mark.parametrize("shell, expected", [
    (None, False),
    (_Shell(), False),  # terminal IPython: a shell without a kernel
    (_Shell(config={"IPKernelApp": {"connection_file": "k.json"}}), True),
    (_Shell(kernel=object()), True),
], ids=["plain", "terminal", "jupyter_config", "kernel"])
def test_notebook_detection(monkeypatch, shell, expected):
    import IPython
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    assert in_notebook() is expected
    assert Animator(legend=["a"]).live is expected


def test_colab_counts_as_notebook(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert in_notebook()


def test_plain_process_is_not_a_notebook():
    code = "import sys; from gatedconv.plot import in_notebook; print(in_notebook(), 'IPython' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_live_display_updates_one_output(monkeypatch):
    from IPython import display
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def fake_display(obj, display_id=None):
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr(display, "display", fake_display)
    an = Animator.for_training(2, live=True)
    an.add(0.5, (2.3, 0.1, None))
    an.add(1, (None, None, 0.2))
    assert [kind for kind, _ in shown] == ["display", "update"]
    assert all(obj.data[:8] == PNG for _, obj in shown)


def _iters(tiny_cifar):
    d = load_cifar10(str(tiny_cifar))
    mean, std = d.mean_std()
    return (TensorBatches(d.train_x, d.train_y, 20, mean=mean, std=std, train=True),
            TensorBatches(d.test_x, d.test_y, 40, mean=mean, std=std))


def test_trainf_with_d2l_animator(tiny_cifar):
    d2l = pytest.importorskip("d2l.torch")
    torch.manual_seed(0)
    net = create_model("gatedconv", **TINY)
    tr, te = _iters(tiny_cifar)
    an = d2l.Animator(xlabel="epoch", xlim=[0, 1], legend=["train loss", "train acc", "test acc"])
    hist = trainf(net, tr, te, nn.CrossEntropyLoss(), 1, torch.optim.Adam(net.parameters()), "cpu",
                  precision="fp32", animator=an, log_every=5, progress=False, quiet=True)
    assert len(hist.epochs) == 1 and len(an.X[0]) == len(hist.iters)
