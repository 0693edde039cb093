#!/usr/bin/env python
"""Evaluate a trained run on the official CIFAR-10 test set in fp32 (the ``gatedconv-evaluate`` command).

    python scripts/evaluate.py runs/gatedconv --data-dir ../shared/cifar10

The command lives in ``gatedconv.cli.evaluate`` (``--help`` lists its options); this file runs it from a
checkout where the package is installed (``pip install -e .``).
"""
from gatedconv.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
