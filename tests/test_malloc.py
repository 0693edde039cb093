"""gatedconv.malloc: the process-wide glibc setting is opt-out and reports whether it applied."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = "from gatedconv.malloc import keep_freed_memory as k; print(k(), k())"


def _run(env_extra):
    env = {k: v for k, v in os.environ.items() if k != "GATEDCONV_MALLOC"}
    env.update(PYTHONPATH=str(ROOT), **env_extra)
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)


def test_opt_out_leaves_malloc_alone():
    p = _run({"GATEDCONV_MALLOC": "default"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "False"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt: Linux only")
def test_applies_on_linux_glibc():
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    p = _run({})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["True", "True"]
