#!/usr/bin/env python
"""Evaluate a trained run independently: ``gatedconv.load_model(RUN_DIR)`` on the official 10,000-image test
set, fed raw [0, 1] images (the model carries its own normalisation), in fp32.

    python scripts/evaluate.py runs/gatedconv --data-dir ../shared/cifar10

Prints top-1/top-5 accuracy and, when the run directory has metrics.csv, the test accuracy the run reported.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=500)
    args = p.parse_args(argv)

    import torch
    import gatedconv
    from gatedconv.checkpoint import CheckpointError
    from gatedconv.data import DataError, load_cifar10

    try:
        model = gatedconv.load_model(args.run)
        data = load_cifar10(args.data_dir)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    top1 = top5 = 0
    with torch.no_grad():
        for i in range(0, len(data.test_y), args.batch_size):
            x = data.test_x[i:i + args.batch_size].float() / 255
            y = data.test_y[i:i + args.batch_size]
            pred = model(x).topk(5, dim=1).indices
            top1 += int((pred[:, 0] == y).sum())
            top5 += int((pred == y[:, None]).any(1).sum())
    n = len(data.test_y)
    print(f"{args.run}: test top-1 {top1 / n:.4f} ({top1}/{n}), top-5 {top5 / n:.4f}")
    metrics = Path(args.run) / "metrics.csv"
    if metrics.exists():
        rows = list(csv.DictReader(open(metrics)))
        if rows:
            print(f"the run reported test acc {float(rows[-1]['test_acc']):.4f} after epoch {rows[-1]['epoch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
