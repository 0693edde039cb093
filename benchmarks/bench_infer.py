#!/usr/bin/env python
"""Inference cost of every study variant in its deployed form, measured side by side in one process.

    python benchmarks/bench_infer.py --output runs/bench/infer        (about 5 minutes on 2 CPU cores)
    python benchmarks/bench_infer.py --layers                          (the dynamic layer's forms, layer by layer)

Each variant of ``gatedconv.study`` is built at its widths (same seed), put in eval mode and deployed with
``gatedconv.reparameterize`` (the plain and constant-mix networks become plain convolutions, the input-gated
mixes ``DynamicConv2d``, the per-path gates stay P convolutions), in channels-last layout. For fp32 and bf16
autocast, the latency of one image (batch 1) and the throughput at batch 128 are timed in interleaved rounds
(round k runs every variant in turn, so a slow patch of a noisy machine hits all alike); a figure is the median
over rounds, a ratio the median of the per-round ratios to the plain network of the same widths. Variants with
the same network (softmax and softmax_anneal) are timed once. Also printed per variant: parameters and
inference FLOPs per image (matmul/convolution FLOPs of the batch-1 forward, the kernel mixing included).

``--layers`` times each form of the dynamic layer (``gatedconv.dynamic``) on each layer of the deployed dyconv
network at several batch sizes: the measurement behind ``DynamicConv2d``'s ``impl="auto"``.
``--profile`` prints where the deployed dyconv network's time goes at each batch size, against plain's.
``--output DIR`` writes the figures to DIR/summary.json for ``gatedconv-report collect``.
"""
from __future__ import annotations

import argparse
import statistics
import time

SETTINGS = ("fp32", "bf16")
MATMULS = ("mm", "addmm", "bmm", "baddbmm", "matmul")  # the kernel mixing (and the head) in the profile split
BATCHES = (1, 128)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=None, help="comma list of study variants (default: all)")
    p.add_argument("--matched-widths", default=None,
                   help="widths of plain_matched (default: the calibration recorded in results/gating_study.json)")
    p.add_argument("--latency-widths", default=None,
                   help="widths of plain_deployed (default: the latency calibration recorded there)")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--seconds", type=float, default=0.05, help="timed work per variant per round (at least one call)")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--layers", action="store_true", help="time the dynamic layer's forms layer by layer instead")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--output", default=None, help="directory for summary.json (gatedconv-report collect)")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc malloc as it is (default: gatedconv.malloc.keep_freed_memory, as the scripts)")
    return p


def _networks(variants, matched_widths):
    import torch

    from gatedconv import create_model, reparameterize
    from gatedconv.study import variant_kwargs

    nets, same_as = {}, {}
    seen = {}
    for v in variants:
        kw = variant_kwargs(v, matched_widths)
        key = repr(sorted(kw.items()))
        if key in seen:
            same_as[v] = seen[key]
            continue
        seen[key] = v
        torch.manual_seed(0)
        net = create_model("gatedconv", **kw)
        with torch.no_grad():  # a few training-mode passes: BatchNorm statistics away from their defaults
            for _ in range(2):
                net(torch.randn(16, 3, 32, 32))
        nets[v] = reparameterize(net.eval()).to(memory_format=torch.channels_last)
    return nets, same_as


def _timer(net, x, bf16: bool, seconds: float):
    import torch

    def once() -> float:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            t = time.perf_counter()
            net(x)
            return time.perf_counter() - t

    once(), once()  # warm-up: allocator, library kernels
    n = max(1, round(seconds / max(once(), 1e-6)))

    def run() -> float:
        return statistics.median(once() for _ in range(n))  # seconds per forward pass
    return run


def measure(nets: dict, settings, rounds: int, seconds: float, print_fn=print) -> dict:
    """Median seconds per forward pass per (variant, setting, batch), and the median per-round ratio to plain."""
    import torch

    figures = {}
    for setting in settings:
        for b in BATCHES:
            x = torch.randn(b, 3, 32, 32).contiguous(memory_format=torch.channels_last)
            timers = {v: _timer(net, x, setting == "bf16", seconds) for v, net in nets.items()}
            times = {v: [] for v in nets}
            for _ in range(rounds):
                for v, t in timers.items():
                    times[v].append(t())
            for v in nets:
                med = statistics.median(times[v])
                figures[f"{v}_{setting}_b{b}_ms"] = round(1000 * med, 3)
                if b > 1:
                    figures[f"{v}_{setting}_b{b}_img_s"] = round(b / med)
                if "plain" in times:
                    figures[f"{v}_{setting}_b{b}_x"] = round(
                        statistics.median(a / p for a, p in zip(times[v], times["plain"])), 3)
            print_fn(f"{setting}, batch {b}: " + ", ".join(
                f"{v} {figures[f'{v}_{setting}_b{b}_ms']:.2f} ms" for v in nets))
    return figures


