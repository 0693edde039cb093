"""``trainf``: the classic training loop, made fast and honest on a CPU.

train mode, zero_grad, forward, loss, backward, step, accumulate loss/accuracy; an Animator point every 50
iterations; test accuracy each epoch; final loss, train/test accuracy and examples/sec printed.
What makes it fast here: bf16 autocast on CPU (bf16 matmuls run ~3x fp32 on AVX-512-BF16), channels_last
activations, metrics summed on the device (no ``.item()`` per batch), and tensor-resident batches
(``gatedconv.data.TensorBatches``).
"""
from __future__ import annotations

import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from .plot import Accumulator, Animator, Timer

__all__ = [
    "trainf", "evaluate", "History", "resolve_device", "resolve_precision", "autocast_context",
    "NonFiniteLossError", "TrainingInterrupted",
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
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


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


def _sync_fn(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else None


@torch.no_grad()
def evaluate(net: nn.Module, data_iter, device: str | torch.device = "auto", precision: str = "auto",
             loss: Optional[Callable] = None, topk=(1,), channels_last: bool = True) -> Dict[str, float]:
    """Accuracy (and mean loss, top-k) of ``net`` over ``data_iter``; sums stay on the device until the end."""
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
            logits = net(x)
        logits = logits.float()
        l = loss(logits, y)
        loss_sum += l.sum()  # a scalar for reduction="sum", per-example values for "none"
        kmax = min(max(topk), logits.shape[1])
        pred = logits.topk(kmax, dim=1).indices  # (B, kmax)
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


def trainf(net: nn.Module, train_iter, test_iter, loss: Callable, num_epochs: int, optimizer: torch.optim.Optimizer,
           device: str | torch.device = "auto", *,
           precision: str = "auto",
           channels_last: bool = True,
           scheduler=None,
           scheduler_per: str = "epoch",
           animator="auto",
           figure_path: Optional[str] = None,
           log_every: int = 50,
           progress: Optional[bool] = None,
           history: Optional[History] = None,
           start_epoch: int = 0,
           start_step: int = 0,
           partial: Optional[dict] = None,
           on_epoch_end: Optional[Callable[[int, History], None]] = None,
           should_stop: Optional[Callable[[], bool]] = None,
           on_interrupt: Optional[Callable[[int, int, dict, History], None]] = None,
           grad_scaler=None,
           metric_reduce: Optional[Callable[[list], list]] = None,
           topk=(1,),
           ema=None,
           eval_raw: bool = False,
           print_fn: Callable[[str], None] = print,
           quiet: bool = False) -> History:
    """Train ``net`` for ``num_epochs`` epochs and evaluate on ``test_iter`` after each epoch.

    ``loss`` must reduce to a mean over the batch (e.g. ``nn.CrossEntropyLoss()``). ``animator="auto"`` makes an
    :class:`~gatedconv.plot.Animator` (writing ``figure_path`` if given); any object with ``add(x, ys)`` works
    (e.g. ``d2l.torch.Animator``), ``None`` turns plotting off. ``start_epoch``/``start_step``/``partial``/
    ``history`` continue an interrupted run; ``should_stop`` is polled after every step and, when true,
    ``on_interrupt(epoch, step, partial, history)`` runs and :class:`TrainingInterrupted` is raised.
    ``metric_reduce`` (multi-process runs) maps the local [loss_sum, correct, count] to the global sums.
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
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    base_net = getattr(net, "module", net) if isinstance(net, nn.parallel.DistributedDataParallel) else net
    if ema is not None:
        ema.module.to(device)
        if channels_last:
            ema.module.to(memory_format=torch.channels_last)
    own_animator = animator == "auto"
    if own_animator:
        animator = Animator(xlabel="epoch", xlim=[0, num_epochs], ylim=[0, 1.0],
                            legend=["train loss", "train acc", "test acc"], figsize=(5, 3.5), path=figure_path)
        for r in history.iters:  # redraw what a resumed run already had
            animator.add(r["x"], (r["train_loss"], r["train_acc"], None))
        for e in history.epochs:
            animator.add(e["epoch"], (None, None, e["test_acc"]))
    timer = Timer(sync=_sync_fn(device))
    timer.times.clear()
    num_batches = len(train_iter)
    show_bar = _is_tty() if progress is None else progress
    total_examples = 0
    metric_names = ("loss_sum", "correct", "count")
    for epoch in range(start_epoch, num_epochs):
        net.train()
        first = start_step if epoch == start_epoch else 0
        if hasattr(train_iter, "set_epoch"):
            try:
                train_iter.set_epoch(epoch, first)
            except TypeError:
                train_iter.set_epoch(epoch)
        metric = Accumulator(3)  # sum of loss, correct, count: tensors on the device
        bad_step = torch.full((), -1, dtype=torch.long, device=device)
        if partial and epoch == start_epoch and first > 0:
            metric.data = [torch.as_tensor(partial[k], device=device).clone() for k in metric_names]
        timer.start()
        epoch_examples = 0
        bar = None
        if show_bar:
            from tqdm.auto import tqdm
            bar = tqdm(total=num_batches, initial=first, desc=f"epoch {epoch + 1}/{num_epochs}", leave=False,
                       dynamic_ncols=True)
        resumable = hasattr(train_iter, "set_epoch")
        for i, (X, y) in (enumerate(train_iter, start=first) if resumable else enumerate(train_iter)):
            if i < first:
                continue  # plain iterables: skip what a resumed run already did
            X, y = X.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last and X.dim() == 4:
                X = X.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with autocast_context(device, dtype):
                y_hat = net(X)
            l = loss(y_hat.float(), y)
            if grad_scaler is not None:
                grad_scaler.scale(l).backward()
                grad_scaler.step(optimizer)
                grad_scaler.update()
            else:
                l.backward()
                optimizer.step()
            if scheduler is not None and scheduler_per == "step":
                scheduler.step()
            if ema is not None:
                ema.update(base_net)
            with torch.no_grad():
                n = y.shape[0]
                ld = l.detach()
                bad_step = torch.where((bad_step < 0) & ~torch.isfinite(ld), torch.full_like(bad_step, i), bad_step)
                metric.add(ld * n, (y_hat.argmax(dim=1) == y).sum(), n)
            epoch_examples += n
            if bar is not None:
                bar.update(1)
            last = i == num_batches - 1
            if (i + 1) % log_every == 0 or last:
                if int(bad_step) >= 0:
                    raise NonFiniteLossError(epoch, int(bad_step))
                ls, cs, ns = _reduced(metric, metric_reduce)
                tl, ta = ls / ns, cs / ns
                x = epoch + (i + 1) / num_batches
                history.iters.append({"x": x, "epoch": epoch, "step": i + 1, "train_loss": tl, "train_acc": ta})
                if animator is not None:
                    animator.add(x, (tl, ta, None))
                if bar is not None:
                    bar.set_postfix(loss=f"{tl:.3f}", acc=f"{ta:.3f}")
            if should_stop is not None and should_stop() and not last:
                timer.stop()
                if bar is not None:
                    bar.close()
                if int(bad_step) >= 0:
                    raise NonFiniteLossError(epoch, int(bad_step))
                state = {k: torch.as_tensor(v).detach().cpu()
                         for k, v in zip(metric_names, _reduced(metric, metric_reduce, as_float=False))}
                if on_interrupt is not None:
                    on_interrupt(epoch, i + 1, state, history)
                raise TrainingInterrupted(epoch, i + 1)
        epoch_time = timer.stop()
        if bar is not None:
            bar.close()
        if int(bad_step) >= 0:
            raise NonFiniteLossError(epoch, int(bad_step))
        total_examples += epoch_examples
        if scheduler is not None and scheduler_per == "epoch":
            scheduler.step()
        test = evaluate(ema.module if ema is not None else net, test_iter, device, precision, topk=topk,
                        channels_last=channels_last)
        raw = {}
        if ema is not None and eval_raw:
            r = evaluate(net, test_iter, device, precision, channels_last=channels_last)
            raw = {"test_loss_raw": r["loss"], "test_acc_raw": r["acc"]}
        ls, cs, ns = _reduced(metric, metric_reduce)
        row = {
            "epoch": epoch + 1, "step": (epoch + 1) * num_batches,
            "train_loss": ls / ns, "train_acc": cs / ns,
            "test_loss": test["loss"], "test_acc": test["acc"],
            **{f"test_top{k}": test[f"top{k}"] for k in topk if k != 1},
            **raw,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": epoch_time, "examples_per_sec": epoch_examples / max(epoch_time, 1e-9),
        }
        history.epochs.append(row)
        if animator is not None:
            animator.add(epoch + 1, (None, None, test["acc"]))
        if not quiet:
            print_fn(f"epoch {epoch + 1:3d}/{num_epochs} | loss {row['train_loss']:.4f} | train acc "
                     f"{row['train_acc']:.4f} | test acc {row['test_acc']:.4f}"
                     + (f" (live weights {row['test_acc_raw']:.4f})" if raw else "")
                     + f" | {row['examples_per_sec']:.0f} "
                     f"img/s | {epoch_time:.1f} s")
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    if animator is not None and hasattr(animator, "save") and figure_path:
        animator.save()
    if own_animator and animator is not None:
        animator.close()  # free the matplotlib figure (long-lived processes train many models)
    if history.epochs and not quiet:
        last = history.epochs[-1]
        speed = total_examples / timer.sum() if timer.sum() > 0 and total_examples else float("nan")
        print_fn(f"loss {last['train_loss']:.3f}, train acc {last['train_acc']:.3f}, test acc {last['test_acc']:.3f}")
        if not math.isnan(speed):
            print_fn(f"{speed:.1f} examples/sec on {device}")
    return history
