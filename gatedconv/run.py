"""A training run: config -> data -> model -> ``trainf`` -> run directory (config.json, metrics.csv,
checkpoint.pt, curve.png), with resume, signal handling and torchrun (DistributedDataParallel) support.

Kept apart from ``train.py`` so ``trainf`` stays the small classic loop users read; this module is what
``scripts/trainf.py`` calls.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import nn

from . import layers
from .checkpoint import (BEST_NAME, CHECKPOINT_NAME, CheckpointError, Normalized, evaluate_images, load_model,
                         atomic_write_text, load_checkpoint, save_checkpoint, writable_dir_problem)
from .data import DataError, TensorBatches, load_cifar10
from .ema import ModelEma
from .models import create_model, is_model, list_models
from .train import History, NonFiniteLossError, TrainingInterrupted, resolve_device, resolve_precision, trainf

__all__ = ["RunConfig", "RunError", "RunInterrupted", "run_training", "cross_validate"]


class RunError(ValueError):
    """A problem with the run's inputs; one line, shown without a traceback by the CLI."""


class RunInterrupted(Exception):
    pass


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``config.json`` in the run directory."""

    model: str = "gatedconv"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "none"
    augment: bool = True
    label_smoothing: float = 0.0
    ema_decay: float = 0.999  # evaluate (and hand out) an average of the weights; 0 = the live weights
    eval_raw: bool = False  # with EMA: also evaluate the live weights after every epoch
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: str = "auto"
    data_dir: Optional[str] = None
    seed: int = 0
    out: Optional[str] = None  # None: runs/<model>-seed<seed>-<date-time>, a new directory for every run
    ckpt_frequency: int = 1
    validation: bool = False
    first_1000: bool = False
    eval_batch_size: int = 1000
    sync_bn: bool = False
    model_kwargs: dict = field(default_factory=dict)
    figure_copy: Optional[str] = "figures"
    cv_fold: Optional[Tuple[int, int]] = None  # (k, K): evaluate on fold k of a K-fold split of the training set
    wandb: bool = False
    keep_best: bool = False  # with a held-out split: also keep the weights of the lowest held-out loss (best.pt)

    def validate(self) -> None:
        if not is_model(self.model):
            raise RunError(f"unknown model {self.model!r}; choose one of: {', '.join(list_models())}")
        for name in ("epochs", "batch_size", "ckpt_frequency", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise RunError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0:
            raise RunError(f"--lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise RunError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise RunError(f"--optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if self.schedule not in ("none", "cosine", "onecycle"):
            raise RunError(f"--schedule must be none, cosine or onecycle, got {self.schedule!r}")
        if self.compile not in ("auto", "on", "off"):
            raise RunError(f"--compile must be auto, on or off, got {self.compile!r}")
        if not 0 <= self.ema_decay < 1:
            raise RunError(f"--ema-decay must be in [0, 1) (0 turns the weight average off), got {self.ema_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise RunError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.keep_best and not (self.validation or self.cv_fold):
            raise RunError("--keep-best selects the epoch by validation loss, so it needs --validation "
                           "(the test set is never used for model selection)")
        try:
            resolve_precision(self.precision, resolve_device(self.device))
        except ValueError as e:
            raise RunError(str(e)) from None


# ------------------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:
        pass


def _rng_state() -> dict:
    import numpy as np
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    import numpy as np
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _dist_info() -> Tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def write_metrics_csv(path: Path, history: History) -> None:
    rows = history.epochs
    buf = io.StringIO()
    if rows:
        keys = list(rows[0].keys())
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _make_optimizer(cfg: RunConfig, net: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                           weight_decay=cfg.weight_decay)


def _make_scheduler(cfg: RunConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch), "step"
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch), "step"
    return None, "epoch"


def _check_out_dir(out: Path, resume: bool) -> Optional[dict]:
    """Refuse to overwrite a run; with ``resume`` return its checkpoint (None: restart from scratch)."""
    has_run = (out / "config.json").exists()
    if resume:
        if not has_run:
            raise RunError(f"--resume: {out} holds no run (no config.json); start a new run without --resume")
        if (out / CHECKPOINT_NAME).exists():
            try:
                return load_checkpoint(out)
            except CheckpointError as e:
                raise RunError(str(e)) from None
        return None  # killed before its first checkpoint: start again
    if has_run or (out / CHECKPOINT_NAME).exists():
        raise RunError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    problem = writable_dir_problem(out)
    if problem:
        raise RunError(f"cannot write to output directory {out} ({problem})")
    return None


class _FaultInjector(nn.Module):
    """Testing hook (env ``GATEDCONV_FAULT=KIND@N``): at this process's N-th training step send SIGKILL
    (``kill``), SIGINT (``int``) or SIGTERM (``term``) to itself, or return a NaN loss (``nan``). Used by the
    resilience tests and ``scripts/stress_resume.py``; inert unless the variable is set."""

    def __init__(self, loss: nn.Module, spec: str) -> None:
        super().__init__()
        kind, _, n = spec.partition("@")
        if kind not in ("kill", "int", "term", "nan") or not n.isdigit():
            raise RunError(f"GATEDCONV_FAULT must look like kill@N, int@N, term@N or nan@N, got {spec!r}")
        self.loss, self.kind, self.at, self.calls = loss, kind, int(n), 0

    def forward(self, logits, y):
        self.calls += 1
        out = self.loss(logits, y)
        if self.calls == self.at:
            if self.kind == "nan":
                return out * float("nan")
            sig = {"kill": signal.SIGKILL, "int": signal.SIGINT, "term": signal.SIGTERM}[self.kind]
            os.kill(os.getpid(), sig)
        return out


def _wandb_run(cfg: RunConfig, resolved: dict, print_fn):
    """A Weights & Biases run when ``--wandb`` is given and the package is installed (an optional extra).
    Offline unless WANDB_MODE says otherwise: this project's machines have no network; sync later with
    ``wandb sync``."""
    if not cfg.wandb:
        return None
    try:
        import wandb
    except ImportError:
        print_fn("note: --wandb given but the wandb package is not installed (pip install wandb); not logging to it")
        return None
    mode = os.environ.get("WANDB_MODE", "offline")
    return wandb.init(project="gatedconv", name=Path(cfg.out).name, dir=str(cfg.out), config=resolved, mode=mode)


def cross_validate(cfg: RunConfig, folds: int = 5, print_fn=print) -> dict:
    """K-fold cross-validation on the training set: run ``cfg`` once per fold (runs in ``OUT/fold{k}``, each
    resumable), evaluating on the held-out fold; returns per-fold accuracies with their mean and std."""
    import statistics
    import time as _time
    if cfg.out is None:
        cfg = RunConfig(**{**asdict(cfg), "out": f"runs/{cfg.model}-cv-seed{cfg.seed}-{_time.strftime('%Y%m%d-%H%M%S')}"})
    accs = []
    for k in range(folds):
        sub = RunConfig(**{**asdict(cfg), "out": str(Path(cfg.out) / f"fold{k}"), "cv_fold": (k, folds)})
        resume = (Path(sub.out) / "config.json").exists()
        final = run_training(sub, resume=resume, print_fn=print_fn)
        accs.append(float(final["test_acc"]))
        print_fn(f"fold {k + 1}/{folds}: held-out accuracy {accs[-1]:.4f}")
    mean, std = statistics.mean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)
    summary = {"folds": folds, "accuracies": accs, "mean": mean, "std": std}
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(cfg.out) / "cv.json", json.dumps(summary, indent=2) + "\n")
    print_fn(f"{folds}-fold cross-validation: {100 * mean:.2f}% +- {100 * std:.2f}")
    return summary


def run_training(cfg: RunConfig, resume: bool = False, print_fn=print) -> dict:
    """Train as ``cfg`` says and return the final metrics. Raises RunError / DataError / CheckpointError for
    bad input, RunInterrupted on SIGINT/SIGTERM (after writing a checkpoint), NonFiniteLossError on NaN."""
    rank, world, local_rank = _dist_info()
    if cfg.out is None:
        if resume:
            raise RunError("--resume needs --out RUN_DIR (the run to continue)")
        if world > 1:
            raise RunError("under torchrun pass --out explicitly so every process uses the same run directory")
        import time as _time
        cfg = RunConfig(**{**asdict(cfg), "out": f"runs/{cfg.model}-seed{cfg.seed}-{_time.strftime('%Y%m%d-%H%M%S')}"})
    if rank != 0:
        print_fn = lambda *a, **k: None  # noqa: E731  (only rank 0 talks)
    out = Path(cfg.out)
    state = None
    if resume and (out / "config.json").exists():
        saved = json.loads((out / "config.json").read_text())
        saved_run = {k: v for k, v in saved.items() if k in RunConfig.__dataclass_fields__}
        saved_run["out"] = str(out)  # the directory may have been moved since
        cfg = RunConfig(**saved_run)  # the run's own config wins over the command line
    cfg.validate()
    if rank == 0:
        state = _check_out_dir(out, resume)
    elif resume and (out / CHECKPOINT_NAME).exists():
        state = load_checkpoint(out)
    if state is not None and state.get("finished"):
        print_fn(f"{out}: run already finished (test acc {state['history']['epochs'][-1]['test_acc']:.4f}); nothing to do")
        return state["history"]["epochs"][-1]

    device = resolve_device(cfg.device)
    if world > 1:
        import torch.distributed as dist
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if cfg.sync_bn and device.type != "cuda":
            raise RunError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm is GPU-only); on CPU each process "
                           "normalises over its own shard of the batch")
        if cfg.batch_size % world:
            raise RunError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes {world}")

    data = load_cifar10(cfg.data_dir)
    mean, std = data.mean_std()
    official_test = (data.test_x, data.test_y)  # --keep-best reports its pick on these after training
    if cfg.cv_fold is not None:
        data = data.fold(int(cfg.cv_fold[0]), int(cfg.cv_fold[1]), seed=cfg.seed)
    elif cfg.validation:
        # 5,000 of CIFAR-10's 50,000 (a tenth of smaller training sets, e.g. the tests' tiny data)
        data = data.split_validation(min(5000, len(data.train_y) // 10), seed=cfg.seed)
    if cfg.first_1000:
        data = data.subset(1000, 1000)
    if len(data.train_y) < cfg.batch_size:
        raise RunError(f"--batch-size {cfg.batch_size} exceeds the {len(data.train_y)} training images")

    _seed_everything(cfg.seed)
    try:
        net = create_model(cfg.model, **cfg.model_kwargs)
    except (ValueError, TypeError) as e:  # bad --model-kwargs, previt without weights, ...
        raise RunError(f"cannot build model {cfg.model!r}: {str(e).strip().splitlines()[0]}") from None
    if state is not None:
        if state.get("model_name") != cfg.model:
            raise RunError(f"{out}: checkpoint is of model {state.get('model_name')!r}, the run is {cfg.model!r}")
        try:
            net.load_state_dict(state.get("live_state", state["model_state"]))
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunError(f"{out / CHECKPOINT_NAME}: weights do not fit model {cfg.model!r} as configured ({first})") from None
    num_params = sum(p.numel() for p in net.parameters())
    per_rank_batch = cfg.batch_size // world
    channels_last = cfg.channels_last
    train_iter = TensorBatches(data.train_x, data.train_y, per_rank_batch, mean=mean, std=std, train=True,
                               augment=cfg.augment, seed=cfg.seed, device=device, channels_last=channels_last,
                               shard=(rank, world))
    test_iter = TensorBatches(data.test_x, data.test_y, cfg.eval_batch_size, mean=mean, std=std, device=device,
                              channels_last=channels_last)
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    ema = None
    if cfg.ema_decay > 0:  # the average starts from the (possibly resumed) live weights, on the device
        ema = ModelEma(net, decay=cfg.ema_decay)
        if state is not None and state.get("ema") is not None:
            try:
                ema.load_state_dict({**state["ema"], "module": state["model_state"]})
            except Exception as e:
                raise RunError(f"{out}: checkpoint weight average does not fit ({str(e).splitlines()[0]})") from None
    train_net = net
    if world > 1:
        if cfg.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        train_net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    opt = _make_optimizer(cfg, net)
    sched, sched_per = _make_scheduler(cfg, opt, len(train_iter))
    history, start_epoch, start_step, partial = History(), 0, 0, None
    best: dict = {}  # --keep-best: {"epoch", "val_loss"} of the weights in best.pt
    if state is not None:
        try:
            opt.load_state_dict(state["optimizer"])
            if sched is not None and state.get("scheduler") is not None:
                sched.load_state_dict(state["scheduler"])
        except Exception as e:
            raise RunError(f"{out}: checkpoint optimizer state does not fit ({str(e).splitlines()[0]})") from None
        history = History.from_state_dict(state["history"])
        best.update(state.get("best") or {})
        if cfg.keep_best and rank == 0 and (out / BEST_NAME).exists():  # best.pt is written first: it wins
            kept = load_checkpoint(out / BEST_NAME)
            best.update(epoch=kept["epoch"], val_loss=kept["val_loss"])
        start_epoch, start_step, partial = state["epoch"], state["step"], state.get("partial")
        _set_rng_state(state["rng"])

    use_compile = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cpu" and world == 1)
    layers.set_compiled_combine(use_compile)

    resolved = asdict(cfg)
    resolved.update({"world_size": world, "per_rank_batch_size": per_rank_batch, "global_batch_size": cfg.batch_size,
                     "device_resolved": str(device), "autocast_dtype": str(resolve_precision(cfg.precision, device)),
                     "num_params": num_params, "mean": mean, "std": std, "torch": torch.__version__,
                     "train_examples": len(data.train_y), "eval_examples": len(data.test_y),
                     "eval_split": (f"fold {cfg.cv_fold[0]} of {cfg.cv_fold[1]} of the training set" if cfg.cv_fold
                                    else f"validation ({len(data.test_y)} held out of train)" if cfg.validation
                                    else "official test set")})
    if rank == 0:
        atomic_write_text(out / "config.json", json.dumps(resolved, indent=2) + "\n")

    def checkpoint(epoch_next: int, step: int, partial_state, hist: History, finished: bool = False) -> None:
        if rank != 0:
            return
        # model_state is the model users get (load_model, evaluate.py): the weight average when there is one;
        # live_state is what training continues from on --resume
        extra = ({} if ema is None else
                 {"live_state": net.state_dict(), "ema": {"updates": ema.updates, "decay": ema.decay}})
        save_checkpoint(out / CHECKPOINT_NAME, {
            "model_name": cfg.model, "model_kwargs": cfg.model_kwargs,
            "model_state": (ema.module if ema is not None else net).state_dict(), **extra,
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict() if sched is not None else None,
            "rng": _rng_state(), "epoch": epoch_next, "step": step, "partial": partial_state,
            "history": hist.state_dict(), "config": resolved, "mean": mean, "std": std, "finished": finished,
            "best": dict(best),
        })
        write_metrics_csv(out / "metrics.csv", hist)

    # gate statistics once per epoch on a fixed probe batch (one no-grad eval-mode forward; no RNG, no BN update)
    probe = None
    if rank == 0 and any(isinstance(m, layers.GatedConv2d) for m in net.modules()):
        k = min(256, len(data.test_y))
        probe = next(iter(TensorBatches(data.test_x[:k], data.test_y[:k], k, mean=mean, std=std, device=device,
                                        channels_last=channels_last)))[0]

    wb = _wandb_run(cfg, resolved, print_fn) if rank == 0 else None

    def on_epoch_end(epoch: int, hist: History) -> None:
        val_loss = hist.epochs[-1]["test_loss"]  # the held-out split's loss (keep_best requires one)
        if cfg.keep_best and rank == 0 and (not best or val_loss < best["val_loss"]):
            # best.pt before checkpoint.pt, and --resume reads the record back from best.pt itself: a stop
            # between the two writes cannot make the run forget a better epoch
            best.update(epoch=epoch + 1, val_loss=val_loss)
            save_checkpoint(out / BEST_NAME, {
                "model_name": cfg.model, "model_kwargs": cfg.model_kwargs,
                "model_state": (ema.module if ema is not None else net).state_dict(),
                "config": resolved, "mean": mean, "std": std, "epoch": epoch + 1, "val_loss": val_loss,
            })
        if wb is not None:
            wb.log({k: v for k, v in hist.epochs[-1].items() if isinstance(v, (int, float))}, step=epoch + 1)
        if probe is not None:
            from .analysis import gate_epoch_stats
            hist.gates.append(dict(gate_epoch_stats(net, probe), epoch=epoch + 1))
            atomic_write_text(out / "gate_stats.json", json.dumps(hist.gates) + "\n")
        if (epoch + 1) % cfg.ckpt_frequency == 0 or epoch + 1 == cfg.epochs:
            checkpoint(epoch + 1, 0, None, hist, finished=epoch + 1 == cfg.epochs)

    stop = {"flag": False, "sig": None}

    def _handler(signum, frame):
        stop["flag"], stop["sig"] = True, signum

    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    loss = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    fault = os.environ.get("GATEDCONV_FAULT")
    if fault:
        loss = _FaultInjector(loss, fault)
    figure = str(out / "curve.png") if rank == 0 else None
    should_stop, metric_reduce = (lambda: stop["flag"]), None
    if world > 1:
        import torch.distributed as dist

        def should_stop() -> bool:  # every rank must stop at the same step, or the next all-reduce hangs
            flag = torch.tensor([1.0 if stop["flag"] else 0.0], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return bool(flag.item())

        def metric_reduce(vals):
            flat = torch.stack([v.to(device=device, dtype=torch.float64) for v in vals])
            dist.all_reduce(flat)
            return [flat[i].to(dtype=v.dtype if torch.is_tensor(v) else torch.float64).cpu() for i, v in enumerate(vals)]
        if rank != 0:
            partial = None  # rank 0 restores the global partial sums; the others start from zero
    print_fn(f"model {cfg.model}: {num_params:,} parameters | {len(data.train_y)} train / {len(data.test_y)} eval "
             f"images | device {device} | autocast {resolved['autocast_dtype']} | world size {world}")
    try:
        history = trainf(train_net, train_iter, test_iter, loss, cfg.epochs, opt, device,
                         precision=cfg.precision, channels_last=channels_last, scheduler=sched,
                         scheduler_per=sched_per, animator="auto" if rank == 0 else None, figure_path=figure,
                         history=history, start_epoch=start_epoch, start_step=start_step, partial=partial,
                         on_epoch_end=on_epoch_end, should_stop=should_stop, metric_reduce=metric_reduce,
                         on_interrupt=lambda e, s, p, h: checkpoint(e, s, p, h), quiet=rank != 0,
                         ema=ema, eval_raw=cfg.eval_raw, print_fn=print_fn)
    except TrainingInterrupted as e:
        raise RunInterrupted(f"interrupted (signal {stop['sig']}) at epoch {e.epoch + 1}, step {e.step}; checkpoint "
                             f"saved; resume with: python scripts/trainf.py --out {out} --resume") from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if world > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
    if wb is not None:
        wb.finish()
    dump = os.environ.get("GATEDCONV_DUMP_WEIGHTS")  # testing hook: every rank saves its final weights there
    if dump:
        Path(dump).mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), Path(dump) / f"rank{rank}.pt")
    final = dict(history.epochs[-1])
    if rank == 0:  # the replicas are identical: one process evaluates
        # the number a user gets back: load_model's view (normalisation inside, raw [0, 1] images, fp32), the same
        # function scripts/evaluate.py uses; the per-epoch figures above ran in the training precision
        import copy
        previous = layers.set_compiled_combine(False)  # eager kernels and NCHW weights: exactly load_model's path
        eval_net = copy.deepcopy(ema.module if ema is not None else net).to(memory_format=torch.contiguous_format)
        ref = evaluate_images(Normalized(eval_net, mean, std), data.test_x, data.test_y)
        final["test_acc_fp32"], final["test_top5_fp32"] = ref["top1"], ref["top5"]
        what = f"weight average, decay {cfg.ema_decay}" if ema is not None else "live weights"
        print_fn(f"test acc {ref['top1']:.4f} (fp32, {what}, as gatedconv.load_model sees it; top-5 "
                 f"{ref['top5']:.4f}) on {len(data.test_y)} {resolved['eval_split']} images")
        if ema is not None:  # the live weights too, so what the average buys is on record for every run
            live = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
            raw = evaluate_images(Normalized(live, mean, std), data.test_x, data.test_y)
            final["test_acc_raw_fp32"] = raw["top1"]
            print_fn(f"test acc {raw['top1']:.4f} (fp32, live weights)")
        if cfg.keep_best and best:
            # the pick was made on the held-out split; its accuracy is reported on the official test set
            best_net = load_model(out / BEST_NAME)
            ref = evaluate_images(best_net, *official_test)
            final.update(best_epoch=best["epoch"], best_val_loss=best["val_loss"],
                         best_test_acc_fp32=ref["top1"], best_test_top5_fp32=ref["top5"])
            print_fn(f"best epoch {best['epoch']} (validation loss {best['val_loss']:.4f}, kept in "
                     f"{out / BEST_NAME}): test acc {ref['top1']:.4f}, top-5 {ref['top5']:.4f} on the "
                     f"{len(official_test[1])} official test images")
        layers.set_compiled_combine(previous)
    if rank == 0:
        if cfg.figure_copy and Path(figure).exists():
            Path(cfg.figure_copy).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(figure, Path(cfg.figure_copy) / f"curve_{out.name}.png")
        total_time = sum(r["seconds"] for r in history.epochs)
        atomic_write_text(out / "final.json", json.dumps({**final, "train_seconds": total_time}, indent=2) + "\n")
    return final
