"""Gate analysis (gatedconv.analysis, scripts/analyze_gates.py) and the ablation grid (scripts/ablate.py), on a
tiny model and tiny generated data."""
from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import gatedconv
from gatedconv import analysis, create_model
from gatedconv.checkpoint import Normalized, save_checkpoint
from gatedconv.data import CLASSES

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(widths=(4, 4, 4, 4, 4), head_hidden=8)


def _script(name: str):
    """The command behind scripts/<name>.py: its parser, main and helpers live in gatedconv.cli.<name>."""
    return importlib.import_module(f"gatedconv.cli.{name}")


def _data(n: int = 23, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 10
    return x, y


def _is_png(path) -> bool:
    p = Path(path)
    return p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return create_model("gatedconv", **TINY)


@pytest.fixture(scope="module")
def tiny_record(tiny_model):
    x, y = _data()
    return analysis.record_gates(tiny_model, x, y, batch_size=10)


# ------------------------------------------------------------------------------------------------------
# record_gates


def test_record_shapes_counts_and_values(tiny_model, tiny_record):
    rec = tiny_record
    assert len(rec) == 5 and rec.names == [f"block{i}" for i in range(1, 6)]
    assert rec.modules == [f"features.{i}.0" for i in range(5)]
    assert rec.num_images == 23 and rec.labels.shape == (23,) and rec.predictions.shape == (23,)
    for g in rec.gates:
        assert g.shape == (23, 3) and g.dtype == torch.float32 and (g >= 0).all()
    assert rec.gate_types == ["relu"] * 5 and rec.kernel_sizes == [(3, 3, 3)] * 5
    # the first block's gates are the gate of the (uint8 -> [0, 1]) input; batches are concatenated in order
    x, _ = _data()
    with torch.no_grad():
        expected = tiny_model.features[0][0].gate(x.float() / 255)
    torch.testing.assert_close(rec.gates[0], expected)
    # float input in [0, 1] gives the same record
    rec_f = analysis.record_gates(tiny_model, x.float() / 255, torch.arange(23) % 10, batch_size=7)
    for a, b in zip(rec.gates, rec_f.gates):
        torch.testing.assert_close(a, b)


def test_record_is_side_effect_free_and_handles_paths():
    torch.manual_seed(1)
    m = create_model("gatedconv", **TINY, kernel_sizes=(1, 3)).train()
    blocks = m.gated_blocks()
    blocks[2].record_gates = True
    marker = torch.ones(1, 2)
    blocks[2].last_gates = marker
    bn_before = m.features[0][1].running_mean.clone()
    x, y = _data(6)
    rec = analysis.record_gates(m, x, y, batch_size=4, keep_predictions=False)
    assert [g.shape for g in rec.gates] == [(6, 2)] * 5 and rec.predictions is None
    assert m.training and all(mod.training for mod in m.modules())
    assert [b.record_gates for b in blocks] == [False, False, True, False, False]
    assert blocks[2].last_gates is marker and blocks[0].last_gates is None
    assert torch.equal(m.features[0][1].running_mean, bn_before)


def test_bad_input():
    with pytest.raises(analysis.NoGatesError, match="no GatedConv2d"):
        analysis.record_gates(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)), *_data(4))
    m = create_model("gatedconv", **TINY)
    with pytest.raises(ValueError, match="labels"):
        analysis.record_gates(m, _data(4)[0], torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="0..9"):
        analysis.summarize(analysis.record_gates(m, _data(4)[0], torch.tensor([0, 1, 2, 12])))


# ------------------------------------------------------------------------------------------------------
# summarize

TOP_FIELDS = ["format", "num_images", "class_names", "class_counts", "accuracy", "off_share", "blocks"]
BLOCK_FIELDS = ["name", "module", "gate", "kernel_sizes", "num_paths", "mean", "std", "min", "max", "zero_fraction",
                "zero_fraction_total", "off_fraction", "all_zero_count", "all_zero_fraction", "active_paths_fraction",
                "dominant_fraction", "entropy_mean", "entropy_mean_active", "class_mean", "class_zero_fraction",
                "class_std"]


