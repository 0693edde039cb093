"""A training run of the original recipe: config -> data -> model -> ``trainf`` -> run directory.

``run_training`` is a few named steps (``_Run``): check the run directory and load its checkpoint, set up the
device (and DistributedDataParallel under torchrun), read the data, build the model, the weight average and
the optimiser (restoring them on ``--resume``), write ``config.json``, train with ``trainf``, then evaluate
the model the run hands out in fp32 and write ``final.json`` and ``summary.json``. The layout of the run
directory is ``gatedconv.rundir``'s, shared with the fast recipe (``gatedconv.speedrun``).

Kept apart from ``train.py`` so ``trainf`` stays the small classic loop users read.
"""
from __future__ import annotations

import copy
import os
import random
import signal
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from .checkpoint import (BEST_NAME, CHECKPOINT_NAME, CheckpointError, Normalized, first_line, load_checkpoint,
                         load_model, plain, save_checkpoint)
from .data import TensorBatches, load_cifar10
from .ema import ModelEma
from .kernels import compiled_sum
from .models import create_model, is_model, list_models
from .rundir import (CONFIG_NAME, FINAL_NAME, RunError, command_line, default_run_dir, prepare_run_dir, read_json,
                     write_json, write_metrics)
from .summary import make_record, write_summary
from .train import History, TrainingInterrupted, evaluate_images, resolve_device, resolve_precision, trainf

__all__ = ["RunConfig", "RunError", "RunInterrupted", "run_training", "cross_validate", "make_loss",
           "RESUME_MAY_CHANGE"]

OPTIMIZERS = ("adam", "adamw", "sgd", "muon")
SCHEDULES = ("none", "cosine", "onecycle")
# what --resume may change: how the run is executed, not what it computes. Everything else must match the run's
# saved config (or be left at its default), so a resumed run is the run that was started.
RESUME_MAY_CHANGE = ("device", "data_dir", "out", "eval_batch_size", "compile", "ckpt_frequency", "wandb",
                     "tensorboard")


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
    muon_lr: float = 0.02  # --opt muon: Muon's step size for the body's weights (the rest takes Adam at lr)
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
    cv_fold: Optional[Tuple[int, int]] = None  # (k, K): evaluate on fold k of a K-fold split of the training set
    wandb: bool = False
    tensorboard: bool | str = False  # True: log to RUN/tensorboard; a str: to that directory
    keep_best: bool = False  # with a held-out split: also keep the weights of the lowest held-out loss (best.pt)
    # (start, end, fraction): softmax gate temperature annealed linearly from start to end over the first fraction
    # of the training steps, then held at end (Dynamic Convolution, Chen et al. 2020: 30 -> 1 over the first tenth)
    temperature_anneal: Optional[Tuple[float, float, float]] = None

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
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("compile", ("auto", "on", "off"))):
            if getattr(self, name) not in allowed:
                raise RunError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not 0 <= self.ema_decay < 1:
            raise RunError(f"--ema-decay must be in [0, 1) (0 turns the weight average off), got {self.ema_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise RunError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.keep_best and not (self.validation or self.cv_fold):
            raise RunError("--keep-best selects the epoch by validation loss, so it needs --validation "
                           "(the test set is never used for model selection)")
        if self.tensorboard:
            from .tensorboard import tensorboard_problem
            if tensorboard_problem():
                raise RunError(tensorboard_problem())
        if self.temperature_anneal is not None:
            t0, t1, frac = self.temperature_anneal
            if not (t0 > 0 and t1 > 0 and 0 < frac <= 1):
                raise RunError(f"--temperature-anneal needs START > 0, END > 0 and 0 < FRACTION <= 1, got "
                               f"{tuple(self.temperature_anneal)}")
            if t1 != self.model_kwargs.get("temperature", 1.0):  # the saved model is built with that temperature
                raise RunError(f"--temperature-anneal must end at the model's temperature "
                               f"({self.model_kwargs.get('temperature', 1.0)}), got END = {t1}")
        try:
            resolve_precision(self.precision, resolve_device(self.device))
        except ValueError as e:
            raise RunError(str(e)) from None


# ------------------------------------------------------------------------------------------------------
# small pieces


def _seed_everything(seed: int) -> None:
    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _dist_info() -> Tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def make_loss(cfg: RunConfig) -> nn.Module:
    """The training loss of a run (mean over the batch, as ``trainf`` expects)."""
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)


