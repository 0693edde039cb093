"""benchmarks/bench_fast.py and bench_loop.py: tiny runs print their ratio and write figures that
``gatedconv-report collect`` publishes, with the command that printed them."""
from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

from gatedconv import report

ROOT = Path(__file__).resolve().parents[1]


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _collected(run_dir: Path, tmp_path: Path, file: str) -> report.Results:
    into = tmp_path / "results" / f"{file}.json"
    assert report.collect([run_dir], into) == 1
    return report.Results(report.load_results(tmp_path))


def test_bench_fast_writes_ratios_and_profile_split(tmp_path, capsys, monkeypatch):
    """The record holds the command, the step ratios and, with --profile, the gated variant's extra self CPU
    time over plain's, split from the operator times the profiler measured (gated minus plain, not the
    reverse), as printed."""
    bench = _bench("bench_fast")
    profiles = []  # what the profiler measured, per variant in order: plain, then gated
    real_profile = bench.profile_step
    monkeypatch.setattr(bench, "profile_step", lambda step, n=2: profiles.append(real_profile(step, n)) or profiles[-1])
    out = tmp_path / "fast"
    argv = ["--batch-size", "16", "--rounds", "2", "--variants", "plain,gated", "--profile",
            "--model-kwargs", '{"widths": [8, 16, 16]}', "--output", str(out)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    rec = json.loads((out / "summary.json").read_text())
    assert shlex.split(rec["command"]) == ["python", "benchmarks/bench_fast.py", *argv]
    assert rec["kind"] == "bench" and rec["seed"] is None and rec["batch_size"] == 16
    assert rec["plain_ms"] > 0 and rec["gated_ms"] > 0 and rec["gated_x"] > 0
    assert f"gated step / plain step: {rec['gated_x']:.2f}x (gated; target 1.15x)" in printed
    plain, gated = profiles

    def conv(d, backward):
        return sum(t for k, t in d.items() if "convolution" in k.lower() and ("backward" in k.lower()) == backward)
    total = sum(gated.values()) - sum(plain.values())
    fwd, bwd = conv(gated, False) - conv(plain, False), conv(gated, True) - conv(plain, True)
    assert [rec["gated_extra_s"], rec["gated_extra_conv_fwd_s"], rec["gated_extra_conv_bwd_s"],
            rec["gated_extra_other_s"]] == [round(x, 3) for x in (total, fwd, bwd, total - fwd - bwd)]
    assert (f"gated against plain: extra_s {rec['gated_extra_s']:+.3f} s, extra_conv_fwd_s "
            f"{rec['gated_extra_conv_fwd_s']:+.3f} s") in printed
    assert "aten::convolution_backward" in printed  # the per-variant operator lists
    table = report.table_bench_fast(_collected(out, tmp_path, "bench_fast"))
    assert f"{rec['gated_x']:.2f}x" in table and "Profile of gated, eager sums against plain" in table


def test_bench_fast_extra_time_splits_by_operator_name():
    split = _bench("bench_fast").extra_time
    plain = {"aten::mkldnn_convolution": 1.0, "aten::convolution_backward": 2.0, "aten::mul": 0.5}
    gated = {"aten::mkldnn_convolution": 1.25, "aten::convolution_backward": 2.5, "ConvolutionBackward0": 0.25,
             "aten::mul": 1.0, "aten::sum": 0.5}
    assert split(gated, plain) == {"extra_s": 2.0, "extra_conv_fwd_s": 0.25, "extra_conv_bwd_s": 0.75,
                                   "extra_other_s": 1.0}


def test_bench_loop_writes_its_ratio_and_phases(tiny_cifar, tmp_path, capsys):
    out = tmp_path / "loop"
    argv = ["--data-dir", str(tiny_cifar), "--steps", "2", "--rounds", "1", "--batch-size", "8", "--profile",
            "--output", str(out)]
    assert _bench("bench_loop").main(argv) == 0
    printed = capsys.readouterr().out
    rec = json.loads((out / "summary.json").read_text())
    assert rec["naive_img_per_s"] > 0 and rec["trainf_img_per_s"] > 0
    assert f"ratio trainf / naive: {rec['trainf_x']:.2f}x" in printed
    assert all(rec[f"{loop}_{phase}_ms"] > 0 for loop in ("naive", "trainf")
               for phase in ("data", "forward", "backward", "optimizer"))
    table = report.table_bench_loop(_collected(out, tmp_path, "bench_loop"))
    ratio = rec["trainf_img_per_s"] / rec["naive_img_per_s"]
    assert f"**{ratio:.2f}x**" in table and "Where a step's time goes" in table
