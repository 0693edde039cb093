"""Does input gating pay? Train named variants of the original network and recipe at one budget over seeds,
record every run in a results file and print the comparison (Welch's t-test, 95% intervals).

    gatedconv-study --epochs 30 --seeds 0,1,2 --data-dir ../shared/cifar10 --out runs/study
    python scripts/study.py --variants relu,constant --epochs 2 --seeds 0,1 --first-1000     (a quick look)
    gatedconv-study --step-costs     (time every variant's training step side by side; records, trains nothing)
    gatedconv-study --variants plain_deployed --calibrate     (match widths to dyconv's deployed latency; records)

Finished runs are reused (their run directories, or their records in --results), so the same command run
again trains only what is missing. The cost-matched plain network's widths come from --matched-widths, else
from the calibration recorded in --results, else from a calibration run now (training steps of both networks
timed side by side on this host) which is recorded there. Tables and figures: ``gatedconv-report``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gatedconv.cli import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    from gatedconv.study import DEFAULT_VARIANTS, VARIANTS

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma list from: {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30, the original recipe)")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds (default 0,1,2)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (else $CIFAR10_DIR, else ./data)")
    p.add_argument("--out", "--output", dest="out", default="runs/study", help="parent of the run directories")
    p.add_argument("--results", default=None,
                   help="results file the run records are appended to (default results/gating_study.json; with "
                        "--first-1000: OUT/study.json, so a quick look never mixes with the published records)")
    p.add_argument("--matched-widths", default=None, help="five widths of the cost-matched plain network, e.g. "
                   "24,48,96,192,384 (default: the recorded calibration, else calibrate now)")
    p.add_argument("--latency-widths", default=None, help="five widths of plain_deployed, the plain network whose "
                   "deployed latency (batch 1) matches dyconv's (default: the recorded calibration, else calibrate now)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--eval-batch-size", type=int, default=None)
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--compile", default=None, choices=["auto", "on", "off"])
    p.add_argument("--device", default=None)
    p.add_argument("--first-1000", action="store_true", help="train/test on the first 1,000 images (a quick look)")
    p.add_argument("--step-costs", action="store_true",
                   help="time the variants' training steps side by side on this host and record the ratios to the "
                        "ReLU gate's step in --results (the study's cost axis); trains nothing")
    p.add_argument("--calibrate", action="store_true",
                   help="calibrate the cost-matched variants among --variants that have no recorded calibration "
                        "(recorded in --results) and train nothing")
    p.add_argument("--quiet", action="store_true", help="do not print per-epoch lines")
    from gatedconv.launch import add_launcher_arguments
    add_launcher_arguments(p)
    return p


def _ints(text: str, flag: str, n: int | None = None) -> list:
    try:
        vals = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be a comma list of integers, got {text!r}") from None
    if not vals or (n is not None and len(vals) != n):
        raise ValueError(f"{flag} needs {n or 'at least one'} integer(s), got {text!r}")
    return vals


# the cost-matched variants: (flag, the calibration record's kind, the cost matched, batch size, steps per round)
MATCHING = {
    "plain_matched": ("--matched-widths", "calibration", "step", None, 4),
    "plain_deployed": ("--latency-widths", "latency_calibration", "latency", 1, 50),
}


def _matched_widths(args, variants: list, records: list, say) -> dict:
    """The widths of each cost-matched variant asked for: its flag, else the calibration recorded in the results
    file, else a calibration run now (both networks timed side by side on this host), recorded there."""
    from gatedconv.rundir import command_line
    from gatedconv.study import MATCHED_AGAINST, VARIANTS, match_widths, variant_kwargs
    from gatedconv.summary import make_record

    out = {}
    for name in [v for v in variants if v in MATCHING]:
        flag, kind, cost, batch, steps = MATCHING[name]
        given = getattr(args, flag[2:].replace("-", "_"))
        if given:
            out[name] = _ints(given, flag, 5)
            continue
        recorded = [r for r in records if r.get("kind") == kind]
        if recorded:
            out[name] = recorded[-1]["widths"]
            continue
        against = MATCHED_AGAINST[VARIANTS[name].matched]
        say(f"calibrating the cost-matched plain network {name} ({cost} timed side by side with {against}'s)")
        m = match_widths(reference_kwargs=variant_kwargs(against), device=args.device or "auto", print_fn=say, cost=cost,
                         batch_size=batch or args.batch_size or 128, steps=steps,
                         multipliers=(1.25, 1.5, 1.75, 2.0, 2.25) if cost == "step" else (1.5, 2.0, 2.5, 3.0, 3.5))
        rec = make_record(command=command_line(), config={"name": f"{name} calibration"}, final=m, kind=kind)
        rec.update(widths=m["widths"], seed=None)
        records.append(rec)
        out[name] = m["widths"]
    return out


def _record_step_costs(args, variants: list, widths, records: list, say) -> None:
    from gatedconv.rundir import command_line
    from gatedconv.study import step_costs
    from gatedconv.summary import make_record

    say(f"timing the training steps of {', '.join(variants)} side by side (batch {args.batch_size or 128})")
    costs = step_costs(variants, widths, batch_size=args.batch_size or 128, device=args.device or "auto",
                       print_fn=say)
    rec = make_record(command=command_line(), config={"name": "step costs"}, final=costs, kind="step_costs")
    rec.update(seed=None, **costs)
    records.append(rec)
    for name, r in costs["ratio"].items():
        say(f"{name}: {costs['ms_per_step'][name]:.1f} ms per step, {r:.3f}x the {costs['reference']} gate's step")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gatedconv.malloc import keep_freed_memory
    keep_freed_memory()  # big activations reuse heap memory instead of faulting in fresh pages (gatedconv/malloc.py)
    from gatedconv.checkpoint import CheckpointError, atomic_write_text
    from gatedconv.data import DataError
    from gatedconv.summary import dump_results
    from gatedconv.rundir import RunError, command_line, read_json
    from gatedconv.run import RunInterrupted
    from gatedconv.stats import p_clause
    from gatedconv.study import StudyError, comparisons, deployed_comparisons, run_study, study_configs
    from gatedconv.train import NonFiniteLossError

    say = print
    try:
        from gatedconv.launch import launcher_from_args
        launcher = launcher_from_args(args, args.out, "gatedconv-study")
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        default = Path(args.out) / "study.json" if args.first_1000 else Path("results/gating_study.json")
        seeds, path = _ints(args.seeds, "--seeds"), Path(args.results) if args.results else default
        data = read_json(path) or {"about": "gatedconv-study: the gating study (docs/research.md)", "records": []}
        n_before = len(data["records"])
        widths = _matched_widths(args, variants, data["records"], say)
        if args.step_costs:
            _record_step_costs(args, variants, widths, data["records"], say)
        if len(data["records"]) != n_before:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, dump_results(data))
        if args.step_costs or args.calibrate:
            say(f"recorded in {path}; tables and figures: gatedconv-report")
            return 0
        base = {k: getattr(args, k) for k in ("batch_size", "eval_batch_size", "precision", "compile", "device")
                if getattr(args, k) is not None}
        base["first_1000"] = args.first_1000
        cells = study_configs(variants, seeds, args.epochs, args.out, args.data_dir, widths, base)
        records = run_study(cells, path, command_line(), print_fn=say,
                            run_print_fn=(lambda *a, **k: None) if args.quiet else say, launcher=launcher)
    except (RunInterrupted, KeyboardInterrupt) as e:
        print(f"{str(e) or 'interrupted'}; run the same command again to continue", file=sys.stderr)
        return 130
    except (StudyError, RunError, DataError, CheckpointError, NonFiniteLossError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    same = [r for r in records if r.get("epochs") == args.epochs and r.get("first_1000") == args.first_1000
            and r.get("batch_size") == (args.batch_size or 128)]  # only runs of this budget are compared
    for c in comparisons(same) + deployed_comparisons(same):  # at equal training cost, then at deployed cost
        k = c["comparison"]
        say(f"{c['question'] + ' ' if c['question'] else ''}{c['variant']} - {c['against']}: {k.diff:+.2f} points "
            f"(95% CI {k.low:+.2f} to {k.high:+.2f}, {p_clause(k.p)}, n = {k.n_a}/{k.n_b}): {c['verdict']}")
    say(f"records in {path}; tables and figures: gatedconv-report")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
