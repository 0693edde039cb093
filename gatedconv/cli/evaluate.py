"""Evaluate a trained run independently: ``gatedconv.load_model(RUN_DIR)`` on the official 10,000-image test
set, fed raw [0, 1] images (the model carries its own normalisation), in fp32.

    gatedconv-evaluate runs/gatedconv --data-dir ../shared/cifar10
    gatedconv-evaluate runs/gatedconv --data-dir ../shared/cifar10 --deploy     (its deployed form)
    python scripts/evaluate.py runs/gatedconv --data-dir ../shared/cifar10     (the same)

Prints top-1/top-5 accuracy and, when the run directory has metrics.csv, the test accuracy the run reported.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from gatedconv.cli import OneLineParser

    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=500, help="keep 500 to reproduce the run's own report")
    p.add_argument("--deploy", action="store_true",
                   help="evaluate the deployed form (gatedconv.reparameterize: gated blocks fused, BatchNorms folded)")
    p.add_argument("--output", default=None,
                   help="directory for summary.json: the figures as a record for gatedconv-report collect")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import gatedconv
    from gatedconv.checkpoint import CheckpointError
    from gatedconv.data import DataError, load_cifar10
    from gatedconv.deploy import DeployError

    try:
        model = gatedconv.load_model(args.run, deploy=args.deploy)
        data = load_cifar10(args.data_dir)
    except (CheckpointError, DataError, DeployError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from gatedconv.train import evaluate_images
    res = evaluate_images(model, data.test_x, data.test_y, batch_size=args.batch_size)
    n = len(data.test_y)
    form = " (deployed)" if args.deploy else ""
    print(f"{args.run}{form}: test top-1 {res['top1']:.4f} ({round(res['top1'] * n)}/{n}), top-5 {res['top5']:.4f}")
    if args.output:
        import shlex

        from gatedconv.summary import make_record, write_summary
        figures = {"run": str(args.run), "deployed": bool(args.deploy), "test_images": n,
                   "correct": round(res["top1"] * n), "acc_pct": round(100 * res["top1"], 2),
                   "top5_pct": round(100 * res["top5"], 2)}
        command = shlex.join(["gatedconv-evaluate", *(sys.argv[1:] if argv is None else argv)])
        rec = make_record(command=command, config={"name": "evaluate"}, final=figures, kind="evaluate")
        print(f"figures written to {write_summary(args.output, rec)}")
    final = Path(args.run) / "final.json"
    if final.exists():
        import json
        f = json.loads(final.read_text())
        if "test_acc_fp32" in f:
            print(f"the run reported test acc {f['test_acc_fp32']:.4f} (fp32, same evaluation)")
    metrics = Path(args.run) / "metrics.csv"
    if metrics.exists():
        rows = list(csv.DictReader(open(metrics)))
        if rows and rows[-1].get("test_acc"):
            print(f"its last epoch reported test acc {float(rows[-1]['test_acc']):.4f} (evaluated in the training "
                  f"precision, e.g. bf16 autocast)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
