"""benchmarks/gpu_check.sh: without a CUDA device it says so in one line and exits 0, quickly."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_clean_skip_without_cuda(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    t0 = time.perf_counter()
    p = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines() == ["no CUDA device: GPU checks skipped"]
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "out" / "gpu_check.json").exists() and not (tmp_path / "gpu_check.json").exists()
