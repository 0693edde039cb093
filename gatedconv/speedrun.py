"""The fast recipe: airbench94's training of ``gatedconv_fast`` (airbench94's layout with gated convolutions).

airbench94 (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv:2404.00498; code in
KellerJordan/cifar10-airbench) reaches 94% in ~10 epochs with: a frozen 2x2 patch-whitening first layer,
dirac-initialised convolutions, BatchNorm with frozen scale and a 64x learning rate on its bias, Nesterov SGD
written in "decoupled" form, label smoothing, a lookahead / EMA every 5 steps, alternating flip, +-2 px
translation and flip + translate test-time augmentation. The ``airbench94_muon`` recipe (``RECIPES``) is the
later record's training: Muon on the filters, batch 2000, 8 epochs. This is our own implementation, device-agnostic (CPU
bf16 autocast, CUDA too), built from the package's shared pieces:

* ``SpeedrunConfig`` - every hyperparameter, with its airbench source; ``whitening_init`` - the stem.
* ``gatedconv.augment`` - translation, alternating flip and TTA views (the seeding both recipes share);
  ``gatedconv.train.evaluate`` - the evaluation (with ``tta_level``); ``gatedconv.optim`` - the optimiser and
  schedule; ``gatedconv.ema.LookaheadEMA`` - the lookahead; ``gatedconv.flops`` - the efficiency measurement;
  ``gatedconv.rundir`` - the run directory (the same layout as the original recipe's).
* ``speedrun`` - one seed: train, evaluate, write a run directory that ``gatedconv.load_model`` reads.

``gatedconv-speedrun`` (``scripts/speedrun.py``) is the command line over ``speedrun``.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from einops import rearrange
from torch import nn

from .augment import FLIP_SEED_OFFSET, alternating_flip, batch_crop, epoch_generator, reflect_pad
from .checkpoint import CHECKPOINT_NAME, first_line, plain, save_checkpoint
from .data import CIFAR10
from .ema import LookaheadEMA, ema_decay
from .flops import matmul_peak_flops, sync, training_step_flops
from .kernels import compiled_sum
from .models import create_model
from .optim import build_optimizer, group_lr_factor
from .rundir import CONFIG_NAME, FINAL_NAME, RunError, command_line, prepare_run_dir, write_json, write_metrics
from .summary import make_record, write_summary
from .train import autocast_context, evaluate, resolve_device, resolve_precision

__all__ = [
    "SpeedrunConfig", "SpeedrunError", "RECIPES", "MODEL_NAME", "TARGET_ACC", "whitening_init", "patch_second_moment",
    "speedrun", "time_to_accuracy", "summarize", "format_seed_line", "format_summary_line", "plot_time_to_accuracy",
]

MODEL_NAME = "gatedconv_fast"
# the time-to-accuracy mark: the original recipe's published accuracy (83.5%, 30 epochs)
TARGET_ACC = 0.835


class SpeedrunError(RunError):
    """Bad input to a speedrun (config, data size, output directory); the message is one line."""


@dataclass
class SpeedrunConfig:
    """Everything that defines a speedrun besides the seed. Defaults are airbench94's ``hyp`` (KellerJordan/
    cifar10-airbench, legacy/airbench94.py) unless a comment says otherwise; saved in each run's config.json."""

    # --- optimisation: airbench94 hyp['opt']
    epochs: float = 9.9  # train_epochs (fractional: the last epoch stops part way)
    batch_size: int = 1024  # batch_size
    lr: float = 11.5  # lr per 1024 examples (decoupled form, see build_optimizer)
    momentum: float = 0.85  # momentum (Nesterov)
    weight_decay: float = 0.0153  # weight_decay per 1024 examples, decoupled from the lr
    bias_scaler: float = 64.0  # bias_scaler: lr multiplier (not wd) for BatchNorm biases
    # --- optimiser of the convolution filters (ours): "sgd" as airbench94, or "muon" as airbench94_muon, whose
    # published filter settings (lr 0.24, momentum 0.6, Nesterov) are the defaults; the rest stays SGD above
    optimizer: str = "sgd"
    muon_lr: float = 0.24
    muon_momentum: float = 0.6
    muon_ns_steps: int = 5  # Newton-Schulz steps per update (Muon's 5; airbench94_muon uses 3)
    muon_normalize: bool = False  # hold each filter bank at norm sqrt(C_out) (airbench94_muon)
    # --- the form of the SGD groups' lrs (gatedconv.optim.build_optimizer): "decoupled" (airbench94: lr and
    # weight_decay above, per 1024 examples) or "direct" (airbench94_muon: PyTorch lrs for the summed loss below)
    lr_form: str = "decoupled"
    bias_lr: float = 0.053  # direct form: BatchNorm and whitening biases (airbench94_muon bias_lr)
    head_lr: float = 0.67  # direct form: the head (airbench94_muon head_lr)
    decay_per_example: float = 2e-6  # direct form: weight decay per step = this x batch size (airbench94_muon wd)
    label_smoothing: float = 0.2  # label_smoothing
    whiten_bias_epochs: int = 3  # whiten_bias_epochs: train the whitening bias for this many epochs, then freeze
    whiten_bias_lr_decay: bool = False  # its lr falls linearly to 0 over those epochs (airbench94_muon)
    # --- lr schedule: airbench94 main() get_lr: linear 0.2 -> 1 over the first 23% of steps, then 1 -> 0.07
    warmup_frac: float = 0.23
    lr_start: float = 0.2
    lr_end: float = 0.07
    # --- lookahead: airbench94 main(): every 5 steps, decay 0.95**5 * (step / total)**3; final sync at the end
    ema: bool = True
    ema_every: int = 5
    ema_rate: float = 0.95  # raised to the power ema_every
    ema_power: float = 3.0
    # --- augmentation: airbench94 hyp['aug'] (translate with reflect padding; flip alternating, CifarLoader)
    translate: int = 2
    flip: bool = True
    # --- whitening stem: airbench94 init_whitening_conv(eps=5e-4) on the first 5000 training images
    whiten: bool = True  # False: the stem is a trained conv + BatchNorm (model stem="conv")
    whiten_eps: float = 5e-4
    whiten_images: int = 5000
    # --- evaluation: airbench94 hyp['net']['tta_level'] = 2 (mirror + 1 px translate), test batch 2000
    tta_level: int = 2
    eval_batch_size: int = 2000
    eval_every_epoch: bool = True  # test accuracy (no TTA) at each epoch end, for time-to-accuracy; not timed
    target_acc: float = TARGET_ACC
    # --- model: GatedFastNetConfig keywords (widths, kernel_sizes, gate, activation, ...)
    model_kwargs: dict = field(default_factory=dict)
    # --- runtime (ours, not airbench's)
    device: str = "auto"
    # autocast dtype: auto (bf16 where the hardware has it, fp16 on other GPUs, else fp32: the package's
    # resolve_precision), bf16, fp16 (CUDA only) or fp32 (no autocast)
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile the training forward; compile time lands inside the timed region
    # torch.compile only the gated sums (gatedconv.kernels.compiled_sum): one fused kernel each way
    # instead of ~4 memory passes per path; benchmarks/bench_fast.py measured the step 1.45x airbench94's plain
    # step with it against 1.72x without (batch 1024, bf16). Compile time (~5 s per shape) is timed.
    compile_sum: bool = True
    measure_flops: bool = True
    recipe: str = "airbench94"  # the name of the RECIPES entry this config started from (saved with each run)

    @classmethod
    def from_recipe(cls, recipe: str = "airbench94", **overrides) -> "SpeedrunConfig":
        """The config of a named recipe (``RECIPES``), with ``overrides`` on top; ``model_kwargs`` are merged."""
        if recipe not in RECIPES:
            raise SpeedrunError(f"unknown recipe {recipe!r}; choose from: {', '.join(RECIPES)}")
        fields = dict(RECIPES[recipe])
        model_kwargs = {**fields.pop("model_kwargs", {}), **overrides.pop("model_kwargs", {})}
        return cls(**{**fields, **overrides, "model_kwargs": model_kwargs, "recipe": recipe})

    def validate(self) -> None:
        if not self.epochs > 0:
            raise SpeedrunError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise SpeedrunError(f"batch sizes must be >= 1, got {self.batch_size} / {self.eval_batch_size}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise SpeedrunError(f"need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got {self.lr}, "
                                f"{self.weight_decay}, {self.momentum}")
        if not 0 <= self.label_smoothing < 1:
            raise SpeedrunError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.tta_level not in (0, 1, 2):
            raise SpeedrunError(f"tta level must be 0, 1 or 2, got {self.tta_level}")
        if self.translate < 0 or self.whiten_images < 1 or self.ema_every < 1:
            raise SpeedrunError("translate must be >= 0, whiten_images and ema_every >= 1")
        if self.optimizer not in ("sgd", "muon") or not self.muon_lr > 0 or not 0 <= self.muon_momentum < 1:
            raise SpeedrunError(f"optimizer must be sgd or muon (muon_lr > 0, 0 <= muon_momentum < 1), got "
                                f"{self.optimizer!r}, {self.muon_lr}, {self.muon_momentum}")
        if self.lr_form not in ("decoupled", "direct") or self.muon_ns_steps < 1:
            raise SpeedrunError(f"lr_form must be decoupled or direct and muon_ns_steps >= 1, got {self.lr_form!r}, "
                                f"{self.muon_ns_steps}")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise SpeedrunError(f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")
        if "stem" in self.model_kwargs:
            raise SpeedrunError("set the stem with whiten (True: 'whiten', False: 'conv'), not model_kwargs['stem']")

    def resolved_model_kwargs(self) -> dict:
        """The model's keyword arguments as saved in the checkpoint (JSON types: lists, not tuples)."""
        kw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.model_kwargs.items()}
        kw["stem"] = "whiten" if self.whiten else "conv"
        return kw


