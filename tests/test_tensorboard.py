"""TensorBoard logging: the animator wrapper on its own, and ``gatedconv-train --tensorboard`` end to end."""
from __future__ import annotations

import json
import sys

import pytest

from gatedconv.cli.train import main
from gatedconv.plot import Animator

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from gatedconv.tensorboard import INSTALL_HINT, TensorBoardAnimator  # noqa: E402

TINY = '{"widths": [4, 8, 8, 8, 8], "head_hidden": 16}'
FAST = ["--precision", "fp32", "--compile", "off", "--model-kwargs", TINY, "--batch-size", "20",
        "--eval-batch-size", "40"]


def _events(log_dir) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _steps(acc: EventAccumulator, tag: str) -> list:
    return [e.step for e in acc.Scalars(tag)]


def test_animator_forwards_and_logs_by_step(tmp_path):
    inner = Animator.for_training(2, path=str(tmp_path / "curve.png"), live=False)
    tb = TensorBoardAnimator(tmp_path / "tb", inner=inner)  # no steps_per_epoch: thousandths of an epoch
    tb.add(0.5, (2.3, 0.1, None))
    tb.add(1, (None, None, 0.25))
    tb.log_epoch(0, {"epoch": 1, "step": 8, "train_loss": 2.2, "test_acc": 0.25, "test_loss": 2.1, "lr": 0.01,
                     "test_top5": 0.6, "seconds": 1.5})
    tb.save()
    tb.close()
    assert inner.X == [[0.5], [0.5], [1.0]] and (tmp_path / "curve.png").exists()
    acc = _events(tmp_path / "tb")
    assert _steps(acc, "train/loss") == [500] and _steps(acc, "test/acc") == [1000]
    assert acc.Scalars("lr")[0].value == pytest.approx(0.01) and _steps(acc, "lr") == [1000]
    assert {"test/loss", "test/top5", "time/epoch_seconds"} <= set(acc.Tags()["scalars"])
    assert "train/train_loss" not in acc.Tags()["scalars"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from gatedconv.data import write_fake_cifar
    return write_fake_cifar(tmp_path_factory.mktemp("tbdata"), n_per_batch=40, n_test=40)


def test_train_with_tensorboard_writes_events(data_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["--epochs", "1", "--data-dir", str(data_dir), "--out", str(out), "--tensorboard", *FAST]) == 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "curve.png").exists()
    assert json.loads((out / "config.json").read_text())["tensorboard"] is True
    acc = _events(out / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "test/acc", "lr", "test/loss"} <= tags
    # 200 images in batches of 20: 10 steps, one log point (log_every 50 > 10) and one epoch end, at step 10
    for tag in ("train/loss", "train/acc", "test/acc", "lr", "gates/block1/mean_path1"):
        assert _steps(acc, tag) == [10], tag
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 2
    assert "gates/class_heatmap" in acc.Tags()["images"]


def test_tensorboard_to_a_directory(data_dir, tmp_path):
    tb_dir = tmp_path / "tb"
    argv = ["--epochs", "1", "--data-dir", str(data_dir), "--out", str(tmp_path / "run"), "--tensorboard",
            str(tb_dir), "--model", "convnet_tiny", *FAST[:4], *FAST[6:]]
    assert main(argv) == 0
    acc = _events(tb_dir)
    assert {"train/loss", "test/acc", "lr"} <= set(acc.Tags()["scalars"])
    assert not any(t.startswith("gates/") for t in acc.Tags()["scalars"])  # no gated blocks, no gate figures


def test_missing_tensorboard_package_is_a_one_line_error(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # importlib.util.find_spec now reports it missing
    rc = main(["--epochs", "1", "--data-dir", str(data_dir), "--out", str(tmp_path / "run"), "--tensorboard", *FAST])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 1 and err == [f"error: {INSTALL_HINT}"]
    assert not (tmp_path / "run").exists()
