"""The grid launchers (gatedconv.launch) behind gatedconv-study, gatedconv-leaderboard and gatedconv-ablate: the
local launcher is the grid as it always ran; the submitit launcher hands every missing run to submitit as a job
of its own (here submitit's local executor: each job a process on this machine, as Slurm would run it), waits,
names every failed job with its log, and lets the grid record what finished."""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from gatedconv.grid import train_or_reuse
from gatedconv.launch import LaunchError, LocalLauncher, SubmititLauncher, launcher_from_args
from gatedconv.run import RunConfig

TINY = ["--batch-size", "20", "--eval-batch-size", "50", "--precision", "fp32", "--compile", "off", "--device", "cpu",
        "--quiet"]
SUBMITIT = ["--launcher", "submitit", "--submitit-cluster", "local"]
# record fields that measure this host or this sitting, not the run
NOT_COMPARED = ("command", "host", "date", "train_s", "wall_s", "img_per_s", "s_per_epoch")


def _study(data: Path, out: Path, *extra: str, latency: str = "8,8,8,8,8") -> list:
    """A two-cell study of tiny networks (the cost-matched plain variants at widths given on the command line)."""
    return ["--variants", "plain_matched,plain_deployed", "--matched-widths", "8,8,8,8,8", "--latency-widths",
            latency, "--epochs", "1", "--seeds", "0", "--data-dir", str(data), "--out", str(out), "--results",
            str(out / "study.json"), *TINY, *extra]


def _records(out: Path) -> list:
    return json.loads((out / "study.json").read_text())["records"]


def _comparable(records: list) -> list:
    return [{k: v for k, v in r.items() if k not in NOT_COMPARED} for r in records]


def _jobs(folder: Path) -> int:
    """Jobs ever submitted with this submitit folder: each leaves its pickled call there."""
    return len(list(folder.glob("*_submitted.pkl")))


def _run_files(out: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("plain_*/seed0/**/*") if p.is_file()}


@pytest.fixture(scope="module")
def grids(tiny_cifar, tmp_path_factory):
    """The same tiny study run by the local launcher and by the submitit launcher; their OUT folders."""
    from gatedconv.cli.study import main

    root = tmp_path_factory.mktemp("grids")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        # one thread here and in each job: the same arithmetic on both sides, and no two jobs fighting for cores
        mp.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        try:
            assert main(_study(tiny_cifar, root / "local")) == 0
            assert main(_study(tiny_cifar, root / "submitit", *SUBMITIT)) == 0
        finally:
            torch.set_num_threads(threads)
    return root / "local", root / "submitit"


def test_submitit_jobs_train_the_runs_and_the_grid_records_what_the_local_launcher_records(grids):
    """Each missing run became one job that trained it into its usual run directory (the jobs' logs hold the
    epoch lines), and the command then recorded what the local launcher records for the same grid: every field
    equal but the timings, host, date and command line."""
    local, sub = grids
    assert _jobs(sub / "submitit") == 2
    logs = "".join(p.read_text() for p in (sub / "submitit").glob("*_log.out"))
    assert logs.count("epoch   1/1") == 2
    for v in ("plain_matched", "plain_deployed"):
        assert (sub / v / "seed0" / "final.json").exists()
    want = _comparable(_records(local))
    assert [r["variant"] for r in want] == ["plain_matched", "plain_deployed"]
    assert _comparable(_records(sub)) == want


def test_the_same_command_again_submits_nothing_and_records_the_finished_runs(grids, tiny_cifar, tmp_path,
                                                                             monkeypatch):
    """With the records gone but the runs finished, the command run again (by the submitit launcher, then by the
    local one) submits no job, trains nothing, rewrites no run file and records the same records."""
    from gatedconv.cli.study import main

    out = tmp_path / "study"
    shutil.copytree(grids[1], out)
    want, files = _comparable(_records(out)), _run_files(out)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("gatedconv.run.run_training", no_training)
    for launcher in (SUBMITIT, []):
        (out / "study.json").unlink()
        assert main(_study(tiny_cifar, out, *launcher)) == 0
        assert _comparable(_records(out)) == want
        assert _jobs(out / "submitit") == 2 and _run_files(out) == files


