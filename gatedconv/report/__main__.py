"""``python -m gatedconv.report [ARGS]``: the ``gatedconv-report`` command."""
from .command import main

if __name__ == "__main__":
    raise SystemExit(main())
