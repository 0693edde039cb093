"""The run directory: one layout for every recipe, written by one set of functions.

A run directory holds::

    config.json    the resolved configuration (written first: its presence means "a run lives here")
    metrics.csv    one row per epoch
    checkpoint.pt  the model (``gatedconv.load_model`` reads it) and, for resumable recipes, the training state
    final.json     the final metrics (written last: its presence means "finished")
    summary.json   the run's record in the committed ``results/`` format (``gatedconv.summary``)
    curve.png      the training curve, where the recipe draws one

Both recipes (``gatedconv.run`` for the original, ``gatedconv.speedrun`` for the fast one) and the grid runner
(``gatedconv.grid``) use these functions, so a directory written by one is read by all the others.
"""
from __future__ import annotations

import csv
import io
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Optional

from .checkpoint import CHECKPOINT_NAME, atomic_write_text, writable_dir_problem
from .summary import SUMMARY_NAME

__all__ = [
    "RunError", "CONFIG_NAME", "METRICS_NAME", "FINAL_NAME", "SUMMARY_NAME", "prepare_run_dir", "default_run_dir",
    "has_run", "is_finished", "command_line", "write_json", "read_json", "write_metrics",
]

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.csv"
FINAL_NAME = "final.json"


class RunError(ValueError):
    """A problem with a run's inputs (config, data size, output directory); one line, shown without a
    traceback by the command-line tools."""


def has_run(out: str | Path) -> bool:
    """True when ``out`` holds a run (its config, or at least a checkpoint)."""
    out = Path(out)
    return (out / CONFIG_NAME).exists() or (out / CHECKPOINT_NAME).exists()


def is_finished(out: str | Path) -> bool:
    return (Path(out) / FINAL_NAME).exists()


def default_run_dir(model: str, seed: int, kind: str = "") -> Path:
    """``runs/<model>[-<kind>]-seed<seed>-<date-time>``: a new directory for every run."""
    tag = f"-{kind}" if kind else ""
    return Path("runs") / f"{model}{tag}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(out: str | Path, resume: bool = False, resume_hint: str = "pass --resume to continue it or "
                    "choose another --out") -> bool:
    """Check ``out`` before a run starts. Without ``resume``: refuse a directory that already holds a run (nothing
    is ever overwritten) and create it, checking it is writable. With ``resume``: it must hold a run. Returns
    whether a run is there to continue. Raises :class:`RunError` with a one-line reason."""
    out = Path(out)
    if resume:
        if not (out / CONFIG_NAME).exists():
            raise RunError(f"--resume: {out} holds no run (no {CONFIG_NAME}); start a new run without --resume")
        return True
    if has_run(out):
        raise RunError(f"{out} already holds a run; {resume_hint}")
    problem = writable_dir_problem(out)
    if problem:
        raise RunError(f"cannot write to output directory {out} ({problem})")
    return False


def write_json(path: str | Path, obj) -> None:
    """Atomically write ``obj`` as indented JSON (a crash leaves the old file or the new one)."""
    atomic_write_text(Path(path), json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Optional[dict]:
    """The JSON object at ``path``, or None if the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_metrics(out: str | Path, rows: Iterable[Mapping]) -> None:
    """``metrics.csv``: one row per epoch, columns from the first row, floats with 6 significant digits."""
    rows = list(rows)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(Path(out) / METRICS_NAME, buf.getvalue())


def command_line() -> str:
    """The command that started this process, as a user would retype it (recorded in ``summary.json``)."""
    if not sys.argv or not sys.argv[0]:
        return "python (interactive)"
    # shell-quoted, so an empty argument (--figures '') or a JSON one survives being copied back into a shell
    return shlex.join([Path(sys.argv[0]).name] + sys.argv[1:])
