"""Ablation grid over block variants of the "gatedconv" network: every variant x seed is one ordinary run
(``gatedconv.run.run_training``) in ``OUT/<variant>/seed<S>``; then a markdown table (variant, parameters,
top-1 mean +- std over seeds, train seconds) and a bar figure.

    gatedconv-ablate --epochs 30 --seeds 0,1,2 --data-dir ../shared/cifar10 --out runs/ablate
    gatedconv-ablate --variants relu,constant,softmax --epochs 10 --validation
    (the same from a checkout: python scripts/ablate.py ...)

Every variant is a set of ``model_kwargs`` on top of the package defaults (and ``--base-kwargs``); the
package default gate bias is 1.0 (gates start open), the original network used PyTorch's default init
(``init_none``). Variants that resolve to the same network (``relu``, ``paths3`` and ``init_open`` do) are
trained once and share their runs. Finished runs (``final.json``) are reused, interrupted ones resumed, so
the command can simply be run again after a stop. On a cluster, ``--launcher submitit`` (with ``--partition``,
``--gpus-per-node``, ...) submits the missing runs as one Slurm job array, waits for them, then tabulates here
(docs/usage.md, "Running a grid on a cluster").
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

from gatedconv.cli import OneLineParser

# name -> (model_kwargs, description)
VARIANTS = {
    "relu": ({}, "ReLU gate (original gate; package init: gate bias 1.0)"),
    "softmax": ({"gate": "softmax"}, "softmax gate over paths"),
    "sigmoid": ({"gate": "sigmoid"}, "sigmoid gate"),
    "constant": ({"gate": "constant"}, "no gating: every path 1/P (control)"),
    "after_sum": ({"activation": "after_sum"}, "ReLU after the gated sum (CondConv-style)"),
    "paths1": ({"kernel_sizes": [3]}, "1 path, 3x3"),
    "paths2": ({"kernel_sizes": [3, 3]}, "2 paths, 3x3"),
    "paths3": ({"kernel_sizes": [3, 3, 3]}, "3 paths, 3x3 (original)"),
    "paths4": ({"kernel_sizes": [3, 3, 3, 3]}, "4 paths, 3x3"),
    "mixed135": ({"kernel_sizes": [1, 3, 5]}, "3 paths, kernels 1/3/5"),
    "init_none": ({"gate_bias_init": None}, "gate bias: PyTorch default init (original)"),
    "init_open": ({"gate_bias_init": 1.0}, "gate bias 1.0 (package default: gates start open)"),
}


class AblationError(ValueError):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="all", help=f"comma list from: {', '.join(VARIANTS)} (default all)")
    p.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30, the original recipe)")
    p.add_argument("--seeds", default="0", help="comma list of seeds (default 0)")
    p.add_argument("--control-seeds", default="",
                   help="extra comma list of seeds for the control pair only (relu and constant, and any variant "
                        "that is the same network), so the no-gating comparison gets more seeds than the grid")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (else $CIFAR10_DIR, else ./data)")
    p.add_argument("--out", default="runs/ablate", help="parent directory of the run directories")
    p.add_argument("--table", default=None, help="markdown table path (default OUT/ablation.md)")
    p.add_argument("--figure", default=None, help="bar figure path (default OUT/ablation.png)")
    p.add_argument("--base-kwargs", default="{}", help='JSON model kwargs under every variant, e.g. \'{"widths": [8,8,8,8,8]}\'')
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--eval-batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--compile", default=None, choices=["auto", "on", "off"])
    p.add_argument("--device", default=None)
    p.add_argument("--ema-decay", type=float, default=None,
                   help="weight average evaluated (default: the harness default; 0 = the live weights, as the "
                        "original recipe evaluated)")
    p.add_argument("--validation", action="store_true", help="evaluate on 5,000 held-out training images")
    p.add_argument("--first-1000", action="store_true", help="train/test on the first 1,000 images only")
    p.add_argument("--quiet", action="store_true", help="do not print per-epoch lines")
    from gatedconv.launch import add_launcher_arguments
    add_launcher_arguments(p)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _parse(args):
    from gatedconv.models import GatedNetConfig, create_model

    names = list(VARIANTS) if args.variants.strip() in ("", "all") else [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise AblationError(f"unknown variant(s) {', '.join(unknown)}; choose from: {', '.join(VARIANTS)}")
    names = list(dict.fromkeys(names))
    try:
        seeds = list(dict.fromkeys(int(s) for s in args.seeds.split(",") if s.strip()))
    except ValueError:
        raise AblationError(f"--seeds must be a comma list of integers, got {args.seeds!r}") from None
    if not seeds:
        raise AblationError("--seeds names no seed")
    try:
        control = [int(s) for s in args.control_seeds.split(",") if s.strip()]
    except ValueError:
        raise AblationError(f"--control-seeds must be a comma list of integers, got {args.control_seeds!r}") from None
    control = [s for s in dict.fromkeys(control) if s not in seeds]
    try:
        base = json.loads(args.base_kwargs)
        if not isinstance(base, dict):
            raise ValueError
    except ValueError:
        raise AblationError(f"--base-kwargs must be a JSON object, got {args.base_kwargs!r}") from None
    plan = {}  # variant -> (model_kwargs, canonical key)
    for v in names:
        kw = {**base, **VARIANTS[v][0]}
        try:
            canon = json.dumps(asdict(GatedNetConfig(**kw)), sort_keys=True)
            create_model("gatedconv", **kw)  # fail now, not hours into the grid
        except (TypeError, ValueError) as e:
            raise AblationError(f"variant {v}: bad model kwargs {kw} ({e})") from None
        plan[v] = (kw, canon)
    return names, seeds, control, plan


def _run_config(args, kw: dict, seed: int, out: Path):
    from gatedconv.run import RunConfig

    extra = {k: getattr(args, k) for k in ("batch_size", "eval_batch_size", "lr", "precision", "compile", "device",
                                           "ema_decay")
             if getattr(args, k) is not None}
    return RunConfig(model="gatedconv", epochs=args.epochs, seed=seed, data_dir=args.data_dir, out=str(out),
                     model_kwargs=kw, validation=args.validation, first_1000=args.first_1000,
                     **extra)


def _train_or_reuse(cfg, print_fn, launcher=None) -> dict | None:
    """Return {"test_acc", "train_seconds", "num_params"} of the run in cfg.out, training or resuming it through
    ``launcher`` (default: here); None when the launcher's job for it failed."""
    from gatedconv.grid import train_or_reuse
    from gatedconv.launch import LocalLauncher
    from gatedconv.rundir import read_json

    out = (launcher or LocalLauncher()).run(cfg, train_or_reuse, print_fn)
    if out is None:
        return None
    final, config = read_json(out / "final.json"), read_json(out / "config.json")
    return {"test_acc": final["test_acc"], "train_seconds": final.get("train_seconds"),
            "num_params": config["num_params"], "eval_split": config.get("eval_split", "")}


