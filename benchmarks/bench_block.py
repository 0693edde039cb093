#!/usr/bin/env python
"""Reference vs fast implementations of the five-block gated network, measured side by side in one process.

    python benchmarks/bench_block.py --batch-size 256
    python benchmarks/bench_block.py --batch-size 128 --settings bf16-cl --model-kwargs \
        '{"kernel_sizes": [3, 3, 3, 3], "activation": "after_sum", "gate": "constant"}'      (the constant-gate mix)

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
    p.add_argument("--model-kwargs", default="{}", help="JSON keywords for the model, e.g. the constant-gate "
                   "kernel mix: '{\"kernel_sizes\": [3, 3, 3, 3], \"activation\": \"after_sum\", \"gate\": \"constant\"}'")
    p.add_argument("--output", default=None, help="directory: one SETTING/summary.json per setting for "
                   "gatedconv-report collect")
    args = p.parse_args(argv)

    import json

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
        kw = json.loads(args.model_kwargs)
        net = create_model(args.model, **kw)
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
        if args.output:
            from gatedconv.summary import bench_record, write_summary
            label = (f"{'bf16 autocast' if bf16 else 'fp32'}, {'channels_last' if cl else 'NCHW'}"
                     + (f", {args.model} {args.model_kwargs}" if kw else ""))
            figures = {"ref_img_s": round(med["reference"]), "auto_img_s": round(med["auto"]),
                       "auto_x": round(ratio["auto"], 3), "compiled_img_s": round(med["auto+compiled"]),
                       "compiled_x": round(ratio["auto+compiled"], 3), "auto_chose": choice}
            rec = bench_record("benchmarks/bench_block.py", argv, label, figures)
            print(f"figures written to {write_summary(f'{args.output}/{setting}', rec)}")
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
