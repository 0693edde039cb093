"""The fast recipe's tables: its runs per host (``speedrun_xeon``, ``speedrun_epyc``), the seeds behind their
means, the ingredients' ablation, the frontier against airbench94 and the Muon recipe's sitting; and the
accuracy-against-time figure."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence

from .core import (RESULTS_DIR, ReportError, Results, code, fmt_seconds, fmt_stat, fmt_value, provenance_table, stat,
                   value_stat, _new_figure, _save, _seeds)


_SPEED_OTHER = {
    "steps": ("steps", 0, ""),
    "train_s": ("training", 0, "s"),
    "time_range_s": ("runs", 0, "s"),
    "epoch_s_approx": ("per epoch ~", 0, "s"),
    "train_epoch_s_approx": ("training per epoch ~", 0, "s"),
    "tflops_per_s": ("training", 3, "TFLOP/s"),
    "pooled_tflops_per_s": ("all seeds' training", 3, "TFLOP/s"),
    "pooled_peak_pct": ("i.e.", 1, "% of the peak"),
    "peak_tflops": ("bf16 matmul peak", 3, "TFLOP/s"),
}


def _speed_other(records: Sequence[dict]) -> str:
    parts = []
    for key, (label, d, unit) in _SPEED_OTHER.items():
        for r in records:
            if key in r and (r.get("aggregate") or not any(a.get("aggregate") and key in a for a in records)):
                sep = "" if label.endswith("~") else " "
                parts.append(f"{label}{sep}{fmt_value(r[key], d, unit)}")
                break
    return "; ".join(parts) or "-"


def _is_ablation(r: dict) -> bool:
    return "baseline" in r


def table_speedrun(R: Results, host_prefix: str) -> str:
    rows = []
    for name in R.names("speedrun", lambda r: not _is_ablation(r) and r["host"].startswith(host_prefix)):
        recs = R.group("speedrun", name)
        r0 = recs[0]
        rows.append((recs, [name, r0.get("network", "-"), fmt_value(r0["epochs"]), _seeds(recs),
                            fmt_stat(stat(recs, "acc_tta_pct"), 2, "%"), fmt_stat(stat(recs, "acc_pct"), 2, "%"),
                            fmt_seconds(stat(recs, "time_s")), fmt_seconds(stat(recs, "time_to_target_s")),
                            fmt_stat(stat(recs, "s_per_step"), 2), fmt_stat(stat(recs, "peak_pct"), 1, "%"),
                            _speed_other(recs)]))
    return provenance_table(["run", "network", "epochs", "seeds", "test acc with TTA", "without TTA", "time per run",
                             "time to 83.5%", "s per step", "% of matmul peak", "other figures"], rows,
                            "llrlrrrrrrl")


def table_speedrun_xeon(R: Results) -> str:
    return table_speedrun(R, "Intel Xeon")


def table_speedrun_epyc(R: Results) -> str:
    return table_speedrun(R, "AMD EPYC")


def table_speedrun_seeds(R: Results) -> str:
    rows = []
    for r in R.file("speedrun"):
        if r.get("aggregate") or _is_ablation(r) or r.get("seed") is None:
            continue
        if not any(a.get("aggregate") for a in R.group("speedrun", r["name"])):
            continue  # a one-seed run: its figures are its row in the run tables
        extra = "; ".join(f"{lbl} {fmt_value(r[k], d, u)}" for k, lbl, d, u in (
            ("acc_pct", "without TTA", 2, "%"), ("time_s", "time", 0, "s"), ("s_per_step", "s per step", 2, ""),
            ("peak_pct", "share of peak", 1, "%")) if k in r)
        rows.append(([r], [r["name"], str(r["seed"]), fmt_value(r["acc_tta_pct"], 2, "%"), extra or "-"]))
    return provenance_table(["run", "seed", "test acc with TTA", "other figures of the seed"], rows, "lrrl")


def _delta(a: Optional[float], b: Optional[float]) -> str:
    return "-" if a is None or b is None else f"{a - b:+.2f}"


def _one(records: List[dict], what: str, where: Callable[[dict], bool]) -> dict:
    """The first of ``records`` that ``where`` accepts; a ReportError naming ``what`` if there is none."""
    for r in records:
        if where(r):
            return r
    raise ReportError(f"{RESULTS_DIR}/speedrun.json has no {what}")


def table_speedrun_ingredients(R: Results) -> str:
    recipe = R.group("speedrun", "speedrun_1100")
    base_agg = _one(recipe, "aggregate record of speedrun_1100", lambda r: r.get("aggregate"))
    base = _one(recipe, "seed-0 run of speedrun_1100", lambda r: r.get("seed") == 0 and not r.get("aggregate"))
    rows = [([base], ["the recipe: whitening stem, softmax gate, activation after the sum, EMA, label smoothing, TTA",
                      "(none)", f"{fmt_value(base['acc_tta_pct'], 2, '%')} ({fmt_value(base['acc_pct'], 2, '%')})",
                      "", fmt_value(base["s_per_step"], 2), fmt_value(base["peak_pct"], 1)])]
    tta, raw = value_stat(base_agg["acc_tta_pct"], 5), value_stat(base_agg["acc_pct"], 5)
    rows.append(([base_agg], ["no test-time augmentation", "(the same runs, without TTA)",
                              f"{base_agg['n']} seeds: {fmt_stat(raw, 2, '%')} against {fmt_stat(tta, 2, '%')}",
                              f"**{_delta(raw.mean, tta.mean)}** ({base_agg['n']} seeds)", "", ""]))
    for r in R.file("speedrun"):
        if not _is_ablation(r):
            continue
        b = _one(R.group("speedrun", r["baseline"]), f"seed-{r['seed']} run of {r['baseline']}",
                 lambda x: x.get("seed") == r["seed"] and not x.get("aggregate"))
        rows.append(([r], [r.get("what", r["name"]), code(r.get("flags")),
                           f"{fmt_value(r['acc_tta_pct'], 2, '%')} ({fmt_value(r['acc_pct'], 2, '%')})",
                           f"{_delta(r['acc_tta_pct'], b['acc_tta_pct'])} ({_delta(r['acc_pct'], b['acc_pct'])})",
                           fmt_value(r["s_per_step"], 2), fmt_value(r["peak_pct"], 1)]))
    plain, gated = R.group("speedrun", "speedrun_plain")[0], R.group("speedrun", "speedrun2")[0]
    rows.append(([plain, gated, base_agg], [
        "one 3x3 path per block = airbench94 (9.9 epochs, against the gated 9.9-epoch run)", "`--paths 3`",
        f"{fmt_value(plain['acc_tta_pct'], 2, '%')} ({fmt_value(plain['acc_pct'], 2, '%')}) against "
        f"{fmt_value(gated['acc_tta_pct'], 2, '%')} ({fmt_value(gated['acc_pct'], 2, '%')})",
        f"{_delta(plain['acc_tta_pct'], gated['acc_tta_pct'])} ({_delta(plain['acc_pct'], gated['acc_pct'])})",
        f"{fmt_value(plain['s_per_step'], 2)} against {fmt_stat(value_stat(base_agg['s_per_step']), 2)} "
        f"(the {base_agg['n']} gated 6.7-epoch runs)",
        f"{fmt_value(plain['peak_pct'], 1)} against {fmt_stat(value_stat(base_agg['peak_pct']), 1)}"]))
    return provenance_table(["ingredient", "flags", "seed 0: test acc with TTA (without)",
                             "against the recipe, same seed", "s per step", "% of matmul peak"], rows, "llrrrr",
                            command=False)


def table_speedrun_frontier(R: Results) -> str:
    rows = []
    for name in R.names("speedrun", lambda r: not _is_ablation(r)):
        recs = R.group("speedrun", name)
        r0 = recs[0]
        t = stat(recs, "time_s")
        ref = next((r.get("reference") for r in recs if r.get("reference")), None)
        ratio = "-"
        if r0.get("network") == "airbench94":
            ratio = "1.00x"
        elif ref and t:
            rt = stat(R.group("speedrun", ref), "time_s")
            ratio = f"{t.mean / rt.mean:.2f}x ({ref})"
        acc = stat(recs, "acc_tta_pct")
        reached = "-" if acc is None else ("yes" if acc.mean >= 94.0 else "no")
        rows.append((recs, [name, r0.get("network", "-"), fmt_value(r0["epochs"]),
                            fmt_stat(acc, 2, "%", show_n=True), fmt_seconds(t), ratio, reached]))
    return provenance_table(["run", "network", "epochs", "test acc with TTA", "time per run",
                             "time against airbench94 on the same host", "mean ≥ 94.0%"], rows, "llrrrrl",
                            command=False)


MUON_FILE, MUON_REFERENCE = "speedrun_muon", "muon_plain"


def table_speedrun_muon(R: Results) -> str:
    """The airbench94_muon recipe measured in one sitting: the plain reference (one 3x3 path per block, the
    published network) and the gated network, seeds interleaved; per row the speedrun's closing-line figures,
    the time relative to the reference, and the accuracy difference with Welch's t-test."""
    from ..stats import p_clause, welch

    recs = R.data.get(MUON_FILE, [])
    groups = {name: [r for r in recs if r["name"] == name] for name in R.names(MUON_FILE)} if recs else {}
    if not groups:
        return f"No runs recorded yet in `results/{MUON_FILE}.json`."
    ref = groups.get(MUON_REFERENCE)
    ref_time = stat(ref, "time_s").mean if ref else None
    rows = []
    for name, rs in groups.items():
        acc, t = stat(rs, "acc_tta_pct"), stat(rs, "time_s")
        spread = (f"mean {acc.mean:.2f}% +- {acc.std:.2f} over {acc.n} seeds" if acc.n > 1
                  else f"{acc.mean:.2f}% (1 seed)")
        closing = f"{spread}, {t.mean:.1f} s per run"
        ratio = f"{t.mean / ref_time:.2f}x" if ref_time else "-"
        if ref and name != MUON_REFERENCE and len(rs) > 1 and len(ref) > 1:
            c = welch([r["acc_tta_pct"] for r in rs], [r["acc_tta_pct"] for r in ref])
            diff = f"{c.diff:+.2f} ({c.low:+.2f} to {c.high:+.2f}), {p_clause(c.p)}"
        else:
            diff = "-"
        rows.append((rs, [f"`{name}`", _seeds(rs), f"{rs[0]['params']:,}", closing,
                          fmt_stat(stat(rs, "acc_pct"), 2, "%"), ratio, diff]))
    return provenance_table(["run", "seeds", "parameters", "closing line (accuracy with TTA)", "without TTA",
                             f"time (x `{MUON_REFERENCE}`)", "accuracy - reference (95% CI), Welch p"], rows,
                            "lrrlrrl")


