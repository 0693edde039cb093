#!/usr/bin/env python
"""Record and summarise the gates of a trained run over the test set
(the ``gatedconv-analyze-gates`` command).

    python scripts/analyze_gates.py runs/main_seed0 --data-dir ../shared/cifar10

The command lives in ``gatedconv.cli.analyze_gates`` (``--help`` lists its options); this file runs it from a
checkout where the package is installed (``pip install -e .``).
"""
from gatedconv.cli.analyze_gates import main

if __name__ == "__main__":
    raise SystemExit(main())
