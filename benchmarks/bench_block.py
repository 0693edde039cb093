#!/usr/bin/env python
"""Reference vs fast implementations of the five-block gated network, measured side by side in one process.

    python benchmarks/bench_block.py --batch-size 256

Measured on a 2-core AVX-512-BF16 CPU with that command: for each of the four settings, 15 rounds (the
default) of one timed step per variant (the figures are in docs/results.md, rendered from results/).

For each setting (fp32 / bf16 autocast, channels_last on / off) the same network (same weights) is timed with
every block forced to ``impl="reference"`` (one conv per path) and with ``impl="auto"`` (the package's choice),
plus ``auto`` with the compiled gated sum. Timings alternate between the variants step by step (round k times
one step of each variant), so a slow patch of a noisy machine hits all of them alike; each figure is the median
over rounds of images/s for one training step (forward + backward + Adam step), and each ratio is the median of
the per-round ratios. Where ``auto`` picks the reference form everywhere, its ratio (ideally 1.00) shows the
noise floor of the measurement.
"""
from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gatedconv")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=1, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--settings", default="bf16-cl,bf16-nchw,fp32-cl,fp32-nchw")
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from gatedconv import create_model
    from gatedconv import layers as L
    from gatedconv.kernels import set_compiled_sum

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, model {args.model}")
    x0 = torch.randn(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    for setting in args.settings.split(","):
        prec, layout = setting.split("-")
        bf16, cl = prec == "bf16", layout == "cl"
        x = x0.contiguous(memory_format=torch.channels_last) if cl else x0
        net = create_model(args.model)
        if cl:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        blocks = [m for m in net.modules() if isinstance(m, L.GatedConv2d)]
        variants = {"reference": ("reference", False), "auto": ("auto", False), "auto+compiled": ("auto", True)}

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def use(name):
            impl, comp = variants[name]
            for b in blocks:
                b.impl = impl
            set_compiled_sum(net, comp)

        for name in variants:  # warm up (and compile) every variant first
            use(name)
            for _ in range(2):
                step()
        speeds = {n: [] for n in variants}
        for _ in range(args.rounds):
            for name in variants:
                use(name)
                t = time.perf_counter()
                for _ in range(args.steps):
                    step()
                speeds[name].append(args.steps * args.batch_size / (time.perf_counter() - t))
        set_compiled_sum(net, False)
        med = {n: statistics.median(v) for n, v in speeds.items()}
        ratio = {n: statistics.median(a / r for a, r in zip(speeds[n], speeds["reference"])) for n in speeds}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # the choice depends on the dtype
            use("auto")
            choice = ", ".join(f"{b.choose_impl(t)}" for b, t in zip(blocks, _block_inputs(net, x)))
        print(f"{prec:5s} {'channels_last' if cl else 'NCHW':13s} reference {med['reference']:7.1f} img/s | "
              f"auto {med['auto']:7.1f} ({ratio['auto']:.2f}x) | auto+compiled gated sum "
              f"{med['auto+compiled']:7.1f} ({ratio['auto+compiled']:.2f}x) | auto chose: {choice}",
              flush=True)
    return 0


def _block_inputs(net, x):
    """The input each gated block sees (for reporting which implementation ``auto`` picked)."""
    import torch
    from gatedconv import layers as L
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for m in net.modules()
             if isinstance(m, L.GatedConv2d)]
    with torch.no_grad():
        net.eval()
        net(x[:2])
        net.train()
    for h in hooks:
        h.remove()
    return seen


if __name__ == "__main__":
    raise SystemExit(main())
