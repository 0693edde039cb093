#!/usr/bin/env python
"""One gated block, reference (one conv per path) vs the im2col GEMM form vs the dense form, at the network's
late-stage shapes: bf16 autocast, channels_last, forward + backward, the forms alternating step by step.

    python benchmarks/bench_gemm.py --steps 30

Measured on a 2-core AVX-512-BF16 CPU with that command (batch 128, the default): two runs of 30 steps per
form, the second on an otherwise idle machine (the figures are in docs/results.md, rendered from results/).

Prints the median time per step of each form and the median of the per-step ratios (reference / form; > 1
means the form is faster). ``layers.GEMM_MAX_PIXELS`` and ``layers.DENSE_MAX_PIXELS`` are set from this.
"""
from __future__ import annotations

import argparse
import statistics
import time

# (C_in, C_out, map size): blocks 3-5 of the default network (64->128 on 4x4, 128->256 on 2x2) and neighbours
SHAPES = [(32, 64, 8), (64, 128, 4), (64, 192, 4), (128, 128, 2), (128, 256, 2), (192, 256, 2)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args(argv)

    import torch
    from gatedconv.layers import GatedConv2d

    for c_in, c_out, hw in SHAPES:
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

        forms = ("reference", "gemm", "dense")
        for impl in forms:
            step(impl)
            step(impl)
        times = {impl: [] for impl in forms}
        for _ in range(args.steps):
            for impl in forms:
                times[impl].append(step(impl))
        cells = [f"{impl} {1e3 * statistics.median(times[impl]):6.2f} ms" for impl in forms]
        ratios = [f"reference/{impl} {statistics.median(a / b for a, b in zip(times['reference'], times[impl])):.2f}x"
                  for impl in forms[1:]]
        print(f"{c_in:3d}->{c_out:3d} on {hw}x{hw}: " + " | ".join(cells + ratios), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
