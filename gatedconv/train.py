"""``trainf``: the classic training loop, made fast and honest on a CPU.

train mode, zero_grad, forward, loss, backward, step, accumulate loss/accuracy; an Animator point every 50
iterations; test accuracy each epoch; final loss, train/test accuracy and examples/sec printed.
What makes it fast here: bf16 autocast on CPU (bf16 matmuls run ~3x fp32 on AVX-512-BF16), channels_last
activations, metrics summed on the device (no ``.item()`` per batch), and tensor-resident batches
(``gatedconv.data.TensorBatches``).
"""
from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from .augment import tta_views
from .plot import Accumulator, Animator, Timer

__all__ = [
    "trainf", "train_step", "evaluate", "evaluate_images", "predict", "History", "resolve_device", "resolve_precision",
    "autocast_context", "NonFiniteLossError", "TrainingInterrupted",
]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing after the last good checkpoint is written."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"loss became NaN/inf at epoch {epoch + 1}, step {step + 1} of that epoch; stopped "
                         "(the last checkpoint, if any, is intact; try a lower --lr or --precision fp32)")
        self.epoch, self.step = epoch, step


class TrainingInterrupted(Exception):
    """Raised after ``should_stop()`` turned true and the interrupt hook ran (a checkpoint was written)."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"interrupted at epoch {epoch + 1}, step {step}")
        self.epoch, self.step = epoch, step


@dataclass
class History:
    """Metrics of a run: ``iters`` (every ``log_every`` steps), ``epochs`` (one dict per epoch) and ``gates``
    (per-epoch gate statistics, filled by the run harness for gated models)."""

    iters: List[Dict[str, float]] = field(default_factory=list)
    epochs: List[Dict[str, float]] = field(default_factory=list)
    gates: List[dict] = field(default_factory=list)  # per-epoch gate statistics (models with gated blocks)

    def state_dict(self) -> dict:
        return {"iters": [dict(r) for r in self.iters], "epochs": [dict(r) for r in self.epochs],
                "gates": [dict(r) for r in self.gates]}

    @classmethod
    def from_state_dict(cls, d: dict) -> "History":
        return cls(list(d.get("iters", [])), list(d.get("epochs", [])), list(d.get("gates", [])))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def _cpu_bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """``"auto"`` -> bf16 on CPUs with native bf16 and on bf16-capable GPUs, fp16 on other GPUs, else fp32.
    Returns the autocast dtype, or None for plain fp32."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if _cpu_bf16_supported() else None
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast is for CUDA; use --precision bf16 or fp32 on CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _set_epoch(train_iter, epoch: int, first: int) -> bool:
    """Tell the iterable which epoch (and step) comes; True when it then starts at step ``first`` itself."""
    if not hasattr(train_iter, "set_epoch"):
        return False
    try:
        train_iter.set_epoch(epoch, first)  # gatedconv.data.TensorBatches: resumable mid-epoch
        return True
    except TypeError:
        train_iter.set_epoch(epoch)  # e.g. a DistributedSampler-style iterable: it starts at step 0
        return False


def predict(net: nn.Module, x: torch.Tensor, tta_level: int = 0) -> torch.Tensor:
    """Float32 logits of ``net`` on ``x``, averaged over the test-time augmentation views of ``tta_level``."""
    if tta_level == 0:
        return net(x).float()
    out = None
    for weight, view in tta_views(x, tta_level):
        y = net(view).float() * weight
        out = y if out is None else out + y
    return out


