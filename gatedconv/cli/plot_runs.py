"""Plot per-epoch columns of runs' ``metrics.csv`` against the epoch, into one PNG.

    gatedconv-plot-runs runs/val_ema_seed0 --columns test_acc,test_acc_raw --out figures/ema_vs_live.png
    (the same from a checkout: python scripts/plot_runs.py ...)
"""
from __future__ import annotations

import argparse
import sys

from gatedconv.cli import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories (each holding metrics.csv)")
    p.add_argument("--columns", default="test_acc", help="comma list of metrics.csv columns (default test_acc)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--ylabel", default="accuracy")
    p.add_argument("--title", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    raise SystemExit(main())
