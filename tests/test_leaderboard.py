"""The leaderboard (gatedconv.leaderboard, scripts/leaderboard.py) on tiny generated data: two small models, one
epoch, one seed, fp32, no compile."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from gatedconv import create_model
from gatedconv import leaderboard as lb

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("convnet_tiny", "mlp")


def _script():
    spec = importlib.util.spec_from_file_location("_script_leaderboard", ROOT / "scripts" / "leaderboard.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _is_png(p: Path) -> bool:
    return p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _table_rows(text: str) -> dict:
    """model -> cells of its table row."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 11 and re.fullmatch(r"\d+", cells[0]):
            rows[cells[1]] = cells
    return rows


def test_recipes_and_plan(tmp_path):
    recipes = lb.merge_recipes(lb.RECIPES, lb.parse_recipes('{"cnn_small": {"lr": 3e-4}, "mlp": {"epochs": 3}}'))
    assert recipes["cnn_small"] == {"optimizer": "adam", "lr": 3e-4, "weight_decay": 0.01, "batch_size": 128}
    cfgs = lb.plan(["cnn_small", "resnet_small", "mlp"], [0, 1], 2, tmp_path, base={"batch_size": 64},
                   recipes=recipes)
    by = {(c.model, c.seed): c for c in cfgs}
    assert len(cfgs) == 6 and by[("mlp", 1)].out == str(tmp_path / "mlp" / "seed1")
    assert by[("cnn_small", 0)].batch_size == 128 and by[("mlp", 0)].batch_size == 64  # recipe beats the flag
    assert by[("mlp", 0)].epochs == 3 and by[("cnn_small", 0)].epochs == 2
    r = by[("resnet_small", 0)]
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay, r.schedule) == ("sgd", 0.1, 0.9, 5e-4, "cosine")
    for bad, needle in [('{"nope": {}}', "unknown model"), ('{"mlp": {"seed": 3}}', "reserved"),
                        ('{"mlp": {"lr": -1}}', "lr"), ('[1]', "JSON object")]:
        with pytest.raises(lb.LeaderboardError, match=needle):
            lb.plan(["mlp"], [0], 1, tmp_path, recipes=lb.parse_recipes(bad))
    with pytest.raises(lb.LeaderboardError, match="unknown model"):
        lb.plan(["mlp", "nope"], [0], 1, tmp_path)


def test_leaderboard_smoke(tiny_cifar, tmp_path, capsys):
    cli = _script()
    out, table, figs = tmp_path / "lb", tmp_path / "lb.md", tmp_path / "figs"
    argv = ["--models", ",".join(MODELS), "--epochs", "1", "--seeds", "0", "--data-dir", str(tiny_cifar),
            "--out", str(out), "--table", str(table), "--figures-dir", str(figs), "--batch-size", "20",
            "--eval-batch-size", "50", "--precision", "fp32", "--compile", "off", "--quiet"]
    assert cli.main(argv) == 0, capsys.readouterr().err

    rows = _table_rows(table.read_text())
    assert set(rows) == set(MODELS)
    for m in MODELS:
        run = out / m / "seed0"
        assert (run / "final.json").exists() and (run / "checkpoint.pt").exists()
        cells = rows[m]
        assert int(cells[2].replace(",", "")) == create_model(m).num_params()
        assert cells[3] == "1" and cells[4] == "1" and cells[5].endswith("%") and cells[6].endswith("%")
        topk = json.loads((run / "topk.json").read_text())
        assert 0 <= topk["top1"] <= topk["top3"] <= topk["top5"] <= 1 and topk["n"] == 40
        summary = json.loads((run / "summary.json").read_text())  # the run's record in the results/ format
        assert summary["model"] == m and summary["seed"] == 0 and summary["carried_over"] is False
        final = json.loads((run / "final.json").read_text())
        if "test_acc_fp32" in final:  # the harness's own fp32 report: the same evaluation, the same number
            assert topk["top1"] == final["test_acc_fp32"]
    assert rows["convnet_tiny"][10] == "50%" and rows["mlp"][10] == "42% after 3 epochs"

    data = json.loads((out / "leaderboard.json").read_text())
    assert {r["model"] for r in data["rows"]} == set(MODELS) and "1 epoch(s)" in data["budget"]
    assert _is_png(figs / "leaderboard_acc_vs_params.png") and _is_png(figs / "leaderboard_acc_vs_time.png")

    # a second call reuses the finished runs and their top-k (nothing is retrained or re-evaluated)
    stamps = {p: p.stat().st_mtime_ns for m in MODELS for p in (out / m / "seed0").glob("*.json")}
    stamps.update({out / m / "seed0" / "checkpoint.pt": (out / m / "seed0" / "checkpoint.pt").stat().st_mtime_ns
                   for m in MODELS})
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert "fp32 test top-1" not in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert set(_table_rows(table.read_text())) == set(MODELS)

    # the same OUT with another recipe is refused, not overwritten
    assert cli.main(argv[:-1] + ["--recipes", '{"mlp": {"lr": 0.01}}', "--quiet"]) == 1
    assert "different lr" in capsys.readouterr().err
