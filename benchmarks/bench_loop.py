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
Prints images/s for each and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--steps", type=int, default=40, help="timed steps per loop per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
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

    def naive(steps):
        naive_net.train()
        it = iter(naive_loader)
        t = time.perf_counter()
        total = 0.0
        for _ in range(steps):
            x, y = next(it)
            naive_opt.zero_grad()
            loss = F.cross_entropy(naive_net(x), y)
            loss.backward()
            naive_opt.step()
            total += loss.item()
        return steps * bs / (time.perf_counter() - t)

    def fast(steps):
        fast_net.train()
        it = iter(fast_batches)
        t = time.perf_counter()
        acc = torch.zeros(())
        for _ in range(steps):
            x, y = next(it)
            fast_opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = fast_net(x)
            loss = F.cross_entropy(out.float(), y)
            loss.backward()
            fast_opt.step()
            acc += loss.detach()
        float(acc)
        return steps * bs / (time.perf_counter() - t)

    naive(3)
    fast(8)  # includes compiling the gated sum
    res = {"naive": [], "trainf": []}
    for _ in range(args.rounds):
        res["naive"].append(naive(args.steps))
        res["trainf"].append(fast(args.steps))
    n, f = statistics.median(res["naive"]), statistics.median(res["trainf"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {bs}, {args.rounds} rounds x {args.steps} steps")
    print(f"naive loop (fp32, NCHW, PIL transforms in DataLoader): {n:7.1f} img/s  (rounds: "
          + ", ".join(f"{v:.0f}" for v in res["naive"]) + ")")
    print(f"trainf pipeline (bf16, channels_last, tensor batches):  {f:7.1f} img/s  (rounds: "
          + ", ".join(f"{v:.0f}" for v in res["trainf"]) + ")")
    print(f"ratio trainf / naive: {f / n:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
