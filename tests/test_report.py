"""The published tables are the generator's output on the committed results data, and the data round-trips."""
from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import pytest

from gatedconv import report, summary

ROOT = Path(__file__).resolve().parent.parent


def _copy_checkout(dst: Path) -> Path:
    shutil.copytree(ROOT / "results", dst / "results")
    shutil.copytree(ROOT / "docs", dst / "docs")
    shutil.copy(ROOT / "README.md", dst / "README.md")
    return dst


def test_committed_documents_match_the_generator():
    assert report.check(ROOT) == [], "regenerate with: python -m gatedconv.report"


def test_every_marker_in_the_documents_is_known_and_used():
    used = set()
    for path in report.documents(ROOT):
        used |= {m.group("name") for m in report._BLOCK.finditer(path.read_text())}
    assert "headline" in used
    assert used <= set(report.TABLES)


def test_an_edited_record_makes_its_documents_stale(tmp_path):
    root = _copy_checkout(tmp_path)
    path = root / "results" / "main.json"
    data = json.loads(path.read_text())
    data["records"][0]["acc_pct"] += 1.0
    path.write_text(report.dump_results(data))
    stale = report.check(root)
    assert "README.md" in stale and "docs/results.md" in stale
    assert report.main(["--check", "--root", str(root)]) == 1
    assert sorted(report.write(root)) == sorted(stale)
    assert report.check(root) == []
    assert report.main(["--check", "--root", str(root)]) == 0


def test_results_files_keep_their_committed_layout():
    for path in sorted((ROOT / "results").glob("*.json")):
        data = json.loads(path.read_text())
        assert report.dump_results(data) == path.read_text(), path.name


def test_bad_data_and_markers_are_one_line_errors(tmp_path):
    root = _copy_checkout(tmp_path)
    (root / "results" / "bad.json").write_text('{"records": [{"name": "x"}]}')
    with pytest.raises(report.ReportError, match=r"bad\.json: record 1: missing field"):
        report.check(root)
    assert report.main(["--check", "--root", str(root)]) == 2
    (root / "results" / "bad.json").unlink()
    (root / "docs" / "extra.md").write_text("<!-- report:nope -->\n<!-- /report:nope -->\n")
    with pytest.raises(report.ReportError, match="unknown report marker 'nope'"):
        report.check(root)
    (root / "docs" / "extra.md").write_text("<!-- report:main -->\n")
    with pytest.raises(report.ReportError, match="without their pair"):
        report.check(root)
    with pytest.raises(SystemExit) as exc:
        report.main(["--no-such-flag"])
    assert exc.value.code == 2


def test_mean_and_sample_std_from_per_run_records():
    recs = [{"seed": s, "acc_pct": a} for s, a in enumerate([85.51, 85.17, 85.39])]
    assert report.fmt_stat(report.stat(recs, "acc_pct"), 2, "%", show_n=True) == "85.36 ± 0.17% (n = 3)"
    agg = recs + [{"aggregate": True, "n": 5, "acc_pct": {"mean": 93.09, "std": 0.19}}]
    assert report.fmt_stat(report.stat(agg, "acc_pct"), 2, "%", show_n=True) == "93.09 ± 0.19% (n = 5)"


def _fake_run(run_dir: Path, seed: int, acc: float) -> dict:
    config = {"model": "gatedconv", "seed": seed, "epochs": 2, "num_params": 1234}
    final = {"test_acc": acc, "test_acc_fp32": acc, "test_top5_fp32": 0.99, "train_seconds": 12.5,
             "examples_per_sec": 800.0}
    record = summary.make_record(command=f"python scripts/trainf.py -e 2 --seed {seed}", config=config, final=final,
                                 kind="train")
    summary.write_summary(run_dir, record)
    return record


