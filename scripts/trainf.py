#!/usr/bin/env python
"""Train a registered model on CIFAR-10 (the ``gatedconv-train`` command).

    python scripts/trainf.py --epochs 30 --data-dir ../shared/cifar10

The command lives in ``gatedconv.cli.train`` (``--help`` lists its options); this file runs it from a
checkout where the package is installed (``pip install -e .``).
"""
from gatedconv.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