def write_table(path: Path, rows: list, header: str) -> None:
    lines = [header, "",
             "| variant | model_kwargs | parameters | top-1 (mean ± std) | seeds | train s / run |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        std = f" ± {100 * r['acc_std']:.2f}" if r["acc_std"] is not None else ""
        note = f" (= {r['same_as']})" if r.get("same_as") else ""
        secs = "-" if r["seconds_mean"] is None else format(r["seconds_mean"], ".0f" if r["seconds_mean"] >= 10 else ".1f")
        lines.append(f"| {r['variant']}{note} | `{json.dumps(r['kwargs'])}` | {r['num_params']:,} | "
                     f"{100 * r['acc_mean']:.2f}{std} % | {len(r['accs'])} | {secs} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def plot_bars(path: Path, rows: list, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 0.38 * len(rows) + 1.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ys = list(range(len(rows)))[::-1]
    means = [100 * r["acc_mean"] for r in rows]
    errs = [100 * (r["acc_std"] or 0.0) for r in rows]
    colours = ["0.55" if r["variant"] == "constant" else "C0" for r in rows]
    ax.barh(ys, means, xerr=errs, color=colours, capsize=3)
    for y, m, e in zip(ys, means, errs):
        ax.text(m + e, y, f" {m:.2f}", va="center", fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels([r["variant"] for r in rows], fontsize=8)
    lo = min(means) - max(errs + [0]) - 2
    ax.set_xlim(max(0, lo), min(100, max(means) + max(errs + [0]) + 6))
    ax.set_xlabel("top-1 accuracy (%), mean ± std over seeds")
    ax.set_title("\n".join(textwrap.wrap(title, 95)), fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gatedconv.malloc import keep_freed_memory
    keep_freed_memory()  # big activations reuse heap memory instead of faulting in fresh pages (gatedconv/malloc.py)
    from gatedconv.checkpoint import CheckpointError
    from gatedconv.data import DataError
    from gatedconv.run import RunError, RunInterrupted
    from gatedconv.train import NonFiniteLossError

    print_fn = (lambda *a, **k: None) if args.quiet else print
    try:
        from gatedconv.grid import check_reusable, train_or_reuse
        from gatedconv.launch import launcher_from_args
        launcher = launcher_from_args(args, args.out, "gatedconv-ablate")
        if args.epochs < 1:
            raise AblationError(f"--epochs must be a positive integer, got {args.epochs}")
        names, seeds, control, plan = _parse(args)
        out = Path(args.out)
        owner = {}  # canonical config -> first variant with it
        for v in names:
            owner.setdefault(plan[v][1], v)
        results = {}  # owner variant -> list of per-seed results
        todo = [v for v in names if owner[plan[v][1]] == v]
        control_owners = {owner[plan[v][1]] for v in ("relu", "constant") if v in plan}
        print(f"ablation: {len(todo)} distinct variant(s) x {len(seeds)} seed(s)"
              + (f" (+ seeds {','.join(map(str, control))} for {', '.join(sorted(control_owners))})" if control else "")
              + f", {args.epochs} epoch(s) each, under {out}")
        cells = [(v, _run_config(args, plan[v][0], s, out / v / f"seed{s}"))
                 for v in todo for s in seeds + (control if v in control_owners else [])]
        launcher.launch(cells, train_or_reuse, print, check=check_reusable)
        for v, cfg in cells:
            results.setdefault(v, [])
            print(f"--- {v} seed {cfg.seed}: model_kwargs {json.dumps(plan[v][0])} -> {cfg.out}")
            r = _train_or_reuse(cfg, print_fn, launcher)
            if r is not None:
                results[v].append(r)
        launcher.finish()
    except RunInterrupted as e:
        print(str(e) + " (run the same command again to continue)", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except (AblationError, RunError, DataError, CheckpointError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    rows = []
    for v in names:
        own = owner[plan[v][1]]
        rs = results[own]
        accs = [r["test_acc"] for r in rs]
        secs = [r["train_seconds"] for r in rs if r["train_seconds"] is not None]
        rows.append({"variant": v, "same_as": own if own != v else None, "kwargs": VARIANTS[v][0],
                     "num_params": rs[0]["num_params"], "accs": accs, "acc_mean": statistics.fmean(accs),
                     "acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
                     "seconds_mean": statistics.fmean(secs) if secs else None,
                     "seeds": seeds + (control if own in control_owners else [])})
    split = next(iter(results.values()))[0]["eval_split"]
    overrides = [f"{k}={getattr(args, k)}" for k in ("batch_size", "eval_batch_size", "lr", "precision", "compile", "device")
                 if getattr(args, k) is not None]
    budget = (f"{args.epochs} epoch(s) per run, seeds {','.join(map(str, seeds))}"
              + (f" (control pair also {','.join(map(str, control))})" if control else "") + ", "
              f"evaluated on the {split}" + (" (first 1,000 images)" if args.first_1000 else "")
              + (f", base model kwargs {args.base_kwargs}" if json.loads(args.base_kwargs) else "")
              + (f", overrides {', '.join(overrides)}" if overrides else ""))
    table = Path(args.table) if args.table else out / "ablation.md"
    try:
        write_table(table, rows, f"## Block ablation\n\nBudget: {budget}. Everything else: the `scripts/trainf.py` "
                                 "defaults (see each run's config.json). `model_kwargs` are on top of the package "
                                 "defaults and the base kwargs. Std is over seeds (sample std; blank for one seed).")
        (out / "ablation.json").write_text(json.dumps({"budget": budget, "rows": rows}, indent=1) + "\n")
        figure = Path(args.figure) if args.figure else out / "ablation.png"
        plot_bars(figure, rows, budget)
    except OSError as e:
        print(f"error: cannot write output ({e.strerror or e}: {getattr(e, 'filename', '')})", file=sys.stderr)
        return 1
    print(table.read_text())
    print(f"wrote {table}, {out / 'ablation.json'}, {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
