"""The gating study: Welch's test against reference values, the temperature schedule, the study command on tiny
generated data (records, reuse, comparisons) and its report tables."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from gatedconv import report, stats
from gatedconv.layers import Gate
from gatedconv.run import RunConfig, RunError, run_training
from gatedconv.study import VARIANTS, StudyError, comparisons, deployed_comparisons, study_configs, variant_kwargs

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--batch-size", "20", "--eval-batch-size", "50", "--precision", "fp32", "--compile", "off", "--quiet"]


def test_student_t_against_tables():
    assert stats.t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-5)  # printed t tables
    assert stats.t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert stats.t_quantile(0.995, 5) == pytest.approx(4.032143, abs=1e-5)
    assert stats.t_two_sided_p(2.228139, 10) == pytest.approx(0.05, abs=1e-6)
    assert stats.t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)  # Cauchy: P(|T| > 1) = 1/2
    assert stats.t_two_sided_p(0.0, 7) == pytest.approx(1.0)


def test_welch_matches_its_definition():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.5]
    c = stats.welch(a, b)
    va, vb = (5 / 3) / 4, (sum((x - 5.125) ** 2 for x in b) / 3) / 4  # sample variances over n
    assert c.diff == pytest.approx(2.5 - 5.125)
    assert c.t == pytest.approx((2.5 - 5.125) / math.sqrt(va + vb))
    assert c.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 3))
    assert c.p == pytest.approx(0.1579, abs=5e-4)  # R: t.test(a, b) gives t = -1.7127, df = 4.2363, p = 0.1579
    half = stats.t_quantile(0.975, c.df) * math.sqrt(va + vb)
    assert (c.low, c.high) == pytest.approx((c.diff - half, c.diff + half))
    assert stats.welch([1.0, 1.0], [1.0, 1.0]).p == 1.0
    with pytest.raises(ValueError):
        stats.welch([1.0], [1.0, 2.0])


def test_temperature_anneal_runs_from_start_to_end(tiny_cifar, tmp_path, monkeypatch):
    seen = []
    forward = Gate.forward

    def recording(self, x):
        if self.training:
            seen.append(self.temperature)
        return forward(self, x)

    monkeypatch.setattr(Gate, "forward", recording)
    cfg = RunConfig(epochs=2, batch_size=50, eval_batch_size=100, data_dir=str(tiny_cifar), out=str(tmp_path / "r"),
                    precision="fp32", compile="off", model_kwargs={"gate": "softmax"},
                    temperature_anneal=(30.0, 1.0, 0.5))
    run_training(cfg, print_fn=lambda *a, **k: None)
    per_step = seen[::5]  # five gates per forward
    assert per_step[0] == 30.0 and per_step[-1] == 1.0 and len(per_step) == 8  # 4 steps per epoch
    assert all(a >= b for a, b in zip(per_step, per_step[1:]))  # falls over the first half, then stays at 1
    assert per_step[4:] == [1.0] * 4
    assert json.loads((tmp_path / "r" / "config.json").read_text())["temperature_anneal"] == [30.0, 1.0, 0.5]
    with pytest.raises(RunError, match="softmax"):
        run_training(RunConfig(epochs=1, batch_size=50, data_dir=str(tiny_cifar), out=str(tmp_path / "relu"),
                               precision="fp32", compile="off", temperature_anneal=(30.0, 1.0, 0.1)),
                     print_fn=lambda *a, **k: None)


def test_study_configs_cover_every_variant_seed_major(tmp_path):
    widths = {"plain_matched": [24, 48, 96, 192, 384], "plain_deployed": [32, 64, 128, 256, 512]}
    cells = study_configs(list(VARIANTS), [0, 1], 30, tmp_path, matched_widths=widths)
    assert [n for n, _ in cells[:len(VARIANTS)]] == list(VARIANTS) and cells[len(VARIANTS)][1].seed == 1
    cfg = dict(cells)
    assert cfg["plain_matched"].model_kwargs == {"kernel_sizes": [3], "gate": "constant", "widths": widths["plain_matched"]}
    assert cfg["plain_deployed"].model_kwargs["widths"] == widths["plain_deployed"]
    assert cfg["softmax_anneal"].temperature_anneal == (30.0, 1.0, 0.1)
    # the kernel-mixing variants: K = 4 kernels mixed before one activation, each with its gate
    assert cfg["dyconv"].model_kwargs == {"kernel_sizes": [3, 3, 3, 3], "activation": "after_sum", "gate": "softmax",
                                          "rd_ratio": 0.25}
    assert cfg["dyconv"].temperature_anneal == (30.0, 1.0, 0.1)
    assert cfg["condconv"].model_kwargs["gate"] == "sigmoid" and cfg["fixed_mix"].model_kwargs["gate"] == "constant"
    # one list of widths still means the training-step match; the latency match then has none
    with pytest.raises(StudyError, match="plain_deployed needs --latency-widths"):
        study_configs(["plain_deployed"], [0], 30, tmp_path, matched_widths=[24, 48, 96, 192, 384])


def test_study_command_records_reuses_and_compares(tiny_cifar, tmp_path, capsys):
    from gatedconv.cli.study import main
    from gatedconv.report import dump_results

    results = tmp_path / "study.json"
    # seed 1 of both variants is already recorded (say, by an earlier sitting): only seed 0 trains
    earlier = {"kind": "train", "command": "gatedconv-study", "host": "h", "date": "2026-01-01",
               "carried_over": False, "epochs": 1, "batch_size": 20, "first_1000": False, "seed": 1}
    results.write_text(dump_results({"about": "x", "records": [
        dict(earlier, name="relu", variant="relu", model_kwargs={}, acc_pct=20.0),
        dict(earlier, name="constant", variant="constant", model_kwargs={"gate": "constant"}, acc_pct=21.0)]}))
    argv = ["--variants", "relu,constant", "--epochs", "1", "--seeds", "0,1", "--data-dir", str(tiny_cifar),
            "--out", str(tmp_path / "runs"), "--results", str(results), *TINY]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("nothing to train") == 2 and "constant - relu:" in out and "p = " in out
    records = json.loads(results.read_text())["records"]
    assert sorted((r["variant"], r["seed"]) for r in records) == [("constant", 0), ("constant", 1), ("relu", 0),
                                                                   ("relu", 1)]
    for r in records[2:]:
        assert r["train_flops"] > 0 and r["s_per_epoch"] > 0 and 0 <= r["acc_pct"] <= 100 and r["params"] > 0
        assert r["carried_over"] is False and r["command"] and r["host"]
    relu = [r for r in records if r["variant"] == "relu" and r["seed"] == 0][0]
    final = json.loads((tmp_path / "runs" / "relu" / "seed0" / "final.json").read_text())
    assert relu["acc_pct"] == pytest.approx(100 * final["test_acc_fp32"])
    assert relu["params"] == 1247922 and relu["model_kwargs"] == {}
    # the same command again trains nothing, even with the run directories gone: the records are the memory
    shutil.rmtree(tmp_path / "runs")
    assert main(argv) == 0
    assert capsys.readouterr().out.count("nothing to train") == 4 and not (tmp_path / "runs").exists()
    assert len(json.loads(results.read_text())["records"]) == 4
    assert [c["variant"] for c in comparisons(records)] == ["constant"]


def test_study_command_prints_the_deployed_comparisons_too(tiny_cifar, tmp_path, capsys):
    """Every run recorded: nothing trains, and the closing lines answer the deployed-cost question as well."""
    from gatedconv.cli.study import main
    from gatedconv.report import dump_results

    results = tmp_path / "study.json"
    rec = {"kind": "train", "command": "gatedconv-study", "host": "h", "date": "2026-01-01", "carried_over": False,
           "epochs": 1, "batch_size": 20, "first_1000": False}
    accs = {"dyconv": (30.0, 31.0), "plain": (20.0, 21.0)}
    results.write_text(dump_results({"about": "x", "records": [
        dict(rec, name=v, variant=v, seed=s, model_kwargs=variant_kwargs(v), acc_pct=a) for v, xs in accs.items()
        for s, a in enumerate(xs)]}))
    assert main(["--variants", "dyconv,plain", "--epochs", "1", "--seeds", "0,1", "--data-dir", str(tiny_cifar),
                 "--out", str(tmp_path / "runs"), "--results", str(results), *TINY]) == 0
    out = capsys.readouterr().out
    assert out.count("nothing to train") == 4
    assert "does it pay over the plain network of the same widths? dyconv - plain: +10.00 points" in out


def test_study_report_tables_render(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "results", root / "results")
    rec = {"name": "relu", "kind": "train", "command": "gatedconv-study", "host": "test host", "date": "2026-01-01",
           "carried_over": False, "epochs": 30, "params": 1000, "train_flops": 2e15, "train_s": 600.0,
           "s_per_epoch": 20.0}
    recs = [dict(rec, name=v, variant=v, seed=s, acc_pct=acc) for v, accs in
            (("relu", (85.0, 85.4, 85.2)), ("constant", (85.1, 85.5, 85.3)), ("plain_matched", (86.0, 86.2, 86.1)))
            for s, acc in enumerate(accs)]
    (root / "results" / "gating_study.json").write_text(report.dump_results({"about": "x", "records": recs}))
    R = report.Results(report.load_results(root))
    assert "`constant`" in report.table_study(R) and "85.30 ± 0.20%" in report.table_study(R)
    comps = report.table_study_comparisons(R)
    assert "`constant` - `relu`" in comps and "`plain_matched` - `relu`" in comps and "hurts" in comps
    assert "`relu` - `plain_matched`" not in comps  # a mirror of a comparison is not repeated
    verdict = report.study_verdict(R)
    assert "at least 3 seeds" in verdict and "gating hurts" in verdict and verdict.startswith("**Input gating hurts**")
    assert report.figure_study(R, tmp_path / "study.png").stat().st_size > 0


def test_step_costs_time_variants_side_by_side_and_the_command_records_them(tmp_path, monkeypatch, capsys):
    from gatedconv import study
    from gatedconv.cli.study import main

    calls = []

    def fake_timer(model_kwargs, batch_size, device):  # the relu network (no "gate" keyword) takes 80 ms a step
        calls.append((model_kwargs, batch_size))
        return lambda n: 0.04 if model_kwargs.get("gate") else 0.08

    monkeypatch.setattr(study, "_step_timer", fake_timer)
    costs = study.step_costs(["constant", "plain_matched"], [24, 48, 104, 208, 416], batch_size=8, rounds=3,
                             steps=2, print_fn=lambda *a: None)
    assert list(costs["ratio"]) == ["relu", "constant", "plain_matched"]  # the reference always first
    assert costs["ratio"] == {"relu": 1.0, "constant": 0.5, "plain_matched": 0.5}
    assert costs["ms_per_step"]["relu"] == 80.0 and costs["rounds"] == 3 and costs["steps"] == 2
    assert calls[2] == ({"kernel_sizes": [3], "gate": "constant", "widths": [24, 48, 104, 208, 416]}, 8)
    with pytest.raises(study.StudyError, match="needs --matched-widths"):
        study.step_costs(["plain_matched"])

    results = tmp_path / "study.json"
    assert main(["--step-costs", "--variants", "constant,plain_matched", "--matched-widths", "8,16,24,32,40",
                 "--results", str(results), "--out", str(tmp_path / "runs")]) == 0
    assert "constant: 40.0 ms per step, 0.500x the relu gate's step" in capsys.readouterr().out
    rec, = json.loads(results.read_text())["records"]
    assert rec["kind"] == "step_costs" and rec["ratio"]["constant"] == 0.5 and rec["command"] and rec["host"]
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_study_report_uses_the_mean_step_cost_of_all_sittings(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "results", root / "results")
    rec = {"kind": "train", "command": "gatedconv-study", "host": "test host", "date": "2026-01-01",
           "carried_over": False, "epochs": 30, "params": 1000, "train_flops": 2e15, "train_s": 600.0,
           "s_per_epoch": 20.0}
    recs = [dict(rec, name=v, variant=v, seed=s, acc_pct=85.0 + s / 10) for v in ("relu", "plain") for s in range(3)]
    cost = {"name": "step costs", "kind": "step_costs", "command": "gatedconv-study --step-costs", "host": "test host",
            "date": "2026-01-01", "carried_over": False, "seed": None, "reference": "relu", "batch_size": 128,
            "rounds": 9, "steps": 10}
    recs += [dict(cost, ms_per_step={"relu": 80.0, "plain": 32.0}, ratio={"relu": 1.0, "plain": 0.4}),
             dict(cost, ms_per_step={"relu": 90.0, "plain": 45.0}, ratio={"relu": 1.0, "plain": 0.5})]
    (root / "results" / "gating_study.json").write_text(report.dump_results({"about": "x", "records": recs}))
    R = report.Results(report.load_results(root))
    table = report.table_study(R)
    assert "step cost (x relu)" in table and "| 0.45 |" in table and "| 1.00 |" in table
    costs = report.table_study_costs(R)
    assert "32.0 ms (0.400x)" in costs and "45.0 ms (0.500x)" in costs and "9 x 10" in costs
    assert report.figure_study(R, tmp_path / "study.png").stat().st_size > 0


def test_deployed_comparisons_answer_their_questions_with_welch():
    """Each deployed-cost pair is variant minus its control with the question it answers; pairs lacking two runs
    on a side are left out; the training-cost comparisons do not mix the kernel-mixing variants in."""
    acc = {"dyconv": [80.0, 81.0, 82.0], "plain": [78.0, 78.5, 79.0], "fixed_mix": [79.0, 80.0, 81.0],
           "condconv": [79.5], "relu": [70.0, 71.0]}
    records = [{"variant": v, "acc_pct": a, "seed": i} for v, accs in acc.items() for i, a in enumerate(accs)]
    out = deployed_comparisons(records)
    assert [(c["variant"], c["against"]) for c in out] == [("dyconv", "plain"), ("dyconv", "fixed_mix"),
                                                           ("fixed_mix", "plain")]
    assert [c["question"] for c in out] == ["does it pay over the plain network of the same widths?",
                                            "is it the input dependence?", "is it the over-parameterisation?"]
    first = out[0]["comparison"]
    assert first.diff == pytest.approx(81.0 - 78.5)  # variant minus control, not the reverse
    assert first.p == pytest.approx(stats.welch(acc["dyconv"], acc["plain"]).p)
    assert out[0]["verdict"] == ("helps (higher accuracy)" if first.p < 0.05 else "no measurable difference at this budget")
    assert [(c["variant"], c["against"]) for c in comparisons(records)] == [("plain", "relu")]