def test_make_record_has_the_committed_format(tmp_path):
    rec = _fake_run(tmp_path / "run", 3, 0.8551)
    committed = json.loads((ROOT / "results" / "main.json").read_text())["records"][0]
    assert list(rec)[:7] == list(committed)[:7]  # name, kind, command, host, date, carried_over, seed
    assert rec["carried_over"] is False and rec["seed"] == 3 and rec["acc_pct"] == 85.51
    assert set(rec) - {"eval_split", "best_epoch"} <= set(committed) | {"train_s"}
    assert rec["host"].endswith(")") and "vCPU" in rec["host"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == rec


def test_summary_imports_only_the_standard_library():
    tree = ast.parse(Path(summary.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


def test_collect_copies_run_summaries_once(tmp_path, capsys):
    first = _fake_run(tmp_path / "a", 0, 0.80)
    _fake_run(tmp_path / "sweep" / "seed1", 1, 0.81)
    _fake_run(tmp_path / "sweep" / "seed2", 2, 0.82)
    into = tmp_path / "results" / "new.json"
    assert report.main(["collect", str(tmp_path / "a"), str(tmp_path / "sweep"), "--into", str(into),
                        "--name", "mine"]) == 0
    recs = json.loads(into.read_text())["records"]
    assert [r["seed"] for r in recs] == [0, 1, 2] and {r["name"] for r in recs} == {"mine"}
    assert recs[0] == {**first, "name": "mine"}
    assert report.collect([tmp_path / "a"], into, name="mine") == 0  # already there
    assert into.read_text() == report.dump_results(json.loads(into.read_text()))
    (tmp_path / "empty").mkdir()
    assert report.main(["collect", str(tmp_path / "empty"), "--into", str(into)]) == 2
    assert "no summary.json" in capsys.readouterr().err


def test_figures_draw_from_the_committed_data(tmp_path):
    paths = report.draw_figures(ROOT, tmp_path)
    assert sorted(p.name for p in paths) == sorted(report.FIGURES)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_muon_sitting_table_reads_closing_lines_time_ratios_and_welch(tmp_path):
    root = _copy_checkout(tmp_path)
    base = {"kind": "speedrun", "host": "test host", "date": "2026-01-01", "carried_over": False, "params": 1000,
            "command": "gatedconv-speedrun --recipe airbench94_muon --seeds 1"}
    recs = [dict(base, name="muon_plain", seed=s, acc_tta_pct=a, acc_pct=a - 0.5, time_s=t)
            for s, a, t in ((0, 94.0, 800.0), (1, 94.2, 820.0))]
    recs += [dict(base, name="muon_gated", seed=s, acc_tta_pct=a, acc_pct=a - 0.5, time_s=t, params=1200)
             for s, a, t in ((0, 93.6, 1200.0), (1, 93.8, 1230.0))]
    (root / "results" / "speedrun_muon.json").write_text(report.dump_results({"about": "x", "records": recs}))
    table = report.table_speedrun_muon(report.Results(report.load_results(root)))
    assert "mean 94.10% +- 0.14 over 2 seeds, 810.0 s per run" in table
    assert "mean 93.70% +- 0.14 over 2 seeds, 1215.0 s per run" in table
    assert "| 1.50x |" in table and "| 1.00x |" in table and "-0.40 (-1.01 to +0.21), p = 0.106" in table
    assert "Host: test host." in table


def test_recorded_command_lines_can_be_typed_back(monkeypatch):
    import shlex

    from gatedconv.rundir import command_line

    argv = ["/usr/bin/gatedconv-speedrun", "--figures", "", "--model-kwargs", '{"widths": [8, 16, 16]}', "-q"]
    monkeypatch.setattr(sys, "argv", argv)
    assert shlex.split(command_line()) == ["gatedconv-speedrun"] + argv[1:]


def test_per_seed_commands_of_a_sweep_read_as_one():
    recs = [{"seed": s, "command": f"gatedconv-speedrun --first-seed {s} --seeds 1 --out runs/m --figures ''"}
            for s in (0, 1, 10)]
    assert report.commands(recs) == ["gatedconv-speedrun --first-seed S --seeds 1 --out runs/m --figures ''"]
    recs = [{"seed": s, "command": f"python scripts/trainf.py --seed={s} --out runs/x_seed{s}"} for s in (1, 2)]
    assert report.commands(recs) == ["python scripts/trainf.py --seed=S --out runs/x_seedS"]
    assert report.generic_command({"seed": 1, "command": "x --first-seed 10 --seeds 1"}) == "x --first-seed 10 --seeds 1"
