#!/usr/bin/env python
"""``trainf``'s pipeline against a naive reference loop on the same network, side by side in one process.

    python benchmarks/bench_loop.py --data-dir ../shared/cifar10 --steps 20 --rounds 3

Measured on a 2-core AVX-512-BF16 CPU with that command: 3 rounds of 20 timed steps per loop, the rounds
alternating between the loops (the figures are in docs/results.md, rendered from results/). Needs the real CIFAR-10 data.

naive: fp32, NCHW, a torchvision ``CIFAR10``-style Dataset of PIL images with per-image transforms
(RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) in a ``DataLoader`` (batch 128,
num_workers 0), ``loss.item()`` on every batch, the block's reference implementation.
trainf: gatedconv's defaults: bf16 autocast, channels_last, tensor-resident batches with batched augmentation,
device-side metric sums, ``impl="auto"`` blocks, compiled gated sum.
Both train the default ``gatedconv`` network at batch 128 with Adam; the rounds alternate between the two.
Prints images/s for each and the ratio; ``--profile`` adds where each loop's step time goes (data, forward,
backward, optimizer) and trainf's top operators; ``--output DIR`` writes the figures to ``DIR/summary.json``
(``gatedconv-report collect DIR --into results/bench_loop.json`` adds them to the published table).
"""
from __future__ import annotations

import argparse
import statistics
import time

PHASES = ("data", "forward", "backward", "optimizer + metrics")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--steps", type=int, default=40, help="timed steps per loop per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--profile", action="store_true",
                   help="also time each loop's phases (data, forward, backward, optimizer) and list trainf's top operators")
    p.add_argument("--output", default=None, metavar="DIR", help="write the figures to DIR/summary.json")
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F
    import torchvision.transforms as T
    from PIL import Image

    from gatedconv import create_model
    from gatedconv.kernels import set_compiled_sum
    from gatedconv.data import TensorBatches, load_cifar10

    data = load_cifar10(args.data_dir)
    mean, std = data.mean_std()
    bs = args.batch_size

    class PILDataset(torch.utils.data.Dataset):  # what torchvision.datasets.CIFAR10 does per item
        def __init__(self, x, y, tf):
            self.x, self.y, self.tf = x.permute(0, 2, 3, 1).numpy(), y.tolist(), tf

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.tf(Image.fromarray(self.x[i])), self.y[i]

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    naive_loader = torch.utils.data.DataLoader(PILDataset(data.train_x, data.train_y, tf), batch_size=bs,
                                               shuffle=True, num_workers=0, drop_last=True)
    fast_batches = TensorBatches(data.train_x, data.train_y, bs, mean=mean, std=std, train=True, augment=True,
                                 channels_last=True)
    torch.manual_seed(0)
    naive_net = create_model("gatedconv", impl="reference")
    fast_net = create_model("gatedconv").to(memory_format=torch.channels_last)
    set_compiled_sum(fast_net, True)  # trainf's default on a CPU (--compile auto)
    naive_opt = torch.optim.Adam(naive_net.parameters(), 1e-3, weight_decay=1e-4)
    fast_opt = torch.optim.Adam(fast_net.parameters(), 1e-3, weight_decay=1e-4)

    # each loop as its four phases, so the timed loops and --profile run the same code
    def naive_phases():
        it = iter(naive_loader)

        def batch():
            return next(it)

        def forward(x, y):
            naive_opt.zero_grad()
            return F.cross_entropy(naive_net(x), y)
        return naive_net, batch, forward, naive_opt, lambda loss, total: total + loss.item()

    def fast_phases():
        it = iter(fast_batches)

        def batch():
            return next(it)

        def forward(x, y):
            fast_opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = fast_net(x)
            return F.cross_entropy(out.float(), y)
        return fast_net, batch, forward, fast_opt, lambda loss, total: total + loss.detach()

    def run(phases, steps: int, clock=None) -> float:
        """Images/s over ``steps`` training steps; with ``clock`` (a dict) also the seconds of each phase."""
        net, batch, forward, opt, tally = phases()
        net.train()
        total, spent = torch.zeros(()), [0.0] * len(PHASES)
        start = last = time.perf_counter()

        def lap(i: int) -> None:  # the time since the previous lap goes to phase i
            nonlocal last
            now = time.perf_counter()
            spent[i], last = spent[i] + now - last, now
        for _ in range(steps):
            x, y = batch()
            lap(0)
            loss = forward(x, y)
            lap(1)
            loss.backward()
            lap(2)
            opt.step()
            total = tally(loss, total)
            lap(3)
        float(total)  # the loss sum is read once, at the end (a no-op for the naive loop)
        elapsed = time.perf_counter() - start
        if clock is not None:
            clock.update(zip(PHASES, spent))
        return steps * bs / elapsed

    run(naive_phases, 3)
    run(fast_phases, 8)  # includes compiling the gated sum
    res = {"naive": [], "trainf": []}
    for _ in range(args.rounds):
        res["naive"].append(run(naive_phases, args.steps))
        res["trainf"].append(run(fast_phases, args.steps))
    n, f = statistics.median(res["naive"]), statistics.median(res["trainf"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {bs}, {args.rounds} rounds x {args.steps} steps")
    print(f"naive loop (fp32, NCHW, PIL transforms in DataLoader): {n:7.1f} img/s  (rounds: "
          + ", ".join(f"{v:.0f}" for v in res["naive"]) + ")")
    print(f"trainf pipeline (bf16, channels_last, tensor batches):  {f:7.1f} img/s  (rounds: "
          + ", ".join(f"{v:.0f}" for v in res["trainf"]) + ")")
    print(f"ratio trainf / naive: {f / n:.2f}x (target 3x)")
    figures = {"naive_img_per_s": round(n, 1), "trainf_img_per_s": round(f, 1), "trainf_x": round(f / n, 3),
               "batch_size": bs}
    if args.profile:
        clocks = {"naive": {}, "trainf": {}}
        run(naive_phases, args.steps, clocks["naive"])
        run(fast_phases, args.steps, clocks["trainf"])
        print(f"\nwhere a step's time goes (ms per step, {args.steps} steps each):")
        print(f"  {'phase':22s} {'naive':>8s} {'trainf':>8s} {'naive/trainf':>13s}")
        for phase in PHASES:
            a, b = (1000 * clocks[k][phase] / args.steps for k in ("naive", "trainf"))
            print(f"  {phase:22s} {a:8.1f} {b:8.1f} {a / b:12.2f}x")
            figures[f"naive_{phase.split()[0]}_ms"], figures[f"trainf_{phase.split()[0]}_ms"] = round(a, 1), round(b, 1)
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(fast_phases, 2)
        print("\ntrainf: top operators by self CPU time (2 steps)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=48))
    if args.output:
        from gatedconv.summary import bench_record, write_summary
        path = write_summary(args.output, bench_record("benchmarks/bench_loop.py", argv, "bench_loop", figures))
        print(f"figures written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
