#!/usr/bin/env python
"""What ``gatedconv.malloc.keep_freed_memory`` buys: training steps with glibc's default malloc against it.

    python benchmarks/bench_malloc.py --pairs 2 --steps 3
    python benchmarks/bench_malloc.py --model gatedconv --batch-size 128 --pairs 3 --steps 20

Measured on a 2-core AVX-512-BF16 CPU with those commands: ``gatedconv_fast`` at batch 1024 (the defaults), 2
pairs of children timing 3 steps each; the ``gatedconv`` network at batch 128, 3 pairs of 20 steps (the figures
are in docs/results.md). ``--model resnet --batch-size 128 --pairs 1 --steps 3`` gave the per-step time of ResNet-18.

The setting is process-wide, so each measurement is its own child process: ``--pairs`` pairs of children run
alternately (default, keep, default, keep, ...; a slow patch of the shared machine hits both alike), each
timing ``--steps`` training steps (bf16 autocast, channels-last, forward + summed cross-entropy + backward +
SGD step) after two warm-up steps. Printed per child: ms per step, kernel (sys) CPU seconds per step and minor
page faults per step; then the median ms per step of each and the median of the per-pair ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def child(model: str, batch_size: int, steps: int, keep: bool) -> dict:
    import resource
    import time

    if keep:
        from gatedconv.malloc import keep_freed_memory
        keep_freed_memory()
    import torch

    from gatedconv import create_model
    from gatedconv.flops import synthetic_train_step

    torch.manual_seed(0)
    net = create_model(model).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))
    step = synthetic_train_step(net, x, y)

    for _ in range(2):
        step()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {"ms": 1000 * dt / steps, "sys": (r1.ru_stime - r0.ru_stime) / steps,
            "faults": (r1.ru_minflt - r0.ru_minflt) / steps}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gatedconv_fast")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--child", choices=["default", "keep"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.model, args.batch_size, args.steps, args.child == "keep")))
        return 0

    env = dict(os.environ)
    env.pop("GATEDCONV_MALLOC", None)
    print(f"{args.model}, batch {args.batch_size}, {args.steps} timed steps per child, {args.pairs} pairs", flush=True)
    res = {"default": [], "keep": []}
    for i in range(args.pairs):
        for mode in ("default", "keep"):
            cmd = [sys.executable, __file__, "--child", mode, "--model", args.model, "--batch-size",
                   str(args.batch_size), "--steps", str(args.steps)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            res[mode].append(r)
            print(f"pair {i + 1} {mode:7s}: {r['ms']:7.0f} ms/step, sys {r['sys']:.2f} s/step, "
                  f"{r['faults']:,.0f} page faults/step", flush=True)
    med = {m: statistics.median(r["ms"] for r in rs) for m, rs in res.items()}
    ratio = statistics.median(d["ms"] / k["ms"] for d, k in zip(res["default"], res["keep"]))
    print(f"median ms/step: default {med['default']:.0f}, keep_freed_memory {med['keep']:.0f}; "
          f"default / keep per pair (median): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
