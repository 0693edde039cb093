#!/usr/bin/env python
"""Plot per-epoch columns of runs' ``metrics.csv`` against the epoch, into one PNG.

    python scripts/plot_runs.py runs/val_ema_seed0 --columns test_acc,test_acc_raw --out figures/ema_vs_live.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from gatedconv._cli import OneLineParser as _OneLineParser  # noqa: E402  (one-line argument errors)


def main(argv=None) -> int:
    p = _OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories (each holding metrics.csv)")
    p.add_argument("--columns", default="test_acc", help="comma list of metrics.csv columns (default test_acc)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--ylabel", default="accuracy")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    from gatedconv.plot import plot_run_metrics

    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    if not columns:
        print("error: --columns is empty", file=sys.stderr)
        return 2
    try:
        out = plot_run_metrics(args.runs, columns, args.out, ylabel=args.ylabel, title=args.title)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