def figure_speedrun_frontier(R: Results, path: Path) -> Path:
    fig = _new_figure()
    ax = fig.add_subplot()
    markers = {"Intel Xeon": "o", "AMD EPYC": "s"}
    labelled = set()
    for name in R.names("speedrun", lambda r: not _is_ablation(r)):
        recs = R.group("speedrun", name)
        acc, t = stat(recs, "acc_tta_pct"), stat(recs, "time_s")
        if acc is None or t is None or t.mean is None:
            continue
        host = recs[0]["host"].split(" (")[0]
        net = recs[0].get("network", "gated")
        color = "tab:red" if net == "airbench94" else "tab:blue"
        label = f"{net}, {host}"
        ax.errorbar([t.mean], [acc.mean], xerr=[t.std or 0], yerr=[acc.std or 0], fmt=markers.get(host, "^"),
                    color=color, capsize=3, label=None if label in labelled else label)
        labelled.add(label)
        ax.annotate(f"{fmt_value(recs[0]['epochs'])} ep", (t.mean, acc.mean), textcoords="offset points",
                    xytext=(5, -10), fontsize=7)
    ax.axhline(94.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("time per run (s)")
    ax.set_ylabel("test accuracy with TTA (%)")
    ax.set_title("Fast recipe: accuracy against time per run (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


TABLES = {
    "speedrun_xeon": table_speedrun_xeon,
    "speedrun_epyc": table_speedrun_epyc,
    "speedrun_seeds": table_speedrun_seeds,
    "speedrun_ingredients": table_speedrun_ingredients,
    "speedrun_frontier": table_speedrun_frontier,
    "speedrun_muon": table_speedrun_muon,
}

FIGURES = {
    "speedrun_frontier.png": figure_speedrun_frontier,
}