# ------------------------------------------------------------------------------------------------------
# Whitening stem


def _as_float_images(images: torch.Tensor, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]):
    """uint8 images -> normalised float ((x / 255 - mean) / std, the network's input space); float images are
    taken to be in that space already. Without mean / std, uint8 images use their own per-channel statistics."""
    if images.dtype != torch.uint8:
        return images.float()
    x = images.float().div_(255)
    if mean is None or std is None:
        m, s = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    else:
        m = torch.tensor(mean, dtype=torch.float32, device=x.device)
        s = torch.tensor(std, dtype=torch.float32, device=x.device)
    return (x - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1)


def patch_second_moment(images: torch.Tensor, k: int, chunk: int = 500) -> torch.Tensor:
    """E[p p^T] over every k x k patch p (flattened in a conv weight's (C, kh, kw) order) of float images
    (N, C, H, W); float64 (4.8M patches for 5000 images: a float32 sum would lose digits), accumulated ``chunk``
    images at a time (~46 MB of float64 patches each) so all patches never sit in memory at once."""
    n_feat = images.shape[1] * k * k
    acc = torch.zeros(n_feat, n_feat, dtype=torch.float64, device=images.device)
    count = 0
    for xb in images.split(chunk):
        p = xb.unfold(2, k, 1).unfold(3, k, 1)  # (B, C, H', W', k, k)
        p = rearrange(p, "b c h w kh kw -> (b h w) (c kh kw)").double()
        acc += p.T @ p
        count += p.shape[0]
    return acc / count