def test_summary_has_the_documented_fields(tiny_record):
    s = analysis.summarize(tiny_record, CLASSES)
    documented = set(re.findall(r"``(\w+)``", analysis.__doc__))
    for f in TOP_FIELDS + BLOCK_FIELDS + ["source"]:
        assert f in documented, f"{f} is not documented in the module docstring"
    assert set(TOP_FIELDS) <= set(s) and s["format"] == analysis.SUMMARY_FORMAT
    assert s["num_images"] == 23 and sum(s["class_counts"]) == 23 and len(s["blocks"]) == 5
    assert 0.0 <= s["accuracy"] <= 1.0
    json.dumps(s, allow_nan=False)  # valid JSON, no NaN
    for b in s["blocks"]:
        assert set(BLOCK_FIELDS) <= set(b), set(BLOCK_FIELDS) - set(b)
        p = b["num_paths"]
        assert p == 3 and all(len(b[k]) == p for k in ("mean", "std", "zero_fraction", "off_fraction", "class_std"))
        assert len(b["class_mean"]) == 10 and all(len(r) == p for r in b["class_mean"])
        assert math.isclose(sum(b["active_paths_fraction"]), 1.0, abs_tol=1e-6)
        assert math.isclose(sum(b["dominant_fraction"]), 1 - b["all_zero_fraction"], abs_tol=1e-6)
        assert 0.0 <= b["entropy_mean"] <= 1.0
    table = analysis.format_table(s)
    assert "block5" in table and "23 images" in table


def test_summary_definitions_on_hand_made_gates():
    g = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 0.0, 0.0], [1.0, 0.001, 0.0]])
    rec = analysis.GateRecord(["block1"], ["b"], ["relu"], [(3, 3, 3)], [g], torch.tensor([0, 0, 1, 1]))
    b = analysis.summarize(rec, ["a", "b"])["blocks"][0]
    assert b["all_zero_count"] == 1 and b["all_zero_fraction"] == 0.25
    assert b["zero_fraction"] == [0.25, 0.5, 0.75] and b["zero_fraction_total"] == 6 / 12
    assert b["off_fraction"] == [0.25, 0.75, 0.75]  # 0.001 of 1.001 is below the 1% share
    assert b["active_paths_fraction"] == [0.25, 0.25, 0.25, 0.25]
    assert b["dominant_fraction"] == [0.75, 0.0, 0.0]
    ent = analysis.normalized_entropy(g)
    assert ent[0] == 0 and math.isclose(float(ent[1]), 1.0, rel_tol=1e-6) and ent[2] == 0 and 0 < ent[3] < 0.05
    assert math.isclose(b["entropy_mean"], float(ent.mean()), rel_tol=1e-6)
    assert math.isclose(b["entropy_mean_active"], float(ent[1:].mean()), rel_tol=1e-6)
    assert b["class_mean"][0] == [0.5, 0.5, 0.5] and b["class_zero_fraction"][1] == [0.0, 0.5, 1.0]
    # a class without images gives null, not NaN
    s = analysis.summarize(rec, ["a", "b", "c"])
    assert s["blocks"][0]["class_mean"][2] == [None, None, None]
    json.dumps(s, allow_nan=False)


def test_constant_gate_control_is_input_independent():
    torch.manual_seed(0)
    m = create_model("gatedconv", **TINY, gate="constant")
    rec = analysis.record_gates(m, *_data(12), batch_size=5)
    for g in rec.gates:
        assert torch.equal(g, torch.full_like(g, 1 / 3))
    s = analysis.summarize(rec)
    for b in s["blocks"]:
        assert b["gate"] == "constant" and b["class_std"] == [0.0, 0.0, 0.0] and b["zero_fraction"] == [0.0] * 3
        assert math.isclose(b["entropy_mean"], 1.0, rel_tol=1e-5) and b["std"] == [0.0] * 3


# ------------------------------------------------------------------------------------------------------
# gate_epoch_stats and plots