def test_a_failed_job_is_named_with_its_log_and_only_missing_runs_are_submitted(grids, tiny_cifar, tmp_path,
                                                                                capsys):
    """plain_deployed cannot be built (a width of 0): its job fails, the command records the finished
    plain_matched and exits 1 with one line naming the failed run and its log, which holds the cause. The finished
    run is never submitted, and each call submits the failed run again, alone."""
    from gatedconv.cli.study import main

    out = tmp_path / "study"
    shutil.copytree(grids[1] / "plain_matched", out / "plain_matched")  # finished, not recorded yet
    argv = _study(tiny_cifar, out, *SUBMITIT, latency="8,8,8,8,0")
    for call in (1, 2):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "plain_deployed seed 0" in err and "plain_matched" not in err
        log = Path(re.search(r"log (\S+_log\.err)", err).group(1))
        assert log.parent.resolve() == (out / "submitit").resolve()
        assert "widths must be five positive ints" in log.read_text()
        assert _jobs(out / "submitit") == call
        assert [r["variant"] for r in _records(out)] == ["plain_matched"]
    assert not (out / "plain_deployed" / "seed0" / "final.json").exists()


def test_a_directory_holding_another_run_is_refused_before_any_job_is_submitted(tmp_path):
    """The grid's check runs on every cell before the array goes out: a run directory holding a run with another
    learning rate stops the launch with the grid's one line, and no job is submitted (not even the good cell's)."""
    from dataclasses import asdict

    from gatedconv.checkpoint import plain
    from gatedconv.grid import GridError, check_reusable

    nowhere = str(tmp_path / "no_data")  # a job submitted by mistake fails at once
    good = RunConfig(out=str(tmp_path / "good"), data_dir=nowhere)
    other = RunConfig(out=str(tmp_path / "other"), data_dir=nowhere, lr=0.1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps(plain(asdict(RunConfig(out=other.out)))))
    launcher = SubmititLauncher(tmp_path / "submitit", cluster="local")
    with pytest.raises(GridError, match="different lr"):
        launcher.launch([("good", good), ("other", other)], train_or_reuse, check=check_reusable)
    assert _jobs(tmp_path / "submitit") == 0 and not (tmp_path / "good").exists()