def layer_forms(batches=(1, 8, 32, 128), rounds: int = 7, print_fn=print) -> None:
    """Each DynamicConv2d form on each layer of the deployed dyconv network, interleaved rounds, fp32."""
    import torch

    from gatedconv import DynamicConv2d, create_model, reparameterize
    from gatedconv.dynamic import DYNAMIC_IMPLEMENTATIONS, auto_impl
    from gatedconv.study import variant_kwargs

    torch.manual_seed(0)
    net = reparameterize(create_model("gatedconv", **variant_kwargs("dyconv")).eval())
    layers = [m for m in net.modules() if isinstance(m, DynamicConv2d)]
    forms = [f for f in DYNAMIC_IMPLEMENTATIONS if f != "auto"]
    print_fn(f"{'batch':>5s} {'layer':>22s} " + " ".join(f"{f:>8s}" for f in forms) + "  fastest  auto")
    for b in batches:
        hw = 32
        for m in layers:
            x = torch.randn(b, m.in_channels, hw, hw).contiguous(memory_format=torch.channels_last)
            timers = {}
            for f in forms:
                layer = DynamicConv2d(m.gate, m.kernels(), m.bias, stride=m.stride, padding=m.padding, act=m.act,
                                      impl=f)
                timers[f] = _timer(layer, x, False, 0.02)
            times = {f: statistics.median(t() for _ in range(rounds)) for f, t in timers.items()}
            best = min(times, key=times.get)
            name = f"{m.in_channels}->{m.out_channels} @{hw}x{hw}"
            print_fn(f"{b:5d} {name:>22s} " + " ".join(f"{1000 * times[f]:8.3f}" for f in forms)
                     + f"  {best:>7s}  {auto_impl(m, x)}")
            hw //= 2


def profile(nets: dict, print_fn=print) -> dict:
    """Self CPU time per operator of one fp32 forward of dyconv and plain at each batch size."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    out = {}
    for b in BATCHES:
        x = torch.randn(b, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        for v in ("plain", "dyconv"):
            net = nets[v]
            with torch.no_grad():
                net(x)
                n = 20 if b == 1 else 3
                with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(n):
                        net(x)
            ops = {e.key: e.self_cpu_time_total / 1e3 / n for e in prof.key_averages()}  # ms per forward
            top = sorted(ops.items(), key=lambda kv: -kv[1])[:6]
            print_fn(f"--- {v}, batch {b}, fp32: top operators (ms per forward, total {sum(ops.values()):.2f})")
            print_fn("\n".join(f"  {t:8.3f}  {k}" for k, t in top))
            split = {"conv": 0.0, "matmul": 0.0, "other": 0.0}
            for k, t in ops.items():
                kind = "conv" if "conv" in k else "matmul" if k.split("::")[-1] in MATMULS else "other"
                split[kind] += t
            out.update({f"{v}_b{b}_{kind}_ms": round(t, 3) for kind, t in split.items()})
            print_fn("  split: " + ", ".join(f"{kind} {t:.3f} ms" for kind, t in split.items()))
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.default_malloc:  # as every command does: large tensors reuse heap memory instead of page-faulting
        from gatedconv.malloc import keep_freed_memory
        keep_freed_memory()
    import torch

    from gatedconv.flops import inference_flops
    from gatedconv.rundir import read_json
    from gatedconv.study import VARIANTS

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.layers:
        layer_forms()
        return 0
    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    # the cost-matched variants' widths: the flags, else the calibrations recorded beside the study's runs
    records = (read_json("results/gating_study.json") or {"records": []})["records"]
    widths = {}
    for name, kind, flag in (("plain_matched", "calibration", args.matched_widths),
                             ("plain_deployed", "latency_calibration", args.latency_widths)):
        recorded = [r["widths"] for r in records if r.get("kind") == kind]
        if flag or recorded:
            widths[name] = [int(w) for w in flag.split(",")] if flag else recorded[-1]
        elif name in variants:
            print(f"{name}: no widths (no {kind} in results/gating_study.json, no flag): left out")
            variants.remove(name)
    nets, same_as = _networks(variants, widths)
    if "plain" not in nets:
        raise SystemExit("error: the ratios are to the plain network: include plain in --variants")
    figures = measure(nets, args.settings.split(","), args.rounds, args.seconds)
    for v, net in nets.items():
        figures[f"{v}_params"] = sum(p.numel() for p in net.parameters())
        figures[f"{v}_mflops"] = round(inference_flops(net) / 1e6, 2)
    for v, other in same_as.items():  # the same network: the same figures
        figures.update({k.replace(other, v, 1): val for k, val in figures.items() if k.startswith(f"{other}_")})
    print(f"\n{'variant':15s} {'params':>10s} {'MFLOPs':>8s} " + " ".join(
        f"{s + ' b' + str(b) + ' x':>11s}" for s in args.settings.split(",") for b in BATCHES))
    for v in variants:
        print(f"{v:15s} {figures[f'{v}_params']:10,d} {figures[f'{v}_mflops']:8.1f} " + " ".join(
            f"{figures[f'{v}_{s}_b{b}_x']:11.2f}" for s in args.settings.split(",") for b in BATCHES))
    if "dyconv" in nets:
        print(f"\ndeployed dyconv / plain latency (fp32): batch 1 {figures['dyconv_fp32_b1_x']:.2f}x (target 1.4x), "
              f"batch 128 {figures['dyconv_fp32_b128_x']:.2f}x (target 2.0x)")
    if args.profile and "dyconv" in nets:
        figures.update(profile(nets))
    if args.output:
        from gatedconv.summary import bench_record, write_summary
        path = write_summary(args.output, bench_record("benchmarks/bench_infer.py", argv, "bench_infer", figures))
        print(f"\nfigures written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
