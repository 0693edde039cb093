"""Resuming a stopped run of the original recipe gives the run that was never stopped, bit for bit, in the cases
the command-line tests do not reach: ``--keep-best`` (best.pt), ``--ckpt-frequency`` with a stop between two
checkpoints, ``--temperature-anneal`` stopped inside the anneal, and cross-validation stopped between folds.

Everything runs in this process on tiny generated data (fp32, no compile, one thread: deterministic and
quick; the live training curve, curve.png, is not drawn: it takes most of a tiny run's time and no claim here
is about it). A stop is planted in the run's loss (``gatedconv.run.make_loss``), as ``gatedconv.testing`` does for the
subprocess tests: either a crash (an exception at a training step: nothing more is written, as after SIGKILL)
or a real SIGINT, which the run turns into a checkpoint and a stop.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gatedconv import run, train
from gatedconv.cli.train import main as train_main
from gatedconv.run import RunConfig, cross_validate
from gatedconv.testing import FaultInjector

from conftest import make_tiny_cifar

TINY = '{"widths": [4, 8, 8, 8, 8], "head_hidden": 16}'
FAST = ["--precision", "fp32", "--compile", "off", "--batch-size", "20", "--eval-batch-size", "50", "--device", "cpu"]
TIMING = ("seconds", "examples_per_sec", "train_seconds")  # wall-clock figures: the only things that may differ


@pytest.fixture(autouse=True)
def quick(monkeypatch, one_thread):
    """One intra-op thread (identical arithmetic in every run, no thread spinning on a loaded 2-core host) and
    trainf's curve kept in memory instead of drawn to curve.png."""
    animator = train.default_animator
    monkeypatch.setattr(train, "default_animator", lambda epochs, path, history: animator(epochs, None, history))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """100 training images (5 steps of 20 per epoch) and 20 test images."""
    return make_tiny_cifar(tmp_path_factory.mktemp("resume_data"), n_per_batch=20, n_test=20)


class Crash(Exception):
    """Stands in for SIGKILL: the process dies inside a training step and writes nothing more."""


def _crash_at(monkeypatch, step: int) -> None:
    """The next run's ``step``-th training step (counted from the run's start in this process) crashes."""
    make_loss = run.make_loss

    def crashing(cfg):
        loss, calls = make_loss(cfg), [0]

        def f(logits, y):
            calls[0] += 1
            if calls[0] == step:
                raise Crash(f"step {step}")
            return loss(logits, y)
        return f
    monkeypatch.setattr(run, "make_loss", crashing)


def _sigint_at(monkeypatch, step: int) -> None:
    """The next run sends itself SIGINT at its ``step``-th training step (the run checkpoints and stops)."""
    make_loss = run.make_loss
    monkeypatch.setattr(run, "make_loss", lambda cfg: FaultInjector(make_loss(cfg), "int", step))


def _state(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)


