"""Where a grid's missing runs train: here, one after the other (:class:`LocalLauncher`, the default), or as
cluster jobs handed to submitit (:class:`SubmititLauncher`: Slurm, or submitit's local executor).

A grid runner (``gatedconv.grid.run_grid``, ``gatedconv.study.run_study``, the ablation command) talks to its
launcher in three steps, with ``train`` its train-or-reuse function (``gatedconv.grid.train_or_reuse``):

1. ``launch(cells, train, print_fn, check)`` before it walks the grid. The local launcher does nothing. The
   submitit launcher refuses a directory holding a different run (``check``), submits every cell whose run is
   not finished as one job array (each job calls ``train(cfg)`` and writes its own run directory), waits for the
   jobs while printing progress, and prints every job that failed or timed out with its log.
2. ``run(cfg, train, print_fn)`` for each cell, in order: the local launcher trains, resumes or reuses the run
   here (the grid as it always ran); the submitit launcher reuses what its job finished and returns None for a
   cell whose job failed (it never trains here).
3. ``finish()`` after the walk: the submitit launcher raises :class:`LaunchError` naming every failed run and
   its log, and the command exits non-zero. The finished runs' directories are kept either way; the study has
   recorded each of them in its results file by then, while the leaderboard and the ablation write their tables
   only once every run has finished (the same command run again resubmits the failed ones, then writes them).

Finished runs (``final.json``) are never submitted, so the same command run again submits only what is missing
(what failed, timed out or was never run) and records the rest; with the local launcher it records finished
runs without training. submitit is optional (``pip install gatedconv[submitit]``) and imported only by
:class:`SubmititLauncher`.
"""
from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from .rundir import RunError, is_finished

__all__ = ["LAUNCHERS", "LaunchError", "LocalLauncher", "SubmititLauncher", "Failure", "DEFAULT_TIMEOUT_MIN",
           "add_launcher_arguments", "launcher_from_args"]

LAUNCHERS = ("local", "submitit")
DEFAULT_TIMEOUT_MIN = 180  # a job's time limit unless --timeout-min (submitit's own default is 5 minutes)
CLUSTERS = ("auto", "slurm", "local")  # submitit's executors; auto: Slurm where srun exists, else local
INSTALL_HINT = "pip install gatedconv[submitit]"

Cells = Sequence[Tuple[str, object]]  # (label, RunConfig)


class LaunchError(RunError):
    """The launcher cannot run, or some runs' jobs failed; one line."""


class LocalLauncher:
    """The grid as it always ran: each missing run trains in this process when the grid reaches it."""

    name = "local"

    def launch(self, cells: Cells, train: Callable, print_fn: Callable = print,
               check: Optional[Callable] = None) -> None:
        """Nothing ahead of the walk."""

    def run(self, cfg, train: Callable, print_fn: Callable = print) -> Path:
        return train(cfg, print_fn)

    def finish(self) -> None:
        """Nothing ran elsewhere: a run that fails here stops the grid with its own error."""


@dataclass(frozen=True)
class Failure:
    """A run whose job failed or timed out: what happened (one line) and where its log is."""

    label: str
    seed: int
    out: Path
    reason: str
    log: Path

    def __str__(self) -> str:
        return f"{self.label} seed {self.seed} ({self.out}): {self.reason}; log {self.log}"


def _reason(exc: BaseException) -> str:
    """One line from a submitit job error: the exception line of the job's traceback, or what submitit says of a
    job that left no result (killed, timed out, cancelled)."""
    text = str(exc)
    parts = text.split("-" * 22 + "\n")
    if len(parts) >= 3:  # FailedJobError: the job's traceback between two rules
        lines = [line for line in parts[1].splitlines() if line.strip()]
        if lines:  # "gatedconv.rundir.RunError: ..." -> "RunError: ..."
            return re.sub(r"^(?:\w+\.)+(\w+: )", r"\1", lines[-1].strip())
    return " ".join(line.strip() for line in text.splitlines()[:2]) or type(exc).__name__


