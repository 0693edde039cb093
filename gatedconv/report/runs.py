"""The tables of the main results: the headline rows of the README, the original recipe's seeds (``main``), the
single figures of ``results/misc.json`` and the superseded ones with what replaced them."""
from __future__ import annotations

from .core import (Results, Stat, code, commands, fmt_minutes, fmt_stat, fmt_value, md_table, num, provenance_table,
                   stat, value_stat, _distinct)


HEADLINE = [
    # (what, results file, record name, metric, time metric)
    ("Original recipe, 30 epochs: the weight average (what `load_model` returns)", "main", "gatedconv", "acc_pct",
     "wall_s"),
    ("Same runs, live weights (the original's evaluation)", "main", "gatedconv", "acc_live_pct", "wall_s"),
    ("Original recipe, 5 epochs, live weights: the ReLU gate", "ablation_5ep", "relu", "acc_pct", None),
    ("Same, constant gate (no gating)", "ablation_5ep", "constant", "acc_pct", None),
    ("Fast recipe (`gatedconv_fast`), 12 epochs, with TTA", "speedrun", "speedrun_12", "acc_tta_pct", "time_s"),
    ("Fast recipe, 11 epochs, with TTA", "speedrun", "speedrun_11", "acc_tta_pct", "time_s"),
    ("Fast recipe in airbench94's time (7.6 epochs), with TTA", "speedrun", "speedrun_budget3", "acc_tta_pct",
     "time_s"),
    ("airbench94 in the same harness (`--paths 3`), with TTA", "speedrun", "speedrun_plain3", "acc_tta_pct",
     "time_s"),
    ("Muon recipe (`--recipe airbench94_muon`), gated, 8 epochs, with TTA", "speedrun_muon", "muon_gated",
     "acc_tta_pct", "time_s"),
    ("Muon recipe, gated, in about the reference's time (5.75 epochs), with TTA", "speedrun_muon",
     "muon_gated_equal_time", "acc_tta_pct", "time_s"),
    ("airbench94_muon in the same harness (`--paths 3`), with TTA", "speedrun_muon", "muon_plain", "acc_tta_pct",
     "time_s"),
]


def table_headline(R: Results) -> str:
    rows = []
    for what, file, name, metric, time_key in HEADLINE:
        recs = R.group(file, name)
        t = stat(recs, time_key) if time_key else None
        rows.append((what, fmt_stat(stat(recs, metric), 2, "%", show_n=True),
                     "-" if t is None else f"{num(t.mean, 0)} s", "; ".join(code(c) for c in commands(recs)),
                     ", ".join(_distinct(recs, "host"))))
    return md_table(["what", "test accuracy (mean ± std over n runs)", "time per run", "command", "host"], rows,
                    "lrrll")


def table_main(R: Results) -> str:
    recs = sorted(R.group("main", "gatedconv"), key=lambda r: r.get("seed", -1))
    keys = [("acc_pct", "%", 2), ("acc_epoch_pct", "%", 2), ("acc_live_pct", "%", 2), ("top5_pct", "%", 2)]
    rows = []
    for r in recs:
        cells = [str(r.get("seed", "-"))] + [fmt_stat(stat([r], k), d, u) for k, u, d in keys]
        cells += [fmt_minutes(r.get("wall_s")), fmt_stat(stat([r], "img_per_s"), 0)]
        rows.append(([r], cells))
    n = len(recs)
    mean_cells = [f"**mean ± std (n = {n})**"] + [fmt_stat(stat(recs, k), d, u) for k, u, d in keys]
    wall = stat(recs, "wall_s")
    mean_cells[1] = f"**{mean_cells[1]}**"
    mean_cells += [fmt_stat(Stat(wall.mean / 60, (wall.std or 0) / 60, wall.n), 1, "min") if wall else "-",
                   fmt_stat(stat(recs, "img_per_s"), 0)]
    rows.append((recs, mean_cells))
    return provenance_table(["seed", "test acc: weight average (fp32, `load_model`)", "same weights, per-epoch eval "
                             "(bf16)", "live weights (fp32)", "top-5 (fp32)", "wall time", "training img/s"],
                            rows, "lrrrrrr")


def _misc_row(r: dict) -> str:
    text = fmt_value(r["value"], r.get("decimals"), r.get("unit", ""))
    if r.get("approx"):
        text = "~" + text
    if "correct" in r and "total" in r:
        text += f" ({r['correct']}/{r['total']})"
    if r.get("mean_std"):
        text += f" (mean ± std: {fmt_stat(value_stat(r['value']), r.get('decimals', 2), r.get('unit', ''))})"
    return text


def table_misc(R: Results) -> str:
    rows = [([r], [r["name"], _misc_row(r)]) for r in R.file("misc")]
    return provenance_table(["figure", "value"], rows, "lr")


def table_superseded(R: Results) -> str:
    rows = [([r], [r["name"], _misc_row(r), r.get("superseded_by", "-")]) for r in R.file("superseded")]
    return provenance_table(["figure", "value", "replaced by"], rows, "lrl")


TABLES = {
    "headline": table_headline,
    "main": table_main,
    "misc": table_misc,
    "superseded": table_superseded,
}
