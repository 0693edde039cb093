"""What do the gates learn? Record every ``GatedConv2d``'s gates over a data set, summarise them, plot them.

Typical use (``scripts/analyze_gates.py`` does exactly this)::

    from gatedconv import load_model, load_cifar10
    from gatedconv import analysis
    model = load_model("runs/main_seed0")                     # Normalized(net, mean, std): images in [0, 1]
    data = load_cifar10("../shared/cifar10")
    rec = analysis.record_gates(model, data.test_x, data.test_y)  # uint8 images are scaled to [0, 1]
    summary = analysis.summarize(rec)                         # a JSON-ready dict, fields below
    analysis.plot_histograms(rec, "figures/gates/hist.png")

``record_gates`` runs the model in eval mode without gradients, switches each block's ``record_gates`` flag
on, reads ``last_gates`` after every batch and restores the flags, ``last_gates`` and train/eval modes
afterwards. A block's gates form a tensor (N, P): N images, P paths. ``gate_epoch_stats`` is the cheap
version for a training loop: per-block mean gate and zero fraction on one fixed batch.

Definitions used below, per block and image ``i`` with gates ``g_i = (g_i1, ..., g_iP)`` (all gate types give
non-negative gates):

* a path is **zero** for an image when its gate is exactly 0 (the ReLU gate's "switched off");
* ``share_ip = g_ip / sum_q g_iq``, the path's fraction of the image's total gate mass; a path is **off**
  when ``share_ip < off_share`` (default 0.01) or every gate of the image is 0. For ReLU gates "zero"
  implies "off"; for softmax / sigmoid gates, which are never exactly 0, "off" is the meaningful one;
* **normalised entropy** ``H_i = -sum_p share_ip log(share_ip) / log(P)`` in [0, 1]: 1 = all paths weighted
  equally (the constant gate gives exactly 1), 0 = a single path carries everything. An image whose gates are
  all 0 gets ``H_i = 0`` and is counted in ``all_zero_count``; with P = 1, ``H_i = 0``.

JSON summary (``summarize``; ``scripts/analyze_gates.py`` writes it as ``RUN_DIR/gates.json`` and adds the
``source`` field). ``[P]`` is a list over paths, ``[C][P]`` a list over classes of lists over paths:

* ``format``: ``"gatedconv-gates-v1"``
* ``num_images``: N, the number of images analysed
* ``class_names``: [C] names, index = label
* ``class_counts``: [C] images per class
* ``accuracy``: top-1 accuracy of the model on these images (fraction), or null if predictions were not kept
* ``off_share``: the threshold used for ``off_fraction``
* ``source``: (written by the script) ``{"run_dir", "data_dir", "split"}``
* ``blocks``: one dict per ``GatedConv2d`` in module order, with

  * ``name``: ``"block1"``, ``"block2"``, ... ; ``module``: the qualified module name (e.g. ``net.features.0.0``)
  * ``gate``: gate type (``relu``, ``softmax``, ``sigmoid``, ``constant``); ``kernel_sizes``: [P];
    ``num_paths``: P
  * ``mean``, ``std``, ``min``, ``max``: [P] statistics of each path's gate over all images
  * ``zero_fraction``: [P] fraction of images whose gate for the path is exactly 0
  * ``zero_fraction_total``: fraction of all N x P gate values of the block that are exactly 0
  * ``off_fraction``: [P] fraction of images for which the path is off (definition above)
  * ``all_zero_count`` / ``all_zero_fraction``: images (number / fraction) whose gates are all exactly 0:
    the block's output is then a constant (its conv outputs are multiplied by 0)
  * ``active_paths_fraction``: [P + 1] fraction of images with exactly k = 0..P non-zero gates
  * ``dominant_fraction``: [P] fraction of images in which the path has the largest gate (ties go to the
    lowest index; all-zero images are left out, so the list sums to ``1 - all_zero_fraction``)
  * ``entropy_mean``: mean normalised entropy over all N images (all-zero images count as 0)
  * ``entropy_mean_active``: mean over images with at least one non-zero gate (null if none)
  * ``class_mean``: [C][P] mean gate per class (null for a class with no images)
  * ``class_zero_fraction``: [C][P] fraction of the class's images whose gate for the path is exactly 0
  * ``class_std``: [P] standard deviation over classes of ``class_mean`` (how much the gate depends on the
    class; 0 for input-independent gates)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from .data import CLASSES
from .layers import GatedConv2d

__all__ = [
    "NoGatesError", "GateRecord", "gated_blocks", "record_gates", "summarize", "gate_epoch_stats",
    "plot_histograms", "plot_class_heatmap", "plot_zero_fraction", "plot_gate_evolution", "plot_all",
    "format_table", "SUMMARY_FORMAT",
]

SUMMARY_FORMAT = "gatedconv-gates-v1"


class NoGatesError(ValueError):
    """The model contains no ``GatedConv2d``: there are no gates to analyse."""


@dataclass
class GateRecord:
    """Gates of every ``GatedConv2d`` of a model over N images.

    ``gates[b]`` is a float32 CPU tensor (N, P_b) for block ``b`` (``names[b]`` = ``"block{b+1}"``), ``labels``
    int64 (N,), ``predictions`` int64 (N,) (the model's argmax) or None.
    """

    names: List[str]
    modules: List[str]
    gate_types: List[str]
    kernel_sizes: List[tuple]
    gates: List[torch.Tensor]
    labels: torch.Tensor
    predictions: Optional[torch.Tensor] = None

    @property
    def num_images(self) -> int:
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        return len(self.gates)

    def block(self, name: str) -> torch.Tensor:
        return self.gates[self.names.index(name)]


def gated_blocks(model: nn.Module) -> List[tuple]:
    """``[(qualified_name, block), ...]`` for every ``GatedConv2d`` inside ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, GatedConv2d)]


