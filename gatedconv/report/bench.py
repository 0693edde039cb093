"""The benchmarks' tables (``bench_*``): the training loop against a naive one, the block's forms, the gemm form by
shape, the fast network's variants and where their time goes, glibc malloc against ``keep_freed_memory``, and the
training step per model."""
from __future__ import annotations

import statistics

from .core import Results, code, fmt_value, num, provenance_table


def table_bench_loop(R: Results) -> str:
    recs = R.file("bench_loop")
    rows = []
    pair = [r for r in recs if r["name"] == "naive"][:1] + [r for r in recs if r["name"] == "trainf"][:1]
    if len(pair) == 2:  # the first measurement kept its two loops as two records
        naive, fast = pair
        rows.append((pair, [num(naive["img_per_s"], 0), num(fast["img_per_s"], 0),
                            f"**{fast['img_per_s'] / naive['img_per_s']:.2f}x**"]))
    for r in recs:
        if "trainf_img_per_s" in r:
            rows.append(([r], [num(r["naive_img_per_s"], 0), num(r["trainf_img_per_s"], 0),
                               f"**{r['trainf_img_per_s'] / r['naive_img_per_s']:.2f}x**"]))
    table = provenance_table(["naive loop, images/s", "trainf, images/s", "trainf / naive"], rows, "rrr")
    phases = [r for r in recs if "trainf_data_ms" in r]
    notes = [f"Where a step's time goes ({r['host']}, {code(r['command'])}), ms per step naive / trainf: "
             + ", ".join(f"{ph} {num(r[f'naive_{key}_ms'], 1)} / {num(r[f'trainf_{key}_ms'], 1)}"
                         for key, ph in _LOOP_PHASES if f"naive_{key}_ms" in r) + "." for r in phases]
    return "\n\n".join([table] + notes)


_LOOP_PHASES = (("data", "data"), ("forward", "forward"), ("backward", "backward"),
                ("optimizer", "optimizer + metrics"))


def table_bench_block(R: Results) -> str:
    rows, notes = [], []
    for r in R.file("bench_block"):
        if "ref_img_s" not in r:
            notes.append(f"{r.get('what', r['name'])}: {fmt_value(r['gemm_x'], 2, 'x')} "
                         f"({code(r['command'])}, {r['date']}).")
            continue
        rows.append(([r], [r["name"], num(r["ref_img_s"], 0), f"{num(r['auto_img_s'], 0)} ({num(r['auto_x'], 2)}x)",
                           f"{num(r['compiled_img_s'], 0)} ({num(r['compiled_x'], 2)}x)"]))
    table = provenance_table(["setting", "reference img/s", "`auto`", "`auto` + compiled gated sum"], rows, "lrrr")
    return "\n\n".join([table] + notes)


def table_bench_gemm(R: Results) -> str:
    rows = []
    for shape in R.names("bench_gemm"):
        group = sorted(R.group("bench_gemm", shape), key=lambda r: r["run"])
        by_run = {r["run"]: r for r in group}
        ref = next((r["ref_ms"] for r in group if "ref_ms" in r), None)
        label = shape + (f" ({group[0]['block']})" if group[0].get("block") else "")

        def runs(key):
            return " / ".join(num(by_run[i][key], 2) + "x" if i in by_run else "-" for i in (1, 2))
        rows.append((group, [label, "-" if ref is None else f"{num(ref, 1)} ms", runs("gemm_x"), runs("dense_x")]))
    return provenance_table(["block shape", "reference (run 2)", "`gemm` (run 1 / run 2)", "`dense` (run 1 / run 2)"],
                            rows, "lrrr")


_FAST_VARIANTS = (("plain", "plain (airbench94)"), ("gated", "gated, eager sums"),
                  ("compiled", "gated, compiled sums"), ("inductor", "whole forward compiled"))
_PROFILE = (("conv_backward_extra_s", "convolution backward +", 2), ("conv_forward_extra_s", "convolution forward +", 2),
            ("elementwise_extra_s_approx", "elementwise multiply / add / sum ~", 1))


def table_bench_fast(R: Results) -> str:
    rows, notes = [], []
    for r in R.file("bench_fast"):
        if r["name"] == "profile":
            parts = ", ".join(f"{lbl}{num(r[k], d)} s" for k, lbl, d in _PROFILE if k in r)
            notes.append(f"Profile ({r.get('what', '')}; {code(r['command'])}): {parts}.")
            continue
        cells = []
        for v, _ in _FAST_VARIANTS:
            ms, x = r.get(f"{v}_ms"), r.get(f"{v}_x")
            text = "-" if ms is None else f"{num(ms, 0)} ms"
            if x is not None:
                text = f"{num(x, 2)}x" if ms is None else f"{text} ({num(x, 2)}x)"
            cells.append(text)
        rows.append(([r], cells))
        for v, label in _FAST_VARIANTS:
            if f"{v}_extra_s" in r:
                parts = ", ".join(f"{lbl} {r[f'{v}_{k}']:+.2f} s" for k, lbl in _EXTRA if f"{v}_{k}" in r)
                notes.append(f"Profile of {label} against plain ({r['host']}, self CPU time per step, "
                             f"{code(r['command'])}): {parts}.")
    table = provenance_table([label for _, label in _FAST_VARIANTS], rows, "rrrr")
    return "\n\n".join([table] + notes)


