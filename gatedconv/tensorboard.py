"""TensorBoard logging through the animator interface: ``trainf(..., animator=TensorBoardAnimator(...))``.

``TensorBoardAnimator`` is what ``gatedconv-train --tensorboard [DIR]`` uses; it works with a bare ``trainf``
too (in a notebook, say)::

    tb = TensorBoardAnimator("runs/tb", inner=Animator.for_training(epochs), steps_per_epoch=len(train_iter))
    trainf(net, train_iter, test_iter, loss, epochs, opt, animator=tb, on_epoch_end=tb.on_epoch_end)
    tb.close()

then ``tensorboard --logdir runs/tb``. Every ``add(x, ys)`` is forwarded to ``inner`` (the PNG-writing
:class:`~gatedconv.plot.Animator`, or any object with ``add``), so the live figure and TensorBoard work at
once; ``save()`` and ``close()`` are forwarded too.

What is logged, against one x axis, the global step:

* ``train/loss``, ``train/acc``: every ``log_every`` iterations (running means over the epoch so far);
* ``test/acc``: at the end of every epoch;
* from ``log_epoch`` / ``on_epoch_end`` (the epoch's metrics row): ``lr``, ``test/loss``, the other test
  figures (``test/top5``, ``test/acc_raw``...), ``time/epoch_seconds`` and ``time/examples_per_sec``; with a
  gated model inside the run harness, the per-epoch gate statistics ``gates/blockB/mean_pathP``,
  ``gates/blockB/zero_fraction_pathP`` and ``gates/blockB/all_zero_fraction``;
* ``log_gate_heatmap``: the mean gate per class (``gatedconv.analysis.plot_class_heatmap``) as the image
  ``gates/class_heatmap``.

The global step is the optimiser step: ``trainf`` reports x as a fractional epoch, and the step is
``round(x * steps_per_epoch)``. Without ``steps_per_epoch`` it is ``round(x * 1000)``: thousandths of an
epoch, so the x axis still reads as epochs (divide by 1000).

The ``tensorboard`` package is an optional extra (``pip install tensorboard``); ``torch.utils.tensorboard`` is
imported when a ``TensorBoardAnimator`` is created, not when this module is.
"""
from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["TensorBoardAnimator", "tensorboard_problem", "INSTALL_HINT"]

INSTALL_HINT = "--tensorboard needs the tensorboard package: pip install tensorboard (or gatedconv[tensorboard])"

# metrics row keys (``trainf``'s per-epoch row) -> tags; the row's train/test accuracy is logged by add()
EPOCH_TAGS = {
    "lr": "lr", "test_loss": "test/loss", "test_acc_raw": "test/acc_raw", "test_loss_raw": "test/loss_raw",
    "seconds": "time/epoch_seconds", "examples_per_sec": "time/examples_per_sec",
}
SKIP_KEYS = ("epoch", "step", "train_loss", "train_acc", "test_acc")


def tensorboard_problem() -> Optional[str]:
    """None when TensorBoard logging can work here, else the one-line reason (the package is missing)."""
    if importlib.util.find_spec("tensorboard") is None:
        return INSTALL_HINT
    return None


