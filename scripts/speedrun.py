#!/usr/bin/env python
"""Train ``gatedconv_fast`` with the airbench94-style recipe for N seeds and report accuracy and time
(the ``gatedconv-speedrun`` command).

    python scripts/speedrun.py --seeds 5 --data-dir ../shared/cifar10 --out runs/speedrun

The command lives in ``gatedconv.cli.speedrun`` (``--help`` lists its options); this file runs it from a
checkout where the package is installed (``pip install -e .``).
"""
from gatedconv.cli.speedrun import main

if __name__ == "__main__":
    raise SystemExit(main())
