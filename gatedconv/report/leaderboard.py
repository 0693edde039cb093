"""The leaderboard (seed 0 and the three-seed check), the block ablation and the gates of a trained network: their
tables and the leaderboard and ablation figures."""
from __future__ import annotations

from pathlib import Path

from .core import Results, code, fmt_stat, fmt_value, num, provenance_table, stat, _new_figure, _save, _seeds


def table_leaderboard(R: Results) -> str:
    recs = sorted(R.file("leaderboard_5ep"), key=lambda r: -r["acc_pct"])
    rows = []
    for i, r in enumerate(recs, 1):
        t = f"{num(r['train_s'], 0)} s" if "train_s" in r else f"{num(r['train_min'], 1)} min"
        rows.append(([r], [str(i), r["name"], num(r["params"], 0), fmt_value(r["acc_pct"], 2, "%"),
                           fmt_value(r["top5_pct"], 2, "%"), t, num(r["img_per_s"], 0), r.get("claim", "-")]))
    return provenance_table(["#", "model", "parameters", "top-1 (seed 0)", "top-5", "train time", "img/s",
                             "original claim (its budget)"], rows, "rlrrrrrl")


def table_leaderboard_small3(R: Results) -> str:
    single = {r["name"]: r for r in R.file("leaderboard_5ep")}
    rows = []
    for name in R.names("leaderboard_small3"):
        recs = R.group("leaderboard_small3", name)
        s0 = single.get(name)
        rows.append((recs, [name, fmt_stat(stat(recs, "acc_pct"), 2, "%", show_n=True), _seeds(recs),
                            fmt_value(s0["acc_pct"], 2, "%") if s0 else "-"]))
    return provenance_table(["model", "top-1 after 5 epochs (mean ± sample std)", "seeds", "seed 0 alone"], rows,
                            "lrlr")


def table_ablation(R: Results) -> str:
    rows = []
    for name in R.names("ablation_5ep"):
        recs = R.group("ablation_5ep", name)
        r = recs[0]
        params = num(r["params"], 0)
        if "params_when_measured" in r:
            params += f" ({num(r['params_when_measured'], 0)} when measured)"
        st = stat(recs, "acc_pct")
        rows.append((recs, [f"`{name}`", r.get("what", "-"), params, fmt_stat(st, 2, "%"), str(st.n if st else 0),
                            fmt_stat(stat(recs, "train_s"), 0), r.get("time_note", "")]))
    return provenance_table(["variant", "what changes", "parameters", "top-1 after 5 epochs", "n",
                             "train s / run", "timing note"], rows, "llrrrrl")


def table_gates(R: Results) -> str:
    recs = sorted([r for r in R.file("gates") if r["name"] == "block"], key=lambda r: r["block"])
    rows = [([r], [str(r["block"]), r["map"], " / ".join(num(g, 2) for g in r["mean_gate"]),
                   " / ".join(f"{num(z, 1) if z else '0'}%" for z in r["zero_pct"]), num(r["entropy"], 3)])
            for r in recs]
    table = provenance_table(["block", "map", "mean gate per path", "exactly-zero gates per path",
                              "normalised gate entropy"], rows, "lllll")
    net = R.group("gates", "network")[0]
    return (f"{table}\n\nThe analysed network ({net.get('note', 'its run')}): top-1 "
            f"{fmt_value(net['acc_pct'], 2, '%')} ({code(net['command'])}).")


def table_gates_per_class(R: Results) -> str:
    rows = []
    for r in R.file("gates"):
        if r["name"] == "class":
            rows.append(([r], [str(r["block"]), str(r["path"]), r["cls"], fmt_value(r["zero_pct"], 0, "%"),
                               fmt_value(r["mean_gate"], 2) if "mean_gate" in r else "-"]))
        elif r["name"] == "training":
            rows.append(([r], [str(r["block"]), str(r["path"]), "all, over training",
                               f"~{fmt_value(r['zero_pct_start'], 0, '%')} at the start, "
                               f"{fmt_value(r['zero_pct_end'], 0, '%')} later", "-"]))
    return provenance_table(["block", "path", "class", "exactly-zero share", "mean gate"], rows, "rrlrr")


