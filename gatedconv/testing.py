"""Fault injection for resilience tests: the training command with a fault planted, in a process of its own.

    python -m gatedconv.testing --fault kill@15 -- --epochs 2 --data-dir DATA --out RUN
    torchrun --nproc_per_node=2 -m gatedconv.testing --dump-weights DIR -- --out RUN ...

``--fault KIND@N``: at this process's N-th training step send itself SIGKILL (``kill``), SIGINT (``int``) or
SIGTERM (``term``), or make the loss NaN (``nan``). ``--dump-weights DIR``: every rank saves its final live
weights as ``DIR/rank<R>.pt``. The faults are planted by replacing ``gatedconv.run.make_loss`` and wrapping the
run's last step from here, so the training path itself reads no test switches.
"""
from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import List, Optional

import torch
from torch import nn

__all__ = ["FaultInjector", "plant_fault", "dump_final_weights", "main"]

_SIGNALS = {"kill": signal.SIGKILL, "int": signal.SIGINT, "term": signal.SIGTERM}


class FaultInjector(nn.Module):
    """Wraps a loss: at the ``at``-th call send ``kind``'s signal to this process, or return NaN (``nan``)."""

    def __init__(self, loss: nn.Module, kind: str, at: int) -> None:
        super().__init__()
        if kind not in (*_SIGNALS, "nan") or at < 1:
            raise ValueError(f"fault must be kill, int, term or nan at a step >= 1, got {kind}@{at}")
        self.loss, self.kind, self.at, self.calls = loss, kind, at, 0

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.loss(logits, y)
        if self.calls == self.at:
            if self.kind == "nan":
                return out * float("nan")
            os.kill(os.getpid(), _SIGNALS[self.kind])
        return out


def parse_fault(spec: str) -> tuple:
    kind, _, n = spec.partition("@")
    if kind not in (*_SIGNALS, "nan") or not n.isdigit():
        raise argparse.ArgumentTypeError(f"--fault must look like kill@N, int@N, term@N or nan@N, got {spec!r}")
    return kind, int(n)


def plant_fault(kind: str, at: int) -> None:
    """Make every run of this process train with its loss wrapped in a :class:`FaultInjector`."""
    from . import run
    make_loss = run.make_loss
    run.make_loss = lambda cfg: FaultInjector(make_loss(cfg), kind, at)


def dump_final_weights(directory: str | Path) -> None:
    """Make every rank save its final live weights as ``directory/rank<R>.pt`` when its run finishes."""
    from . import run
    finish = run._Run.finish

    def finish_and_dump(self, history):
        Path(directory).mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), Path(directory) / f"rank{self.rank}.pt")
        return finish(self, history)
    run._Run.finish = finish_and_dump


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gatedconv.testing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fault", type=parse_fault, default=None, help="KIND@N: kill, int, term or nan at step N")
    p.add_argument("--dump-weights", default=None, help="every rank saves its final weights in this directory")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of gatedconv-train")
    args = p.parse_args(argv)
    rest = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if args.fault is not None:
        plant_fault(*args.fault)
    if args.dump_weights:
        dump_final_weights(args.dump_weights)
    from .cli.train import main as train_main
    return train_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
