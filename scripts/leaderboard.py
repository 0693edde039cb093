#!/usr/bin/env python
"""Train registered models at one budget and compare them with the original claims
(the ``gatedconv-leaderboard`` command).

    python scripts/leaderboard.py --epochs 5 --data-dir ../shared/cifar10 --out runs/leaderboard

The command lives in ``gatedconv.cli.leaderboard`` (``--help`` lists its options); this file runs it from a
checkout where the package is installed (``pip install -e .``).
"""
from gatedconv.cli.leaderboard import main

if __name__ == "__main__":
    raise SystemExit(main())
