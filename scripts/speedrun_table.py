#!/usr/bin/env python
"""Summarise finished speedrun runs as a markdown table (the ``gatedconv-speedrun-table`` command).

    python scripts/speedrun_table.py runs/speedrun_1100 runs/abl_relu --baseline runs/speedrun_1100

The command lives in ``gatedconv.cli.speedrun_table`` (``--help`` lists its options); this file runs it from a
checkout where the package is installed (``pip install -e .``).
"""
from gatedconv.cli.speedrun_table import main

if __name__ == "__main__":
    raise SystemExit(main())
