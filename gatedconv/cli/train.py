"""Train a registered model on CIFAR-10 with ``trainf``; defaults are the original recipe
(gatedconv, Adam lr 1e-3, weight decay 1e-4, cross-entropy, 30 epochs).

    gatedconv-train --epochs 30 --data-dir ../shared/cifar10
    python scripts/trainf.py --epochs 30 --data-dir ../shared/cifar10     (the same, from a checkout)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gatedconv.cli import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    from gatedconv.models import list_models
    from gatedconv.run import RunConfig

    d = RunConfig()
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=d.model, choices=list_models(), metavar="NAME",
                   help=f"one of: {', '.join(list_models())} (default {d.model})")
    p.add_argument("-e", "--epochs", type=int, default=d.epochs)
    p.add_argument("-b", "--batch-size", type=int, default=d.batch_size)
    p.add_argument("-l", "--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--opt", "--optimizer", dest="optimizer", default=d.optimizer,
                   choices=["adam", "adamw", "sgd", "muon"],
                   help=f"optimizer (default {d.optimizer}; SGD is Nesterov with --momentum; muon: Muon on the "
                        "body's weights at --muon-lr, Adam at --lr on biases, norms and the head)")
    p.add_argument("--muon-lr", type=float, default=d.muon_lr, help=f"Muon's learning rate (default {d.muon_lr})")
    p.add_argument("--momentum", type=float, default=d.momentum, help=f"SGD momentum (default {d.momentum})")
    p.add_argument("--sched", "--schedule", dest="schedule", default=d.schedule, choices=["none", "cosine", "onecycle"],
                   help="learning-rate schedule, per step (default none: constant, as the original)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="turn off random crop (4 px) + horizontal flip")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay,
                   help=f"evaluate and save an exponential moving average of the weights (default {d.ema_decay}; "
                        "0 = the live weights, as the original)")
    p.add_argument("--eval-raw", action="store_true",
                   help="with the average: also evaluate the live weights after every epoch (costs one more pass)")
    p.add_argument("-d", "--device", default=d.device, help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--precision", default=d.precision, choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast dtype; auto = bf16 where the CPU or GPU has it, else fp16 on GPUs, else fp32")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", default=d.compile, choices=["auto", "on", "off"],
                   help="torch.compile the gated sum (auto: on for single-process CPU)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (else $CIFAR10_DIR, else ./data)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("-s", "--output", "--out", "--save-folder", dest="out", default=None, metavar="RUN_DIR",
                   help="run directory (default: a new runs/<model>-seed<seed>-<date-time>)")
    p.add_argument("-f", "--ckpt-frequency", type=int, default=d.ckpt_frequency, help="checkpoint every N epochs")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                   help="continue a run from its last checkpoint: the run in --output, or the run directory (or its "
                        "checkpoint.pt) given here; only --output, --device, --data-dir, --eval-batch-size, --compile, "
                        "--ckpt-frequency, --wandb and --tensorboard may differ from the run's saved config")
    p.add_argument("--validation", action="store_true", help="hold out 5,000 training images for evaluation")
    p.add_argument("--keep-best", action="store_true",
                   help="with --validation (or -c): also keep the weights of the epoch with the lowest validation loss in "
                        "RUN/best.pt (gatedconv.load_model('RUN/best.pt')) and report their official test accuracy")
    p.add_argument("--first-1000", action="store_true", help="train/test on the first 1,000 images only")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun")
    p.add_argument("-c", "--cross-validate", action="store_true",
                   help="5-fold cross-validation on the training set (runs in OUT/fold0..4); prints mean +- std")
    p.add_argument("-w", "--wandb", action="store_true",
                   help="also log to Weights & Biases if installed (offline unless WANDB_MODE is set)")
    p.add_argument("--tensorboard", nargs="?", const=True, default=False, metavar="DIR",
                   help="log the curves, learning rate and gate statistics for TensorBoard to DIR (default "
                        "RUN/tensorboard; needs the tensorboard package); view with: tensorboard --logdir DIR")
    p.add_argument("--temperature-anneal", default=None, metavar="START,END,FRACTION",
                   help="softmax gates: anneal the temperature linearly from START to END over the first FRACTION "
                        "of the training steps (Dynamic Convolution: 30,1,0.1)")
    p.add_argument("--model-kwargs", default="{}", help='JSON dict for the model builder, e.g. \'{"gate": "softmax"}\'')
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gatedconv.malloc import keep_freed_memory
    keep_freed_memory()  # big activations reuse heap memory instead of faulting in fresh pages (gatedconv/malloc.py)
    from gatedconv.checkpoint import CheckpointError
    from gatedconv.data import DataError
    from gatedconv.run import RunConfig, RunError, RunInterrupted, cross_validate, run_training
    from gatedconv.train import NonFiniteLossError

    try:
        kw = json.loads(args.model_kwargs)
        if not isinstance(kw, dict):
            raise ValueError
    except ValueError:
        print(f"error: --model-kwargs must be a JSON object, got {args.model_kwargs!r}", file=sys.stderr)
        return 2
    resume, cv = args.resume, args.cross_validate
    if isinstance(resume, str):  # --resume PATH (timm's form): the run directory, or its checkpoint file
        run_dir = Path(resume).parent if Path(resume).name.endswith(".pt") else Path(resume)
        if args.out is not None and Path(args.out) != run_dir:
            print(f"error: --resume {resume} and --output {args.out} name different runs; give one of them",
                  file=sys.stderr)
            return 2
        args.out, resume = str(run_dir), True
    if args.temperature_anneal is not None:
        try:
            args.temperature_anneal = tuple(float(v) for v in args.temperature_anneal.split(","))
            assert len(args.temperature_anneal) == 3
        except (ValueError, AssertionError):
            print(f"error: --temperature-anneal must be START,END,FRACTION, got {args.temperature_anneal!r}",
                  file=sys.stderr)
            return 2
    skip = ("resume", "model_kwargs", "cross_validate")
    cfg = RunConfig(**{k: v for k, v in vars(args).items() if k not in skip}, model_kwargs=kw)
    try:
        if cv:
            cross_validate(cfg)
        else:
            run_training(cfg, resume=resume)
    except RunInterrupted as e:
        print(str(e), file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before training started or after it ended: nothing to checkpoint
        print(f"interrupted outside the training loop; {'resume with --resume' if cfg.out else 'nothing saved'}",
              file=sys.stderr)
        return 130
    except (RunError, DataError, CheckpointError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. a full disk while writing config.json, metrics.csv or final.json
        print(f"error: cannot write {getattr(e, 'filename', None) or 'a run file'} ({e.strerror or e}); "
              "checkpoint.pt, if written, is intact", file=sys.stderr)
        return 1
    except TypeError as e:  # bad --model-kwargs for the chosen model
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
