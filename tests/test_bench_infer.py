"""benchmarks/bench_infer.py: a tiny run times the deployed study networks side by side and writes figures that
``gatedconv-report collect`` publishes, with the command that printed them."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from gatedconv import report

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_infer", ROOT / "benchmarks" / "bench_infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_infer_records_ratios_flops_and_profile(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "infer"
    argv = ["--variants", "plain,softmax,softmax_anneal,dyconv", "--rounds", "1", "--seconds", "0",
            "--settings", "fp32", "--profile", "--output", str(out)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    into = tmp_path / "results" / "bench_infer.json"
    assert report.collect([out], into) == 1
    rec = report.Results(report.load_results(tmp_path)).file("bench_infer")[0]
    assert rec["command"] == "python benchmarks/bench_infer.py " + " ".join(argv)
    # the printed headline is the recorded ratio
    m = re.search(r"batch 1 ([0-9.]+)x \(target 1.4x\), batch 128 ([0-9.]+)x", printed)
    assert m and float(m.group(1)) == round(rec["dyconv_fp32_b1_x"], 2) and float(m.group(2)) == round(
        rec["dyconv_fp32_b128_x"], 2)
    assert rec["plain_fp32_b1_x"] == 1.0 and rec["plain_fp32_b128_img_s"] > 0
    # softmax_anneal deploys to the same network as softmax: timed once, reported under both names
    assert rec["softmax_anneal_fp32_b128_ms"] == rec["softmax_fp32_b128_ms"]
    assert "softmax_anneal" in printed.split("variant")[-1]
    # FLOPs per image: plain's convolutions, dyconv's one convolution plus the kernel mixing, softmax's 3 paths
    assert rec["plain_mflops"] < rec["dyconv_mflops"] < 1.6 * rec["plain_mflops"] < rec["softmax_mflops"]
    assert rec["dyconv_params"] > 3 * rec["plain_params"]
    for v in ("plain", "dyconv"):
        for b in (1, 128):
            assert {f"{v}_b{b}_{k}_ms" for k in ("conv", "matmul", "other")} <= rec.keys()
    assert rec["dyconv_b1_matmul_ms"] > 0  # the kernel mixing is a matmul the profile must see