@torch.no_grad()
def whitening_init(
    conv_or_weight: Union[nn.Conv2d, torch.Tensor],
    images: torch.Tensor,
    eps: float = 5e-4,
    *,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> torch.Tensor:
    """Set a (2 * C * k * k, C, k, k) conv weight to patch whitening, in place; returns the eigenvalues
    (descending).

    Following airbench94 (after Page 2018 and hlb-CIFAR10): with ``E[p p^T] = V diag(lam) V^T`` over all k x k
    patches of ``images``, the first C*k*k filters are ``v_i / sqrt(lam_i + eps)`` (largest eigenvalue first)
    and the other C*k*k their negatives, so the GELU after the stem keeps both signs of every direction. The
    whitened patches then have second moment ``diag(lam / (lam + eps))``: ~identity wherever lam >> eps.

    It is the uncentred second moment, as in airbench: the images are normalised per channel (mean ~0), and the
    stem's trained bias absorbs what is left. ``images``: uint8 (normalised here with ``mean`` / ``std``, else
    their own statistics) or float already in the network's input space. ``eps`` = 5e-4 is airbench94's.
    """
    weight = conv_or_weight.weight if isinstance(conv_or_weight, nn.Module) else conv_or_weight
    out_ch, c, kh, kw = weight.shape
    if kh != kw or out_ch != 2 * c * kh * kw or images.dim() != 4 or images.shape[1] != c:
        raise ValueError(f"whitening_init needs a (2*C*k*k, C, k, k) weight and (N, C, H, W) images, got "
                         f"{tuple(weight.shape)} and {tuple(images.shape)}")
    x = _as_float_images(images, mean, std).to(weight.device)
    cov = patch_second_moment(x, kh)
    lam, vecs = torch.linalg.eigh(cov)  # ascending; columns are eigenvectors
    lam, vecs = lam.flip(0), vecs.flip(1)  # largest first, like airbench
    filters = (vecs.T / torch.sqrt(lam.clamp_min(0) + eps)[:, None]).reshape(c * kh * kw, c, kh, kw)
    weight.copy_(torch.cat([filters, -filters]).to(weight.dtype))
    return lam


# The named recipes: SpeedrunConfig fields that differ from its defaults (airbench94's).
RECIPES = {
    "airbench94": {},
    # airbench94 with Muon (KellerJordan/cifar10-airbench, airbench94_muon.py: 94.01% mean in 2.59 s on an A100):
    # batch 2000 for 8 epochs, no warm-up and a linear fall to 0, Muon (3 Newton-Schulz steps, filter banks held at
    # norm sqrt(C_out)) on the filters, Nesterov SGD at direct lrs on biases and head, the whitening bias's lr
    # falling to 0 over its 3 epochs, no lookahead; a head rescaled to unit std at init, logits / 256 (its width)
    "airbench94_muon": dict(
        epochs=8, batch_size=2000, optimizer="muon", muon_lr=0.24, muon_momentum=0.6, muon_ns_steps=3,
        muon_normalize=True, lr_form="direct", momentum=0.85, whiten_bias_lr_decay=True, warmup_frac=0.0,
        lr_end=0.0, ema=False, model_kwargs={"head_init": "unit_std", "logit_scale": 1 / 256}),
}


# ------------------------------------------------------------------------------------------------------
# The run


def time_to_accuracy(series: Sequence[Sequence[float]], target: float = TARGET_ACC) -> Optional[float]:
    """Seconds at the first (seconds, accuracy) point with accuracy >= target; None if never reached. The
    series has a point per epoch end, so this is the time of the first epoch that ends at or above it."""
    for sec, acc in series:
        if acc >= target:
            return float(sec)
    return None


@dataclass
class _Plan:
    """The schedule and the place of one speedrun, fixed before anything is timed."""

    steps_per_epoch: int
    total_steps: int
    n_epochs: int
    device: torch.device
    amp: Optional[torch.dtype]


def _make_plan(cfg: SpeedrunConfig, data: CIFAR10) -> _Plan:
    cfg.validate()
    steps_per_epoch = len(data.train_y) // cfg.batch_size  # drop_last, as airbench
    if steps_per_epoch < 1:
        raise SpeedrunError(f"batch size {cfg.batch_size} exceeds the {len(data.train_y)} training images")
    total_steps = math.ceil(steps_per_epoch * cfg.epochs)
    try:
        device = resolve_device(cfg.device)
        amp = resolve_precision(cfg.precision, device)
    except ValueError as e:
        raise SpeedrunError(str(e)) from None
    return _Plan(steps_per_epoch, total_steps, math.ceil(total_steps / steps_per_epoch), device, amp)


class _Data:
    """The data on the device as uint8 (loading is not timed), and the normalisation of a batch."""

    def __init__(self, data: CIFAR10, device: torch.device, channels_last: bool) -> None:
        self.mean, self.std = data.mean_std()
        self.train_x, self.train_y = data.train_x.to(device), data.train_y.to(device)
        self.test_x, self.test_y = data.test_x.to(device), data.test_y.to(device)
        self.mean255 = torch.tensor(self.mean, device=device).view(1, 3, 1, 1) * 255
        self.std255 = torch.tensor(self.std, device=device).view(1, 3, 1, 1) * 255
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format

    def normalise(self, xu8: torch.Tensor) -> torch.Tensor:
        return ((xu8.float() - self.mean255) / self.std255).contiguous(memory_format=self.fmt)

    def test_batches(self, batch_size: int):
        for i in range(0, len(self.test_y), batch_size):
            yield self.normalise(self.test_x[i:i + batch_size]), self.test_y[i:i + batch_size]


def _test_accuracy(cfg: SpeedrunConfig, net: nn.Module, d: _Data, plan: _Plan, level: int) -> float:
    return evaluate(net, d.test_batches(cfg.eval_batch_size), plan.device, cfg.precision,
                    channels_last=cfg.channels_last, tta_level=level)["acc"]


def _epoch_images(cfg: SpeedrunConfig, d: _Data, padded: torch.Tensor, seed: int, epoch: int):
    """This epoch's augmented training images and order, from ``(seed, epoch)`` alone (gatedconv.augment)."""
    n = len(d.train_y)
    g = epoch_generator(seed, epoch)
    if cfg.translate > 0:
        shifts = torch.randint(-cfg.translate, cfg.translate + 1, (n, 2), generator=g)
        images = batch_crop(padded, cfg.translate, shifts)
    else:
        images = d.train_x
    if cfg.flip:  # its own seed stream: drawing the base pattern from g would tie flips to epoch-0 shifts
        images = alternating_flip(images, epoch, FLIP_SEED_OFFSET + seed)
    return images, torch.randperm(n, generator=g).to(d.train_x.device)


class _Training:
    """The timed part of a speedrun: whitening, set-up, then the epochs (``run_epoch``)."""

    def __init__(self, cfg: SpeedrunConfig, net: nn.Module, d: _Data, plan: _Plan) -> None:
        self.cfg, self.net, self.d, self.plan = cfg, net, d, plan
        t0 = time.perf_counter()
        net.to(plan.device, memory_format=d.fmt)
        if cfg.whiten:
            whitening_init(net.stem, d.train_x[:cfg.whiten_images], cfg.whiten_eps, mean=d.mean, std=d.std)
        sync(plan.device)
        self.whiten_seconds = time.perf_counter() - t0
        # compiled lazily: the first steps pay the compilation, inside the timed region
        self.train_net = torch.compile(net) if cfg.compile else net
        self.opt = build_optimizer(net, cfg)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="sum")  # airbench: summed
        self.ema = LookaheadEMA(net) if cfg.ema else None
        # reflect-pad the training set once; each epoch crops its own shifts from it (airbench's pre-padding)
        self.padded = reflect_pad(d.train_x, cfg.translate)
        sync(plan.device)
        self.clock = time.perf_counter() - t0  # timed seconds so far: whitening and the set-up above
        self.step = 0

    def run_epoch(self, seed: int, epoch: int) -> dict:
        cfg, net, d, plan = self.cfg, self.net, self.d, self.plan
        t_epoch = time.perf_counter()
        if cfg.whiten:  # airbench94: whitening bias trains for the first epochs, then freezes
            net.stem.bias.requires_grad_(epoch < cfg.whiten_bias_epochs)
        images, order = _epoch_images(cfg, d, self.padded, seed, epoch)
        loss_sum = torch.zeros((), device=plan.device)
        correct = torch.zeros((), dtype=torch.long, device=plan.device)
        seen = 0
        for i in range(plan.steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            x, y = d.normalise(images[idx]), d.train_y[idx]
            with autocast_context(plan.device, plan.amp):
                logits = self.train_net(x)
            loss = self.loss_fn(logits.float(), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            for grp in self.opt.param_groups:
                grp["lr"] = grp["base_lr"] * group_lr_factor(grp, self.step, plan.total_steps, cfg,
                                                             plan.steps_per_epoch)
            self.opt.step()
            self.step += 1
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if self.ema is not None and self.step % cfg.ema_every == 0:
                self.ema.update(net, ema_decay(self.step, plan.total_steps, cfg.ema_rate, cfg.ema_every,
                                               cfg.ema_power))
            if self.step >= plan.total_steps:
                if self.ema is not None:
                    self.ema.update(net, 1.0)  # end on the average (airbench94's final decay=1.0 update)
                break
        sync(plan.device)
        self.clock += time.perf_counter() - t_epoch
        train_loss = loss_sum.item() / max(seen, 1)
        if not math.isfinite(train_loss):
            raise SpeedrunError(f"loss became NaN/inf in epoch {epoch + 1}; stopped (try a lower lr or fp32)")
        return {"epoch": epoch + 1, "steps": self.step, "seconds": self.clock, "train_loss": train_loss,
                "train_acc": correct.item() / max(seen, 1), "lr": self.opt.param_groups[-1]["lr"]}


def _build(cfg: SpeedrunConfig, d: _Data, seed: int, plan: _Plan, n_train: int, n_test: int):
    torch.manual_seed(seed)  # the model's random init (default-init channels, head)
    model_kwargs = cfg.resolved_model_kwargs()
    try:
        net = create_model(MODEL_NAME, **model_kwargs)
    except (TypeError, ValueError) as e:
        raise SpeedrunError(f"cannot build {MODEL_NAME}: {first_line(e)}") from None
    resolved = plain({
        "model": MODEL_NAME, "model_kwargs": model_kwargs, "seed": seed, "speedrun": asdict(cfg),
        "mean": list(d.mean), "std": list(d.std), "num_params": net.num_params(), "device": str(plan.device),
        "autocast_dtype": str(plan.amp), "train_examples": n_train, "test_examples": n_test,
        "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total_steps, "torch": str(torch.__version__),
        "threads": torch.get_num_threads()})
    return net, resolved


def _train(cfg: SpeedrunConfig, net: nn.Module, d: _Data, plan: _Plan, seed: int, say) -> dict:
    """Train and evaluate with TTA (timed, airbench's convention); the per-epoch test accuracy (no TTA) that
    gives the time-to-accuracy series is not timed (``monitor_seconds``)."""
    tr = _Training(cfg, net, d, plan)
    series, rows, monitor_seconds = [], [], 0.0
    net.train()
    with compiled_sum(net, cfg.compile_sum):
        for epoch in range(plan.n_epochs):
            row = tr.run_epoch(seed, epoch)
            if cfg.eval_every_epoch:
                tm = time.perf_counter()
                row["test_acc"] = _test_accuracy(cfg, net, d, plan, 0)
                monitor_seconds += time.perf_counter() - tm
                series.append((tr.clock, row["test_acc"]))
            rows.append(row)
            say(f"  seed {seed} epoch {epoch + 1}/{plan.n_epochs}: train loss {row['train_loss']:.4f}, train acc "
                f"{row['train_acc']:.4f}" + (f", test acc {row['test_acc']:.4f}" if "test_acc" in row else "")
                + f", {tr.clock:.1f} s")
    te = time.perf_counter()
    acc_tta = _test_accuracy(cfg, net, d, plan, cfg.tta_level)
    sync(plan.device)
    eval_seconds = time.perf_counter() - te
    # the last epoch-end evaluation saw the final weights
    acc = acc_tta if cfg.tta_level == 0 else series[-1][1] if series else _test_accuracy(cfg, net, d, plan, 0)
    series = series or [(tr.clock, acc)]
    return {"seed": seed, "acc": acc, "acc_tta": acc_tta, "tta_level": cfg.tta_level,
            "seconds": tr.clock + eval_seconds, "whiten_seconds": tr.whiten_seconds,
            "train_seconds": tr.clock - tr.whiten_seconds, "eval_seconds": eval_seconds,
            "monitor_seconds": monitor_seconds, "epochs": cfg.epochs, "steps": tr.step,
            "series": [list(p) for p in series], "target_acc": cfg.target_acc,
            "time_to_target": time_to_accuracy(series, cfg.target_acc), "rows": rows}


def _efficiency(cfg: SpeedrunConfig, net: nn.Module, plan: _Plan, steps: int, train_seconds: float) -> dict:
    """Training FLOP/s against the fastest square matmul this hardware does, whatever the run's precision (so an
    fp32 run shows what it leaves on the table; the max over dtypes because without native bf16 bf16 is slow)."""
    flops_step = training_step_flops(net, (cfg.batch_size, 3, 32, 32), autocast_dtype=plan.amp,
                                     channels_last=cfg.channels_last)
    dtypes = [torch.bfloat16, torch.float32] + ([torch.float16] if plan.device.type == "cuda" else [])
    peaks = {dt: matmul_peak_flops(dt, 2048 if plan.device.type == "cpu" else 8192, plan.device) for dt in dtypes}
    peak_dtype = max(peaks, key=peaks.get)
    rate = flops_step * steps / max(train_seconds, 1e-9)
    return {"flops_per_step": flops_step, "train_flops": flops_step * steps, "train_flops_per_sec": rate,
            "peak_flops": peaks[peak_dtype], "peak_dtype": str(peak_dtype), "efficiency": rate / peaks[peak_dtype]}


def speedrun(cfg: SpeedrunConfig, data: CIFAR10, seed: int, out_dir: Union[str, Path],
             print_fn: Optional[Callable[..., None]] = print) -> dict:
    """Train ``gatedconv_fast`` once with the airbench94-style recipe; write a run directory; return the results.

    Timed (``seconds``): whitening init, the set-up (optimizer, lookahead copy, padding the training set), the
    training loop (augmentation, steps, lookahead; compilation when ``cfg.compile``) and the final TTA evaluation
    - airbench's convention. Not timed: reading the data, the per-epoch test evaluations that give the
    time-to-accuracy series (``monitor_seconds``), the FLOP count and writing files. ``wall_seconds`` is all.

    The run directory is ``gatedconv.rundir``'s layout: ``config.json``, ``metrics.csv`` (a row per epoch),
    ``checkpoint.pt`` (``gatedconv.load_model`` reads it), ``final.json`` and ``summary.json``. Returned:
    ``acc`` / ``acc_tta`` (final test accuracy without / with TTA), ``seconds``, ``train_seconds``, ``series``
    [(seconds, acc without TTA) per epoch end], ``time_to_target``, FLOP figures, and more.
    """
    wall0 = time.perf_counter()
    say = print_fn or (lambda *a, **k: None)
    plan = _make_plan(cfg, data)
    out = Path(out_dir)
    try:
        prepare_run_dir(out, resume_hint="choose another output directory")
    except RunError as e:
        raise SpeedrunError(str(e)) from None
    d = _Data(data, plan.device, cfg.channels_last)
    net, resolved = _build(cfg, d, seed, plan, len(data.train_y), len(data.test_y))
    write_json(out / CONFIG_NAME, resolved)
    results = _train(cfg, net, d, plan, seed, say)
    rows = results.pop("rows")
    results["num_params"] = resolved["num_params"]
    if cfg.measure_flops:
        results.update(_efficiency(cfg, net, plan, results["steps"], results["train_seconds"]))
    save_checkpoint(out / CHECKPOINT_NAME, {
        "model_name": MODEL_NAME, "model_kwargs": resolved["model_kwargs"], "model_state": net.state_dict(),
        "mean": list(d.mean), "std": list(d.std), "config": resolved, "results": plain(results), "finished": True,
    })
    write_metrics(out, rows)
    results["wall_seconds"] = time.perf_counter() - wall0
    write_json(out / FINAL_NAME, results)
    write_summary(out, make_record(command=command_line(), config=resolved, final=results, kind="speedrun"))
    return results


# ------------------------------------------------------------------------------------------------------
# Reporting


def summarize(results: Sequence[dict]) -> dict:
    """Mean / sample std of the final accuracy (with TTA), mean seconds, and the pooled efficiency."""
    accs = [r["acc_tta"] for r in results]
    out = {"n": len(results), "acc_mean": statistics.mean(accs),
           "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
           "acc_notta_mean": statistics.mean(r["acc"] for r in results),
           "seconds_mean": statistics.mean(r["seconds"] for r in results),
           "reached_target": sum(r["time_to_target"] is not None for r in results)}
    reached = [r["time_to_target"] for r in results if r["time_to_target"] is not None]
    out["time_to_target_mean"] = statistics.mean(reached) if reached else None
    if all("efficiency" in r for r in results) and results:
        flops = sum(r["train_flops"] for r in results)
        secs = sum(r["train_seconds"] for r in results)
        out["train_flops_per_sec"] = flops / max(secs, 1e-9)
        out["peak_flops"] = statistics.mean(r["peak_flops"] for r in results)
        out["efficiency"] = out["train_flops_per_sec"] / out["peak_flops"]
        out["flops_per_step"] = results[0]["flops_per_step"]
    return out


def format_seed_line(r: dict) -> str:
    ttt = r["time_to_target"]
    ttt_s = f"{ttt:.1f} s" if ttt is not None else "not reached"
    return (f"seed {r['seed']}: acc {100 * r['acc']:.2f}% (TTA{r['tta_level']} {100 * r['acc_tta']:.2f}%), "
            f"{r['seconds']:.1f} s (train {r['train_seconds']:.1f} s), time-to-{100 * r['target_acc']:.1f}% {ttt_s}")


def format_summary_line(s: dict) -> str:
    """The one closing line: ``mean ACC% +- STD over N seeds, T s per run`` (ACC with TTA, STD the sample std)."""
    return (f"mean {100 * s['acc_mean']:.2f}% +- {100 * s['acc_std']:.2f} over {s['n']} seeds, "
            f"{s['seconds_mean']:.1f} s per run")


def plot_time_to_accuracy(results: Sequence[dict], path: Union[str, Path], target: float = TARGET_ACC) -> Path:
    """Test accuracy (no TTA, per epoch end) against timed seconds, one line per seed, the target dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for r in results:
        s = r["series"]
        ax.plot([p[0] for p in s], [100 * p[1] for p in s], marker="o", ms=3, label=f"seed {r['seed']}")
    ax.axhline(100 * target, ls="--", c="grey", lw=1, label=f"{100 * target:.1f}%")
    ax.set_xlim(left=0)
    ax.set_xlabel("timed seconds (whitening + training; per-epoch evaluation excluded)")
    ax.set_ylabel("test accuracy without TTA (%)")
    ax.set_title(f"{MODEL_NAME}: time to accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