def _make_optimizer(cfg: RunConfig, net: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "muon":  # Muon on the convolution filters and hidden weights, Adam on the rest
        from .optim import MuonWithAdam, muon_param_groups
        return MuonWithAdam(*muon_param_groups(net), muon_lr=cfg.muon_lr, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                           weight_decay=cfg.weight_decay)


def _make_scheduler(cfg: RunConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), "step"
    if cfg.schedule == "onecycle":
        max_lr = [g["lr"] for g in opt.param_groups]  # each group its own peak (Muon's lr is not Adam's)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total), "step"
    return None, "epoch"


def _wandb_run(cfg: RunConfig, resolved: dict, print_fn):
    """A Weights & Biases run when ``--wandb`` is given and the package is installed (an optional extra).
    Offline unless WANDB_MODE says otherwise; sync later with ``wandb sync``."""
    if not cfg.wandb:
        return None
    try:
        import wandb
    except ImportError:
        print_fn("note: --wandb given but the wandb package is not installed (pip install wandb); not logging to it")
        return None
    mode = os.environ.get("WANDB_MODE", "offline")
    return wandb.init(project="gatedconv", name=Path(cfg.out).name, dir=str(cfg.out), config=resolved, mode=mode)


def _resolve_config(cfg: RunConfig, resume: bool, world: int) -> RunConfig:
    """The config to run: a default run directory for a new run; on ``--resume`` the run's own saved config,
    with only the flags of ``RESUME_MAY_CHANGE`` taken from ``cfg`` (any other flag that differs from both the
    saved value and its default is refused: silently ignoring it would run something the user did not ask for)."""
    if cfg.out is None:
        if resume:
            raise RunError("--resume needs --out RUN_DIR (the run to continue)")
        if world > 1:
            raise RunError("under torchrun pass --out explicitly so every process uses the same run directory")
        cfg = replace(cfg, out=str(default_run_dir(cfg.model, cfg.seed)))
    saved = read_json(Path(cfg.out) / CONFIG_NAME) if resume else None
    if saved is not None:
        cfg = _merge_saved(cfg, saved)
    cfg.validate()
    return cfg


def _merge_saved(cfg: RunConfig, saved: dict) -> RunConfig:
    defaults, given = plain(asdict(RunConfig())), plain(asdict(cfg))
    kept = {k: v for k, v in saved.items() if k in RunConfig.__dataclass_fields__}
    for k, v in given.items():
        if k in RESUME_MAY_CHANGE or k not in kept:
            continue
        if v != kept[k] and v != defaults[k]:
            raise RunError(f"--resume: --{k.replace('_', '-')} {v!r} conflicts with the run's saved {kept[k]!r}; "
                           f"only {', '.join('--' + n.replace('_', '-') for n in RESUME_MAY_CHANGE)} may change "
                           "on resume")
    kept.update({k: v for k, v in asdict(cfg).items() if k in RESUME_MAY_CHANGE and v != defaults[k]})
    kept["out"] = cfg.out  # the directory may have been moved since
    for key in ("cv_fold", "temperature_anneal"):
        if kept.get(key) is not None:
            kept[key] = tuple(kept[key])
    return RunConfig(**kept)


# ------------------------------------------------------------------------------------------------------
# the run, step by step


class _Run:
    """The state of one run between its steps (see the module docstring)."""

    def __init__(self, cfg: RunConfig, rank: int, world: int, local_rank: int, print_fn: Callable) -> None:
        self.cfg, self.rank, self.world, self.local_rank = cfg, rank, world, local_rank
        self.out = Path(cfg.out)
        self.say = print_fn if rank == 0 else (lambda *a, **k: None)
        self.best: dict = {}  # --keep-best: {"epoch", "val_loss"} of the weights in best.pt
        self.ema: Optional[ModelEma] = None
        self.stop = {"flag": False, "sig": None}

    def prepare(self, resume: bool) -> Optional[dict]:
        """Check the run directory (rank 0 creates it) and load its checkpoint when resuming (None: from scratch;
        a run killed before its first checkpoint starts again)."""
        if self.rank == 0:
            prepare_run_dir(self.out, resume)
        if not (resume and (self.out / CHECKPOINT_NAME).exists()):
            return None
        try:
            return load_checkpoint(self.out)
        except CheckpointError as e:
            raise RunError(str(e)) from None

    def setup_device(self) -> None:
        cfg, world = self.cfg, self.world
        self.device = resolve_device(cfg.device)
        if world == 1:
            return
        import torch.distributed as dist
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.sync_bn and self.device.type != "cuda":
            raise RunError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm is GPU-only); on CPU each process "
                           "normalises over its own shard of the batch")
        if cfg.batch_size % world:
            raise RunError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes {world}")

    def load_data(self) -> None:
        cfg = self.cfg
        data = load_cifar10(cfg.data_dir)
        self.mean, self.std = data.mean_std()
        self.official_test = (data.test_x, data.test_y)  # --keep-best reports its pick on these after training
        if cfg.cv_fold is not None:
            data = data.fold(int(cfg.cv_fold[0]), int(cfg.cv_fold[1]), seed=cfg.seed)
        elif cfg.validation:
            # 5,000 of CIFAR-10's 50,000 (a tenth of smaller training sets, e.g. the tests' tiny data)
            data = data.split_validation(min(5000, len(data.train_y) // 10), seed=cfg.seed)
        if cfg.first_1000:
            data = data.subset(1000, 1000)
        if len(data.train_y) < cfg.batch_size:
            raise RunError(f"--batch-size {cfg.batch_size} exceeds the {len(data.train_y)} training images")
        self.data = data
        batches = dict(mean=self.mean, std=self.std, device=self.device, channels_last=cfg.channels_last)
        self.train_iter = TensorBatches(data.train_x, data.train_y, cfg.batch_size // self.world, train=True,
                                        augment=cfg.augment, seed=cfg.seed, shard=(self.rank, self.world), **batches)
        self.test_iter = TensorBatches(data.test_x, data.test_y, cfg.eval_batch_size, **batches)

    def build(self, state: Optional[dict]) -> None:
        """Model, weight average, DDP wrapper, optimiser and schedule; restored from ``state`` when resuming."""
        cfg = self.cfg
        _seed_everything(cfg.seed)
        try:
            net = create_model(cfg.model, **cfg.model_kwargs)
        except (ValueError, TypeError) as e:  # bad --model-kwargs, previt without weights, ...
            raise RunError(f"cannot build model {cfg.model!r}: {first_line(e)}") from None
        if state is not None:
            self._load_weights(net, state)
        self.num_params = sum(p.numel() for p in net.parameters())
        net.to(self.device)
        if cfg.channels_last:
            net.to(memory_format=torch.channels_last)
        if cfg.ema_decay > 0:  # the average starts from the (possibly resumed) live weights, on the device
            self.ema = ModelEma(net, decay=cfg.ema_decay)
        self.net = self.train_net = net
        if self.world > 1:
            if cfg.sync_bn:
                self.net = net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        self.opt = _make_optimizer(cfg, net)
        self.sched, self.sched_per = _make_scheduler(cfg, self.opt, len(self.train_iter))
        self.history, self.start = History(), (0, 0, None)
        if state is not None:
            self._restore(state)
        use_compile = cfg.compile == "on" or (cfg.compile == "auto" and self.device.type == "cpu" and self.world == 1)
        self.compiled = use_compile

    def _load_weights(self, net: nn.Module, state: dict) -> None:
        if state.get("model_name") != self.cfg.model:
            raise RunError(f"{self.out}: checkpoint is of model {state.get('model_name')!r}, the run is "
                           f"{self.cfg.model!r}")
        try:
            net.load_state_dict(state.get("live_state", state["model_state"]))
        except Exception as e:
            raise RunError(f"{self.out / CHECKPOINT_NAME}: weights do not fit model {self.cfg.model!r} as "
                           f"configured ({first_line(e)})") from None

    def _restore(self, state: dict) -> None:
        try:
            if self.ema is not None and state.get("ema") is not None:
                self.ema.load_state_dict({**state["ema"], "module": state["model_state"]})
            self.opt.load_state_dict(state["optimizer"])
            if self.sched is not None and state.get("scheduler") is not None:
                self.sched.load_state_dict(state["scheduler"])
        except Exception as e:
            raise RunError(f"{self.out}: checkpoint training state does not fit ({first_line(e)})") from None
        self.history = History.from_state_dict(state["history"])
        self.best.update(state.get("best") or {})
        if self.cfg.keep_best and self.rank == 0 and (self.out / BEST_NAME).exists():  # best.pt is written first
            kept = load_checkpoint(self.out / BEST_NAME)
            self.best.update(epoch=kept["epoch"], val_loss=kept["val_loss"])
        # the other ranks start from zero partial sums: rank 0 restores the global ones
        self.start = (state["epoch"], state["step"], state.get("partial") if self.rank == 0 else None)
        _set_rng_state(state["rng"])

    def write_config(self) -> None:
        cfg, data = self.cfg, self.data
        self.resolved = plain({
            **asdict(cfg), "world_size": self.world, "per_rank_batch_size": cfg.batch_size // self.world,
            "global_batch_size": cfg.batch_size, "device_resolved": str(self.device),
            "autocast_dtype": str(resolve_precision(cfg.precision, self.device)), "num_params": self.num_params,
            "mean": self.mean, "std": self.std, "torch": str(torch.__version__),
            "train_examples": len(data.train_y), "eval_examples": len(data.test_y),
            "eval_split": (f"fold {cfg.cv_fold[0]} of {cfg.cv_fold[1]} of the training set" if cfg.cv_fold
                           else f"validation ({len(data.test_y)} held out of train)" if cfg.validation
                           else "official test set")})
        if self.rank == 0:
            write_json(self.out / CONFIG_NAME, self.resolved)

    def _handed_out(self) -> nn.Module:
        """The model users get (load_model, gatedconv-evaluate): the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.net

    def checkpoint(self, epoch_next: int, step: int, partial, hist: History, finished: bool = False) -> None:
        if self.rank != 0:
            return
        # live_state is what training continues from on --resume
        extra = ({} if self.ema is None else
                 {"live_state": self.net.state_dict(), "ema": {"updates": self.ema.updates, "decay": self.ema.decay}})
        save_checkpoint(self.out / CHECKPOINT_NAME, {
            "model_name": self.cfg.model, "model_kwargs": plain(self.cfg.model_kwargs),
            "model_state": self._handed_out().state_dict(), **extra,
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict() if self.sched else None,
            "rng": _rng_state(), "epoch": epoch_next, "step": step, "partial": partial,
            "history": hist.state_dict(), "config": self.resolved, "mean": list(self.mean), "std": list(self.std),
            "finished": finished, "best": dict(self.best),
        })
        write_metrics(self.out, hist.epochs)

    def on_epoch_end(self, epoch: int, hist: History) -> None:
        cfg = self.cfg
        val_loss = hist.epochs[-1]["test_loss"]  # the held-out split's loss (keep_best requires one)
        if cfg.keep_best and self.rank == 0 and (not self.best or val_loss < self.best["val_loss"]):
            # best.pt before checkpoint.pt, and --resume reads the record back from best.pt itself: a stop
            # between the two writes cannot make the run forget a better epoch
            self.best.update(epoch=epoch + 1, val_loss=val_loss)
            save_checkpoint(self.out / BEST_NAME, {
                "model_name": cfg.model, "model_kwargs": plain(cfg.model_kwargs),
                "model_state": self._handed_out().state_dict(), "config": self.resolved, "mean": list(self.mean),
                "std": list(self.std), "epoch": epoch + 1, "val_loss": val_loss})
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in hist.epochs[-1].items() if isinstance(v, (int, float))}, step=epoch + 1)
        if self.probe is not None:
            from .analysis import gate_epoch_stats
            hist.gates.append(dict(gate_epoch_stats(self.net, self.probe), epoch=epoch + 1))
            write_json(self.out / "gate_stats.json", hist.gates)
        if self.tb is not None:
            self._log_tensorboard(epoch, hist)
        if (epoch + 1) % cfg.ckpt_frequency == 0 or epoch + 1 == cfg.epochs:
            self.checkpoint(epoch + 1, 0, None, hist, finished=epoch + 1 == cfg.epochs)

    def _tensorboard(self):
        """``--tensorboard`` on rank 0: a TensorBoardAnimator around trainf's default Animator (curve.png)."""
        cfg = self.cfg
        if self.rank != 0 or not cfg.tensorboard:
            return None
        from .tensorboard import TensorBoardAnimator
        from .train import default_animator
        log_dir = Path(cfg.tensorboard) if isinstance(cfg.tensorboard, str) else self.out / "tensorboard"
        if isinstance(cfg.tensorboard, str) and cfg.cv_fold is not None:
            log_dir = log_dir / f"fold{cfg.cv_fold[0]}"
        inner = default_animator(cfg.epochs, str(self.out / "curve.png"), self.history)
        return TensorBoardAnimator(log_dir, inner=inner, steps_per_epoch=len(self.train_iter))

    def _log_tensorboard(self, epoch: int, hist: History) -> None:
        """The epoch's row (lr, test loss, timings) and gate statistics; after the last epoch of a gated model,
        the mean gate per class on (up to) 500 official test images."""
        self.tb.on_epoch_end(epoch, hist)
        if self.probe is not None and epoch + 1 == self.cfg.epochs:
            model = Normalized(self._handed_out(), self.mean, self.std).to(self.device)
            self.tb.log_gate_heatmap(model, *self.official_test, step=self.tb.step(epoch + 1), device=self.device,
                                     max_images=500)

    def _gate_probe(self) -> Optional[torch.Tensor]:
        """A fixed test batch for per-epoch gate statistics (one no-grad eval forward; no RNG, no BN update)."""
        from .layers import GatedConv2d
        if self.rank != 0 or not any(isinstance(m, GatedConv2d) for m in self.net.modules()):
            return None
        d, k = self.data, min(256, len(self.data.test_y))
        return next(iter(TensorBatches(d.test_x[:k], d.test_y[:k], k, mean=self.mean, std=self.std,
                                       device=self.device, channels_last=self.cfg.channels_last)))[0]

    def _distributed_hooks(self):
        """``should_stop`` and ``metric_reduce`` for trainf: under torchrun every rank stops at the same step
        (or the next all-reduce hangs) and the metric sums are global."""
        if self.world == 1:
            return (lambda: self.stop["flag"]), None
        import torch.distributed as dist
        device = self.device

        def should_stop() -> bool:
            flag = torch.tensor([1.0 if self.stop["flag"] else 0.0], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return bool(flag.item())

        def metric_reduce(vals):
            flat = torch.stack([v.to(device=device, dtype=torch.float64) for v in vals])
            dist.all_reduce(flat)
            return [flat[i].to(dtype=v.dtype if torch.is_tensor(v) else torch.float64).cpu()
                    for i, v in enumerate(vals)]
        return should_stop, metric_reduce

    def _temperature_schedule(self) -> Optional[Callable[[int], None]]:
        """``--temperature-anneal``: a step hook that sets every softmax gate's temperature (the live model's and
        the weight average's) from the number of steps taken; a function of the step, so resuming recreates it."""
        if self.cfg.temperature_anneal is None:
            return None
        from .layers import Gate
        t0, t1, frac = self.cfg.temperature_anneal
        ramp = max(1, round(frac * self.cfg.epochs * len(self.train_iter)))
        gates = [m for net in (self.net, self._handed_out()) for m in net.modules()
                 if isinstance(m, Gate) and m.gate == "softmax"]
        if not gates:
            raise RunError("--temperature-anneal needs softmax gates (--model-kwargs '{\"gate\": \"softmax\"}')")

        def set_temperature(step: int) -> None:
            t = t0 + (t1 - t0) * min(1.0, step / ramp)
            for g in gates:
                g.temperature = t
        return set_temperature

    def train(self) -> History:
        cfg = self.cfg
        self.probe = self._gate_probe()
        self.wandb = _wandb_run(cfg, self.resolved, self.say) if self.rank == 0 else None
        self.tb = self._tensorboard()
        should_stop, metric_reduce = self._distributed_hooks()
        self.say(f"model {cfg.model}: {self.num_params:,} parameters | {len(self.data.train_y)} train / "
                 f"{len(self.data.test_y)} eval images | device {self.device} | autocast "
                 f"{self.resolved['autocast_dtype']} | world size {self.world}")
        start_epoch, start_step, partial = self.start
        on_step = self._temperature_schedule()
        if on_step is not None:
            on_step(start_epoch * len(self.train_iter) + start_step)  # the temperature at the (resumed) start
        with compiled_sum(self.net, self.compiled), _stop_on_signals(self.stop):
            try:
                history = trainf(
                    self.train_net, self.train_iter, self.test_iter, make_loss(cfg), cfg.epochs, self.opt,
                    self.device, precision=cfg.precision, channels_last=cfg.channels_last, scheduler=self.sched,
                    scheduler_per=self.sched_per, animator=self.tb or ("auto" if self.rank == 0 else None),
                    figure_path=str(self.out / "curve.png") if self.rank == 0 else None, history=self.history,
                    start_epoch=start_epoch, start_step=start_step, partial=partial,
                    on_epoch_end=self.on_epoch_end, should_stop=should_stop, metric_reduce=metric_reduce,
                    on_interrupt=self.checkpoint, quiet=self.rank != 0, ema=self.ema, eval_raw=cfg.eval_raw,
                    on_step=on_step, print_fn=self.say)
            except TrainingInterrupted as e:
                raise RunInterrupted(
                    f"interrupted (signal {self.stop['sig']}) at epoch {e.epoch + 1}, step {e.step}; checkpoint "
                    f"saved; resume with: gatedconv-train --out {self.out} --resume") from None
            finally:
                if self.tb is not None:
                    self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        return history

    def finish(self, history: History) -> dict:
        """fp32 evaluation of what the run hands out (rank 0: the replicas are identical), final.json and
        summary.json. The number is ``load_model``'s view: normalisation inside, raw [0, 1] images, fp32, eager
        kernels and NCHW weights; the per-epoch figures ran in the training precision."""
        final = dict(history.epochs[-1])
        if self.rank != 0:
            return final
        cfg, (test_x, test_y) = self.cfg, (self.data.test_x, self.data.test_y)
        ref = evaluate_images(self._fp32_copy(self._handed_out()), test_x, test_y)
        final["test_acc_fp32"], final["test_top5_fp32"] = ref["top1"], ref["top5"]
        what = f"weight average, decay {cfg.ema_decay}" if self.ema is not None else "live weights"
        self.say(f"test acc {ref['top1']:.4f} (fp32, {what}, as gatedconv.load_model sees it; top-5 "
                 f"{ref['top5']:.4f}) on {len(test_y)} {self.resolved['eval_split']} images")
        if self.ema is not None:  # the live weights too, so what the average buys is on record for every run
            final["test_acc_raw_fp32"] = evaluate_images(self._fp32_copy(self.net), test_x, test_y)["top1"]
            self.say(f"test acc {final['test_acc_raw_fp32']:.4f} (fp32, live weights)")
        if cfg.keep_best and self.best:
            # the pick was made on the held-out split; its accuracy is reported on the official test set
            ref = evaluate_images(load_model(self.out / BEST_NAME), *self.official_test)
            final.update(best_epoch=self.best["epoch"], best_val_loss=self.best["val_loss"],
                         best_test_acc_fp32=ref["top1"], best_test_top5_fp32=ref["top5"])
            self.say(f"best epoch {self.best['epoch']} (validation loss {self.best['val_loss']:.4f}, kept in "
                     f"{self.out / BEST_NAME}): test acc {ref['top1']:.4f}, top-5 {ref['top5']:.4f} on the "
                     f"{len(self.official_test[1])} official test images")
        final["train_seconds"] = sum(r["seconds"] for r in history.epochs)
        write_json(self.out / FINAL_NAME, final)
        write_summary(self.out, make_record(command=command_line(), config=self.resolved, final=final, kind="train"))
        return final

    def _fp32_copy(self, net: nn.Module) -> nn.Module:
        net = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
        return Normalized(net, self.mean, self.std).to(self.device)  # buffers on the model's device

    def close(self, synchronize: bool = False) -> None:
        """Leave the process group. ``synchronize`` (a normal end only: after an error the other ranks may never
        arrive) first waits for every rank, as a rank that destroys its gloo group while another still has
        traffic in flight can abort ("terminate called without an active exception")."""
        if self.world > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                if synchronize:
                    dist.barrier()
                dist.destroy_process_group()


class _stop_on_signals:
    """SIGINT / SIGTERM set ``stop["flag"]``: the current step finishes, then trainf checkpoints and stops."""

    def __init__(self, stop: dict) -> None:
        self.stop = stop

    def _handler(self, signum, frame) -> None:
        self.stop["flag"], self.stop["sig"] = True, signum

    def __enter__(self):
        self.old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def _rng_state() -> dict:
    """Every generator's state as tensors and plain numbers, so ``torch.load(weights_only=True)`` reads it."""
    import numpy as np
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    import numpy as np
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def run_training(cfg: RunConfig, resume: bool = False, print_fn=print) -> dict:
    """Train as ``cfg`` says and return the final metrics. Raises RunError / DataError / CheckpointError for
    bad input, RunInterrupted on SIGINT/SIGTERM (after writing a checkpoint), NonFiniteLossError on NaN."""
    rank, world, local_rank = _dist_info()
    run = _Run(_resolve_config(cfg, resume, world), rank, world, local_rank, print_fn)
    state = run.prepare(resume)
    if state is not None and state.get("finished"):
        last = state["history"]["epochs"][-1]
        run.say(f"{run.out}: run already finished (test acc {last['test_acc']:.4f}); nothing to do")
        return last
    try:
        run.setup_device()
        run.load_data()
        run.build(state)
        run.write_config()
        history = run.train()
        run.close(synchronize=True)
    finally:
        run.close()  # after an error; a no-op once closed
    return run.finish(history)


def cross_validate(cfg: RunConfig, folds: int = 5, print_fn=print) -> dict:
    """K-fold cross-validation on the training set: run ``cfg`` once per fold (runs in ``OUT/fold{k}``, each
    resumable), evaluating on the held-out fold; returns per-fold accuracies with their mean and std."""
    if cfg.out is None:
        cfg = replace(cfg, out=str(default_run_dir(cfg.model, cfg.seed, kind="cv")))
    accs = []
    for k in range(folds):
        sub = replace(cfg, out=str(Path(cfg.out) / f"fold{k}"), cv_fold=(k, folds))
        final = run_training(sub, resume=(Path(sub.out) / CONFIG_NAME).exists(), print_fn=print_fn)
        accs.append(float(final["test_acc"]))
        print_fn(f"fold {k + 1}/{folds}: held-out accuracy {accs[-1]:.4f}")
    mean, std = statistics.mean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)
    summary = {"folds": folds, "accuracies": accs, "mean": mean, "std": std}
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    write_json(Path(cfg.out) / "cv.json", summary)
    print_fn(f"{folds}-fold cross-validation: {100 * mean:.2f}% +- {100 * std:.2f}")
    return summary