def _leaderboard_points(R: Results):
    return [(r["name"], r["params"], r["acc_pct"], r.get("train_s", r.get("train_min", 0) * 60))
            for r in R.file("leaderboard_5ep")]


def figure_leaderboard_params(R: Results, path: Path) -> Path:
    fig = _new_figure()
    ax = fig.add_subplot()
    pts = _leaderboard_points(R)
    ax.scatter([p for _, p, _, _ in pts], [a for _, _, a, _ in pts], color="tab:blue", zorder=3)
    for name, p, a, _ in pts:
        ax.annotate(name, (p, a), textcoords="offset points", xytext=(4, 3), fontsize=7)
    by_name = {n: p for n, p, _, _ in pts}
    for name in R.names("leaderboard_small3"):
        st = stat(R.group("leaderboard_small3", name), "acc_pct")
        if name in by_name and st and st.std is not None:
            ax.errorbar([by_name[name]], [st.mean], yerr=[st.std], fmt="_", color="tab:orange", capsize=3,
                        label="mean ± std over 3 seeds" if name == R.names("leaderboard_small3")[0] else None)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("top-1 test accuracy after 5 epochs (%)")
    ax.set_title("5-epoch leaderboard: accuracy against parameters (seed 0)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def figure_leaderboard_time(R: Results, path: Path) -> Path:
    fig = _new_figure()
    ax = fig.add_subplot()
    pts = _leaderboard_points(R)
    ax.scatter([t for *_, t in pts], [a for _, _, a, _ in pts], color="tab:green", zorder=3)
    for name, _, a, t in pts:
        ax.annotate(name, (t, a), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("training time for 5 epochs (s)")
    ax.set_ylabel("top-1 test accuracy after 5 epochs (%)")
    ax.set_title("5-epoch leaderboard: accuracy against training time (seed 0)")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def figure_ablation(R: Results, path: Path) -> Path:
    names = R.names("ablation_5ep")
    stats = [stat(R.group("ablation_5ep", n), "acc_pct") for n in names]
    fig = _new_figure(7.0, 0.45 * len(names) + 1.2)
    ax = fig.add_subplot()
    ys = list(range(len(names)))[::-1]
    colors = ["tab:gray" if n == "constant" else "tab:blue" for n in names]
    ax.barh(ys, [s.mean for s in stats], color=colors)
    spread = [(y, s) for y, s in zip(ys, stats) if s.std is not None]
    if spread:
        ax.errorbar([s.mean for _, s in spread], [y for y, _ in spread], xerr=[s.std for _, s in spread],
                    fmt="none", ecolor="black", capsize=3)
    for y, s in zip(ys, stats):
        ax.text(s.mean + (s.std or 0) + 0.3, y, f"{s.mean:.2f}% (n = {s.n})", va="center", fontsize=8)
    ax.set_yticks(ys, names)
    lo = min(s.mean for s in stats)
    ax.set_xlim(max(0.0, lo - 5), max(s.mean + (s.std or 0) for s in stats) + 4)
    ax.set_xlabel("top-1 test accuracy after 5 epochs, live weights (%)")
    ax.set_title("Block ablation, original recipe (grey: constant gate, no gating)")
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


TABLES = {
    "leaderboard_5ep": table_leaderboard,
    "leaderboard_small3": table_leaderboard_small3,
    "ablation_5ep": table_ablation,
    "gates": table_gates,
    "gates_per_class": table_gates_per_class,
}

FIGURES = {
    "leaderboard_acc_vs_params.png": figure_leaderboard_params,
    "leaderboard_acc_vs_time.png": figure_leaderboard_time,
    "ablation.png": figure_ablation,
}