@torch.no_grad()
def evaluate(net: nn.Module, data_iter, device: str | torch.device = "auto", precision: str = "auto",
             loss: Optional[Callable] = None, topk=(1,), channels_last: bool = True,
             tta_level: int = 0) -> Dict[str, float]:
    """Accuracy, mean loss and top-k of ``net`` over the ``(x, y)`` batches of ``data_iter``, in eval mode.

    The one evaluation of the package: ``trainf``'s per-epoch test, the run's final fp32 report
    (:func:`evaluate_images`), the leaderboard's top-k and the fast recipe's test-time augmentation
    (``tta_level`` 1: mirror; 2: mirror and one-pixel translations, see ``gatedconv.augment.tta_views``).
    Sums stay on the device until the end (no ``.item()`` per batch)."""
    device = resolve_device(device)
    dtype = resolve_precision(precision, device)
    loss = loss or nn.CrossEntropyLoss(reduction="sum")
    was_training = net.training
    net.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros(len(topk), device=device)
    n = 0
    for x, y in data_iter:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, dtype):
            logits = predict(net, x, tta_level)
        loss_sum += loss(logits, y).sum()  # a scalar for reduction="sum", per-example values for "none"
        pred = logits.topk(min(max(topk), logits.shape[1]), dim=1).indices  # (B, kmax)
        hits = pred.eq(y[:, None])
        for i, k in enumerate(topk):
            correct[i] += hits[:, :k].any(1).sum()
        n += y.numel()
    net.train(was_training)
    n = max(n, 1)
    out = {"loss": float(loss_sum) / n, "acc": float(correct[0]) / n}
    for i, k in enumerate(topk):
        out[f"top{k}"] = float(correct[i]) / n
    return out


