"""A finished run's summary, in exactly the format of the records committed under ``results/``.

The run engines call these at the end of every run, so that every run directory holds ``summary.json``::

    record = make_record(command=" ".join(sys.argv), config=resolved_config, final=final, kind="train")
    write_summary(run_dir, record)

and ``python -m gatedconv.report collect RUN_DIR... --into results/NAME.json`` copies those records into the
results data the published tables are rendered from (``gatedconv.report``): a measured figure is never typed.

A record is one flat JSON object::

    {"name": "gatedconv", "kind": "train", "command": "python scripts/trainf.py ...",
     "host": "AMD EPYC (2 vCPU, AVX-512-BF16)", "date": "2026-11-24", "carried_over": false, "seed": 0,
     "acc_pct": 85.51, ...}

``docs/results.md`` lists every field. Accuracies are percentages (``*_pct``), times seconds (``*_s``).
``dump_results`` writes a results file (``{"about": ..., "records": [...]}``) in its committed layout.
This module imports only the standard library, so anything may import it.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = ["KINDS", "SUMMARY_NAME", "bench_record", "dump_results", "host_name", "make_record",
           "write_summary"]

SUMMARY_NAME = "summary.json"
# "train": gatedconv.run (scripts/trainf.py, the leaderboard and the ablation grid), "speedrun": gatedconv.speedrun;
# any other kind copies the scalar fields of ``final`` as they are (benchmarks)
KINDS = ("train", "speedrun")

_CPU_NOISE = re.compile(r"\((?:R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|\b\d+-Core\b|@.*$")


def _cpu_info() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _logical_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_name() -> str:
    """The host class, short: vendor and family, the CPUs this process may use and the widest vector feature.

    e.g. ``"AMD EPYC (2 vCPU, AVX-512-BF16)"`` or ``"Intel Xeon (8 vCPU, AVX2)"``; from ``/proc/cpuinfo``
    where there is one, else from :mod:`platform`.
    """
    info = _cpu_info()
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    name = model.group(1) if model else (platform.processor() or platform.machine() or "unknown CPU")
    words = " ".join(_CPU_NOISE.sub(" ", name).split()).split()
    short = " ".join(words[:2]) if words else name.strip()
    flags_line = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", info, re.M)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    extras = [f"{_logical_cpus()} vCPU"]
    if "avx512_bf16" in flags:
        extras.append("AVX-512-BF16")
    elif "avx512f" in flags:
        extras.append("AVX-512")
    elif "avx2" in flags:
        extras.append("AVX2")
    return f"{short} ({', '.join(extras)})"


def _pct(x: Any, digits: int = 4) -> Optional[float]:
    return None if x is None else round(100.0 * float(x), digits)


def _num(x: Any, digits: int = 4) -> Optional[float]:
    return None if x is None else round(float(x), digits)


def _train_metrics(config: dict, final: dict) -> dict:
    acc = final.get("test_acc_fp32", final.get("test_acc"))
    split = config.get("eval_split")
    return {
        "model": config.get("model"),
        "epochs": config.get("epochs", final.get("epoch")),
        "params": config.get("num_params", final.get("num_params")),
        "eval_split": split if split and split != "test" else None,
        "acc_pct": _pct(acc),
        "acc_epoch_pct": _pct(final.get("test_acc")),
        "acc_live_pct": _pct(final.get("test_acc_raw_fp32")),
        "top5_pct": _pct(final.get("test_top5_fp32", final.get("test_top5"))),
        "best_epoch": final.get("best_epoch"),
        "best_acc_pct": _pct(final.get("best_test_acc_fp32")),
        "best_top5_pct": _pct(final.get("best_test_top5_fp32")),
        "train_s": _num(final.get("train_seconds"), 1),
        "wall_s": _num(final.get("wall_seconds"), 1),
        "img_per_s": _num(final.get("examples_per_sec"), 1),
    }


def _speedrun_metrics(config: dict, final: dict) -> dict:
    steps, train_s = final.get("steps"), final.get("train_seconds")
    peak, rate, eff = final.get("peak_flops"), final.get("train_flops_per_sec"), final.get("efficiency")
    return {
        "model": config.get("model"),
        "epochs": final.get("epochs", config.get("speedrun", {}).get("epochs")),
        "steps": steps,
        "params": final.get("num_params"),
        "acc_tta_pct": _pct(final.get("acc_tta")),
        "acc_pct": _pct(final.get("acc")),
        "time_s": _num(final.get("seconds"), 1),
        "train_s": _num(train_s, 1),
        "time_to_target_s": _num(final.get("time_to_target"), 1),
        "target_pct": _pct(final.get("target_acc"), 2),
        "s_per_step": _num(train_s / steps) if steps and train_s is not None else None,
        "peak_pct": _pct(eff, 2),
        "peak_tflops": _num(peak / 1e12 if peak else None),
        "tflops_per_s": _num(rate / 1e12 if rate else None),
        "wall_s": _num(final.get("wall_seconds"), 1),
    }


def make_record(*, command: str, config: dict, final: dict, kind: str) -> dict:
    """One results record for a finished run: provenance (measured today on this host) plus its metrics.

    ``config`` is the run's resolved ``config.json``, ``final`` its ``final.json``; ``kind`` says how to read
    them (``"train"``, ``"speedrun"``, or any other name: then every scalar field of ``final`` is copied).
    Fields without a value are left out.
    """
    if not isinstance(command, str) or not command.strip():
        raise ValueError("make_record: command must be the non-empty command line of the run")
    if not isinstance(config, dict) or not isinstance(final, dict):
        raise ValueError("make_record: config and final must be dicts (config.json and final.json)")
    seed = config.get("seed", final.get("seed"))
    record: dict = {
        "name": config.get("name") or config.get("model") or kind,
        "kind": kind,
        "command": command.strip(),
        "host": host_name(),
        "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        "carried_over": False,
        "seed": seed,
    }
    if kind == "train":
        metrics = _train_metrics(config, final)
    elif kind == "speedrun":
        metrics = _speedrun_metrics(config, final)
    else:
        metrics = {k: v for k, v in final.items()
                   if isinstance(v, (int, float, str, bool)) and k not in record and k != "seed"}
    record.update({k: v for k, v in metrics.items() if v is not None})
    return record


def bench_record(script: str, argv: Optional[Sequence[str]], name: str, figures: dict) -> dict:
    """The record of one benchmark measurement: ``figures`` (its scalar results) with the command that printed
    them, ``python SCRIPT ARGV...`` as typed (``argv`` None: this process's arguments), for ``write_summary``
    and ``gatedconv-report collect``. Its seed is None: neither config nor figures carry one."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return make_record(command=shlex.join(["python", script, *argv]), config={"name": name}, final=figures,
                       kind="bench")


def write_summary(run_dir, record: dict) -> Path:
    """Write ``record`` to ``RUN_DIR/summary.json`` (atomically: a temporary file, then a rename)."""
    path = Path(run_dir) / SUMMARY_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SUMMARY_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def dump_results(data: dict) -> str:
    """The committed layout of a results file: top-level fields first, then one record per line."""
    lines = ["{"]
    for key, value in data.items():
        if key != "records":
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},")
    records = data.get("records", [])
    lines.append('  "records": [')
    lines += [f"    {json.dumps(r, ensure_ascii=False)}{',' if i < len(records) - 1 else ''}"
              for i, r in enumerate(records)]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"