def test_gate_epoch_stats_is_side_effect_free():
    torch.manual_seed(0)
    m = create_model("gatedconv", **TINY).train()
    x = torch.randn(16, 3, 32, 32)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    stats = dict(analysis.gate_epoch_stats(m, x), epoch=1)
    assert m.training and all(not b.record_gates and b.last_gates is None for b in m.gated_blocks())
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k  # BatchNorm running stats untouched
    s = stats["blocks"]
    assert list(s) == [f"block{i}" for i in range(1, 6)]
    assert len(s["block1"]["mean"]) == 3 and all(0 <= z <= 1 for z in s["block1"]["zero_fraction"])
    json.dumps(stats, allow_nan=False)


# ------------------------------------------------------------------------------------------------------
# scripts/analyze_gates.py


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.manual_seed(0)
    net = create_model("gatedconv", **TINY)
    run = tmp_path_factory.mktemp("run") / "tinyrun"
    run.mkdir()
    save_checkpoint(run / "checkpoint.pt", {"model_name": "gatedconv", "model_kwargs": dict(TINY),
                                            "model_state": net.state_dict(), "mean": [0.5] * 3, "std": [0.25] * 3})
    return run


def test_analyze_gates_cli(tiny_run, tiny_cifar, tmp_path, monkeypatch, capsys):
    """In process (cheap): JSON, the table, every figure (plot_all and the per-epoch evolution plot)."""
    torch.manual_seed(0)
    m = create_model("gatedconv", **TINY).train()
    x = torch.randn(8, 3, 32, 32)
    stats = [dict(analysis.gate_epoch_stats(m, x), epoch=e) for e in (1, 2, 3)]
    for st in stats:  # two blocks are enough to exercise the plot (fewer axes: faster)
        st["blocks"] = {k: st["blocks"][k] for k in ("block1", "block5")}
    (tiny_run / "gate_stats.json").write_text(json.dumps(stats))  # picked up for the evolution plot
    monkeypatch.chdir(tmp_path)
    cli = _script("analyze_gates")
    assert cli.main([str(tiny_run), "--data-dir", str(tiny_cifar), "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "block1" in out and "block5" in out and "40 images" in out
    s = json.loads((tiny_run / "gates.json").read_text())
    assert s["num_images"] == 40 and len(s["blocks"]) == 5 and s["source"]["run_dir"] == str(tiny_run)
    for kind in ("hist", "class_heatmap", "zero_fraction", "evolution"):
        assert _is_png(tiny_run / "gates" / f"tinyrun_{kind}.png"), kind
    assert list(tmp_path.iterdir()) == []  # the figures go into the run directory, not the working directory


def test_analyze_gates_script_runs_from_any_directory(tiny_run, tiny_cifar, tmp_path):
    """scripts/analyze_gates.py in a fresh process, without PYTHONPATH and from another working directory: with
    the package installed, the thin script finds ``gatedconv`` and runs the command."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "analyze_gates.py"), str(tiny_run), "--data-dir",
                        str(tiny_cifar), "--limit", "8", "--no-figures", "--json", str(tmp_path / "g.json")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "g.json").read_text())["num_images"] == 8
    assert not (tmp_path / "figures").exists()


def _one_line_error(capsys_or_proc):
    err = capsys_or_proc.stderr if hasattr(capsys_or_proc, "stderr") else capsys_or_proc.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err and lines[0].startswith("error: "), err
    return lines[0]


def test_analyze_gates_bad_input(tiny_run, tiny_cifar, tmp_path, monkeypatch, capsys):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "analyze_gates.py"), str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "does not exist" in _one_line_error(p)
    cli = _script("analyze_gates")
    (tmp_path / "empty").mkdir()
    assert cli.main([str(tmp_path / "empty"), "--data-dir", str(tiny_cifar)]) == 1
    assert "no checkpoint" in _one_line_error(capsys)
    assert cli.main([str(tiny_run), "--data-dir", str(tmp_path / "nodata"), "--json", str(tmp_path / "g.json")]) == 1
    assert "no CIFAR-10 data" in _one_line_error(capsys)
    plain = Normalized(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)), [0.5] * 3, [0.25] * 3)
    monkeypatch.setattr(gatedconv, "load_model", lambda *a, **k: plain)
    assert cli.main([str(tiny_run), "--data-dir", str(tiny_cifar)]) == 1
    assert "no GatedConv2d" in _one_line_error(capsys)


# ------------------------------------------------------------------------------------------------------
# scripts/ablate.py


def test_ablation_variants_resolve_and_deduplicate():
    ab = _script("ablate")
    args = ab.parse_args(["--base-kwargs", json.dumps(TINY)])
    names, seeds, control, plan = ab._parse(args)
    assert names == list(ab.VARIANTS) and seeds == [0] and control == []
    assert plan["relu"][1] == plan["paths3"][1] == plan["init_open"][1]  # same network: trained once
    assert len({c for _, c in plan.values()}) == len(names) - 2
    for v in names:
        create_model("gatedconv", **plan[v][0])  # every variant builds
    with pytest.raises(ab.AblationError, match="unknown variant"):
        ab._parse(ab.parse_args(["--variants", "relu,nope"]))
    assert ab._parse(ab.parse_args(["--seeds", "0,1", "--control-seeds", "1,2,2"]))[2] == [2]  # seeds not repeated
    with pytest.raises(ab.AblationError, match="control-seeds"):
        ab._parse(ab.parse_args(["--control-seeds", "x"]))


def test_ablation_smoke(tiny_cifar, tmp_path, capsys, monkeypatch):
    ab = _script("ablate")
    out, table, fig = tmp_path / "abl", tmp_path / "abl.md", tmp_path / "figs" / "abl.png"
    argv = ["--variants", "relu,constant,sigmoid", "--epochs", "1", "--seeds", "0", "--control-seeds", "1",
            "--data-dir", str(tiny_cifar),
            "--out", str(out), "--table", str(table), "--figure", str(fig), "--base-kwargs", json.dumps(TINY),
            "--batch-size", "20", "--eval-batch-size", "50", "--precision", "fp32", "--compile", "off", "--quiet"]
    assert ab.main(argv) == 0, capsys.readouterr().err
    for v in ("relu", "constant"):
        for s in (0, 1):  # the control pair gets the extra seed
            assert (out / v / f"seed{s}" / "final.json").exists() and (out / v / f"seed{s}" / "checkpoint.pt").exists()
    assert (out / "sigmoid" / "seed0" / "final.json").exists() and not (out / "sigmoid" / "seed1").exists()
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")] for l in table.read_text().splitlines()
            if l.startswith("| relu") or l.startswith("| constant") or l.startswith("| sigmoid")}
    assert set(rows) == {"relu", "constant", "sigmoid"} and all("%" in r[4] for r in rows.values())
    assert rows["relu"][5] == rows["constant"][5] == "2" and rows["sigmoid"][5] == "1"  # seeds column
    assert "±" in rows["relu"][4] and "±" not in rows["sigmoid"][4]
    assert "1 epoch(s) per run" in table.read_text()
    assert _is_png(fig)

    # a second call reuses the finished runs: nothing trains, and no file of a run directory is rewritten
    def run_files():
        return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*/seed*/**/*") if p.is_file()}

    files = run_files()
    assert {p.parent.relative_to(out).as_posix() for p in files} == {"relu/seed0", "relu/seed1", "constant/seed0",
                                                                     "constant/seed1", "sigmoid/seed0"}
    first_table = table.read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("gatedconv.run.run_training", no_training)
    assert ab.main(argv) == 0, capsys.readouterr().err
    now = run_files()
    assert sorted(now) == sorted(files) and [p for p in files if now[p] != files[p]] == []
    assert table.read_text() == first_table
    monkeypatch.undo()
    capsys.readouterr()
    # ... but not for a table that asks for the live weights: those runs evaluated the weight average
    assert ab.main(argv + ["--ema-decay", "0"]) == 1
    assert "different ema_decay" in capsys.readouterr().err
