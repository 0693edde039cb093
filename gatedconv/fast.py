"""A fast CIFAR-10 recipe for the gated network (issue #4), in the style of airbench94.

airbench94 (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv:2404.00498; code in
KellerJordan/cifar10-airbench) reaches 94% in ~10 epochs with: a frozen 2x2 patch-whitening first layer,
dirac-initialised convolutions, BatchNorm with frozen scale and a 64x learning rate on its bias, Nesterov SGD
written in "decoupled" form, label smoothing, a lookahead / EMA every 5 steps, alternating flip, +-2 px
translation and flip + translate test-time augmentation. This module is our own implementation of those
pieces for ``gatedconv_fast`` (``gatedconv.models.fast``), device-agnostic (CPU bf16 autocast here, CUDA too):

* ``SpeedrunConfig`` - every hyperparameter, with its airbench source.
* ``whitening_init`` - the stem's weights from the eigenvectors of the 2x2 training-patch covariance.
* ``LookaheadEMA`` / ``ema_decay`` - the lookahead update and its decay schedule.
* ``reflect_pad``, ``batch_crop``, ``batch_translate``, ``alternating_flip`` - batched augmentation.
* ``tta_views``, ``tta_logits`` - test-time augmentation.
* ``build_optimizer``, ``lr_factor`` - decoupled Nesterov SGD param groups and the triangular schedule.
* ``speedrun`` - one seed: train, evaluate, write a run directory that ``gatedconv.load_model`` reads.
* ``training_step_flops``, ``matmul_peak_flops`` - the efficiency measurement.

``scripts/speedrun.py`` is the command line over ``speedrun``.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from . import layers
from .checkpoint import CHECKPOINT_NAME, atomic_write_text, save_checkpoint, writable_dir_problem
from .data import CIFAR10
from .models import create_model
from .train import autocast_context, resolve_device, resolve_precision

__all__ = [
    "SpeedrunConfig", "SpeedrunError", "MODEL_NAME", "TARGET_ACC", "whitening_init", "patch_second_moment",
    "LookaheadEMA", "ema_decay", "reflect_pad", "batch_crop", "batch_translate", "alternating_flip_mask",
    "alternating_flip", "tta_views", "tta_logits", "lr_factor", "build_optimizer", "speedrun",
    "training_step_flops", "matmul_peak_flops", "synthetic_train_step", "time_to_accuracy", "summarize",
    "format_seed_line", "format_summary_line", "plot_time_to_accuracy",
]

MODEL_NAME = "gatedconv_fast"
# the time-to-accuracy mark: the original recipe's accuracy (README "Measured results": 83.52 +- 0.46%, 2 seeds)
TARGET_ACC = 0.835
# the alternating-flip pattern of seed s is drawn from manual_seed(FLIP_SEED_OFFSET + s), a stream apart from the
# per-epoch order / shift generators (manual_seed(s * 1_000_003 + epoch)); any constant far from those works
FLIP_SEED_OFFSET = 1 << 40


class SpeedrunError(ValueError):
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
    label_smoothing: float = 0.2  # label_smoothing
    whiten_bias_epochs: int = 3  # whiten_bias_epochs: train the whitening bias for this many epochs, then freeze
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
    # torch.compile only the gated sums (gatedconv.layers.set_compiled_combine): one fused kernel each way
    # instead of ~4 memory passes per path; scripts/bench_fast.py measured the step 1.45x airbench94's plain
    # step with it against 1.72x without (batch 1024, bf16). Compile time (~5 s per shape) is timed.
    compile_sum: bool = True
    measure_flops: bool = True

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


# ------------------------------------------------------------------------------------------------------
# Lookahead


def ema_decay(step: int, total_steps: int, rate: float = 0.95, every: int = 5, power: float = 3.0) -> float:
    """airbench94's lookahead decay at optimiser step ``step`` (1-based count of steps taken):
    ``rate**every * (step / total)**power``. Near 0 early (the average follows the weights), 0.95**5 = 0.77 at
    the end (a long average as the lr anneals)."""
    return rate ** every * (step / total_steps) ** power


class LookaheadEMA:
    """Lookahead with an exponential average (hlb-CIFAR10 / airbench94): every few steps the average moves
    towards the live weights, ``avg <- decay * avg + (1 - decay) * live``, and the live weights are reset to the
    average (that reset is the "lookahead" part: SGD continues from the averaged point).

    Covers every floating-point entry of the ``state_dict`` - parameters and BatchNorm running statistics, as
    airbench does; integer buffers (``num_batches_tracked``) are left alone.
    """

    def __init__(self, model: nn.Module) -> None:
        live = model.state_dict()
        self.names = [k for k, v in live.items() if v.is_floating_point()]
        self.average = {k: live[k].detach().clone() for k in self.names}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        live = model.state_dict()
        for k in self.names:
            avg = self.average[k]
            avg.lerp_(live[k], 1.0 - decay)
            live[k].copy_(avg)


# ------------------------------------------------------------------------------------------------------
# Batched augmentation


def _reflect_pad_by_index(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect padding as two index selects (any dtype, any device): index ``i`` in [-pad, n + pad) reads
    ``|i|`` below the image and ``2 (n - 1) - i`` above it (the edge pixel is not repeated, as in ``F.pad``)."""
    def index(n: int) -> torch.Tensor:
        i = torch.arange(-pad, n + pad, device=images.device).abs()
        return torch.where(i > n - 1, 2 * (n - 1) - i, i)
    return images.index_select(2, index(images.shape[-2])).index_select(3, index(images.shape[-1]))


