#!/usr/bin/env python
"""One gated block, reference (one conv per path) vs the im2col GEMM form, at the default network's late-stage
shapes: bf16 autocast, channels_last, forward + backward, the two forms alternating step by step.

    python scripts/bench_gemm.py --batch-size 128 --steps 40

Prints the median time per step of each and the median of the per-step ratios (reference / gemm; > 1 means the
GEMM form is faster). This is what ``layers.GEMM_MAX_PIXELS`` is set from.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args(argv)

    import torch
    from gatedconv.layers import GatedConv2d

    for c_in, c_out, hw in [(32, 64, 8), (64, 128, 4), (128, 128, 2)]:
        m = GatedConv2d(c_in, c_out).to(memory_format=torch.channels_last)
        x = torch.randn(args.batch_size, c_in, hw, hw).to(memory_format=torch.channels_last).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            g = torch.randn_like(m(x)).contiguous(memory_format=torch.channels_last)

        def step(impl: str) -> float:
            m.impl = impl
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = m(x)
            y.backward(g)
            return time.perf_counter() - t

        for impl in ("reference", "gemm"):
            step(impl)
            step(impl)
        ref, gemm = [], []
        for _ in range(args.steps):
            ref.append(step("reference"))
            gemm.append(step("gemm"))
        ratio = statistics.median(a / b for a, b in zip(ref, gemm))
        print(f"{c_in:3d}->{c_out:3d} on {hw}x{hw}: reference {1e3 * statistics.median(ref):6.2f} ms | gemm "
              f"{1e3 * statistics.median(gemm):6.2f} ms | reference/gemm {ratio:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