class SubmititLauncher:
    """Submit the missing runs of a grid as one submitit job array, wait for them, then let the grid record what
    finished. ``cluster``: ``"slurm"``, ``"local"`` (submitit's local executor: every job a process on this
    machine, all at once) or None (Slurm where ``srun`` exists, else local). The other arguments are the
    job's resources; None leaves the cluster's default (``array_parallelism``: at most that many jobs at once,
    Slurm only). ``poll_s``: seconds between looks at the jobs while waiting (default 1 on the local executor,
    15 on a cluster)."""

    name = "submitit"

    def __init__(self, folder: str | Path, cluster: Optional[str] = None, partition: Optional[str] = None,
                 timeout_min: Optional[int] = DEFAULT_TIMEOUT_MIN, cpus_per_task: Optional[int] = None,
                 gpus_per_node: Optional[int] = None, array_parallelism: Optional[int] = None,
                 job_name: str = "gatedconv", poll_s: Optional[float] = None) -> None:
        try:
            import submitit
        except ImportError:
            raise LaunchError(f"--launcher submitit needs the submitit package: {INSTALL_HINT}") from None
        self._submitit = submitit
        self.folder, self.cluster = Path(folder), (None if cluster in (None, "auto") else cluster)
        self.partition, self.timeout_min = partition, timeout_min
        self.cpus_per_task, self.gpus_per_node, self.array_parallelism = cpus_per_task, gpus_per_node, array_parallelism
        self.job_name, self.poll_s = job_name, poll_s
        self.failures: List[Failure] = []
        self.submitted: List[str] = []  # the job ids of the last launch

    def executor(self):
        """The submitit executor with this launcher's resources."""
        try:
            ex = self._submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        except RuntimeError as e:  # e.g. cluster="slurm" where there is no srun
            raise LaunchError(f"submitit: {str(e).strip().splitlines()[0]}") from None
        params = {"name": self.job_name, "timeout_min": self.timeout_min, "cpus_per_task": self.cpus_per_task,
                  "gpus_per_node": self.gpus_per_node, "slurm_partition": self.partition,
                  "slurm_array_parallelism": self.array_parallelism}
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return ex

    def launch(self, cells: Cells, train: Callable, print_fn: Callable = print,
               check: Optional[Callable] = None) -> None:
        """Submit every cell whose run is not finished (``check(cfg)`` first, for each), wait, note failures."""
        self.failures, self.submitted = [], []
        todo, seen = [], set()
        for label, cfg in cells:
            out = Path(cfg.out)
            if out in seen or is_finished(out):
                continue
            if check is not None:
                check(cfg)  # refuse a directory holding another run now, not after a wait in the queue
            seen.add(out)
            todo.append((label, cfg))
        if not todo:
            if cells:
                print_fn("submitit: every run is finished, nothing to submit")
            return
        ex = self.executor()
        jobs = ex.map_array(train, [cfg for _, cfg in todo])
        self.submitted = [j.job_id for j in jobs]
        ids = ", ".join(self.submitted) if len(jobs) <= 4 else f"{self.submitted[0]} ... {self.submitted[-1]}"
        print_fn(f"submitit: submitted {len(jobs)} run(s) to {ex.cluster} as job(s) {ids}; logs in {self.folder}")
        self._wait(jobs, print_fn, self.poll_s if self.poll_s is not None else 1.0 if ex.cluster == "local" else 15.0)
        for (label, cfg), job in zip(todo, jobs):
            exc = job.exception()
            if exc is not None:
                f = Failure(label, cfg.seed, Path(cfg.out), _reason(exc), Path(job.paths.stderr))
                self.failures.append(f)
                print_fn(f"submitit: FAILED {f}")

    def _wait(self, jobs: list, print_fn: Callable, poll_s: float) -> None:
        last = -1
        try:
            while True:
                n = sum(1 for j in jobs if j.done())
                if n != last:
                    print_fn(f"submitit: {n}/{len(jobs)} job(s) ended")
                    last = n
                if n == len(jobs):
                    return
                time.sleep(poll_s)
        except KeyboardInterrupt:
            left = [j.job_id for j in jobs if not j.done()]
            print_fn(f"submitit: stopped waiting; {len(left)} job(s) still queued or running keep going "
                     f"({', '.join(left)}): run the same command again once they end (or cancel them)")
            raise

    def run(self, cfg, train: Callable, print_fn: Callable = print) -> Optional[Path]:
        """A finished run, reused (its saved config checked by ``train``); None for a run whose job failed."""
        out = Path(cfg.out)
        failed = [f for f in self.failures if f.out == out]
        if failed:
            print_fn(f"    its job failed ({failed[0].reason}); log {failed[0].log}")
            return None
        if not is_finished(out):
            raise LaunchError(f"{out}: the run is not finished and no job was submitted for it")
        return train(cfg, print_fn)

    def finish(self) -> None:
        if self.failures:
            raise LaunchError(f"{len(self.failures)} run(s) failed in their jobs: "
                              + "; ".join(str(f) for f in self.failures)
                              + "; the runs that finished are kept: run the same command again to submit the "
                              "missing ones")


