#!/usr/bin/env python
"""Train a registered model on CIFAR-10 with ``trainf``; defaults are the original recipe
(gatedconv, Adam lr 1e-3, weight decay 1e-4, cross-entropy, 30 epochs).

    python scripts/trainf.py --epochs 30 --data-dir ../shared/cifar10
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


from gatedconv._cli import OneLineParser as _OneLineParser  # noqa: E402  (one-line argument errors)


def parse_args(argv=None):
    from gatedconv.models import list_models
    from gatedconv.run import RunConfig

    d = RunConfig()
    p = _OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=d.model, choices=list_models(), metavar="NAME",
                   help=f"one of: {', '.join(list_models())} (default {d.model})")
    p.add_argument("-e", "--epochs", type=int, default=d.epochs)
    p.add_argument("-b", "--batch-size", type=int, default=d.batch_size)
    p.add_argument("-l", "--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--optimizer", default=d.optimizer, choices=["adam", "adamw", "sgd"])
    p.add_argument("--schedule", default=d.schedule, choices=["none", "cosine", "onecycle"],
                   help="learning-rate schedule (default none: constant, as the original)")
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
                   help="autocast dtype; auto = bf16 on CPUs/GPUs that support it")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", default=d.compile, choices=["auto", "on", "off"],
                   help="torch.compile the gated sum (auto: on for single-process CPU)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (else $CIFAR10_DIR, else ./data)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("-s", "--out", "--save-folder", dest="out", default=None,
                   help="run directory (default: a new runs/<model>-seed<seed>-<date-time>)")
    p.add_argument("-f", "--ckpt-frequency", type=int, default=d.ckpt_frequency, help="checkpoint every N epochs")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--validation", action="store_true", help="hold out 5,000 training images for evaluation")
    p.add_argument("--keep-best", action="store_true",
                   help="with --validation: also keep the weights of the epoch with the lowest validation loss in "
                        "RUN/best.pt (gatedconv.load_model('RUN/best.pt')) and report their official test accuracy")
    p.add_argument("--first-1000", action="store_true", help="train/test on the first 1,000 images only")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun")
    p.add_argument("-c", "--cross-validate", action="store_true",
                   help="5-fold cross-validation on the training set (runs in OUT/fold0..4); prints mean +- std")
    p.add_argument("-w", "--wandb", action="store_true",
                   help="also log to Weights & Biases if installed (offline unless WANDB_MODE is set)")
    p.add_argument("--model-kwargs", default="{}", help='JSON dict for the model builder, e.g. \'{"gate": "softmax"}\'')
    return p.parse_args(argv)


def main(argv=None) -> int:
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
    except (RunError, DataError, CheckpointError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TypeError as e:  # bad --model-kwargs for the chosen model
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
