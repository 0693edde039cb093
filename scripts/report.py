#!/usr/bin/env python
"""Regenerate the tables and figures from results/ (the ``gatedconv-report`` command).

    python scripts/report.py             # tables in README.md and docs/*.md, figures in figures/
    python scripts/report.py --check     # exit 1 and list the documents whose tables are stale
    python scripts/report.py collect RUN_DIR... --into results/NAME.json

The command lives in ``gatedconv.report``; this file runs it from a checkout where the package is installed.
"""
from gatedconv.report import main

if __name__ == "__main__":
    raise SystemExit(main())