# ------------------------------------------------------------------------------------------------------
# the commands' flags


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v
    return parse


# the submitit flags, by attribute name: a value other than None needs --launcher submitit
SUBMITIT_FLAGS = ("submitit_cluster", "partition", "timeout_min", "cpus_per_task", "gpus_per_node",
                  "array_parallelism", "submitit_folder")


def add_launcher_arguments(p: argparse.ArgumentParser) -> None:
    """``--launcher`` and the submitit flags, as one group of a grid command's parser."""
    g = p.add_argument_group("where the missing runs train (docs/usage.md, 'Running a grid on a cluster')")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: one after the other in this process (default); submitit: one job each, submitted "
                        "together as a job array, then recorded here when they end (" + INSTALL_HINT + ")")
    g.add_argument("--submitit-cluster", choices=CLUSTERS, default=None,
                   help="submitit's executor: slurm, local (jobs as processes on this machine) or auto (default: "
                        "Slurm where srun exists, else local)")
    g.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's)")
    g.add_argument("--timeout-min", type=_int_at_least(1), default=None,
                   help=f"each job's time limit in minutes (default {DEFAULT_TIMEOUT_MIN})")
    g.add_argument("--cpus-per-task", type=_int_at_least(1), default=None, help="CPUs per job")
    g.add_argument("--gpus-per-node", type=_int_at_least(0), default=None, help="GPUs per job (default none)")
    g.add_argument("--array-parallelism", type=_int_at_least(1), default=None,
                   help="at most this many jobs of the array at once (Slurm; default submitit's, 256)")
    g.add_argument("--submitit-folder", default=None, help="where the jobs' logs and pickles go (default OUT/submitit)")


def launcher_from_args(args: argparse.Namespace, out: str | Path, job_name: str):
    """The launcher the parsed flags ask for; a submitit flag without ``--launcher submitit`` is an error."""
    if args.launcher == "local":
        given = [f for f in SUBMITIT_FLAGS if getattr(args, f, None) is not None]
        if given:
            raise LaunchError(f"--{given[0].replace('_', '-')} needs --launcher submitit")
        return LocalLauncher()
    return SubmititLauncher(
        args.submitit_folder or Path(out) / "submitit", cluster=args.submitit_cluster, partition=args.partition,
        timeout_min=args.timeout_min or DEFAULT_TIMEOUT_MIN, cpus_per_task=args.cpus_per_task,
        gpus_per_node=args.gpus_per_node, array_parallelism=args.array_parallelism, job_name=job_name)