@pytest.mark.parametrize("command, argv", [
    ("study", ["--variants", "relu", "--results", "{tmp}/study.json"]),
    ("leaderboard", ["--models", "mlp"]),
    ("ablate", ["--variants", "relu"]),
])
def test_launcher_flags_are_checked_before_anything_runs(command, argv, tmp_path, monkeypatch, capsys):
    """Without submitit installed, --launcher submitit is one line naming the extra to install; a submitit flag
    with the local launcher is refused, not ignored. Both before any run or calibration starts."""
    main = importlib.import_module(f"gatedconv.cli.{command}").main
    base = [a.format(tmp=tmp_path) for a in argv] + ["--epochs", "1", "--data-dir", str(tmp_path / "no_data"),
                                                      "--out", str(tmp_path / "out")]
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit fails
    assert main(base + ["--launcher", "submitit"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install gatedconv[submitit]" in err
    assert main(base + ["--partition", "gpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--partition needs --launcher submitit" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "study.json").exists()


def _fake_slurm(tmp_path: Path, monkeypatch) -> None:
    """srun and an sbatch that answers as Slurm does, first on the PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", "echo Submitted batch job 4242")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_the_flags_become_the_slurm_job_arrays_settings(tmp_path, monkeypatch):
    """On Slurm the runs go as one job array whose sbatch script carries the partition, time limit (180 minutes
    unless given: submitit's own default is 5), CPUs, GPUs, array parallelism and the command's name, with logs
    in OUT/submitit (srun and sbatch faked; the script submitit wrote is read back). Without srun, asking for Slurm
    is a one-line error."""
    from gatedconv.cli.study import build_parser

    with monkeypatch.context() as mp:
        mp.setenv("PATH", str(tmp_path))  # no srun here
        with pytest.raises(LaunchError, match="srun"):
            SubmititLauncher(tmp_path / "logs", cluster="slurm").executor()
    _fake_slurm(tmp_path, monkeypatch)
    out = tmp_path / "runs"
    cfgs = [RunConfig(out=str(out / f"r{i}")) for i in range(2)]

    def script(*flags: str) -> str:
        args = build_parser().parse_args(["--out", str(out), "--launcher", "submitit", "--submitit-cluster", "slurm",
                                          *flags])
        jobs = launcher_from_args(args, args.out, "gatedconv-study").executor().map_array(train_or_reuse, cfgs)
        assert [j.job_id for j in jobs] == ["4242_0", "4242_1"]
        return (out / "submitit" / "4242_submission.sh").read_text()

    default = script()
    assert "#SBATCH --time=180\n" in default and "#SBATCH --job-name=gatedconv-study\n" in default
    assert f"#SBATCH --error={(out / 'submitit').absolute()}/%A_%a_0_log.err\n" in default
    assert "#SBATCH --array=0-1%2\n" in default
    assert not re.search(r"--(partition|cpus-per-task|gpus-per-node)", default)
    given = script("--partition", "gpu", "--timeout-min", "7", "--cpus-per-task", "3", "--gpus-per-node", "1",
                   "--array-parallelism", "1")
    for line in ("--partition=gpu", "--time=7", "--cpus-per-task=3", "--gpus-per-node=1", "--array=0-1%1"):
        assert f"#SBATCH {line}\n" in given


class _JobsHere(LocalLauncher):
    """Stands in for SubmititLauncher: at launch it runs every cell's "job" here, except that the cell labelled
    ``FAIL`` fails; then it answers like the submitit launcher (None for the failed cell, an error at the end)."""

    FAIL = ""
    made: list = []

    def __init__(self, folder, **resources):
        self.folder, self.resources, self.launched, self.failed = Path(folder), resources, [], []
        _JobsHere.made.append(self)

    def launch(self, cells, train, print_fn=print, check=None):
        for label, cfg in cells:
            self.launched.append(Path(cfg.out))
            if label == self.FAIL:
                self.failed.append(Path(cfg.out))
            else:
                train(cfg)

    def run(self, cfg, train, print_fn=print):
        return None if Path(cfg.out) in self.failed else train(cfg, print_fn)

    def finish(self):
        if self.failed:
            raise LaunchError(f"{len(self.failed)} run(s) failed in their jobs: {self.failed[0]}")


@pytest.mark.parametrize("command, argv, fail, done", [
    ("ablate", ["--variants", "paths1,constant", "--base-kwargs", '{"widths": [8, 8, 8, 8, 8]}'], "constant",
     "paths1"),
    ("leaderboard", ["--models", "mlp,convnet_tiny"], "convnet_tiny", "mlp"),
])
def test_leaderboard_and_ablation_hand_their_cells_to_the_launcher(command, argv, fail, done, tiny_cifar, tmp_path,
                                                                   monkeypatch, capsys):
    """--launcher submitit reaches the grid: the launcher gets the flags, OUT/submitit and every cell; a cell
    whose job failed is not trained here, the others are used, and the command exits 1 with the launcher's line."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network trains fastest on one thread
    try:
        _hand_cells_to_the_launcher(command, argv, fail, done, tiny_cifar, tmp_path, monkeypatch, capsys)
    finally:
        torch.set_num_threads(threads)


def _hand_cells_to_the_launcher(command, argv, fail, done, tiny_cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("gatedconv.launch.SubmititLauncher", _JobsHere)
    monkeypatch.setattr(_JobsHere, "FAIL", fail)
    monkeypatch.setattr(_JobsHere, "made", [])
    main = importlib.import_module(f"gatedconv.cli.{command}").main
    out = tmp_path / "out"
    assert main([*argv, "--epochs", "1", "--seeds", "0", "--data-dir", str(tiny_cifar), "--out", str(out), *TINY,
                 "--launcher", "submitit", "--partition", "p", "--gpus-per-node", "1"]) == 1
    assert "error: 1 run(s) failed in their jobs: " + str(out / fail / "seed0") in capsys.readouterr().err
    (launcher,) = _JobsHere.made
    assert launcher.folder == out / "submitit"
    assert launcher.resources["partition"] == "p" and launcher.resources["gpus_per_node"] == 1
    assert sorted(launcher.launched) == sorted([out / fail / "seed0", out / done / "seed0"])
    assert (out / done / "seed0" / "final.json").exists() and not (out / fail / "seed0").exists()
    if command == "leaderboard":  # the finished run was evaluated, as after every run
        assert (out / done / "seed0" / "topk.json").exists()
