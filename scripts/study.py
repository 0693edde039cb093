#!/usr/bin/env python
"""Does input gating pay? Variants of the gatedconv network at one budget over seeds (the ``gatedconv-study``
command).

    python scripts/study.py --epochs 30 --seeds 0,1,2 --data-dir ../shared/cifar10 --out runs/study

The command lives in ``gatedconv.cli.study`` (``--help`` lists its options); this file runs it from a
checkout where the package is installed (``pip install -e .``).
"""
from gatedconv.cli.study import main

if __name__ == "__main__":
    raise SystemExit(main())
