"""Small helpers shared by the command-line scripts in ``scripts/``."""
from __future__ import annotations

import argparse

__all__ = ["OneLineParser"]


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments give one line on stderr and exit 2 (argparse would print the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")