class TensorBoardAnimator:
    """An animator (``add(x, ys)``) that writes TensorBoard scalars and forwards everything to ``inner``.

    ``ys`` is ``trainf``'s ``(train_loss, train_acc, test_acc)`` with None for missing points; ``tags`` names
    them. ``steps_per_epoch`` turns x (fractional epochs) into the global step (see the module docstring).
    """

    def __init__(self, log_dir: str | Path, *, inner=None, steps_per_epoch: Optional[int] = None,
                 tags: Sequence[str] = ("train/loss", "train/acc", "test/acc"), flush_secs: int = 30) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(INSTALL_HINT) from None
        self.log_dir = Path(log_dir)
        self.inner = inner
        self.steps_per_epoch = steps_per_epoch
        self.tags = tuple(tags)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)

    def step(self, x: float) -> int:
        """The global step of the fractional epoch ``x``."""
        return int(round(float(x) * (self.steps_per_epoch or 1000)))

    def add(self, x, ys) -> None:
        if self.inner is not None:
            self.inner.add(x, ys)
        if not hasattr(ys, "__len__"):
            ys = [ys]
        xs = x if hasattr(x, "__len__") else [x] * len(ys)
        for tag, xi, y in zip(self.tags, xs, ys):
            if xi is not None and y is not None:
                self.writer.add_scalar(tag, float(y), self.step(xi))

    def log_epoch(self, epoch: int, row: dict, gates: Optional[dict] = None) -> None:
        """The scalars of one epoch's metrics ``row`` (``trainf``'s ``history.epochs[epoch]``: lr, test loss,
        timings...) and, if given, its gate statistics (``gatedconv.analysis.gate_epoch_stats``'s dict).
        ``epoch`` is 0-based, as ``trainf``'s ``on_epoch_end`` passes it; the values are logged at its end."""
        step = self.step(epoch + 1)
        for key, value in row.items():
            if key in SKIP_KEYS or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            tag = EPOCH_TAGS.get(key) or (f"test/{key[5:]}" if key.startswith("test_") else f"epoch/{key}")
            self.writer.add_scalar(tag, float(value), step)
        for block, stats in ((gates or {}).get("blocks") or {}).items():
            for name in ("mean", "zero_fraction"):
                for p, value in enumerate(stats.get(name, [])):
                    self.writer.add_scalar(f"gates/{block}/{name}_path{p + 1}", float(value), step)
            if "all_zero_fraction" in stats:
                self.writer.add_scalar(f"gates/{block}/all_zero_fraction", float(stats["all_zero_fraction"]), step)

    def on_epoch_end(self, epoch: int, history) -> None:
        """``trainf``'s ``on_epoch_end`` hook: ``log_epoch`` with the epoch's row (and its gate statistics when
        ``history.gates`` has them for this epoch)."""
        gates = history.gates[-1] if history.gates and history.gates[-1].get("epoch") == epoch + 1 else None
        self.log_epoch(epoch, history.epochs[-1], gates)

    def add_figure(self, tag: str, fig, step: Optional[int] = None) -> None:
        """A matplotlib figure as an image (rendered with its own canvas; the figure is not closed)."""
        self.writer.add_figure(tag, fig, global_step=step, close=False)

    def add_image_file(self, tag: str, path: str | Path, step: Optional[int] = None) -> None:
        """A PNG file as an image."""
        import matplotlib.image
        import numpy as np
        img = matplotlib.image.imread(str(path))[..., :3]
        self.writer.add_image(tag, np.ascontiguousarray(img), global_step=step, dataformats="HWC")

    def log_gate_heatmap(self, model, images, labels, step: Optional[int] = None, device="cpu",
                         max_images: int = 1000) -> dict:
        """Record the gates of ``model`` (images in [0, 1], e.g. ``load_model``'s view; uint8 is scaled) on up to
        ``max_images`` images, log the mean gate per class as the image ``gates/class_heatmap`` and each
        block's mean normalised entropy as ``gates/blockB/entropy``. Returns the ``analysis.summarize`` dict."""
        from .analysis import plot_class_heatmap, record_gates, summarize
        record = record_gates(model, images[:max_images], labels[:max_images], device=device)
        summary = summarize(record)
        with tempfile.TemporaryDirectory() as tmp:
            self.add_image_file("gates/class_heatmap", plot_class_heatmap(summary, Path(tmp) / "heatmap.png"), step)
        for block in summary["blocks"]:
            self.writer.add_scalar(f"gates/{block['name']}/entropy", float(block["entropy_mean"]), step)
        return summary

    def save(self, *args, **kwargs):
        """Flush the event file; forwards to ``inner.save`` (the PNG) when it has one."""
        self.writer.flush()
        if self.inner is not None and hasattr(self.inner, "save"):
            return self.inner.save(*args, **kwargs)
        return None

    def close(self) -> None:
        self.writer.close()
        if self.inner is not None and hasattr(self.inner, "close"):
            self.inner.close()
