"""``python -m gatedconv``: list the commands; ``python -m gatedconv NAME ARGS...`` runs one.

    python -m gatedconv                      # the commands, what each does, and their script equivalents
    python -m gatedconv train --epochs 30    # the same as gatedconv-train --epochs 30
"""
from __future__ import annotations

import importlib
import sys

from gatedconv.cli import COMMANDS, SCRIPTS

PREFIX = "gatedconv-"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["gatedconv commands (console scripts installed with the package):", ""]
    for name, (_, description) in COMMANDS.items():
        lines.append(f"  {name:{width}s}  {description}")
    lines += ["", "Each also runs as `python -m gatedconv NAME ARGS` (NAME without the gatedconv- prefix, e.g. "
              "`python -m gatedconv train --help`),", "and from a checkout as a script:", ""]
    for name in COMMANDS:
        script = SCRIPTS.get(name)
        lines.append(f"  {name:{width}s}  {f'python {script}' if script else '(no script)'}")
    lines += ["", "`NAME --help` lists a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = argv[0] if argv[0].startswith(PREFIX) else PREFIX + argv[0]
    if name not in COMMANDS:
        short = ", ".join(n[len(PREFIX):] for n in COMMANDS)
        print(f"error: unknown command {argv[0]!r}; choose from: {short} (see python -m gatedconv)", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv[0] = name  # argparse names the program after argv[0]: usage lines read "gatedconv-train ..."
    return module.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
