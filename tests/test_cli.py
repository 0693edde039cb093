"""scripts/trainf.py end to end on tiny generated data: run directory, load_model, resume, signals, bad input."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gatedconv
from gatedconv.train import evaluate_images
from gatedconv.data import load_cifar10

from conftest import make_tiny_cifar

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "trainf.py"
TINY = '{"widths": [4, 8, 8, 8, 8], "head_hidden": 16}'
# fp32, no compile: the bit-identical resume checks want deterministic CPU settings
FAST = ["--precision", "fp32", "--compile", "off", "--model-kwargs", TINY, "--batch-size", "20",
        "--eval-batch-size", "50"]


def run_cli(args, cwd, env_extra=None, timeout=240, fault=None):
    """The training command in its own process; ``fault="kill@7"`` plants a fault (gatedconv.testing)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.update(env_extra or {})
    cmd = [sys.executable, str(SCRIPT)] if fault is None else [sys.executable, "-m", "gatedconv.testing", "--fault",
                                                                fault, "--"]
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(p):
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = [l for l in p.stderr.splitlines() if l.strip() and "Warning" not in l and not l.startswith("W1")]
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tiny_cifar(tmp_path_factory.mktemp("clidata"), n_per_batch=40, n_test=40)


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cwd")
    out = cwd / "run"
    p = run_cli(["--epochs", 3, "--data-dir", data_dir, "--out", out, "--seed", 1, *FAST], cwd)
    assert p.returncode == 0, p.stderr
    return out, p.stdout, cwd


def _weights(run: Path):
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model_state"]


