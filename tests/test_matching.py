"""Cost matching of the gating study, run for real on tiny networks: ``match_widths`` times real training steps
and reports candidate / reference step-time ratios, picks the candidate closest to 1 and keeps widths multiples
of 8; ``gatedconv-study`` reuses a calibration recorded in its results file and calibrates (and records) only
when there is none.

The timings are real. The reference is the gated network with its constant gate (no torch.compile'd sum on a
CPU, which the ReLU gate would first compile for seconds); the checks on measured values use cost gaps far wider
than timing noise, and everything runs on one intra-op thread (a 2-thread step on a loaded 2-core host can stall
for a whole time slice).
"""
from __future__ import annotations

import json
import re
import statistics

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from gatedconv import study
from gatedconv.cli.study import main as study_main

from conftest import make_tiny_cifar

PLAIN = {"kernel_sizes": [3], "gate": "constant"}
REFERENCE = {"gate": "constant", "widths": [32, 32, 64, 64, 64]}  # 3 gated paths per block
LINE = re.compile(r"width x([\d.]+) \[([\d, ]+)\]: plain step / gated step = ([\d.]+) \(median of (\d+) rounds\)")


pytestmark = pytest.mark.usefixtures("one_thread")


def _record_timings(monkeypatch):
    """Wrap study._ratio (the real timers still do all the timing and the real _ratio combines them): per
    candidate measured, its timer, the reference's timer and every timed call in order as (timer, steps, seconds
    per step it returned)."""
    measured = []
    real = study._ratio

    def recording(candidate, reference, rounds, steps):
        calls = []

        def timed(timer):
            def run(n):
                t = timer(n)
                calls.append((timer, n, t))
                return t
            return run
        measured.append({"candidate": candidate, "reference": reference, "calls": calls})
        return real(timed(candidate), timed(reference), rounds, steps)
    monkeypatch.setattr(study, "_ratio", recording)
    return measured


def test_match_widths_reports_candidate_over_reference_step_time_and_keeps_the_closest_to_one(monkeypatch):
    """Real timings: each printed ratio is the median over interleaved rounds of the candidate's step time over
    the reference's (recomputed here from the raw timings); a plain network 5.5x wider than the gated one costs
    more per step (ratio > 1.5), one at a quarter of its widths less (< 0.8); the midpoint of the bracketing pair
    is tried; the pick is the tried candidate closest to 1; widths are multiples of 8."""
    measured = _record_timings(monkeypatch)
    lines = []
    torch.manual_seed(0)
    m = study.match_widths(reference_kwargs=REFERENCE, base_widths=(30, 30, 60, 60, 60), batch_size=8,
                           device="cpu", rounds=3, steps=1, multipliers=(0.25, 5.5), print_fn=lines.append)

    tried = [LINE.search(line) for line in lines]
    assert all(tried) and len(tried) == 3, lines
    tried = [{"multiplier": float(t[1]), "widths": [int(w) for w in t[2].split(",")], "ratio": float(t[3]),
              "rounds": int(t[4])} for t in tried]
    # 0.25 and 5.5 bracket a ratio of 1, so their midpoint 2.875 is tried third; widths to the nearest multiple
    # of 8, at least 8: 30 x 0.25 = 7.5 -> 8, 60 x 0.25 = 15 -> 16, 30 x 5.5 = 165 -> 168, 60 x 5.5 = 330 -> 328,
    # 30 x 2.875 = 86.25 -> 88, 60 x 2.875 = 172.5 -> 176
    assert [t["multiplier"] for t in tried] == [0.25, 5.5, 2.875]
    assert [t["widths"] for t in tried] == [[8, 8, 16, 16, 16], [168, 168, 328, 328, 328], [88, 88, 176, 176, 176]]
    assert all(w % 8 == 0 for t in tried for w in t["widths"]) and m["widths"] in [t["widths"] for t in tried]

    # one reference timer for all candidates; each round times the candidate, then the reference (interleaved)
    assert len(measured) == 3 and len({id(x["reference"]) for x in measured}) == 1
    for x, t in zip(measured, tried):
        who = [(timer is x["candidate"], timer is x["reference"], n) for timer, n, _ in x["calls"]]
        assert who == [(True, False, 1), (False, True, 1)] * 3
        seconds = [s for _, _, s in x["calls"]]
        t["exact"] = statistics.median(c / r for c, r in zip(seconds[::2], seconds[1::2]))
        assert f"{t['exact']:.3f}" == f"{t['ratio']:.3f}" and t["rounds"] == 3

    small, large = tried[0]["exact"], tried[1]["exact"]
    # measured 3.2 to 4.7 and 0.2 to 0.5 on a loaded 2-core host (~9x and ~0.05x the reference's FLOPs; the
    # smallest network's step is mostly overhead); inverted ratios would fail both bounds
    assert large > 1.5 and small < 0.8
    pick = min(tried, key=lambda t: abs(t["exact"] - 1))
    assert (m["widths"], m["multiplier"], m["ratio"]) == (pick["widths"], pick["multiplier"], pick["exact"])
    assert (m["batch_size"], m["rounds"], m["steps"], m["device"]) == (8, 3, 1, "cpu")


@given(widths=st.lists(st.integers(1, 1024), min_size=1, max_size=6), m=st.floats(0.05, 8.0))
def test_scaled_widths_are_multiples_of_8_nearest_the_scaled_width(widths, m):
    """The candidate widths: each width times the multiplier, rounded to the nearest multiple of 8 (at least 8)."""
    out = study._scaled(widths, m)
    assert len(out) == len(widths)
    for w, o in zip(widths, out):
        assert o % 8 == 0 and o >= 8
        assert o == 8 or abs(o - w * m) <= 4 + 1e-9


