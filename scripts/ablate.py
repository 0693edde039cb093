#!/usr/bin/env python
"""Ablation grid over block variants of the gatedconv network (the ``gatedconv-ablate`` command).

    python scripts/ablate.py --epochs 30 --seeds 0,1,2 --data-dir ../shared/cifar10 --out runs/ablate

The command lives in ``gatedconv.cli.ablate`` (``--help`` lists its options); this file runs it from a
checkout where the package is installed (``pip install -e .``).
"""
from gatedconv.cli.ablate import main

if __name__ == "__main__":
    raise SystemExit(main())