def evaluate_images(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
                    topk: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """Top-k of a classifier that takes float images in [0, 1] (``gatedconv.load_model``'s), fed uint8
    ``images`` (N, 3, H, W) / 255 in fp32, in order: the number a user gets back from a saved run. The run's
    final report, ``gatedconv-evaluate`` and the leaderboard all print this."""
    device = next(model.parameters()).device
    batches = ((images[i:i + batch_size].to(device).float().div_(255), labels[i:i + batch_size])
               for i in range(0, len(labels), batch_size))
    res = evaluate(model, batches, device, precision="fp32", topk=tuple(topk), channels_last=False)
    return {f"top{k}": res[f"top{k}"] for k in topk}


def _reduced(metric: Accumulator, reduce_fn=None, as_float: bool = True):
    vals = [torch.as_tensor(v) for v in metric.data]
    if reduce_fn is not None:
        vals = reduce_fn(vals)
    return [float(v) for v in vals] if as_float else vals


def _is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except Exception:
        return False


@dataclass
class _Loop:
    """What every step of a ``trainf`` call shares: the model, the optimisation and the extras (hooks)."""

    net: nn.Module
    loss: Callable
    optimizer: torch.optim.Optimizer
    device: torch.device
    dtype: Optional[torch.dtype]
    channels_last: bool = True
    scheduler: object = None
    scheduler_per: str = "epoch"
    grad_scaler: object = None
    ema: object = None
    animator: object = None
    log_every: int = 50
    show_bar: bool = False
    should_stop: Optional[Callable[[], bool]] = None
    on_interrupt: Optional[Callable] = None
    metric_reduce: Optional[Callable[[list], list]] = None
    on_step: Optional[Callable[[int], None]] = None
    epoch_started: float = 0.0  # perf_counter() at the start of the current epoch (its time survives a resume)
    before_resume: tuple = (0.0, 0)  # seconds and examples of the current epoch before it was interrupted

    @property
    def base_net(self) -> nn.Module:
        return self.net.module if isinstance(self.net, nn.parallel.DistributedDataParallel) else self.net


METRIC_NAMES = ("loss_sum", "correct", "count")


def train_step(loop: _Loop, X: torch.Tensor, y: torch.Tensor):
    """One optimiser step on the batch ``(X, y)``; returns the (detached) loss and the logits."""
    X, y = X.to(loop.device, non_blocking=True), y.to(loop.device, non_blocking=True)
    if loop.channels_last and X.dim() == 4:
        X = X.contiguous(memory_format=torch.channels_last)
    loop.optimizer.zero_grad(set_to_none=True)
    with autocast_context(loop.device, loop.dtype):
        y_hat = loop.net(X)
    l = loop.loss(y_hat.float(), y)
    if loop.grad_scaler is not None:  # fp16: scale the loss so small gradients survive, unscale before the step
        loop.grad_scaler.scale(l).backward()
        loop.grad_scaler.step(loop.optimizer)
        loop.grad_scaler.update()
    else:
        l.backward()
        loop.optimizer.step()
    if loop.scheduler is not None and loop.scheduler_per == "step":
        loop.scheduler.step()
    if loop.ema is not None:
        loop.ema.update(loop.base_net)
    return l.detach(), y_hat.detach(), y


def _train_epoch(loop: _Loop, train_iter, epoch: int, num_epochs: int, first: int, partial: Optional[dict],
                 history: History, resumable: bool) -> tuple:
    """The batches of one epoch from step ``first``; returns the metric sums and the number of examples.
    Raises NonFiniteLossError (checked every ``log_every`` steps, not per step: no sync per batch) and, after
    ``on_interrupt`` ran, TrainingInterrupted when ``should_stop()`` turns true."""
    num_batches = len(train_iter)
    metric = Accumulator(3)  # sum of loss, correct, count: tensors on the device
    if partial and first > 0:
        metric.data = [torch.as_tensor(partial[k], device=loop.device).clone() for k in METRIC_NAMES]
    bad_step = torch.full((), -1, dtype=torch.long, device=loop.device)
    bar = None
    if loop.show_bar:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_batches, initial=first, desc=f"epoch {epoch + 1}/{num_epochs}", leave=False,
                   dynamic_ncols=True)
    examples = 0
    try:
        for i, (X, y) in (enumerate(train_iter, start=first) if resumable else enumerate(train_iter)):
            if i < first:
                continue  # plain iterables: skip what a resumed run already did
            l, y_hat, y = train_step(loop, X, y)
            if loop.on_step is not None:
                loop.on_step(epoch * num_batches + i + 1)  # steps taken so far in the run
            with torch.no_grad():
                bad_step = torch.where((bad_step < 0) & ~torch.isfinite(l), torch.full_like(bad_step, i), bad_step)
                metric.add(l * y.shape[0], (y_hat.argmax(dim=1) == y).sum(), y.shape[0])
            examples += y.shape[0]
            if bar is not None:
                bar.update(1)
            last = i == num_batches - 1
            if (i + 1) % loop.log_every == 0 or last:
                _log_point(loop, metric, bad_step, epoch, i + 1, num_batches, history, bar)
            if loop.should_stop is not None and loop.should_stop() and not last:
                _interrupt(loop, metric, bad_step, epoch, i + 1, history, examples)
    finally:
        if bar is not None:
            bar.close()
    if int(bad_step) >= 0:
        raise NonFiniteLossError(epoch, int(bad_step))
    return metric, examples


def _log_point(loop: _Loop, metric: Accumulator, bad_step, epoch: int, step: int, num_batches: int,
               history: History, bar) -> None:
    """Every ``log_every`` steps: the running train loss/accuracy into the history and the animator."""
    if int(bad_step) >= 0:
        raise NonFiniteLossError(epoch, int(bad_step))
    ls, cs, ns = _reduced(metric, loop.metric_reduce)
    x = epoch + step / num_batches
    history.iters.append({"x": x, "epoch": epoch, "step": step, "train_loss": ls / ns, "train_acc": cs / ns})
    if loop.animator is not None:
        loop.animator.add(x, (ls / ns, cs / ns, None))
    if bar is not None:
        bar.set_postfix(loss=f"{ls / ns:.3f}", acc=f"{cs / ns:.3f}")


