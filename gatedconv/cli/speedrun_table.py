"""Summarise finished speedrun runs (``gatedconv-speedrun``) as a markdown table read from their ``final.json`` /
``config.json``.

    gatedconv-speedrun-table runs/speedrun_1100 runs/abl_relu runs/abl_no_ema --baseline runs/speedrun_1100
    (the same: python scripts/speedrun_table.py ...)

Each argument is a speedrun ``--out`` folder (its ``seed<S>/`` directories are read) or one seed directory.
A row per folder: what its config changes against the baseline's, the seeds, test accuracy with TTA and
without (mean +- std over the seeds), the difference to the baseline on the *same* seeds (so a one-seed
ablation is compared with the baseline's run of that seed, not with its mean), seconds per run and per
training step, the training FLOP/s as a share of the square-matmul peak (the fastest dtype) measured in the same process (the speed
figure that compares across days on a host whose speed moves), and the time to the run's target accuracy. It
only reads JSON (a few seconds, mostly importing the package), so it can run beside a timed job.

``--figure PATH`` also draws the time-to-accuracy figure of the first folder's seeds: a run split across
several calls with ``--first-seed`` (each ``gatedconv-speedrun`` call drew only its own seeds) gets its one
figure here.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from gatedconv.cli import OneLineParser


def load_runs(path: Path) -> dict:
    """seed -> (final, config) for one ``--out`` folder or one seed directory."""
    dirs = [path] if (path / "final.json").is_file() else sorted(path.glob("seed*/"))
    runs = {}
    for d in dirs:
        if not (d / "final.json").is_file():
            continue  # an unfinished seed: nothing to report yet
        final = json.loads((d / "final.json").read_text())
        cfg_file = d / "config.json"
        config = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        runs[int(final["seed"])] = (final, config)
    if not runs:
        raise ValueError(f"{path}: no finished run (no final.json in it or in its seed*/ folders)")
    return runs


def _flat(config: dict) -> dict:
    """The knobs a row can differ in: the speedrun recipe plus the model keywords."""
    flat = {k: v for k, v in config.get("speedrun", {}).items() if k != "model_kwargs"}
    flat.update({f"model.{k}": v for k, v in config.get("model_kwargs", {}).items()})
    return flat


def changes(config: dict, base: dict) -> str:
    a, b = _flat(config), _flat(base)
    diff = [f"{k}={a.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(diff) if diff else "(baseline)"


def _pm(values: list, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def row(name: str, runs: dict, base: dict | None) -> list:
    seeds = sorted(runs)
    finals = [runs[s][0] for s in seeds]
    cells = [name] + ([changes(runs[seeds[0]][1], base[min(base)][1])] if base else [])
    cells.append(",".join(map(str, seeds)))
    cells.append(_pm([f["acc_tta"] for f in finals], 100))
    cells.append(_pm([f["acc"] for f in finals], 100))
    if base:
        shared = [s for s in seeds if s in base]
        if shared:
            d_tta = [runs[s][0]["acc_tta"] - base[s][0]["acc_tta"] for s in shared]
            d_raw = [runs[s][0]["acc"] - base[s][0]["acc"] for s in shared]
            cells.append(f"{statistics.mean(d_tta) * 100:+.2f} ({statistics.mean(d_raw) * 100:+.2f})")
        else:
            cells.append("no shared seed")
    cells.append(_pm([f["seconds"] for f in finals], fmt="{:.0f}"))
    cells.append(_pm([f["train_seconds"] / f["steps"] for f in finals]))
    # the host's speed moves between days (~2x in matmul peak): the share of the peak measured in the same
    # process is the speed figure that compares across days
    eff = [f.get("efficiency") for f in finals]
    cells.append(_pm(eff, 100, "{:.1f}") if all(e is not None for e in eff) else "not measured")
    ttt = [f.get("time_to_target") for f in finals]
    cells.append(_pm(ttt, fmt="{:.0f}") if all(t is not None for t in ttt) else "not reached")
    return cells


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="speedrun --out folders or seed directories")
    p.add_argument("--baseline", default=None, help="folder the others are compared with (same seeds)")
    p.add_argument("--figure", default=None, metavar="PATH",
                   help="also draw the time-to-accuracy figure of the first folder's seeds to PATH (.png)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        base = load_runs(Path(args.baseline)) if args.baseline else None
        runs = [load_runs(Path(r)) for r in args.runs]
        rows = [row(Path(r).name, rs, base) for r, rs in zip(args.runs, runs)]
        if args.figure:
            from gatedconv.speedrun import plot_time_to_accuracy

            finals = [runs[0][s][0] for s in sorted(runs[0])]
            fig = plot_time_to_accuracy(finals, args.figure, finals[0]["target_acc"])
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    head = ["run"] + (["changed against the baseline"] if base else []) + ["seeds", "test acc % with TTA", "without TTA"]
    head += (["vs baseline, same seeds: with TTA (without)"] if base else [])
    head += ["s per run", "s per step", "% of matmul peak", "s to target"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if args.figure:
        print(f"time-to-accuracy figure: {fig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