def _untimed(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _tensors_equal(a, b) -> bool:
    """Nested dicts/lists of tensors and numbers, equal bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_tensors_equal, a, b))
    return a == b


def assert_same_run(ref: Path, out: Path) -> None:
    """``out`` finished as ``ref`` did: final weights (the handed-out ones and the live ones), optimiser state,
    every epoch's figures (full precision, from the checkpoint's history), final.json and the gate statistics."""
    a, b = _state(ref), _state(out)
    assert a["finished"] and b["finished"] and a["epoch"] == b["epoch"]
    weights = [k for k in ("model_state", "live_state") if k in a]
    assert weights == [k for k in ("model_state", "live_state") if k in b] and "model_state" in weights
    for k in weights:
        assert a[k].keys() == b[k].keys() and all(torch.equal(a[k][n], b[k][n]) for n in a[k]), k
    assert _tensors_equal(a["optimizer"], b["optimizer"])
    assert _untimed(a["history"]["epochs"]) == _untimed(b["history"]["epochs"])
    assert a["history"]["gates"] == b["history"]["gates"] and len(a["history"]["gates"]) == a["epoch"]
    fa, fb = (json.loads((d / "final.json").read_text()) for d in (ref, out))
    assert _untimed([fa]) == _untimed([fb])
    assert (ref / "gate_stats.json").read_text() == (out / "gate_stats.json").read_text()


def test_keep_best_resumes_to_the_same_best_checkpoint(data, tmp_path, monkeypatch):
    """--keep-best crashed in the last epoch, after the best epoch was kept: the resumed run keeps the same best
    epoch (best.pt: epoch, validation loss, weights) and reports the same pick as the run never stopped."""
    # Adam at lr 0.01 without the average: the held-out loss is lowest at epoch 2 of 3 here, not at the last
    args = ["--epochs", "3", "--validation", "--keep-best", "--lr", "0.01", "--ema-decay", "0",
            "--data-dir", str(data), "--model-kwargs", TINY, *FAST]
    assert train_main([*args, "--out", str(tmp_path / "ref")]) == 0
    ref_final = json.loads((tmp_path / "ref" / "final.json").read_text())
    assert ref_final["best_epoch"] < 3  # the resumed epoch is worse than the kept one: forgetting the pick shows

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _crash_at(m, 2 * 4 + 2)  # 90 training images (10 held out) / batch 20 = 4 steps per epoch: mid epoch 3
        with pytest.raises(Crash):
            train_main([*args, "--out", str(out)])
    assert _state(out)["epoch"] == 2 and (out / "best.pt").exists()
    assert train_main(["--out", str(out), "--resume"]) == 0

    assert_same_run(tmp_path / "ref", out)
    a, b = (torch.load(d / "best.pt", map_location="cpu", weights_only=True) for d in (tmp_path / "ref", out))
    assert (a["epoch"], a["val_loss"]) == (b["epoch"], b["val_loss"]) == (ref_final["best_epoch"],
                                                                           ref_final["best_val_loss"])
    assert a["model_state"].keys() == b["model_state"].keys()
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    assert {k: v for k, v in a["config"].items() if k != "out"} == {k: v for k, v in b["config"].items() if k != "out"}
    final = json.loads((out / "final.json").read_text())
    assert {k: final[k] for k in final if k.startswith("best_")} == {k: ref_final[k] for k in ref_final
                                                                    if k.startswith("best_")}


def test_ckpt_frequency_resumes_from_the_last_checkpoint_after_a_stop_between_checkpoints(data, tmp_path,
                                                                                        monkeypatch):
    """--ckpt-frequency 3, crashed after epoch 4 (the last checkpoint is epoch 3's, the gate statistics already
    hold epoch 4): the resumed run redoes epoch 4 and ends bit-identical to the run never stopped."""
    args = ["--epochs", "5", "--ckpt-frequency", "3", "--data-dir", str(data), "--model-kwargs", TINY, *FAST]
    assert train_main([*args, "--out", str(tmp_path / "ref")]) == 0

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _crash_at(m, 4 * 5 + 1)  # 100 images / batch 20 = 5 steps per epoch: the first step of epoch 5
        with pytest.raises(Crash):
            train_main([*args, "--out", str(out)])
    state = _state(out)
    assert (state["epoch"], state["step"], len(state["history"]["epochs"])) == (3, 0, 3)
    assert len(json.loads((out / "gate_stats.json").read_text())) == 4  # epoch 4 ran, and is not in the checkpoint
    assert train_main(["--out", str(out), "--resume"]) == 0
    assert_same_run(tmp_path / "ref", out)


def test_temperature_anneal_resumes_inside_the_anneal(data, tmp_path, monkeypatch):
    """--temperature-anneal (softmax gates) stopped by SIGINT inside the anneal, mid-epoch: the resumed run takes
    the temperature of the step it resumes at and ends bit-identical to the run never stopped."""
    args = ["--epochs", "2", "--temperature-anneal", "30,1,0.5", "--data-dir", str(data), "--model-kwargs",
            '{"widths": [4, 8, 8, 8, 8], "head_hidden": 16, "gate": "softmax"}', *FAST]
    assert train_main([*args, "--out", str(tmp_path / "ref")]) == 0

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _sigint_at(m, 3)  # the anneal runs over the first 5 of the 10 steps
        assert train_main([*args, "--out", str(out)]) == 130
    state = _state(out)
    assert (state["epoch"], state["step"], state["finished"]) == (0, 3, False)
    assert train_main(["--out", str(out), "--resume"]) == 0
    assert_same_run(tmp_path / "ref", out)
    assert json.loads((out / "config.json").read_text())["temperature_anneal"] == [30.0, 1.0, 0.5]


def test_cross_validation_stopped_between_folds_resumes_to_the_same_result(data, tmp_path):
    """Cross-validation stopped after fold 2 of 3: run again, it keeps the finished folds as they are, trains the
    rest, and every fold and cv.json equal those of the cross-validation never stopped."""
    cfg = RunConfig(epochs=1, batch_size=20, eval_batch_size=50, data_dir=str(data), precision="fp32",
                    compile="off", device="cpu", model_kwargs=json.loads(TINY))
    quiet = lambda *a, **k: None  # noqa: E731
    ref = cross_validate(replace(cfg, out=str(tmp_path / "ref")), folds=3, print_fn=quiet)

    class Stop(Exception):
        pass

    def stop_after_fold_2(line="", *a, **k):
        if str(line).startswith("fold 2/3"):
            raise Stop
    out = tmp_path / "cv"
    stopped = replace(cfg, out=str(out))
    with pytest.raises(Stop):
        cross_validate(stopped, folds=3, print_fn=stop_after_fold_2)
    assert sorted(p.name for p in out.iterdir()) == ["fold0", "fold1"] and not (out / "cv.json").exists()
    kept = {k: (out / f"fold{k}" / "checkpoint.pt").read_bytes() for k in (0, 1)}
    lines = []
    assert cross_validate(stopped, folds=3, print_fn=lines.append) == ref
    assert sum("already finished" in str(line) for line in lines) == 2  # folds 0 and 1 were not trained again
    assert all((out / f"fold{k}" / "checkpoint.pt").read_bytes() == kept[k] for k in (0, 1))
    assert json.loads((out / "cv.json").read_text()) == json.loads((tmp_path / "ref" / "cv.json").read_text())
    for k in range(3):
        assert_same_run(tmp_path / "ref" / f"fold{k}", out / f"fold{k}")
