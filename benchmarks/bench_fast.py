#!/usr/bin/env python
"""Where the fast recipe's time goes: one training step of ``gatedconv_fast`` against the plain airbench94 net.

    python benchmarks/bench_fast.py --variants plain,gated,compiled --rounds 7
    python benchmarks/bench_fast.py --batch-size 1024 --rounds 4 --variants plain,gated,compiled,inductor \
        --default-malloc --profile

Measured on two 2-core AVX-512-BF16 CPUs (an Intel Xeon and an AMD EPYC host): the first command, 7 rounds,
once on each host right after the speedrun runs it is compared with; the second, 4 rounds, on the Xeon, with
``--profile`` for the operator breakdown (the figures are in docs/results.md, rendered from results/).

Variants, all built from one ``gatedconv_fast`` (same weights where they share layers) and timed side by side
in one process, round k timing one step of each in turn (a slow patch of this shared machine hits them alike):

* ``plain``     - airbench94 itself: every gated block replaced by its first path (the 3x3 ``Conv2d``), so
                  no gate and no second path. The floor the gated network is measured against.
* ``gated``     - ``gatedconv_fast`` as ``gatedconv-speedrun`` trains it (eager gated sum).
* ``compiled``  - the same with the gated sum compiled (``gatedconv.kernels.set_compiled_sum``).
* ``constant``  - ``gate="constant"``, eager: the second path without the gate (no gating cost).
* ``wide``      - all paths as ONE convolution with P x C_out outputs (``impl="fused"``), then the sum.
* ``inductor``  - ``gated`` with the whole training forward under ``torch.compile`` (speedrun ``--compile``);
                  its compilation runs in the warm-up, outside the timings.

A step is the recipe's: bf16 autocast, channels-last, forward, summed cross-entropy, backward, Nesterov SGD
step. Each figure is the median over rounds of milliseconds per step; ratios are medians of per-round ratios
to ``plain``. ``--profile`` adds, for every variant, torch.profiler's top operators (self CPU time, mean of two
steps) and where its extra time over ``plain`` goes: convolution forward, convolution backward and everything
else (gated sums, gate, 1x1 path's memory traffic). ``--output DIR`` writes the figures to ``DIR/summary.json``
(``gatedconv-report collect DIR --into results/bench_fast.json`` adds them to the published table).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

VARIANTS = ("plain", "gated", "compiled", "constant", "wide", "inductor")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=1024, help="airbench94's batch size (default 1024)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--model-kwargs", default="{}", help="gatedconv_fast keywords (JSON), e.g. '{\"widths\": [64, 128, 128]}'")
    p.add_argument("--profile", action="store_true",
                   help="print each variant's top operators and where its extra time over plain goes")
    p.add_argument("--output", default=None, metavar="DIR", help="write the figures to DIR/summary.json")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc malloc as it is (default: gatedconv.malloc.keep_freed_memory, as the scripts)")
    args = p.parse_args(argv)
    if not args.default_malloc:
        from gatedconv.malloc import keep_freed_memory
        keep_freed_memory()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}")

    import json

    import torch
    from torch import nn

    from gatedconv import create_model
    from gatedconv import layers as L
    from gatedconv.kernels import set_compiled_sum
    from gatedconv.flops import synthetic_train_step

    kw = json.loads(args.model_kwargs)
    torch.manual_seed(0)
    base = create_model("gatedconv_fast", **kw)
    # give the extra paths and gates non-zero weights, as after some training (zero init would make the
    # second path's backward trivially cheap for nothing)
    with torch.no_grad():
        for block in base.gated_blocks():
            for conv in list(block.paths)[1:]:
                conv.weight.normal_(0, 0.02)

    def plain_from(net: nn.Module) -> nn.Module:
        net = copy.deepcopy(net)
        for group in net.groups:
            group.conv1, group.conv2 = group.conv1.paths[0], group.conv2.paths[0]
        return net

    nets = {}
    for v in variants:
        if v == "plain":
            nets[v] = plain_from(base)
        elif v in ("gated", "compiled"):
            nets[v] = copy.deepcopy(base)
        elif v == "constant":
            nets[v] = copy.deepcopy(base)
            for block in nets[v].gated_blocks():
                block.gate = L.Gate(block.in_channels, block.num_paths, gate="constant")
        elif v == "inductor":
            nets[v] = copy.deepcopy(base)
        elif v == "wide":
            nets[v] = copy.deepcopy(base)
            for block in nets[v].gated_blocks():
                block.impl = "fused"
    fmt = torch.channels_last
    x = torch.randn(args.batch_size, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch_size,))
    steps = {}
    for v, net in nets.items():
        net.to(memory_format=fmt).train()
        set_compiled_sum(net, v == "compiled")
        if v == "inductor":
            nets[v] = torch.compile(net)
        steps[v] = synthetic_train_step(nets[v], x, y, label_smoothing=0.2)  # the recipe's label smoothing

    def step(v: str) -> float:
        t = time.perf_counter()
        steps[v]()
        return time.perf_counter() - t

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"gatedconv_fast {kw or '(defaults)'}: {base.num_params():,} parameters", flush=True)
    for v in variants:  # warm-up (and compilation for "compiled")
        for _ in range(2):
            step(v)
    times = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            times[v].append(step(v))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {1000 * times[v][-1]:.0f} ms" for v in variants),
              flush=True)
    figures = {"batch_size": args.batch_size}
    print(f"\n{'variant':10s} {'ms/step':>9s} {'img/s':>8s} {'x plain':>8s}")
    for v in variants:
        med = statistics.median(times[v])
        ratio = (statistics.median(t / b for t, b in zip(times[v], times["plain"])) if "plain" in times else float("nan"))
        print(f"{v:10s} {1000 * med:9.0f} {args.batch_size / med:8.0f} {ratio:8.2f}")
        figures[f"{v}_ms"] = round(1000 * med)
        if v != "plain" and "plain" in times:
            figures[f"{v}_x"] = round(ratio, 3)
    gated = [v for v in variants if v not in ("plain", "constant")]  # "constant" has no gate
    if "plain" in variants and gated:
        best = min(gated, key=lambda v: figures[f"{v}_x"])
        print(f"\ngated step / plain step: {figures[f'{best}_x']:.2f}x ({best}; target 1.15x)")

    if args.profile:
        self_s = {v: profile_step(steps[v]) for v in variants}
        for v in variants:
            top = sorted(self_s[v].items(), key=lambda kv: -kv[1])[:12]
            print(f"\n--- {v}: top operators by self CPU time (s per step)")
            print("\n".join(f"  {t:7.3f}  {k}" for k, t in top))
        if "plain" in variants:
            for v in [v for v in variants if v != "plain"]:
                figures.update({f"{v}_{k}": round(t, 3) for k, t in extra_time(self_s[v], self_s["plain"]).items()})
                print(f"\n--- {v} against plain: " + ", ".join(
                    f"{k} {figures[f'{v}_{k}']:+.3f} s" for k in ("extra_s", "extra_conv_fwd_s", "extra_conv_bwd_s",
                                                                   "extra_other_s")))
                diff = {k: self_s[v].get(k, 0.0) - self_s["plain"].get(k, 0.0) for k in self_s[v].keys() | self_s["plain"].keys()}
                print("\n".join(f"  {t:+7.3f}  {k}" for k, t in sorted(diff.items(), key=lambda kv: -kv[1])[:8]))
    if args.output:
        from gatedconv.summary import bench_record, write_summary
        path = write_summary(args.output, bench_record("benchmarks/bench_fast.py", argv, "bench_fast", figures))
        print(f"\nfigures written to {path}")
    return 0


def profile_step(step, n: int = 2) -> dict:
    """Self CPU seconds per operator, mean over ``n`` profiled training steps."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    return {e.key: e.self_cpu_time_total / 1e6 / n for e in prof.key_averages()}


def extra_time(variant: dict, plain: dict) -> dict:
    """A variant's self CPU seconds over plain's: total, convolution forward, convolution backward, the rest."""
    def conv(d: dict, backward: bool) -> float:
        return sum(t for k, t in d.items() if "convolution" in k.lower() and ("backward" in k.lower()) == backward)
    total = sum(variant.values()) - sum(plain.values())
    fwd, bwd = conv(variant, False) - conv(plain, False), conv(variant, True) - conv(plain, True)
    return {"extra_s": total, "extra_conv_fwd_s": fwd, "extra_conv_bwd_s": bwd, "extra_other_s": total - fwd - bwd}


if __name__ == "__main__":
    raise SystemExit(main())