def _tiny_calibration(monkeypatch):
    """The command's calibration, made tiny: study.match_widths with tiny networks and one round (the real
    function and real timings; only the sizes the command does not expose are set). Returns the calls made."""
    calls = []
    real = study.match_widths

    def tiny(**kwargs):
        calls.append(dict(kwargs))
        kwargs.update(reference_kwargs={"gate": "constant", "widths": [8, 8, 16, 16, 16]},
                      base_widths=(8, 8, 16, 16, 16), rounds=1, steps=1, multipliers=(1.0, 2.0))
        return real(**kwargs)
    monkeypatch.setattr(study, "match_widths", tiny)
    return calls


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_cifar(tmp_path_factory.mktemp("matching_data"), n_per_batch=8, n_test=8)


def _argv(data, tmp_path, results):
    return ["--variants", "plain_matched", "--epochs", "1", "--seeds", "0", "--data-dir", str(data), "--out",
            str(tmp_path / "runs"), "--results", str(results), "--batch-size", "8", "--eval-batch-size", "8",
            "--precision", "fp32", "--compile", "off", "--device", "cpu", "--quiet"]


def test_study_command_calibrates_once_records_it_and_reuses_it(data, tmp_path, monkeypatch, capsys):
    """Without a calibration in the results file the command calibrates (at its --batch-size), records the
    calibration and trains the plain network at the calibrated widths; the same command again reuses the record:
    no calibration runs and the file still holds one."""
    calls = _tiny_calibration(monkeypatch)
    results = tmp_path / "study.json"
    argv = _argv(data, tmp_path, results)
    assert study_main(argv) == 0
    out = capsys.readouterr().out
    assert "calibrating the cost-matched plain network" in out
    assert len(calls) == 1 and calls[0]["batch_size"] == 8 and calls[0]["device"] == "cpu"
    printed = {t[1]: t[2] for t in LINE.findall(out)}  # widths -> ratio of each candidate tried (2 or 3)
    assert len(printed) >= 2
    cal, run = json.loads(results.read_text())["records"]
    assert cal["kind"] == "calibration" and cal["batch_size"] == 8 and cal["rounds"] == 1
    assert printed[", ".join(map(str, cal["widths"]))] == f"{cal['ratio']:.3f}"  # a candidate tried and its ratio
    assert all(w % 8 == 0 for w in cal["widths"])
    assert run["variant"] == "plain_matched" and run["model_kwargs"] == {**PLAIN, "widths": cal["widths"]}
    assert json.loads((tmp_path / "runs" / "plain_matched" / "seed0" / "config.json").read_text())[
        "model_kwargs"]["widths"] == cal["widths"]

    assert study_main(argv) == 0
    out = capsys.readouterr().out
    assert "calibrating" not in out and "plain step / gated step" not in out and "nothing to train" in out
    assert len(calls) == 1
    records = json.loads(results.read_text())["records"]
    assert [r["kind"] for r in records] == ["calibration", "train"] and records[0] == cal


def test_study_command_takes_the_widths_of_a_recorded_calibration(data, tmp_path, monkeypatch, capsys):
    """A calibration already in the results file sets the plain network's widths: no calibration runs, and the
    run recorded at those widths counts as done (any other widths would not match it and would train)."""
    def no_calibration(**kwargs):
        raise AssertionError("calibrated although a calibration is recorded")
    monkeypatch.setattr(study, "match_widths", no_calibration)
    widths = [24, 48, 104, 208, 416]
    base = {"command": "gatedconv-study", "host": "h", "date": "2026-01-01", "carried_over": False}
    calibration = dict(base, name="plain_matched calibration", kind="calibration", seed=None, widths=widths,
                       multiplier=1.625, ratio=1.01, batch_size=8, rounds=7, steps=4, device="cpu", cost="step")
    trained = dict(base, name="plain_matched", kind="train", variant="plain_matched", seed=0, epochs=1,
                   batch_size=8, first_1000=False, model_kwargs={**PLAIN, "widths": widths}, acc_pct=20.0)
    results = tmp_path / "study.json"
    results.write_text(json.dumps({"about": "x", "records": [calibration, trained]}))
    assert study_main(_argv(data, tmp_path, results)) == 0
    out = capsys.readouterr().out
    assert "calibrating" not in out and "--- plain_matched seed 0: recorded in" in out
    assert json.loads(results.read_text())["records"] == [calibration, trained]
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_calibrate_matches_deployed_latency_records_it_and_trains_nothing(data, tmp_path, monkeypatch, capsys):
    """--calibrate with plain_deployed: one latency calibration against dyconv (deployed forward passes at batch
    1, the real timers at tiny sizes), recorded under its own kind; nothing trains; a second call reuses it."""
    calls = _tiny_calibration(monkeypatch)
    results = tmp_path / "study.json"
    argv = ["--variants", "plain_deployed", "--calibrate", "--results", str(results), "--out", str(tmp_path / "runs"),
            "--device", "cpu"]
    assert study_main(argv) == 0
    assert len(calls) == 1 and calls[0]["cost"] == "latency" and calls[0]["batch_size"] == 1
    records = json.loads(results.read_text())["records"]
    assert [r["kind"] for r in records] == ["latency_calibration"]
    assert records[0]["cost"] == "latency" and all(w % 8 == 0 for w in records[0]["widths"])
    assert not (tmp_path / "runs").exists()
    assert study_main(argv) == 0 and len(calls) == 1  # recorded: not calibrated again
    assert len(json.loads(results.read_text())["records"]) == 1
