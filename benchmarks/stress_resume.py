#!/usr/bin/env python
"""Kill a small training run with SIGKILL at random steps, resume it, and check that every resumed run ends
with bit-identical weights and the same metrics file as one uninterrupted run.

    python benchmarks/stress_resume.py --kills 10

Each run is ``gatedconv-train`` (``python -m gatedconv.cli.train``) in a child process, in fp32 without
compilation on the CPU; 10 kills are 11 runs plus the resumes, a few minutes on a 2-core AVX-512-BF16 CPU.

Uses generated tiny data in the official layout (no download, no real data needed) unless --data-dir is given.
Exit status 0 only if every resume matched.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10, help="number of killed-and-resumed runs")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="seeds the training runs and the choice of kill points")
    p.add_argument("--data-dir", default=None, help="real data instead of generated tiny data")
    p.add_argument("--work-dir", default=None, help="where runs go (default: a temporary directory)")
    args = p.parse_args(argv)

    import torch
    from gatedconv.data import write_fake_cifar

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="stress_resume_"))
    data = args.data_dir or str(write_fake_cifar(work / "data", n_per_batch=60, n_test=40))
    common = ["--epochs", str(args.epochs), "--data-dir", data, "--seed", str(args.seed), "--precision", "fp32",
              "--compile", "off", "--batch-size", "25", "--model-kwargs",
              '{"widths": [4, 8, 8, 8, 8], "head_hidden": 16}']
    if args.data_dir:
        common += ["--first-1000"]
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(out, extra_env=None, resume=False):
        cmd = [sys.executable, "-m", "gatedconv.cli.train", "--out", str(out)] + (["--resume"] if resume else common)
        return subprocess.run(cmd, env={**env, **(extra_env or {})}, capture_output=True, text=True, cwd=work)

    def metrics(out):
        with open(out / "metrics.csv") as f:
            return [{k: v for k, v in r.items() if k not in ("seconds", "examples_per_sec")} for r in csv.DictReader(f)]

    ref = work / "reference"
    r = run(ref)
    if r.returncode != 0:
        print(f"reference run failed: {r.stderr.strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    steps = int(metrics(ref)[-1]["step"])
    ref_w = torch.load(ref / "checkpoint.pt", weights_only=False)["model_state"]
    rng = random.Random(args.seed)
    points = sorted(rng.sample(range(1, steps + 1), min(args.kills, steps)))
    failures = 0
    for k, at in enumerate(points):
        out = work / f"killed_{k}_at_{at}"
        r = run(out, {"GATEDCONV_FAULT": f"kill@{at}"})
        killed = r.returncode == -9
        resumes = 0
        while True:  # resume until it finishes (a kill point lands in the first run only)
            r = run(out, resume=True)
            resumes += 1
            if r.returncode == 0 or resumes > 3:
                break
        w = torch.load(out / "checkpoint.pt", weights_only=False)["model_state"]
        same_w = all(torch.equal(w[n], ref_w[n]) for n in ref_w)
        same_m = metrics(out) == metrics(ref)
        ok = killed and r.returncode == 0 and same_w and same_m
        failures += not ok
        print(f"kill at step {at:4d}/{steps}: killed={killed} resumed_ok={r.returncode == 0} "
              f"weights_identical={same_w} metrics_identical={same_m} -> {'OK' if ok else 'FAIL'}", flush=True)
    print(f"{len(points) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
