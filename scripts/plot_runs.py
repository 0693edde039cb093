#!/usr/bin/env python
"""Plot per-epoch columns of runs' ``metrics.csv`` into one PNG (the ``gatedconv-plot-runs`` command).

    python scripts/plot_runs.py runs/val_ema_seed0 --columns test_acc,test_acc_raw --out figures/ema_vs_live.png

The command lives in ``gatedconv.cli.plot_runs`` (``--help`` lists its options); this file runs it from a
checkout where the package is installed (``pip install -e .``).
"""
from gatedconv.cli.plot_runs import main

if __name__ == "__main__":
    raise SystemExit(main())
