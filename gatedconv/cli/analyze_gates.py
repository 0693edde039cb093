"""What do the gates learn? Record every gated block's gates of a trained run over the CIFAR-10 test set,
write a JSON summary (fields: see ``gatedconv/analysis.py``), figures, and print a short table.

    gatedconv-analyze-gates runs/main_seed0 --data-dir ../shared/cifar10
    python scripts/analyze_gates.py runs/main_seed0 --data-dir ../shared/cifar10     (the same)

Writes ``RUN_DIR/gates.json`` (or ``--json``) and ``<out-dir>/<run name>_{hist,class_heatmap,zero_fraction}.png``
(default ``RUN_DIR/gates/``); with per-epoch gate statistics (``--epoch-stats FILE``, else ``RUN_DIR/gate_stats.json``
if present: a JSON list of ``gatedconv.analysis.gate_epoch_stats`` results) also ``<run name>_evolution.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gatedconv.cli import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds checkpoint.pt)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (else $CIFAR10_DIR, else ./data)")
    p.add_argument("--out-dir", default=None, help="where the figures go (default RUN_DIR/gates)")
    p.add_argument("--json", default=None, help="where the JSON summary goes (default RUN_DIR/gates.json)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--limit", type=int, default=None, help="analyse only the first N test images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--off-share", type=float, default=0.01,
                   help="a path counts as off when its share of the gate sum is below this (default 0.01)")
    p.add_argument("--epoch-stats", default=None,
                   help="JSON list of per-epoch gate_epoch_stats to plot (default RUN_DIR/gate_stats.json if present)")
    p.add_argument("--no-figures", dest="figures", action="store_false")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 1

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():  # checked before importing torch: bad input fails fast
        return fail(f"run directory {run_dir} does not exist" if not run_dir.exists() else f"{run_dir} is not a directory")

    import gatedconv
    from gatedconv import analysis
    from gatedconv.checkpoint import CheckpointError, atomic_write_bytes
    from gatedconv.data import CLASSES, DataError, load_cifar10, resolve_data_dir
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        return fail("--batch-size and --limit must be positive integers")
    if not 0 <= args.off_share < 1:
        return fail(f"--off-share must be in [0, 1), got {args.off_share}")
    epoch_stats = None
    stats_file = args.epoch_stats or (run_dir / "gate_stats.json" if (run_dir / "gate_stats.json").exists() else None)
    if stats_file:
        try:
            epoch_stats = json.loads(Path(stats_file).read_text())
            if not isinstance(epoch_stats, list) or not all(isinstance(s, dict) and "blocks" in s for s in epoch_stats):
                raise ValueError
        except (OSError, ValueError):
            return fail(f"{stats_file}: not a readable JSON list of gate_epoch_stats results")
    try:
        model = gatedconv.load_model(run_dir, device=args.device)
    except (CheckpointError, RuntimeError, TypeError, ValueError) as e:
        return fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    if not analysis.gated_blocks(model):
        return fail(f"{run_dir}: the model has no GatedConv2d blocks, so there are no gates to analyse")
    try:
        data = load_cifar10(args.data_dir, download=False)
    except DataError as e:
        return fail(str(e))
    x, y = data.test_x, data.test_y
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    if not (run_dir / "final.json").exists():
        print(f"note: {run_dir} has no final.json (run unfinished?); analysing its latest checkpoint")

    try:
        record = analysis.record_gates(model, x, y, batch_size=args.batch_size, device=args.device)
        summary = analysis.summarize(record, CLASSES, off_share=args.off_share)
    except (analysis.NoGatesError, ValueError, RuntimeError) as e:
        return fail(str(e).strip().splitlines()[0])
    summary["source"] = {"run_dir": str(run_dir), "data_dir": data.root or str(resolve_data_dir(args.data_dir)),
                         "split": "official test set" + (f" (first {len(y)})" if args.limit else "")}

    json_path = Path(args.json) if args.json else run_dir / "gates.json"
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(summary, indent=1) + "\n"
        atomic_write_bytes(json_path, lambda f: f.write(text.encode()))
        written = [json_path]
        if args.figures:
            prefix = f"{run_dir.resolve().name}_"
            figures_dir = args.out_dir or run_dir / "gates"
            written += list(analysis.plot_all(record, summary, figures_dir, prefix=prefix).values())
            if epoch_stats:
                written.append(analysis.plot_gate_evolution(epoch_stats, Path(figures_dir) / f"{prefix}evolution.png"))
    except OSError as e:
        return fail(f"cannot write output ({e.strerror or e}: {getattr(e, 'filename', '')})")

    print(f"run {run_dir}: " + analysis.format_table(summary))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