def _interrupt(loop: _Loop, metric: Accumulator, bad_step, epoch: int, step: int, history: History,
               examples: int) -> None:
    """Stop mid-epoch: hand the partial sums (and the epoch's time and examples so far, so a resumed epoch
    reports its whole time) to ``on_interrupt`` (the caller checkpoints), then raise."""
    if int(bad_step) >= 0:
        raise NonFiniteLossError(epoch, int(bad_step))
    state = {k: torch.as_tensor(v).detach().cpu()
             for k, v in zip(METRIC_NAMES, _reduced(metric, loop.metric_reduce, as_float=False))}
    seconds, before = time.perf_counter() - loop.epoch_started, loop.before_resume
    state["seconds"] = torch.tensor(seconds + before[0], dtype=torch.float64)
    state["examples"] = torch.tensor(examples + before[1])
    if loop.on_interrupt is not None:
        loop.on_interrupt(epoch, step, state, history)
    raise TrainingInterrupted(epoch, step)


def default_animator(num_epochs: int, figure_path: Optional[str], history: History) -> Animator:
    """``trainf``'s own figure (``Animator.for_training``) with what a resumed run already had redrawn."""
    animator = Animator.for_training(num_epochs, figure_path)
    for r in history.iters:  # redraw what a resumed run already had
        animator.add(r["x"], (r["train_loss"], r["train_acc"], None))
    for e in history.epochs:
        animator.add(e["epoch"], (None, None, e["test_acc"]))
    return animator


def _end_epoch(loop: _Loop, test_iter, epoch: int, num_batches: int, metric: Accumulator, topk, seconds: float,
               examples: int, eval_raw: bool) -> dict:
    """Step an epoch-wise schedule, evaluate (the weight average when there is one), and return the epoch's row."""
    if loop.scheduler is not None and loop.scheduler_per == "epoch":
        loop.scheduler.step()
    net = loop.ema.module if loop.ema is not None else loop.net
    test = evaluate(net, test_iter, loop.device, _precision_name(loop.dtype), topk=topk,
                    channels_last=loop.channels_last)
    raw = {}
    if loop.ema is not None and eval_raw:
        r = evaluate(loop.net, test_iter, loop.device, _precision_name(loop.dtype), channels_last=loop.channels_last)
        raw = {"test_loss_raw": r["loss"], "test_acc_raw": r["acc"]}
    if loop.animator is not None:
        loop.animator.add(epoch + 1, (None, None, test["acc"]))
    ls, cs, ns = _reduced(metric, loop.metric_reduce)
    return {
        "epoch": epoch + 1, "step": (epoch + 1) * num_batches,
        "train_loss": ls / ns, "train_acc": cs / ns, "test_loss": test["loss"], "test_acc": test["acc"],
        **{f"test_top{k}": test[f"top{k}"] for k in topk if k != 1}, **raw,
        "lr": loop.optimizer.param_groups[0]["lr"], "seconds": seconds,
        "examples_per_sec": examples / max(seconds, 1e-9),
    }


