"""The ``gatedconv-report`` command (also ``python -m gatedconv.report`` and ``scripts/report.py``): regenerate the
generated blocks and the figures, ``--check`` them, or ``collect`` run summaries into a results file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from ..cli import OneLineParser
from .core import RESULTS_DIR, ReportError, collect, _rel
from .markers import check, draw_figures, write


def _default_root() -> Path:
    cwd = Path.cwd()
    if (cwd / RESULTS_DIR).is_dir():
        return cwd
    return Path(__file__).resolve().parents[2]  # gatedconv/report/command.py -> the checkout


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="gatedconv-report", description="Regenerate the tables in README.md and docs/*.md and the "
                "figures in figures/ from results/*.json; --check lists stale documents; 'collect' copies run "
                "summaries into a results file.")
    p.add_argument("--root", type=Path, default=None,
                   help="the checkout holding results/, README.md and docs/ (default: the current directory if it "
                        "has results/, else the checkout this package lives in)")
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 and print every document whose generated blocks are stale")
    p.add_argument("--no-figures", action="store_true", help="regenerate the tables only")
    sub = p.add_subparsers(dest="command", parser_class=OneLineParser, metavar="{collect}")
    c = sub.add_parser("collect", help="append run directories' summary.json records to a results file")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run directory (or a folder of them)")
    c.add_argument("--into", required=True, metavar="results/NAME.json", help="the results file to append to")
    c.add_argument("--name", default=None, help="the row name for these records (default: their own)")
    c.add_argument("--about", default=None, help="the file's one-line description (new files)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit status (0 done, 1 stale documents with --check, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # --help exits 0, a bad argument exits 2 with one line
    root = args.root if args.root is not None else _default_root()
    try:
        if args.command == "collect":
            added = collect(args.run_dirs, args.into, name=args.name, about=args.about)
            print(f"{args.into}: {added} record(s) added")
            return 0
        if args.check:
            stale = check(root)
            for path in stale:
                print(f"stale: {path} (regenerate with: python -m gatedconv.report)")
            return 1 if stale else 0
        for path in write(root):
            print(f"updated {path}")
        if not args.no_figures:
            for path in draw_figures(root):
                print(f"drew {_rel(path, Path(root))}")
        return 0
    except (ReportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
