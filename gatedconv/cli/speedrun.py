"""Train ``gatedconv_fast`` with the airbench94-style recipe (``gatedconv.speedrun``) for N seeds and report
accuracy without / with test-time augmentation, timed seconds per run and time to 83.5%.

    gatedconv-speedrun --seeds 5 --data-dir ../shared/cifar10 --out runs/speedrun
    python scripts/speedrun.py --seeds 5 --data-dir ../shared/cifar10 --out runs/speedrun     (the same)
    gatedconv-speedrun --recipe airbench94_muon --seeds 5 --data-dir ../shared/cifar10 --paths 3   (Muon, plain)

--recipe picks the named training (gatedconv.speedrun.RECIPES: airbench94, the default, or airbench94_muon);
a flag given on the command line overrides the recipe's value, the others keep it.

One line per seed, a FLOP/s efficiency line, then exactly one closing line
``mean ACC% +- STD over N seeds, T s per run`` (ACC with TTA). Each seed's run directory is OUT/seed<S>
(``gatedconv.load_model`` reads it); the time-to-accuracy figure goes to OUT/time_to_accuracy.png.
Per-epoch progress goes to stderr (``--quiet`` silences it).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gatedconv.cli import OneLineParser


def _int_list(text: str) -> list:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    from gatedconv.speedrun import SpeedrunConfig
    from gatedconv.layers import ACTIVATION_PLACEMENTS, GATE_TYPES

    from gatedconv.speedrun import RECIPES

    d = SpeedrunConfig()
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="airbench94", choices=list(RECIPES),
                   help="the named training the other flags change (default airbench94)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (runs), seeds FIRST..FIRST+N-1")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (else $CIFAR10_DIR, else ./data)")
    p.add_argument("--out", default=None, help="output folder for the seed run directories "
                                               "(default runs/speedrun-<date-time>)")
    p.add_argument("--figures", default=None, help="folder for the time-to-accuracy figure (default OUT; '' = none)")
    p.add_argument("--epochs", type=float, default=argparse.SUPPRESS,
                   help=f"epochs, fractional allowed (airbench94 {d.epochs}, airbench94_muon 8)")
    p.add_argument("--batch-size", type=int, default=argparse.SUPPRESS,
                   help=f"training batch (airbench94 {d.batch_size}, airbench94_muon 2000)")
    p.add_argument("--eval-batch-size", type=int, default=argparse.SUPPRESS, help=f"default {d.eval_batch_size}")
    p.add_argument("--lr", type=float, default=argparse.SUPPRESS,
                   help=f"lr per 1024 examples, decoupled form (default {d.lr}); the gates' lr in both recipes")
    p.add_argument("--opt", "--optimizer", dest="optimizer", default=argparse.SUPPRESS, choices=["sgd", "muon"],
                   help="optimiser of the convolution filters: sgd (airbench94) or muon (Muon, as airbench94_muon); "
                        "biases, gates and the head stay on SGD")
    p.add_argument("--muon-lr", type=float, default=argparse.SUPPRESS, help=f"Muon's lr (default {d.muon_lr})")
    p.add_argument("--muon-momentum", type=float, default=argparse.SUPPRESS,
                   help=f"Muon's momentum (default {d.muon_momentum})")
    p.add_argument("--weight-decay", type=float, default=argparse.SUPPRESS,
                   help=f"decay per 1024 examples, decoupled form (default {d.weight_decay})")
    p.add_argument("--label-smoothing", type=float, default=argparse.SUPPRESS, help=f"default {d.label_smoothing}")
    p.add_argument("--tta", dest="tta_level", type=int, default=argparse.SUPPRESS, choices=[0, 1, 2],
                   help="test-time augmentation: 0 none, 1 mirror, 2 mirror + 1 px translations")
    p.add_argument("--no-whiten", dest="whiten", action="store_false", default=argparse.SUPPRESS,
                   help="trained conv + BatchNorm stem instead")
    p.add_argument("--no-ema", dest="ema", action="store_false", default=argparse.SUPPRESS, help="no lookahead / EMA")
    p.add_argument("--no-flip", dest="flip", action="store_false", default=argparse.SUPPRESS,
                   help="no (alternating) flip augmentation")
    p.add_argument("--translate", type=int, default=argparse.SUPPRESS, help="random translation in px (0: none)")
    p.add_argument("--whiten-images", type=int, default=argparse.SUPPRESS,
                   help=f"training images the whitening stem is computed from (default {d.whiten_images})")
    p.add_argument("--no-epoch-eval", dest="eval_every_epoch", action="store_false", default=argparse.SUPPRESS,
                   help="skip the per-epoch test evaluation (no time-to-accuracy series)")
    p.add_argument("--gate", choices=GATE_TYPES, default=None, help="gate of every block (model default: softmax)")
    p.add_argument("--activation", choices=ACTIVATION_PLACEMENTS, default=None,
                   help="activation placement (model default: after_sum)")
    p.add_argument("--paths", type=_int_list, default=None, metavar="K,K,...",
                   help="kernel size of each path, e.g. 3,1 (the default) or 3,3,1")
    p.add_argument("--widths", type=_int_list, default=None, metavar="W1,W2,W3",
                   help="group widths (model default 64,256,256)")
    p.add_argument("--model-kwargs", default="{}", help="JSON dict of further GatedFastNetConfig keywords")
    p.add_argument("-d", "--device", default=argparse.SUPPRESS, help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--precision", default=argparse.SUPPRESS, choices=["auto", "bf16", "fp16", "fp32"],
                   help="autocast dtype (default auto: bf16 where the hardware has it; fp16 on CUDA only)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", default=argparse.SUPPRESS,
                   help="torch.compile the training forward (timed)")
    p.add_argument("--no-compile-sum", dest="compile_sum", action="store_false", default=argparse.SUPPRESS,
                   help="keep the gated sums eager (default: torch.compile them, compile time timed)")
    p.add_argument("--no-flops", dest="measure_flops", action="store_false", default=argparse.SUPPRESS,
                   help="skip the efficiency measurement")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-epoch progress on stderr")
    return p


# flags whose destination is a SpeedrunConfig field (the rest choose seeds, folders, the model or the output)
CONFIG_FLAGS = ("epochs", "batch_size", "eval_batch_size", "lr", "optimizer", "muon_lr", "muon_momentum",
                "weight_decay", "label_smoothing", "tta_level", "whiten", "ema", "flip", "translate", "whiten_images",
                "eval_every_epoch", "device", "precision", "channels_last", "compile", "compile_sum", "measure_flops")


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gatedconv.malloc import keep_freed_memory
    keep_freed_memory()  # big activations reuse heap memory instead of faulting in fresh pages (gatedconv/malloc.py)
    from gatedconv.checkpoint import CheckpointError
    from gatedconv.data import DataError, load_cifar10
    from gatedconv.speedrun import (SpeedrunConfig, SpeedrunError, format_seed_line, format_summary_line,
                                plot_time_to_accuracy, speedrun, summarize)

    def fail(msg: str, code: int = 1) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return code

    try:
        kw = json.loads(args.model_kwargs)
        if not isinstance(kw, dict):
            raise ValueError
    except ValueError:
        return fail(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r}", 2)
    for name, key in (("gate", "gate"), ("activation", "activation"), ("paths", "kernel_sizes"), ("widths", "widths")):
        if getattr(args, name) is not None:
            kw[key] = getattr(args, name)
    if args.seeds < 1:
        return fail(f"--seeds must be >= 1, got {args.seeds}", 2)
    given = {k: v for k, v in vars(args).items() if k in CONFIG_FLAGS}  # config flags given on the command line
    try:
        cfg = SpeedrunConfig.from_recipe(args.recipe, model_kwargs=kw, **given)
    except SpeedrunError as e:
        return fail(str(e), 2)
    out = Path(args.out or f"runs/speedrun-{time.strftime('%Y%m%d-%H%M%S')}")
    progress = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, file=sys.stderr, flush=True))
    try:
        cfg.validate()
        data = load_cifar10(args.data_dir)
        results = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            r = speedrun(cfg, data, seed, out / f"seed{seed}", print_fn=progress)
            results.append(r)
            print(format_seed_line(r), flush=True)
    except (DataError, SpeedrunError, CheckpointError) as e:
        return fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except KeyboardInterrupt:
        return fail(f"interrupted; the finished seeds are in {out}; continue with --first-seed N and another --out "
                    "(a speedrun does not resume mid-seed: its time would not be one run's)", 130)
    s = summarize(results)
    figures = out if args.figures is None else args.figures
    if figures:
        fig = plot_time_to_accuracy(results, Path(figures) / "time_to_accuracy.png", cfg.target_acc)
        print(f"time-to-accuracy figure: {fig}")
    if "efficiency" in s:
        print(f"efficiency: {s['train_flops_per_sec'] / 1e12:.3f} TFLOP/s in training ({s['flops_per_step'] / 1e9:.1f} "
              f"GFLOP per step, matmul/conv only) = {100 * s['efficiency']:.1f}% of the {results[0]['peak_dtype']} "
              f"square-matmul peak ({s['peak_flops'] / 1e12:.3f} TFLOP/s measured in this process)")
    print(format_summary_line(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