def _precision_name(dtype: Optional[torch.dtype]) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def trainf(net: nn.Module, train_iter, test_iter, loss: Callable, num_epochs: int, optimizer: torch.optim.Optimizer,
           device: str | torch.device = "auto", *,
           precision: str = "auto", channels_last: bool = True, scheduler=None, scheduler_per: str = "epoch",
           animator="auto", figure_path: Optional[str] = None, log_every: int = 50, progress: Optional[bool] = None,
           history: Optional[History] = None, start_epoch: int = 0, start_step: int = 0,
           partial: Optional[dict] = None, on_epoch_end: Optional[Callable[[int, History], None]] = None,
           should_stop: Optional[Callable[[], bool]] = None,
           on_interrupt: Optional[Callable[[int, int, dict, History], None]] = None, grad_scaler=None,
           metric_reduce: Optional[Callable[[list], list]] = None, topk=(1,), ema=None, eval_raw: bool = False,
           on_step: Optional[Callable[[int], None]] = None, print_fn: Callable[[str], None] = print,
           quiet: bool = False) -> History:
    """Train ``net`` for ``num_epochs`` epochs and evaluate on ``test_iter`` after each epoch.

    ``loss`` must reduce to a mean over the batch (e.g. ``nn.CrossEntropyLoss()``). ``animator="auto"`` makes an
    :class:`~gatedconv.plot.Animator` (writing ``figure_path`` if given); any object with ``add(x, ys)`` works
    (e.g. ``d2l.torch.Animator``), ``None`` turns plotting off. ``start_epoch``/``start_step``/``partial``/
    ``history`` continue an interrupted run; ``should_stop`` is polled after every step and, when true,
    ``on_interrupt(epoch, step, partial, history)`` runs and :class:`TrainingInterrupted` is raised.
    ``metric_reduce`` (multi-process runs) maps the local [loss_sum, correct, count] to the global sums.
    ``on_step(steps_so_far)`` runs after every optimiser step (e.g. a gate temperature schedule).
    ``ema`` (a :class:`~gatedconv.ema.ModelEma`) is updated after every optimiser step and is what the per-epoch
    test figures evaluate; ``eval_raw`` also evaluates the live weights each epoch (``test_acc_raw``).
    Returns the :class:`History`.
    """
    device = resolve_device(device)
    dtype = resolve_precision(precision, device)
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
    if grad_scaler is None and dtype == torch.float16:
        grad_scaler = torch.amp.GradScaler("cuda")
    history = history or History()
    for m in (net, ema.module if ema is not None else None):
        if m is not None:
            m.to(device)
            if channels_last:
                m.to(memory_format=torch.channels_last)
    own_animator = animator == "auto"
    loop = _Loop(net, loss, optimizer, device, dtype, channels_last, scheduler, scheduler_per, grad_scaler, ema,
                 default_animator(num_epochs, figure_path, history) if own_animator else animator, log_every,
                 _is_tty() if progress is None else progress, should_stop, on_interrupt, metric_reduce, on_step)
    timer, total_examples = Timer(sync=torch.cuda.synchronize if device.type == "cuda" else None), 0
    timer.times.clear()
    for epoch in range(start_epoch, num_epochs):
        net.train()
        first = start_step if epoch == start_epoch else 0
        resumable = _set_epoch(train_iter, epoch, first)
        timer.start()
        loop.epoch_started = timer.tik
        resumed = partial if epoch == start_epoch and first > 0 else None
        loop.before_resume = ((float(resumed["seconds"]), int(resumed["examples"])) if resumed and "seconds" in resumed
                              else (0.0, 0))
        metric, examples = _train_epoch(loop, train_iter, epoch, num_epochs, first, resumed, history, resumable)
        seconds = timer.stop()
        total_examples += examples  # this process's work: the speed line divides by this process's time
        seconds, examples = seconds + loop.before_resume[0], examples + loop.before_resume[1]  # the whole epoch
        row = _end_epoch(loop, test_iter, epoch, len(train_iter), metric, topk, seconds, examples, eval_raw)
        history.epochs.append(row)
        if not quiet:
            print_fn(f"epoch {epoch + 1:3d}/{num_epochs} | loss {row['train_loss']:.4f} | train acc "
                     f"{row['train_acc']:.4f} | test acc {row['test_acc']:.4f}"
                     + (f" (live weights {row['test_acc_raw']:.4f})" if "test_acc_raw" in row else "")
                     + f" | {row['examples_per_sec']:.0f} img/s | {seconds:.1f} s")
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    if loop.animator is not None and hasattr(loop.animator, "save") and figure_path:
        loop.animator.save()
    if own_animator and loop.animator is not None:
        loop.animator.close()  # free the matplotlib figure (long-lived processes train many models)
    if history.epochs and not quiet:
        last = history.epochs[-1]
        print_fn(f"loss {last['train_loss']:.3f}, train acc {last['train_acc']:.3f}, test acc {last['test_acc']:.3f}")
        if timer.sum() > 0 and total_examples:
            print_fn(f"{total_examples / timer.sum():.1f} examples/sec on {device}")
    return history