_EXTRA = (("extra_s", "all"), ("extra_conv_fwd_s", "convolution forward"),
          ("extra_conv_bwd_s", "convolution backward"), ("extra_other_s", "the rest (gated sums, gate, copies)"))


def table_bench_malloc(R: Results) -> str:
    rows, ratios = [], []
    pairs = [r for r in R.file("bench_malloc") if r["name"] == "pair"]
    for r in pairs:
        ratios.append(r["default_ms"] / r["keep_ms"])
        rows.append(([r], [f"pair {r['pair']}", f"{num(r['default_ms'], 0)} ms", fmt_value(r["default_sys_s"], 2, "s"),
                           num(r["default_faults"], 0), f"{num(r['keep_ms'], 0)} ms", fmt_value(r["keep_sys_s"], 2, "s"),
                           num(r["keep_faults"], 0), f"{r['default_ms'] / r['keep_ms']:.2f}x"]))
    if ratios:
        rows.append((pairs, ["**median of the pairs**", "", "", "", "", "", "", f"**{statistics.median(ratios):.2f}x**"]))
    for r in R.file("bench_malloc"):
        if r["name"] != "pair" and "default_ms" in r:
            rows.append(([r], [r["name"], f"{num(r['default_ms'], 0)} ms", "-", "-", f"{num(r['keep_ms'], 0)} ms",
                               "-", "-", f"{num(r['keep_x'], 2)}x"]))
    return provenance_table(["measurement", "default malloc", "kernel time", "page faults", "keep_freed_memory",
                             "kernel time", "page faults", "speed-up per step"], rows, "lrrrrrrr")


def table_bench_step(R: Results) -> str:
    rows = [([r], [r["model"], fmt_value(r["step_s"], 2, "s")])
            for r in R.file("bench_malloc") if r["name"].startswith("step_")]
    return provenance_table(["model", "bf16 training step, batch 128"], rows, "lr")


def table_bench_infer(R: Results) -> str:
    """The deployed study networks side by side: parameters, inference FLOPs, latency at batch 1 and throughput at
    batch 128 in fp32 and bf16 (each also as a time ratio to the plain network), then where the time goes."""
    from ..study import VARIANTS

    recs = R.data.get("bench_infer", [])
    if not recs:
        return f"No inference benchmark recorded yet: {code('python benchmarks/bench_infer.py --output DIR')}."
    r = recs[-1]

    def fig(key: str, decimals: int) -> str:  # '-' for a figure the record lacks (a partial --output)
        return num(r[key], decimals) if key in r else "-"

    settings = [s for s in ("fp32", "bf16") if f"plain_{s}_b1_ms" in r]
    rows = []
    for v in [v for v in VARIANTS if f"{v}_params" in r]:
        cells = [f"`{v}`", f"{r[f'{v}_params']:,}", fig(f"{v}_mflops", 1)]
        for s in settings:
            cells += [f"{fig(f'{v}_{s}_b1_ms', 3)} ms ({fig(f'{v}_{s}_b1_x', 2)}x)",
                      f"{fig(f'{v}_{s}_b128_img_s', 0)} ({fig(f'{v}_{s}_b128_x', 2)}x)"]
        rows.append(([r], cells))
    header = ["deployed variant", "parameters", "MFLOPs / image"]
    for s in settings:
        header += [f"{s} latency, batch 1 (x plain)", f"{s} images/s, batch 128 (time x plain)"]
    table = provenance_table(header, rows, "l" + "r" * (len(header) - 1))
    split = [f"batch {b}: plain conv {fig(f'plain_b{b}_conv_ms', 3)} / matmul {fig(f'plain_b{b}_matmul_ms', 3)}"
             f" / other {fig(f'plain_b{b}_other_ms', 3)} ms, dyconv {fig(f'dyconv_b{b}_conv_ms', 3)} / "
             f"{fig(f'dyconv_b{b}_matmul_ms', 3)} / {fig(f'dyconv_b{b}_other_ms', 3)} ms"
             for b in (1, 128) if f"dyconv_b{b}_conv_ms" in r]
    if split:
        table += ("\n\nWhere a deployed forward pass spends its time (fp32, profiler self time per forward: "
                  "convolutions / matrix multiplies, i.e. the kernel mixing and the head / everything else): "
                  + "; ".join(split) + ".")
    return table


TABLES = {
    "bench_infer": table_bench_infer,
    "bench_loop": table_bench_loop,
    "bench_block": table_bench_block,
    "bench_gemm": table_bench_gemm,
    "bench_fast": table_bench_fast,
    "bench_malloc": table_bench_malloc,
    "bench_step": table_bench_step,
}