def reflect_pad(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad (N, C, H, W) by ``pad`` on every side (``F.pad(mode="reflect")``), for any dtype, uint8 too.

    ``F.pad`` is ~12x faster than index selects on the CPU for the uint8 training set (0.13 s vs 1.6 s for
    50,000 images, one thread, measured here), but its reflect kernel is not implemented for every integer dtype
    on every device; there the same result comes from two index selects."""
    if pad <= 0:
        return images
    h, w = images.shape[-2:]
    if pad >= min(h, w):
        raise ValueError(f"reflect padding {pad} needs images larger than {pad} pixels, got {h}x{w}")
    try:
        return F.pad(images, (pad, pad, pad, pad), mode="reflect")
    except (RuntimeError, NotImplementedError):
        return _reflect_pad_by_index(images, pad)


def batch_crop(padded: torch.Tensor, pad: int, shifts: torch.Tensor) -> torch.Tensor:
    """Windows of (N, C, H + 2 pad, W + 2 pad) images: image i is moved by ``shifts[i] = (dy, dx)`` in
    [-pad, pad] (window origin ``pad + dy, pad + dx``). One masked copy per shift value and axis (2 * (2 pad + 1)
    copies of the batch in all), like airbench's ``batch_crop``, instead of a per-pixel gather."""
    if pad <= 0:
        return padded
    n, c, hp, wp = padded.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    shifts = shifts.to(padded.device)
    rows = padded.new_empty(n, c, h, wp)
    for s in range(-pad, pad + 1):
        m = shifts[:, 0] == s
        rows[m] = padded[m, :, pad + s:pad + s + h, :]
    out = padded.new_empty(n, c, h, w)
    for s in range(-pad, pad + 1):
        m = shifts[:, 1] == s
        out[m] = rows[m, :, :, pad + s:pad + s + w]
    return out


def batch_translate(images: torch.Tensor, pad: int, generator: Optional[torch.Generator] = None,
                    shifts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Random translation of each image by up to ``pad`` px per axis, reflect-filled (airbench94's
    ``translate=2``); shifts (N, 2) in [-pad, pad] are drawn from ``generator`` unless given."""
    if pad <= 0:
        return images
    if shifts is None:
        shifts = torch.randint(-pad, pad + 1, (images.shape[0], 2), generator=generator)
    return batch_crop(reflect_pad(images, pad), pad, shifts)


def _flip_base_generator(seed_or_generator: Union[int, torch.Generator]) -> torch.Generator:
    if isinstance(seed_or_generator, torch.Generator):
        g = torch.Generator()
        g.set_state(seed_or_generator.get_state())  # a copy: the caller's generator is not advanced
        return g
    return torch.Generator().manual_seed(int(seed_or_generator))


def alternating_flip_mask(n: int, epoch: int, seed_or_generator: Union[int, torch.Generator]) -> torch.Tensor:
    """Which of n images to flip left-right in ``epoch`` (0-based): a random half in epoch 0, then each image's
    opposite orientation on odd epochs and its epoch-0 orientation on even ones (airbench94's "alternating flip":
    every image is seen both ways within any two consecutive epochs, where random flips leave 1/4 of the images
    unflipped or always flipped over two epochs). The epoch-0 draw comes from ``seed_or_generator`` (an int, or a
    generator whose state is copied, not advanced), so every epoch recreates the same base pattern."""
    base = torch.rand(n, generator=_flip_base_generator(seed_or_generator)) < 0.5
    return base ^ bool(epoch % 2)


def alternating_flip(images: torch.Tensor, epoch: int, seed_or_generator: Union[int, torch.Generator]) -> torch.Tensor:
    """``images`` (N, C, H, W) with the images of ``alternating_flip_mask`` flipped left-right."""
    m = alternating_flip_mask(images.shape[0], epoch, seed_or_generator).to(images.device)
    return torch.where(m[:, None, None, None], images.flip(3), images)


# ------------------------------------------------------------------------------------------------------
# Test-time augmentation


def tta_views(images: torch.Tensor, level: int = 2) -> List[Tuple[float, torch.Tensor]]:
    """The (weight, view) pairs whose weighted logits make the TTA prediction (weights sum to 1), airbench94's
    levels: 0 the images; 1 the images and their mirror, 1/2 each; 2 adds the images translated by one pixel
    up-left and down-right (reflect-filled), each with its mirror: 1/4 for the two untranslated views and 1/8 for
    each of the four translated ones."""
    if level not in (0, 1, 2):
        raise ValueError(f"TTA level must be 0, 1 or 2, got {level}")
    if level == 0:
        return [(1.0, images)]
    w = 0.5 if level == 1 else 0.25
    views = [(w, images), (w, images.flip(3))]
    if level == 2:
        p = reflect_pad(images, 1)
        h, wd = images.shape[-2:]
        for t in (p[:, :, 0:h, 0:wd], p[:, :, 2:h + 2, 2:wd + 2]):  # content moved down-right, then up-left
            views += [(0.125, t), (0.125, t.flip(3))]
    return views


@torch.no_grad()
def tta_logits(model: nn.Module, images: torch.Tensor, level: int = 2, batch_size: int = 2000) -> torch.Tensor:
    """Float32 logits (N, classes) of ``model`` in eval mode, averaged over ``tta_views`` (see there), computed
    ``batch_size`` images at a time. Runs under whatever autocast the caller set; restores the model's mode."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for xb in images.split(batch_size):
            acc = None
            for wgt, view in tta_views(xb, level):
                y = model(view).float() * wgt
                acc = y if acc is None else acc + y
            out.append(acc)
    finally:
        model.train(was_training)
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------------
# Optimiser


def lr_factor(step: int, total_steps: int, warmup_frac: float = 0.23, start: float = 0.2, end: float = 0.07) -> float:
    """airbench94's triangular schedule: linear ``start -> 1`` over the first ``warmup_frac`` of the steps, then
    linear ``1 -> end`` to the last step."""
    warm = int(total_steps * warmup_frac)
    if step < warm:
        f = step / warm
        return start * (1 - f) + f
    f = (step - warm) / max(total_steps - warm, 1)
    return (1 - f) + end * f


def build_optimizer(model: nn.Module, cfg: SpeedrunConfig) -> torch.optim.SGD:
    """Nesterov SGD on a summed loss, with airbench94's decoupled hyperparameters turned into PyTorch's.

    Decoupled form (airbench94, after Page's "How to train your ResNet 5"): ``cfg.lr`` is the step size per 1024
    examples, independent of momentum, and ``cfg.weight_decay`` the decay per 1024 examples, independent of the
    lr. With Nesterov momentum m, steady gradients give steps 1 + 1 / (1 - m) times the gradient, so PyTorch's lr
    is ``cfg.lr / (1024 (1 + 1 / (1 - m)))``; PyTorch multiplies its weight decay by the lr, so it is given as
    ``decay / lr`` per group. Groups (each keeps its undecayed ``base_lr`` for the schedule):

    * ``bn_bias``: BatchNorm biases, lr x ``bias_scaler`` (64), the same absolute decay;
    * ``whiten_bias``: the whitening stem's bias (frozen after ``whiten_bias_epochs`` by the train loop);
    * ``other``: everything else that trains - path kernels, gates, the head. (BatchNorm scales and the
      whitening weight do not train: ``requires_grad`` is False.)
    """
    m = cfg.momentum
    kilostep_scale = 1024 * (1 + 1 / (1 - m))
    lr = cfg.lr / kilostep_scale
    decay = cfg.weight_decay * cfg.batch_size / kilostep_scale  # per step, in units of the weights
    lr_bias = lr * cfg.bias_scaler
    bn_bias = [mod.bias for mod in model.modules()
               if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.bias is not None and mod.bias.requires_grad]
    stem = getattr(model, "stem", None)
    whiten_bias = ([stem.bias] if stem is not None and stem.bias is not None and not stem.weight.requires_grad
                   else [])
    taken = {id(p) for p in bn_bias + whiten_bias}
    other = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups = [dict(params=bn_bias, lr=lr_bias, weight_decay=decay / lr_bias, name="bn_bias"),
              dict(params=whiten_bias, lr=lr, weight_decay=decay / lr, name="whiten_bias"),
              dict(params=other, lr=lr, weight_decay=decay / lr, name="other")]
    opt = torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=m, nesterov=True)
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    return opt


# ------------------------------------------------------------------------------------------------------
# Efficiency measurement


def training_step_flops(model: nn.Module, input_shape: Sequence[int], *, autocast_dtype: Optional[torch.dtype] = None,
                        channels_last: bool = True, sample: int = 32) -> int:
    """Matmul / convolution FLOPs of one training step (forward + backward) of ``model`` on a batch of
    ``input_shape`` (B, C, H, W), counted by ``torch.utils.flop_counter.FlopCounterMode`` on a copy of the model
    (its BatchNorm statistics and gradients stay untouched). Counted on ``sample`` images and scaled to B:
    exact, as every counted op (conv, mm, addmm, bmm) is linear in the batch. Elementwise work is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    b = int(input_shape[0])
    s = max(1, min(sample, b))
    net = copy.deepcopy(model).train()
    p = next(net.parameters())
    x = torch.randn(s, *input_shape[1:], device=p.device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    counter = FlopCounterMode(display=False)
    with counter, autocast_context(p.device, autocast_dtype):
        net(x).float().sum().backward()
    return int(counter.get_total_flops() * b // s)


def synthetic_train_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                         label_smoothing: float = 0.0,
                         autocast_dtype: Optional[torch.dtype] = torch.bfloat16) -> Callable[[], None]:
    """A function doing one training step of ``net`` on the fixed batch ``(x, y)``, as the benchmark scripts
    (``scripts/bench_fast.py``, ``scripts/bench_malloc.py``) time it: autocast forward, summed cross-entropy in
    fp32, backward, Nesterov SGD step (momentum 0.85, airbench94's). The learning rate is small (1e-3) because
    only the cost matters: the weights should stay near where they start over the timed steps."""
    opt = torch.optim.SGD([q for q in net.parameters() if q.requires_grad], lr=1e-3, momentum=0.85, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing, reduction="sum")

    def step() -> None:
        with autocast_context(x.device, autocast_dtype):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(dtype: torch.dtype = torch.bfloat16, n: int = 2048, device: Union[str, torch.device] = "cpu",
                      repeats: int = 5) -> float:
    """Measured FLOP/s of an n x n @ n x n matmul in ``dtype`` (2 n^3 FLOPs; the best of ``repeats`` timed
    calls after one warm-up): the practical peak the training FLOP/s is compared with. The best, not the mean,
    because on a shared machine the slow calls measure the neighbours; 5 calls of 2048^3 take ~0.3 s here."""
    device = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    a @ b  # warm-up: library initialisation, caches
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


# ------------------------------------------------------------------------------------------------------
# The run


def _autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    try:
        return resolve_precision(precision, device)
    except ValueError as e:
        raise SpeedrunError(str(e)) from None


def time_to_accuracy(series: Sequence[Sequence[float]], target: float = TARGET_ACC) -> Optional[float]:
    """Seconds at the first (seconds, accuracy) point with accuracy >= target; None if never reached. The
    series has a point per epoch end, so this is the time of the first epoch that ends at or above it."""
    for sec, acc in series:
        if acc >= target:
            return float(sec)
    return None



def _write_csv(path: Path, rows: List[dict]) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _prepare_out_dir(out: Path) -> None:
    if (out / "config.json").exists() or (out / CHECKPOINT_NAME).exists():
        raise SpeedrunError(f"{out} already holds a run; choose another output directory")
    problem = writable_dir_problem(out)
    if problem:
        raise SpeedrunError(f"cannot write to output directory {out} ({problem})")


def speedrun(cfg: SpeedrunConfig, data: CIFAR10, seed: int, out_dir: Union[str, Path],
             print_fn: Optional[Callable[..., None]] = print) -> dict:
    """Train ``gatedconv_fast`` once with the airbench94-style recipe; write a run directory; return the results.

    Timed (``seconds``): whitening init, the set-up (optimizer, lookahead copy, padding the training set), the
    training loop (augmentation, steps, lookahead; compilation when ``cfg.compile``, so a first seed that fills
    the compile cache pays more than later ones) and the final TTA evaluation - airbench's convention. Not timed: reading the data, the
    per-epoch test evaluations that give the time-to-accuracy series (``monitor_seconds``), the FLOP count and
    writing files. ``wall_seconds`` is everything.

    The run directory: ``config.json`` (the config, model name / kwargs, normalisation statistics),
    ``metrics.csv`` (a row per epoch), ``checkpoint.pt`` (``gatedconv.load_model`` reads it) and ``final.json``.
    Returned: ``acc`` / ``acc_tta`` (final test accuracy without / with TTA), ``seconds``, ``train_seconds``,
    ``series`` [(seconds, acc without TTA) per epoch end], ``time_to_target``, FLOP figures, and more.
    """
    wall0 = time.perf_counter()
    say = print_fn or (lambda *a, **k: None)
    cfg.validate()
    out = Path(out_dir)
    n_train = len(data.train_y)
    steps_per_epoch = n_train // cfg.batch_size  # drop_last, as airbench
    if steps_per_epoch < 1:
        raise SpeedrunError(f"batch size {cfg.batch_size} exceeds the {n_train} training images")
    total_steps = math.ceil(steps_per_epoch * cfg.epochs)
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    try:
        device = resolve_device(cfg.device)
    except ValueError as e:
        raise SpeedrunError(str(e)) from None
    amp = _autocast_dtype(cfg.precision, device)
    _prepare_out_dir(out)

    mean, std = data.mean_std()
    torch.manual_seed(seed)  # the model's random init (default-init channels, head)
    model_kwargs = cfg.resolved_model_kwargs()
    try:
        net = create_model(MODEL_NAME, **model_kwargs)
    except (TypeError, ValueError) as e:
        raise SpeedrunError(f"cannot build {MODEL_NAME}: {str(e).strip().splitlines()[0]}") from None
    num_params = net.num_params()
    resolved = {"model": MODEL_NAME, "model_kwargs": model_kwargs, "seed": seed, "speedrun": asdict(cfg),
                "mean": list(mean), "std": list(std), "num_params": num_params, "device": str(device),
                "autocast_dtype": str(amp), "train_examples": n_train, "test_examples": len(data.test_y),
                "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "torch": torch.__version__,
                "threads": torch.get_num_threads()}
    atomic_write_text(out / "config.json", json.dumps(resolved, indent=2) + "\n")

    # data to the device as uint8 (data loading: not timed)
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    mean255 = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
    std255 = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format

    def normalise(xu8: torch.Tensor) -> torch.Tensor:
        return ((xu8.float() - mean255) / std255).contiguous(memory_format=fmt)

    def test_accuracy(level: int) -> float:
        hits = torch.zeros((), dtype=torch.long, device=device)
        with autocast_context(device, amp):
            for i in range(0, len(test_y), cfg.eval_batch_size):
                xb = normalise(test_x[i:i + cfg.eval_batch_size])
                logits = tta_logits(net, xb, level, cfg.eval_batch_size)
                hits += (logits.argmax(1) == test_y[i:i + cfg.eval_batch_size]).sum()
        return hits.item() / max(len(test_y), 1)

    # ---- timed from here
    _sync(device)
    t0 = time.perf_counter()
    net.to(device, memory_format=fmt)
    if cfg.whiten:
        whitening_init(net.stem, train_x[:cfg.whiten_images], cfg.whiten_eps, mean=mean, std=std)
    _sync(device)
    whiten_seconds = time.perf_counter() - t0
    train_net = torch.compile(net) if cfg.compile else net
    # compiled lazily: the first steps pay the compilation, inside the timed region. Same function either way,
    # so an exception that skips the restore below leaves a harmless global setting.
    previous_sum = layers.set_compiled_combine(cfg.compile_sum)
    opt = build_optimizer(net, cfg)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="sum")  # airbench: summed loss
    ema = LookaheadEMA(net) if cfg.ema else None
    # reflect-pad the training set once; each epoch crops its own shifts from it (airbench's pre-padding)
    padded = reflect_pad(train_x, cfg.translate)
    _sync(device)
    clock = time.perf_counter() - t0  # timed seconds so far: whitening and the set-up above
    series, rows = [], []
    step, monitor_seconds = 0, 0.0
    net.train()
    for epoch in range(n_epochs):
        t_epoch = time.perf_counter()
        if cfg.whiten:  # airbench94: whitening bias trains for the first epochs, then freezes
            net.stem.bias.requires_grad_(epoch < cfg.whiten_bias_epochs)
        # this epoch's order and shifts from (seed, epoch) alone, the seeding of gatedconv.data.TensorBatches
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        if cfg.translate > 0:
            shifts = torch.randint(-cfg.translate, cfg.translate + 1, (n_train, 2), generator=g)
            images = batch_crop(padded, cfg.translate, shifts)
        else:
            images = train_x
        if cfg.flip:  # its own seed stream: drawing the base pattern from g would tie flips to epoch-0 shifts
            images = alternating_flip(images, epoch, FLIP_SEED_OFFSET + seed)
        order = torch.randperm(n_train, generator=g).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            x, y = normalise(images[idx]), train_y[idx]
            with autocast_context(device, amp):
                logits = train_net(x)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            f = lr_factor(step, total_steps, cfg.warmup_frac, cfg.lr_start, cfg.lr_end)
            for grp in opt.param_groups:
                grp["lr"] = grp["base_lr"] * f
            opt.step()
            step += 1
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if ema is not None and step % cfg.ema_every == 0:
                ema.update(net, ema_decay(step, total_steps, cfg.ema_rate, cfg.ema_every, cfg.ema_power))
            if step >= total_steps:
                if ema is not None:
                    ema.update(net, 1.0)  # end on the average (airbench94's final decay=1.0 update)
                break
        _sync(device)
        clock += time.perf_counter() - t_epoch
        train_loss = loss_sum.item() / max(seen, 1)
        if not math.isfinite(train_loss):
            raise SpeedrunError(f"loss became NaN/inf in epoch {epoch + 1}; stopped (try a lower lr or fp32)")
        row = {"epoch": epoch + 1, "steps": step, "seconds": clock, "train_loss": train_loss,
               "train_acc": correct.item() / max(seen, 1), "lr": opt.param_groups[-1]["lr"]}
        if cfg.eval_every_epoch:
            tm = time.perf_counter()
            acc = test_accuracy(0)
            monitor_seconds += time.perf_counter() - tm
            series.append((clock, acc))
            row["test_acc"] = acc
        rows.append(row)
        say(f"  seed {seed} epoch {epoch + 1}/{n_epochs}: train loss {train_loss:.4f}, train acc "
            f"{row['train_acc']:.4f}" + (f", test acc {row['test_acc']:.4f}" if "test_acc" in row else "")
            + f", {clock:.1f} s")
    layers.set_compiled_combine(previous_sum)
    train_seconds = clock - whiten_seconds
    # final evaluation with TTA: timed, as in airbench
    te = time.perf_counter()
    acc_tta = test_accuracy(cfg.tta_level)
    _sync(device)
    eval_seconds = time.perf_counter() - te
    seconds = clock + eval_seconds
    # ---- timed up to here
    if cfg.tta_level == 0:
        acc = acc_tta
    elif series:
        acc = series[-1][1]  # the last epoch-end evaluation saw the final weights
    else:
        acc = test_accuracy(0)
    if not series:
        series = [(clock, acc)]

    results = {"seed": seed, "acc": acc, "acc_tta": acc_tta, "tta_level": cfg.tta_level, "seconds": seconds,
               "whiten_seconds": whiten_seconds, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
               "monitor_seconds": monitor_seconds, "epochs": cfg.epochs, "steps": step,
               "series": [list(p) for p in series], "target_acc": cfg.target_acc,
               "time_to_target": time_to_accuracy(series, cfg.target_acc), "num_params": num_params}
    if cfg.measure_flops:
        flops_step = training_step_flops(net, (cfg.batch_size, 3, 32, 32), autocast_dtype=amp,
                                         channels_last=cfg.channels_last)
        # the yardstick is the fastest matmul this hardware does (issue #4 names bf16, ~3x fp32 on this CPU),
        # whatever the run's precision, so an fp32 run shows what it leaves on the table; the max over dtypes
        # because without native bf16 (older CPUs) bf16 is the slow one
        dtypes = [torch.bfloat16, torch.float32] + ([torch.float16] if device.type == "cuda" else [])
        peaks = {dt: matmul_peak_flops(dt, 2048 if device.type == "cpu" else 8192, device) for dt in dtypes}
        peak_dtype = max(peaks, key=peaks.get)
        peak = peaks[peak_dtype]
        rate = flops_step * step / max(train_seconds, 1e-9)
        results.update({"flops_per_step": flops_step, "train_flops": flops_step * step, "train_flops_per_sec": rate,
                        "peak_flops": peak, "peak_dtype": str(peak_dtype), "efficiency": rate / peak})

    save_checkpoint(out / CHECKPOINT_NAME, {
        "model_name": MODEL_NAME, "model_kwargs": model_kwargs, "model_state": net.state_dict(),
        "mean": list(mean), "std": list(std), "config": resolved, "results": results, "finished": True,
    })
    _write_csv(out / "metrics.csv", rows)
    results["wall_seconds"] = time.perf_counter() - wall0
    atomic_write_text(out / "final.json", json.dumps(results, indent=2) + "\n")
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