class _Recording:
    """Context: eval mode, gate recording on; restores every module's mode and every block's flag/last_gates."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.blocks = [b for _, b in gated_blocks(model)]
        if not self.blocks:
            raise NoGatesError(f"model {type(model).__name__} has no GatedConv2d blocks: there are no gates to analyse")

    def __enter__(self) -> "_Recording":
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.flags = [(b, b.record_gates, b.last_gates) for b in self.blocks]
        self.model.eval()
        for b in self.blocks:
            b.record_gates = True
        return self

    def read(self) -> List[torch.Tensor]:
        out = []
        for b in self.blocks:
            if b.last_gates is None:  # a block the forward pass did not reach
                raise RuntimeError("a GatedConv2d block was not called by the model's forward pass")
            out.append(b.last_gates.detach().float().cpu())
            b.last_gates = None
        return out

    def __exit__(self, *exc) -> None:
        for m, mode in self.modes:
            m.training = mode
        for b, flag, last in self.flags:
            b.record_gates, b.last_gates = flag, last


def _as_float_images(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255)
    if not torch.is_floating_point(x):
        raise ValueError(f"images must be uint8 or float, got {x.dtype}")
    return x


def record_gates(model: nn.Module, images, labels, batch_size: int = 500, device: str | torch.device = "cpu",
                 keep_predictions: bool = True) -> GateRecord:
    """Run ``model`` (eval mode, no gradients) over ``images`` and collect every ``GatedConv2d``'s gates.

    ``images``: (N, 3, H, W), uint8 (scaled to [0, 1] float, as ``load_model``'s ``Normalized`` expects) or
    float (passed on unchanged). ``labels``: (N,) ints. Batches of ``batch_size`` are moved to ``device``; the
    model is expected to live there already (it is not moved). Raises ``NoGatesError`` for a model without
    gated blocks. The model's flags and modes are restored afterwards.
    """
    images = torch.as_tensor(images)
    labels = torch.as_tensor(labels).long().cpu()
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    named = gated_blocks(model)
    chunks: List[List[torch.Tensor]] = [[] for _ in named]
    preds = []
    with _Recording(model) as rec, torch.no_grad():
        for lo in range(0, images.shape[0], batch_size):
            x = _as_float_images(images[lo:lo + batch_size]).to(device)
            logits = model(x)
            for c, g in zip(chunks, rec.read()):
                c.append(g)
            if keep_predictions and torch.is_tensor(logits) and logits.dim() == 2:
                preds.append(logits.argmax(1).cpu())
    gates = [torch.cat(c) if c else torch.zeros(0, b.num_paths) for c, (_, b) in zip(chunks, named)]
    return GateRecord(
        names=[f"block{i + 1}" for i in range(len(named))],
        modules=[n for n, _ in named],
        gate_types=[b.gate.gate for _, b in named],
        kernel_sizes=[tuple(b.kernel_sizes) for _, b in named],
        gates=gates,
        labels=labels,
        predictions=torch.cat(preds) if preds and keep_predictions else None,
    )


# ------------------------------------------------------------------------------------------------------
# Summary


def _floats(t: torch.Tensor) -> list:
    """Tensor -> nested lists of Python floats, NaN -> None (JSON has no NaN)."""
    out = t.tolist()

    def fix(v):
        if isinstance(v, list):
            return [fix(u) for u in v]
        return None if (isinstance(v, float) and math.isnan(v)) else float(v)

    return fix(out)


def _shares(g: torch.Tensor) -> tuple:
    """(shares (N, P), all_zero mask (N,)): each image's gates divided by their sum (0 for all-zero rows)."""
    s = g.sum(1, keepdim=True)
    all_zero = (g == 0).all(1)
    q = torch.where(s > 0, g / s.clamp_min(1e-30), torch.zeros_like(g))
    return q, all_zero


def normalized_entropy(g: torch.Tensor) -> torch.Tensor:
    """Per image (N,): entropy of the gates normalised to sum 1, divided by log(P); 0 for all-zero rows, P = 1."""
    p = g.shape[1]
    q, all_zero = _shares(g)
    if p < 2:
        return torch.zeros(g.shape[0])
    h = -torch.xlogy(q, q).sum(1) / math.log(p)
    return torch.where(all_zero, torch.zeros_like(h), h)


def summarize_block(g: torch.Tensor, labels: torch.Tensor, num_classes: int, off_share: float = 0.01) -> dict:
    """The statistics of one block's gates (N, P); see the module docstring for the fields."""
    g = g.float()
    n, p = g.shape
    zero = g == 0
    q, all_zero = _shares(g)
    off = (q < off_share) | all_zero[:, None]
    ent = normalized_entropy(g)
    active = (~zero).sum(1)
    dominant = g.argmax(1)
    nz = max(n, 1)
    onehot = torch.zeros(n, num_classes)
    if n:
        onehot[torch.arange(n), labels] = 1.0
    counts = onehot.sum(0)  # (C,)
    class_sum = onehot.t() @ g  # (C, P)
    class_zero = onehot.t() @ zero.float()
    denom = counts[:, None]
    class_mean = torch.where(denom > 0, class_sum / denom.clamp_min(1), torch.full_like(class_sum, float("nan")))
    class_zero_frac = torch.where(denom > 0, class_zero / denom.clamp_min(1), torch.full_like(class_zero, float("nan")))
    present = counts > 0
    class_std = class_mean[present].std(0, unbiased=False) if present.sum() > 0 else torch.full((p,), float("nan"))
    n_active_imgs = int((~all_zero).sum())
    return {
        "num_paths": p,
        "mean": _floats(g.mean(0)) if n else [None] * p,
        "std": _floats(g.std(0, unbiased=False)) if n else [None] * p,
        "min": _floats(g.min(0).values) if n else [None] * p,
        "max": _floats(g.max(0).values) if n else [None] * p,
        "zero_fraction": _floats(zero.float().sum(0) / nz),
        "zero_fraction_total": float(zero.float().sum()) / max(n * p, 1),
        "off_fraction": _floats(off.float().sum(0) / nz),
        "all_zero_count": int(all_zero.sum()),
        "all_zero_fraction": float(all_zero.float().sum()) / nz,
        "active_paths_fraction": _floats(torch.bincount(active, minlength=p + 1).float() / nz),
        "dominant_fraction": _floats(torch.bincount(dominant[~all_zero], minlength=p).float() / nz),
        "entropy_mean": float(ent.mean()) if n else None,
        "entropy_mean_active": float(ent[~all_zero].mean()) if n_active_imgs else None,
        "class_mean": _floats(class_mean),
        "class_zero_fraction": _floats(class_zero_frac),
        "class_std": _floats(class_std),
    }


def summarize(record: GateRecord, class_names: Sequence[str] = CLASSES, off_share: float = 0.01) -> dict:
    """A JSON-ready summary of ``record``; every field is described in the module docstring."""
    class_names = [str(c) for c in class_names]
    c = len(class_names)
    labels = record.labels
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise ValueError(f"labels must be in 0..{c - 1} for {c} class names, found {int(labels.min())}..{int(labels.max())}")
    acc = None
    if record.predictions is not None and record.num_images:
        acc = float((record.predictions == labels).float().mean())
    blocks = []
    for i, g in enumerate(record.gates):
        blocks.append({
            "name": record.names[i], "module": record.modules[i], "gate": record.gate_types[i],
            "kernel_sizes": list(record.kernel_sizes[i]),
            **summarize_block(g, labels, c, off_share),
        })
    return {
        "format": SUMMARY_FORMAT,
        "num_images": record.num_images,
        "class_names": class_names,
        "class_counts": torch.bincount(labels, minlength=c).tolist() if labels.numel() else [0] * c,
        "accuracy": acc,
        "off_share": off_share,
        "blocks": blocks,
    }


def gate_epoch_stats(model: nn.Module, x_batch: torch.Tensor) -> dict:
    """Per-block mean gate and zero fraction on one fixed batch, for logging once per epoch.

    ``x_batch`` is fed to ``model`` as is (inside the training harness: a normalised batch on the model's
    device, for the bare network). One forward pass in eval mode without gradients; modes, ``record_gates``
    flags and ``last_gates`` are restored, so training is unaffected (BatchNorm statistics are not updated).
    Returns ``{"blocks": {"block1": {"mean": [P], "zero_fraction": [P], "all_zero_fraction": float}, ...}}``
    (plain floats, JSON-ready); a caller may add ``"epoch"``. Raises ``NoGatesError`` without gated blocks.
    """
    with _Recording(model) as rec, torch.no_grad():
        model(x_batch)
        gates = rec.read()
    out = {}
    for i, g in enumerate(gates):
        n = max(g.shape[0], 1)
        zero = g == 0
        out[f"block{i + 1}"] = {
            "mean": [float(v) for v in g.mean(0).tolist()],
            "zero_fraction": [float(v) for v in (zero.float().sum(0) / n).tolist()],
            "all_zero_fraction": float(zero.all(1).float().sum()) / n,
        }
    return {"blocks": out}


# ------------------------------------------------------------------------------------------------------
# Table


def format_table(summary: dict) -> str:
    """A short plain-text table of a summary: per block the mean gate, zero %, off %, all-zero % and entropy."""
    lines = []
    acc = summary.get("accuracy")
    head = f"{summary['num_images']} images"
    if acc is not None:
        head += f", top-1 accuracy {acc:.4f}"
    lines.append(head)
    lines.append(f"{'block':<7} {'gate':<8} {'kernels':<9} {'mean gate per path':<24} {'zero % per path':<22} "
                 f"{'off % per path':<22} {'all-0 %':>7} {'entropy':>7}")
    for b in summary["blocks"]:
        def fmt(vals, scale=1.0, spec="5.2f"):
            return " ".join("  -  " if v is None else format(v * scale, spec) for v in vals)
        ent = b["entropy_mean"]
        lines.append(
            f"{b['name']:<7} {b['gate']:<8} {','.join(map(str, b['kernel_sizes'])):<9} {fmt(b['mean']):<24} "
            f"{fmt(b['zero_fraction'], 100, '5.1f'):<22} {fmt(b['off_fraction'], 100, '5.1f'):<22} "
            f"{100 * b['all_zero_fraction']:7.1f} {'-' if ent is None else format(ent, '7.3f'):>7}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------
# Plots (matplotlib's Agg canvas directly: no pyplot state, no display needed)


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_histograms(record: GateRecord, path, bins: int = 40) -> Path:
    """Histogram of each path's gate values: one row per block, one column per path; the exact-zero count
    is drawn as its own bar (left of 0) and written in the title."""
    nb = len(record.gates)
    npaths = max(g.shape[1] for g in record.gates)
    fig = _figure(2.4 * npaths + 0.6, 1.7 * nb + 0.6)
    axes = fig.subplots(nb, npaths, squeeze=False)
    for i, g in enumerate(record.gates):
        hi = float(g.max()) if g.numel() else 1.0
        hi = hi if hi > 0 else 1.0
        for p in range(npaths):
            ax = axes[i][p]
            if p >= g.shape[1]:
                ax.axis("off")
                continue
            v = g[:, p]
            zero = v == 0
            nonzero = v[~zero].numpy()
            ax.hist(nonzero, bins=bins, range=(0, hi), color="C0", histtype="stepfilled")  # one polygon: fast
            if zero.any():
                ax.bar([-hi / bins], [int(zero.sum())], width=hi / bins, color="C3")
            zf = float(zero.float().mean()) if v.numel() else 0.0
            ax.set_title(f"{record.names[i]} path {p + 1} (k={record.kernel_sizes[i][p]}): {100 * zf:.0f}% zero",
                         fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle("gate values over images (red: exactly 0)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_class_heatmap(summary: dict, path) -> Path:
    """Mean gate per class: one panel per block, classes on y, paths on x (each panel its own colour scale)."""
    import numpy as np
    blocks = summary["blocks"]
    names = summary["class_names"]
    fig = _figure(1.4 + sum(0.4 * b["num_paths"] + 1.0 for b in blocks), 0.28 * len(names) + 1.4)
    axes = fig.subplots(1, len(blocks), squeeze=False)[0]
    for ax, b in zip(axes, blocks):
        m = np.array([[np.nan if v is None else v for v in row] for row in b["class_mean"]], dtype=float)
        im = ax.imshow(np.ma.masked_invalid(m), aspect="auto", cmap="viridis")
        ax.set_xticks(range(b["num_paths"]))
        ax.set_xticklabels([f"{p + 1}\nk{k}" for p, k in enumerate(b["kernel_sizes"])], fontsize=6)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names if ax is axes[0] else [], fontsize=7)
        ax.set_title(b["name"], fontsize=8)
        cb = fig.colorbar(im, ax=ax, fraction=0.08, pad=0.04)
        cb.ax.tick_params(labelsize=6)
    fig.suptitle("mean gate per class (x: path, kernel size)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_zero_fraction(summary: dict, path) -> Path:
    """Grouped bars: for each block, the fraction of images whose gate is exactly 0, per path, and the
    fraction with every gate 0 (hatched)."""
    blocks = summary["blocks"]
    npaths = max(b["num_paths"] for b in blocks)
    fig = _figure(1.4 + 1.1 * len(blocks) * (npaths + 1) / 4, 3.2)
    ax = fig.subplots()
    width = 0.8 / (npaths + 1)
    for p in range(npaths):
        xs = [i + p * width for i, b in enumerate(blocks) if p < b["num_paths"]]
        ys = [b["zero_fraction"][p] for b in blocks if p < b["num_paths"]]
        ax.bar(xs, ys, width=width, label=f"path {p + 1}", color=f"C{p}")
    ax.bar([i + npaths * width for i in range(len(blocks))], [b["all_zero_fraction"] for b in blocks],
           width=width, label="all paths", color="0.6", hatch="//")
    for rect in ax.patches:  # the value as a percentage above each bar
        h = rect.get_height()
        ax.text(rect.get_x() + rect.get_width() / 2, h, f"{100 * h:.1f}", ha="center", va="bottom", fontsize=5)
    ax.set_xticks([i + npaths * width / 2 for i in range(len(blocks))])
    ax.set_xticklabels([b["name"] for b in blocks])
    top = max([v for b in blocks for v in b["zero_fraction"] + [b["all_zero_fraction"]] if v is not None] + [0.0])
    ax.set_ylim(0, min(1.05, max(0.05, 1.25 * top)))  # small fractions stay visible
    ax.set_ylabel("fraction of images with gate = 0")
    ax.set_title("exactly-zero gates (labels: %)", fontsize=8)
    ax.legend(fontsize=7, ncol=min(npaths + 1, 5))
    fig.tight_layout()
    return _save(fig, path)


def plot_gate_evolution(epoch_stats_list: Sequence[dict], path) -> Path:
    """Per-epoch gate statistics (a list of ``gate_epoch_stats`` results, optionally with an ``"epoch"`` key):
    top row the mean gate per path, bottom row the zero fraction per path, one column per block."""
    if not epoch_stats_list:
        raise ValueError("no epoch statistics to plot")
    names = list(epoch_stats_list[0]["blocks"].keys())
    epochs = [s.get("epoch", i + 1) for i, s in enumerate(epoch_stats_list)]
    fig = _figure(2.6 * len(names) + 0.6, 4.6)
    axes = fig.subplots(2, len(names), squeeze=False)
    for j, name in enumerate(names):
        for row, key in enumerate(("mean", "zero_fraction")):
            ax = axes[row][j]
            series = [s["blocks"].get(name, {}).get(key) for s in epoch_stats_list]
            npaths = max((len(v) for v in series if v), default=0)
            for p in range(npaths):
                ys = [v[p] if v and p < len(v) else float("nan") for v in series]
                ax.plot(epochs, ys, marker="o", markersize=2.5, label=f"path {p + 1}", color=f"C{p}")
            if row == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel("mean gate" if key == "mean" else "zero fraction", fontsize=8)
            if key == "zero_fraction":
                ax.set_ylim(-0.03, 1.03)
                ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def plot_all(record: GateRecord, summary: dict, out_dir, prefix: str = "") -> Dict[str, Path]:
    """Histograms, class heat map and zero-fraction bars as ``out_dir/{prefix}{hist,class_heatmap,zero}.png``."""
    out = Path(out_dir)
    return {
        "histograms": plot_histograms(record, out / f"{prefix}hist.png"),
        "class_heatmap": plot_class_heatmap(summary, out / f"{prefix}class_heatmap.png"),
        "zero_fraction": plot_zero_fraction(summary, out / f"{prefix}zero_fraction.png"),
    }
