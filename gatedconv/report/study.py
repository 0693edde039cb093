"""The gating study (``gatedconv.study``, ``results/gating_study.json``): its table of variants, the side-by-side
step costs, the calibration of the cost-matched network, the comparisons with Welch's t-test, the README's
one-line verdict and the figure of accuracy against cost. The variants and their comparisons come from
``gatedconv.study``, imported inside the functions that use them."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Dict, List

from ..stats import format_p, p_clause
from .core import Results, code, fmt_stat, md_table, num, provenance_table, stat, _new_figure, _save, _seeds


STUDY_FILE, STUDY_EPOCHS = "gating_study", 30
STUDY_COMMAND = "gatedconv-study --epochs 30 --seeds 0,1,2 --data-dir ../shared/cifar10 --out runs/study"


def _study_runs(R: Results) -> List[dict]:
    return [r for r in R.data.get(STUDY_FILE, []) if r.get("kind") == "train" and r.get("epochs") == STUDY_EPOCHS
            and not r.get("first_1000")]


def _step_cost_records(R: Results) -> List[dict]:
    return [r for r in R.data.get(STUDY_FILE, []) if r.get("kind") == "step_costs"]


def _step_costs(R: Results) -> Dict[str, float]:
    """Each variant's training step relative to the ReLU gate's: the mean over the recorded side-by-side sittings
    (``gatedconv-study --step-costs``) of their median per-round ratios."""
    ratios: Dict[str, List[float]] = {}
    for r in _step_cost_records(R):
        for name, x in r["ratio"].items():
            ratios.setdefault(name, []).append(x)
    return {name: statistics.mean(xs) for name, xs in ratios.items()}


def _deployed(R: Results) -> dict:
    """The newest ``benchmarks/bench_infer.py`` record (the deployed forms' costs), or an empty dict."""
    recs = R.data.get("bench_infer", [])
    return recs[-1] if recs else {}


def _deployed_cells(infer: dict, name: str) -> tuple:
    """Deployed parameters, inference MFLOPs per image and fp32 latency at batch 1 and 128 (x plain's)."""
    def get(key: str, fmt: str) -> str:
        return format(infer[key], fmt) if key in infer else "-"
    return (get(f"{name}_params", ","), get(f"{name}_mflops", ".1f"), get(f"{name}_fp32_b1_x", ".2f"),
            get(f"{name}_fp32_b128_x", ".2f"))


def table_study(R: Results) -> str:
    from ..study import VARIANTS, by_variant

    runs = _study_runs(R)
    if not runs:
        return f"No study runs recorded yet: {code(STUDY_COMMAND)} records them in `results/{STUDY_FILE}.json`."
    costs, infer, rows = _step_costs(R), _deployed(R), []
    for name, recs in by_variant(runs).items():
        flops = stat(recs, "train_flops")
        cost = f"{costs[name]:.2f}" if name in costs else "-"
        params, mflops, b1, b128 = _deployed_cells(infer, name)
        rows.append((recs, (f"`{name}`", VARIANTS[name].description, _seeds(recs),
                            f"{recs[0]['params']:,} / {params}", num(flops.mean / 1e15, 3), cost,
                            fmt_stat(stat(recs, "s_per_epoch"), 1), mflops, b1, b128,
                            fmt_stat(stat(recs, "acc_pct"), 2, "%"))))
    table = provenance_table(["variant", "what", "seeds", "parameters (trained / deployed)", "training PFLOPs",
                              "step cost (x relu)", "s per epoch", "inference MFLOPs", "deployed latency b1 (x plain)",
                              "b128 (x plain)", "test accuracy (mean ± std)"], rows, "llrrrrrrrrr")
    if infer:
        table += (f"\n\nDeployed costs (`gatedconv.reparameterize`, fp32, eval, channels-last) from "
                  f"{code(infer['command'])} on {infer['host']}, {infer['date']}.")
    return table


def table_study_costs(R: Results) -> str:
    """The side-by-side step timings behind the study's cost axis, one row per sitting."""
    recs = _step_cost_records(R)
    if not recs:
        return f"No step costs recorded yet: {code('gatedconv-study --step-costs')} measures them."
    names = list(dict.fromkeys(n for r in recs for n in r["ratio"]))
    rows = [([r], [f"{r['ms_per_step'][n]:.1f} ms ({r['ratio'][n]:.3f}x)" if n in r["ratio"] else "-"
                   for n in names] + [f"{r['rounds']} x {r['steps']}"]) for r in recs]
    return provenance_table([f"`{n}`" for n in names] + ["rounds x steps"], rows, "r" * (len(names) + 1))


def table_study_comparisons(R: Results) -> str:
    from ..study import comparisons

    comps = comparisons(_study_runs(R))
    if not comps:
        return "No comparison yet: each side needs at least two recorded runs."
    return md_table(_COMPARISON_HEADER, [_comparison_cells(c) for c in comps], "lrrrrl")


_COMPARISON_HEADER = ["comparison", "difference (points)", "95% interval", "Welch p", "runs", "verdict"]


def _comparison_cells(c: dict) -> tuple:
    """One comparison (``gatedconv.study.comparisons`` / ``deployed_comparisons``) as table cells."""
    k = c["comparison"]
    return (f"`{c['variant']}` - `{c['against']}`", f"{k.diff:+.2f}", f"{k.low:+.2f} to {k.high:+.2f}",
            format_p(k.p), f"{k.n_a} / {k.n_b}", c["verdict"])


def table_study_calibration(R: Results) -> str:
    cal = [r for r in R.data.get(STUDY_FILE, []) if r.get("kind") == "calibration"]
    lat = [r for r in R.data.get(STUDY_FILE, []) if r.get("kind") == "latency_calibration"]
    if not cal and not lat:
        return "Not calibrated yet."
    out = []
    if cal:
        c = cal[-1]
        out.append(f"Cost-matched plain widths {tuple(c['widths'])} (x{c['multiplier']:.2f} the default widths): one "
                   f"training step of it took {c['ratio']:.2f}x the ReLU-gated network's step, timed side by side in "
                   f"one process (interleaved rounds, median of {c['rounds']} per-round ratios, batch "
                   f"{c['batch_size']}, bf16 autocast where native, channels_last, compiled gated sum), on "
                   f"{c['host']}, {c['date']}: {code(c['command'])}.")
    if lat:
        c = lat[-1]
        out.append(f"Latency-matched plain widths (`plain_deployed`) {tuple(c['widths'])} (x{c['multiplier']:.2f}): "
                   f"its deployed forward pass took {c['ratio']:.2f}x the deployed dyconv network's, timed side by "
                   f"side in one process (interleaved rounds, median of {c['rounds']} per-round ratios, batch "
                   f"{c['batch_size']}, fp32, channels_last), on {c['host']}, {c['date']}: {code(c['command'])}.")
    return "\n\n".join(out)


def table_study_deployed(R: Results) -> str:
    """The kernel-mixing comparisons at equal deployed cost, each with the question it answers."""
    from ..study import deployed_comparisons

    comps = deployed_comparisons(_study_runs(R))
    if not comps:
        return ("No comparison at deployed cost yet: each side needs at least two recorded runs "
                f"({code('gatedconv-study --variants dyconv,condconv,fixed_mix,plain_deployed,plain')} ...).")
    return md_table(["question"] + _COMPARISON_HEADER, [(c["question"], *_comparison_cells(c)) for c in comps],
                    "llrrrrl")


def study_verdict(R: Results) -> str:
    """The README's answer: at equal training cost, then at equal deployed cost."""
    from ..study import TRAINING_VARIANTS, comparisons

    runs = _study_runs(R)
    n = {r["variant"] for r in runs}
    comps = {(c["variant"], c["against"]): c for c in comparisons(runs)}
    parts = []
    for (v, against), label in ((("constant", "relu"), "the ReLU gate against no gating (constant gate)"),
                                (("relu", "plain_matched"), "the ReLU-gated network against a plain one of equal cost")):
        c, sign = comps.get((v, against)), 1
        if c is None:  # the comparison may be stored the other way round
            c, sign = comps.get((against, v)), -1
        if c is None:
            continue
        k = c["comparison"]
        sign = -sign if v == "constant" else sign  # read as "gating minus its control"
        d, lo, hi = sign * k.diff, min(sign * k.low, sign * k.high), max(sign * k.low, sign * k.high)
        word = ("no measurable difference" if k.p >= 0.05 else "gating helps" if d > 0 else "gating hurts")
        parts.append(f"{label}: {d:+.2f} points (95% CI {lo:+.2f} to {hi:+.2f}, {p_clause(k.p)}; {word})")
    if not parts:
        return (f"No {STUDY_EPOCHS}-epoch comparison yet: {len(runs)} run(s) of {len(n)} variant(s) recorded, and a "
                "comparison needs two runs on each side; see [docs/research.md](docs/research.md#does-gating-pay).")
    seeds = min(len([r for r in runs if r["variant"] == v]) for v in n if v in TRAINING_VARIANTS)
    words = " ".join(parts)
    helps, hurts = "gating helps" in words, "gating hurts" in words
    lead = ("Input gating helps in one comparison and hurts in the other" if helps and hurts else
            "Input gating helps" if helps else "Input gating hurts" if hurts else "No measurable gain from input gating")
    return (f"**{lead}** at {STUDY_EPOCHS} epochs of the original recipe (at least {seeds} seeds per variant): "
            + "; ".join(parts) + ". " + _deployed_verdict(runs)
            + " Details: [docs/research.md](docs/research.md#does-gating-pay).")


def _deployed_verdict(runs: List[dict]) -> str:
    """The answer at equal deployed cost (kernel mixing), one sentence."""
    from ..study import deployed_comparisons

    comps = deployed_comparisons(runs)
    if not comps:
        mixing = ("dyconv", "condconv", "fixed_mix", "plain_deployed")
        have = [r for r in runs if r["variant"] in mixing]
        done = (f"{len(have)} run(s) of " + ", ".join(f"`{v}`" for v in mixing if any(r["variant"] == v for r in have))
                + " recorded so far" if have else "no run of " + ", ".join(f"`{v}`" for v in mixing) + " recorded yet")
        return ("At deployed cost (K = 4 kernels mixed per sample, then one convolution) there is no answer "
                f"yet: {done}, and a comparison needs two runs on each side.")
    lead, parts = "", []
    for c in comps:
        k = c["comparison"]
        word = ("no measurable difference" if k.p >= 0.05 else "it helps" if k.diff > 0 else "it hurts")
        text = (f"`{c['variant']}` - `{c['against']}` {k.diff:+.2f} points (95% CI {k.low:+.2f} to {k.high:+.2f}, "
                f"{p_clause(k.p)}, {k.n_a} / {k.n_b} runs; {word})")
        if (c["variant"], c["against"]) == ("dyconv", "plain_deployed"):  # the question the field asks: lead with it
            verb = ("makes no measurable difference against" if k.p >= 0.05 else "beats" if k.diff > 0
                    else "loses to")
            lead = (f"**At equal deployed latency (batch 1), Dynamic Convolution {verb} a plain network**: "
                    f"{text}. ")
        else:
            parts.append(f"{c['question']} {text}")
    where = "K = 4 kernels mixed per sample, then one convolution"
    rest = ((f"The other questions at deployed cost ({where}): " if lead else f"At deployed cost ({where}): ")
            + "; ".join(parts) + "." if parts else "")
    return (lead + rest).strip()


def figure_study(R: Results, path: Path) -> Path:
    from ..study import by_variant

    fig = _new_figure(9.0, 4.0)
    axes = fig.subplots(1, 2, sharey=True)
    costs = _step_costs(R)
    for i, (name, recs) in enumerate(by_variant(_study_runs(R)).items()):
        acc, f, color = stat(recs, "acc_pct"), stat(recs, "train_flops"), f"C{i}"
        # training time as the side-by-side step cost (the runs' own seconds also carry whatever else ran)
        if name in costs:
            axes[0].errorbar([costs[name]], [acc.mean], yerr=[acc.std or 0], fmt="o", capsize=3, color=color)
        axes[1].errorbar([f.mean / 1e15], [acc.mean], yerr=[acc.std or 0], fmt="o", capsize=3, color=color,
                         label=f"{name} (n = {acc.n})")
    axes[0].set_xlabel("training time per step (x the ReLU gate's, timed side by side)")
    axes[1].set_xlabel("training FLOPs per run (PFLOP)")
    axes[0].set_ylabel(f"test accuracy after {STUDY_EPOCHS} epochs (%)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    if any(ax.has_data() for ax in axes):
        axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Does gating pay? Mean ± std over seeds", fontsize=10)
    return _save(fig, path)


TABLES = {
    "study": table_study,
    "study_comparisons": table_study_comparisons,
    "study_calibration": table_study_calibration,
    "study_costs": table_study_costs,
    "study_verdict": study_verdict,
    "study_deployed": table_study_deployed,
}

FIGURES = {
    "gating_study.png": figure_study,
}