def _metrics(run: Path, drop=("seconds", "examples_per_sec")):
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def test_smoke_run_writes_everything(finished_run):
    out, stdout, cwd = finished_run
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "curve.png", "final.json", "summary.json"):
        assert (out / name).exists(), name
    assert sorted(p.name for p in cwd.iterdir()) == ["run"]  # a run writes only into its own directory
    summary = json.loads((out / "summary.json").read_text())  # the run's record in the committed results format
    assert summary["kind"] == "train" and summary["seed"] == 1 and "trainf.py" in summary["command"]
    assert summary["acc_pct"] == pytest.approx(100 * json.loads((out / "final.json").read_text())["test_acc_fp32"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["lr"] == 1e-3 and cfg["weight_decay"] == 1e-4 and cfg["optimizer"] == "adam"
    assert cfg["seed"] == 1 and cfg["world_size"] == 1 and cfg["model_kwargs"]["widths"] == [4, 8, 8, 8, 8]
    assert len(_metrics(out)) == 3
    assert "examples/sec" in stdout and "test acc" in stdout


def test_load_model_reproduces_reported_accuracy(finished_run, data_dir):
    out, _, _ = finished_run
    reported = float(_metrics(out)[-1]["test_acc"])
    model = gatedconv.load_model(out)
    assert not model.training
    d = load_cifar10(str(data_dir))
    with torch.no_grad():
        pred = model(d.test_x.float() / 255).argmax(1)  # raw [0, 1] images: normalisation is inside
    acc = (pred == d.test_y).float().mean().item()
    assert acc == pytest.approx(reported, abs=1e-6)
    final = json.loads((out / "final.json").read_text())
    from gatedconv.train import evaluate_images
    assert evaluate_images(model, d.test_x, d.test_y)["top1"] == final["test_acc_fp32"]
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(out), "--data-dir", str(data_dir)],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0 and f"test top-1 {final['test_acc_fp32']:.4f}" in p.stdout


def test_checkpoint_holds_the_average_and_the_live_weights(finished_run, data_dir, tmp_path):
    out, stdout, _ = finished_run
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["ema"]["decay"] == 0.999 and state["ema"]["updates"] == 3 * 10  # 200 images / batch 20, 3 epochs
    differs = [k for k, v in state["model_state"].items()
               if v.is_floating_point() and not torch.equal(v, state["live_state"][k])]
    assert differs  # the model users get is the average, not the live weights
    final = json.loads((out / "final.json").read_text())
    assert 0 <= final["test_acc_raw_fp32"] <= 1 and "live weights" in stdout
    # --ema-decay 0: the live weights are the model, as in the original recipe
    p = run_cli(["--epochs", 1, "--data-dir", data_dir, "--out", tmp_path / "plain", "--ema-decay", 0, "--eval-raw",
                 *FAST], tmp_path)
    assert p.returncode == 0, p.stderr
    plain = torch.load(tmp_path / "plain" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert "live_state" not in plain and "ema" not in plain
    assert "test_acc_raw" not in _metrics(tmp_path / "plain")[0]


def test_resume_of_finished_run_changes_nothing(finished_run):
    out, _, cwd = finished_run
    before = (out / "checkpoint.pt").read_bytes()
    p = run_cli(["--out", out, "--resume"], cwd)
    assert p.returncode == 0 and "already finished" in p.stdout
    assert (out / "checkpoint.pt").read_bytes() == before


def test_existing_run_is_not_overwritten(finished_run, data_dir):
    out, _, cwd = finished_run
    before = (out / "checkpoint.pt").read_bytes()
    line = assert_one_line_error(run_cli(["--epochs", 1, "--data-dir", data_dir, "--out", out, *FAST], cwd))
    assert "already holds a run" in line and "--resume" in line
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("kill_at", [7, 23])  # mid-epoch (10 steps per epoch here): after 0 and 2 checkpoints
def test_sigkill_then_resume_is_bit_identical(finished_run, data_dir, tmp_path, kill_at):
    ref, _, _ = finished_run
    out = tmp_path / "run"
    args = ["--epochs", 3, "--data-dir", data_dir, "--out", out, "--seed", 1, *FAST]
    p = run_cli(args, tmp_path, fault=f"kill@{kill_at}")
    assert p.returncode == -9
    p = run_cli(["--out", out, "--resume"], tmp_path)
    assert p.returncode == 0, p.stderr
    a, b = _weights(ref), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(out) == _metrics(ref)


@pytest.mark.parametrize("sig", ["int", "term"])
def test_signal_checkpoints_mid_epoch_and_resumes_identically(finished_run, data_dir, tmp_path, sig):
    ref, _, _ = finished_run
    out = tmp_path / "run"
    args = ["--epochs", 3, "--data-dir", data_dir, "--out", out, "--seed", 1, *FAST]
    p = run_cli(args, tmp_path, fault=f"{sig}@15")
    assert p.returncode == 130
    line = assert_one_line_error(p)
    assert "--resume" in line and "epoch 2, step 5" in line
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 5)
    # the epoch's time and examples so far travel with the checkpoint: the resumed epoch reports its whole time
    assert state["partial"]["seconds"] > 0 and int(state["partial"]["examples"]) == 5 * 20
    p = run_cli(["--out", out, "--resume"], tmp_path)
    assert p.returncode == 0, p.stderr
    a, b = _weights(ref), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(out) == _metrics(ref)


def test_nan_loss_stops_and_keeps_last_checkpoint(data_dir, tmp_path):
    out = tmp_path / "run"
    p = run_cli(["--epochs", 3, "--data-dir", data_dir, "--out", out, *FAST], tmp_path, fault="nan@14")
    line = assert_one_line_error(p)
    assert "NaN" in line and "epoch 2, step 4" in line
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model_state"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit, no traceback, nothing overwritten


def test_missing_data_dir(tmp_path):
    line = assert_one_line_error(run_cli(["--data-dir", tmp_path / "none", "--out", tmp_path / "r", *FAST], tmp_path))
    assert "no CIFAR-10 data" in line and "--data-dir" in line


def test_truncated_batch_file(tmp_path):
    root = make_tiny_cifar(tmp_path / "d", n_per_batch=8, n_test=8)
    f = root / "cifar-10-batches-py" / "data_batch_4"
    f.write_bytes(f.read_bytes()[:500])
    assert "data_batch_4" in assert_one_line_error(run_cli(["--data-dir", root, "--out", tmp_path / "r", *FAST], tmp_path))


def test_wrong_shape_and_labels(tmp_path):
    import numpy as np
    from gatedconv.data import write_batch_file
    root = make_tiny_cifar(tmp_path / "d", n_per_batch=8, n_test=8)
    write_batch_file(root / "cifar-10-batches-py" / "test_batch", np.zeros((8, 1024), np.uint8), [0] * 8)
    assert "(N, 3072)" in assert_one_line_error(run_cli(["--data-dir", root, "--out", tmp_path / "r", *FAST], tmp_path))
    write_batch_file(root / "cifar-10-batches-py" / "test_batch", np.zeros((8, 3072), np.uint8), [0] * 7 + [11])
    assert "0..9" in assert_one_line_error(run_cli(["--data-dir", root, "--out", tmp_path / "r2", *FAST], tmp_path))


@pytest.mark.parametrize("args, needle", [
    (["--model", "nope"], "invalid choice"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--batch-size", "-4"], "--batch-size must be a positive integer"),
    (["--lr", "0"], "--lr must be positive"),
    (["--epochs", "two"], "invalid int value"),
    (["--ema-decay", "1.0"], "--ema-decay must be in [0, 1)"),
])
def test_bad_arguments(data_dir, tmp_path, args, needle):
    line = assert_one_line_error(run_cli(["--data-dir", data_dir, "--out", tmp_path / "r", *FAST, *args], tmp_path))
    assert needle in line
    assert not (tmp_path / "r" / "config.json").exists()


def test_unwritable_out_dir(data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = assert_one_line_error(run_cli(["--data-dir", data_dir, "--out", blocker / "run", *FAST], tmp_path))
    assert "cannot write" in line


def test_resume_without_run(tmp_path):
    line = assert_one_line_error(run_cli(["--out", tmp_path / "empty", "--resume"], tmp_path))
    assert "holds no run" in line
    assert "needs --out" in assert_one_line_error(run_cli(["--resume"], tmp_path))


def test_corrupt_checkpoint(finished_run, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    (out / "checkpoint.pt").write_bytes(b"this is not a checkpoint")
    line = assert_one_line_error(run_cli(["--out", out, "--resume"], tmp_path))
    assert "corrupt" in line


def test_checkpoint_of_other_shape(finished_run, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["finished"] = False
    cfg = json.loads((out / "config.json").read_text())
    cfg["model_kwargs"] = {"widths": [4, 8, 8, 8, 16], "head_hidden": 16}
    (out / "config.json").write_text(json.dumps(cfg))
    torch.save(state, out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    line = assert_one_line_error(run_cli(["--out", out, "--resume"], tmp_path))
    assert "do not fit" in line
    assert (out / "checkpoint.pt").read_bytes() == before


def test_checkpoint_of_other_model(finished_run, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["finished"], state["model_name"] = False, "gatedconv_small"
    torch.save(state, out / "checkpoint.pt")
    line = assert_one_line_error(run_cli(["--out", out, "--resume"], tmp_path))
    assert "gatedconv_small" in line


def test_cross_validation_and_short_flags(data_dir, tmp_path):
    out = tmp_path / "cv"
    p = run_cli(["-c", "-e", "1", "-b", "20", "-l", "0.003", "-d", "cpu", "-s", out, "-f", "1", "-m", "gatedconv",
                 "--data-dir", data_dir, "--precision", "fp32", "--compile", "off", "--model-kwargs", TINY], tmp_path)
    assert p.returncode == 0, p.stderr
    cv = json.loads((out / "cv.json").read_text())
    assert cv["folds"] == 5 and len(cv["accuracies"]) == 5 and "5-fold cross-validation" in p.stdout
    cfg = json.loads((out / "fold2" / "config.json").read_text())
    assert cfg["eval_split"].startswith("fold 2 of 5") and cfg["eval_examples"] == 40 and cfg["lr"] == 0.003


def test_keep_best_selects_on_validation_and_reports_test(data_dir, tmp_path):
    out = tmp_path / "best"
    # plain SGD at lr 0.5 without the average makes the held-out loss jump around (here: best at epoch 2 of 3),
    # so the pick is not simply the last epoch
    p = run_cli(["-e", "3", "--validation", "--keep-best", "--optimizer", "sgd", "-l", "0.5", "--ema-decay", "0",
                 "--data-dir", data_dir, "--out", out, *FAST], tmp_path)
    assert p.returncode == 0, p.stderr
    final = json.loads((out / "final.json").read_text())
    val_losses = [float(r["test_loss"]) for r in _metrics(out)]  # the held-out split's loss, per epoch
    assert final["best_epoch"] == 1 + min(range(3), key=val_losses.__getitem__)
    assert final["best_val_loss"] == pytest.approx(min(val_losses), rel=1e-5)
    assert json.loads((out / "config.json").read_text())["eval_split"] == "validation (20 held out of train)"
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["epoch"] == final["best_epoch"]
    last = _weights(out)
    same = all(torch.equal(best["model_state"][k], last[k]) for k in last)
    assert same == (final["best_epoch"] == 3)
    # the reported accuracy is best.pt's on the official test set (not the validation split it was picked on)
    data = load_cifar10(data_dir)
    ref = evaluate_images(gatedconv.load_model(out / "best.pt"), data.test_x, data.test_y)
    assert final["best_test_acc_fp32"] == ref["top1"] and len(data.test_y) == 40
    assert f"best epoch {final['best_epoch']}" in p.stdout


def test_keep_best_needs_a_validation_split(data_dir, tmp_path):
    line = assert_one_line_error(run_cli(["--keep-best", "--data-dir", data_dir, "--out", tmp_path / "r", *FAST],
                                         tmp_path))
    assert "--keep-best" in line and "--validation" in line


def test_wandb_flag_is_optional(data_dir, tmp_path):
    import importlib.util
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb installed here; the point is the run without it")
    p = run_cli(["-w", "-e", "1", "--data-dir", data_dir, "--out", tmp_path / "r", *FAST], tmp_path)
    assert p.returncode == 0 and "wandb package is not installed" in p.stdout


def test_previt_without_weights_is_one_line(data_dir, tmp_path):
    line = assert_one_line_error(run_cli(["-m", "previt", "-e", "1", "--data-dir", data_dir, "--out", tmp_path / "r",
                                          "--compile", "off"], tmp_path))
    assert "previt needs pretrained weights" in line


def test_resume_refuses_conflicting_flags(finished_run, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    before = (out / "checkpoint.pt").read_bytes()
    line = assert_one_line_error(run_cli(["--out", out, "--resume", "--model", "gatedconv_small"], tmp_path))
    assert "--model" in line and "conflicts" in line and "gatedconv_small" in line
    line = assert_one_line_error(run_cli(["--out", out, "--resume", "--lr", "0.5"], tmp_path))
    assert "--lr" in line and "may change on resume" in line
    assert (out / "checkpoint.pt").read_bytes() == before
    # flags that only change how the run executes are allowed
    p = run_cli(["--out", out, "--resume", "--eval-batch-size", "25", "--device", "cpu"], tmp_path)
    assert p.returncode == 0 and "already finished" in p.stdout
    # timm's form: --resume PATH, the run directory or its checkpoint file
    for path in (out, out / "checkpoint.pt"):
        p = run_cli(["--resume", path], tmp_path)
        assert p.returncode == 0 and "already finished" in p.stdout, p.stderr
    assert "different runs" in assert_one_line_error(run_cli(["--resume", out, "--output", tmp_path / "x"], tmp_path))


def test_timm_flag_names(data_dir, tmp_path):
    out = tmp_path / "run"
    p = run_cli(["--epochs", 1, "--data-dir", data_dir, "--output", out, "--opt", "sgd", "--sched", "cosine",
                 "--lr", "0.05", *FAST], tmp_path)
    assert p.returncode == 0, p.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["optimizer"], cfg["schedule"], cfg["out"]) == ("sgd", "cosine", str(out))


def test_unknown_device_is_one_line(data_dir, tmp_path):
    line = assert_one_line_error(run_cli(["--data-dir", data_dir, "--out", tmp_path / "r", *FAST,
                                          "--device", "tpu:7"], tmp_path))
    assert "tpu:7" in line


def test_checkpoint_is_safe_to_load_and_old_format_says_how_to_convert(finished_run, tmp_path):
    import pickle
    import random
    import shutil

    import numpy as np
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # no pickled objects in a fresh checkpoint
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    # the older format: numpy and python RNG states pickled as they are
    state["rng"]["numpy"], state["rng"]["python"] = np.random.get_state(), random.getstate()
    state["finished"] = False
    torch.save(state, out / "checkpoint.pt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(out / "checkpoint.pt", weights_only=True)
    line = assert_one_line_error(run_cli(["--out", out, "--resume"], tmp_path))
    assert "python -m gatedconv.checkpoint convert" in line
    p = subprocess.run([sys.executable, "-m", "gatedconv.checkpoint", "convert", str(out / "checkpoint.pt")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    converted = torch.load(out / "checkpoint.pt", weights_only=True)
    assert torch.equal(converted["rng"]["numpy"]["keys"], torch.from_numpy(state["rng"]["numpy"][1].astype(np.int64)))
    assert gatedconv.load_model(out) is not None


def test_full_disk_while_checkpointing_is_one_line_and_leaves_no_partial_file(data_dir, tmp_path, monkeypatch,
                                                                               capsys):
    import errno

    from gatedconv.cli.train import main

    out = tmp_path / "run"
    real_save, calls = torch.save, {"n": 0}

    def save_then_fill_disk(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: epoch 1's is on disk
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save_then_fill_disk)
    args = ["--epochs", "3", "--data-dir", str(data_dir), "--out", str(out), *map(str, FAST)]
    assert main(args) == 1
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and "No space left on device" in err[0] and str(out / "checkpoint.pt") in err[0]
    assert "previous checkpoint" in err[0] and "intact" in err[0]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1  # epoch 1's checkpoint, intact
