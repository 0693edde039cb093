"""The user commands as library functions.

Each command is one module with ``build_parser() -> argparse.ArgumentParser`` and
``main(argv: list[str] | None = None) -> int`` (the exit status). Installing the package puts every command on
the PATH as a console script (``COMMANDS`` below, the same table as ``setup.cfg``'s ``console_scripts``);
``python -m gatedconv`` lists them and ``python -m gatedconv NAME ARGS`` runs one. The files in ``scripts/``
are thin wrappers over the same ``main`` functions.

Importing this package (and a command module) imports no more than ``gatedconv`` itself: the commands import
what they run inside ``main``, so ``--help`` stays quick.
"""
from __future__ import annotations

import argparse

__all__ = ["COMMANDS", "SCRIPTS", "OneLineParser"]

# console script name -> (module holding main(), one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "gatedconv-train": ("gatedconv.cli.train",
                        "train a registered model on CIFAR-10 (resume, cross-validation, torchrun)"),
    "gatedconv-speedrun": ("gatedconv.cli.speedrun",
                           "gatedconv_fast with the airbench94-style recipe over N seeds: accuracy and time"),
    "gatedconv-speedrun-table": ("gatedconv.cli.speedrun_table",
                                 "markdown table (and time-to-accuracy figure) of finished speedrun runs"),
    "gatedconv-leaderboard": ("gatedconv.cli.leaderboard",
                              "train registered models at one budget and compare them with the original claims"),
    "gatedconv-ablate": ("gatedconv.cli.ablate", "ablation grid over block variants of the gatedconv network"),
    "gatedconv-study": ("gatedconv.cli.study",
                        "does gating pay? variants at one budget over seeds, with t-tests (results/ records)"),
    "gatedconv-evaluate": ("gatedconv.cli.evaluate",
                           "evaluate a trained run on the official test set (fp32, top-1 / top-5)"),
    "gatedconv-analyze-gates": ("gatedconv.cli.analyze_gates",
                                "what a trained run's gates do over the test set: JSON summary and figures"),
    "gatedconv-plot-runs": ("gatedconv.cli.plot_runs", "plot per-epoch columns of runs' metrics.csv into one PNG"),
    "gatedconv-report": ("gatedconv.report",
                         "regenerate README/docs tables and figures from results/*.json (--check, collect)"),
}

# console script name -> the equivalent script of a checkout (commands without one: ``python -m gatedconv NAME``)
SCRIPTS: dict[str, str] = {
    "gatedconv-train": "scripts/trainf.py",
    "gatedconv-speedrun": "scripts/speedrun.py",
    "gatedconv-speedrun-table": "scripts/speedrun_table.py",
    "gatedconv-leaderboard": "scripts/leaderboard.py",
    "gatedconv-ablate": "scripts/ablate.py",
    "gatedconv-study": "scripts/study.py",
    "gatedconv-evaluate": "scripts/evaluate.py",
    "gatedconv-analyze-gates": "scripts/analyze_gates.py",
    "gatedconv-plot-runs": "scripts/plot_runs.py",
    "gatedconv-report": "scripts/report.py",
}


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments give one line on stderr and exit 2 (argparse would print the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")
