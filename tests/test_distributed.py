"""torchrun with 2 CPU processes (gloo): identical weights on both ranks, and a match with one process at the
same global batch. BatchNorm is switched off for the comparison (norm="none"): without SyncBatchNorm (GPU-only
in PyTorch) each rank normalises over its own half batch, which is a different function from one process
normalising the whole batch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_cifar

ROOT = Path(__file__).resolve().parent.parent
KW = '{"widths": [4, 8, 8, 8, 8], "head_hidden": 16, "norm": "none", "dropout": 0.0}'
ARGS = ["--epochs", "2", "--batch-size", "40", "--precision", "fp32", "--compile", "off", "--seed", "3",
        "--model-kwargs", KW, "--eval-batch-size", "50"]
TOL = 1e-5  # relative L2 difference between the 2-process and 1-process final weights


def _env(dump):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_two_processes_match_one(tmp_path):
    data = make_tiny_cifar(tmp_path / "d", n_per_batch=40, n_test=40)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        torchrun = shutil.which("torchrun")
    p2 = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "gatedconv.testing",
                         "--dump-weights", str(tmp_path / "w2"), "--", "--data-dir", str(data), "--out", str(tmp_path / "ddp"), *ARGS],
                        env=_env(tmp_path / "w2"), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p2.returncode == 0, p2.stderr[-3000:]
    p1 = subprocess.run([sys.executable, "-m", "gatedconv.testing", "--dump-weights", str(tmp_path / "w1"), "--",
                         "--data-dir", str(data),
                         "--out", str(tmp_path / "single"), *ARGS],
                        env=_env(tmp_path / "w1"), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p1.returncode == 0, p1.stderr[-3000:]
    r0 = torch.load(tmp_path / "w2" / "rank0.pt")
    r1 = torch.load(tmp_path / "w2" / "rank1.pt")
    single = torch.load(tmp_path / "w1" / "rank0.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # DDP keeps the replicas identical
    num = sum(float((r0[k].double() - single[k].double()).norm() ** 2) for k in r0) ** 0.5
    den = sum(float(single[k].double().norm() ** 2) for k in r0) ** 0.5
    assert num / den < TOL, num / den
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert (cfg["world_size"], cfg["per_rank_batch_size"], cfg["global_batch_size"]) == (2, 20, 40)
    assert not (tmp_path / "ddp" / ".write_test").exists()
    # train metrics are reduced over ranks: same train loss as the single process (up to float order)
    import csv
    m2 = list(csv.DictReader(open(tmp_path / "ddp" / "metrics.csv")))
    m1 = list(csv.DictReader(open(tmp_path / "single" / "metrics.csv")))
    assert float(m2[-1]["train_loss"]) == pytest.approx(float(m1[-1]["train_loss"]), rel=1e-4)
    assert float(m2[-1]["train_acc"]) == pytest.approx(float(m1[-1]["train_acc"]), abs=1e-9)
