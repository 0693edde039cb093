"""Timer, Accumulator and Animator with the API people know from d2l, working without a display.

The Animator draws on its own ``matplotlib.figure.Figure`` through the Agg canvas: it never switches
matplotlib's backend and never touches pyplot's figures, so it is safe to create from a script, a test, a
server or a notebook that has its own plots open. It writes its PNG (``path``) as training goes; inside a
Jupyter or Colab kernel it also shows the figure live, as one output that is updated in place
(``IPython.display`` with a display id), so lines printed by the training loop stay visible under it.

For training curves the loss has its own axis: when the legend names both loss series ("train loss") and
other series ("train acc", "test acc"), the figure gets two panels side by side, "loss" (autoscaled, never
clipped) and "accuracy" (where ``ylim``, typically ``[0, 1]``, applies). ``Animator.for_training(num_epochs,
path)`` builds exactly the figure ``trainf`` draws by default.

d2l is not a dependency: ``trainf`` accepts any object with ``add(x, ys)``, so ``d2l.torch.Animator`` can be
passed in as well. One caveat with d2l's Animator: its ``add`` calls ``IPython.display.clear_output(wait=True)``
on every point, which wipes everything the cell printed before it, including ``trainf``'s per-epoch lines.
With d2l's Animator use ``trainf(..., quiet=True)`` and print ``history.epochs`` after training (or use this
package's Animator, which does not clear the cell).
"""
from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

__all__ = ["Timer", "Accumulator", "Animator", "in_notebook", "plot_run_metrics"]


class Timer:
    """Record running times: ``start()``, ``stop()`` -> seconds, ``avg()``, ``sum()``, ``cumsum()``.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before reading the clock so GPU work is counted.
    """

    def __init__(self, sync=None) -> None:
        self.times: List[float] = []
        self.sync = sync
        self.start()

    def start(self) -> None:
        if self.sync is not None:
            self.sync()
        self.tik = time.perf_counter()

    def stop(self) -> float:
        if self.sync is not None:
            self.sync()
        self.times.append(time.perf_counter() - self.tik)
        return self.times[-1]

    def avg(self) -> float:
        return sum(self.times) / len(self.times) if self.times else 0.0

    def sum(self) -> float:
        return sum(self.times)

    def cumsum(self) -> List[float]:
        out, total = [], 0.0
        for t in self.times:
            total += t
            out.append(total)
        return out


class Accumulator:
    """Sums over ``n`` variables; values may be Python numbers or tensors (kept on their device)."""

    def __init__(self, n: int) -> None:
        self.data = [0.0] * n

    def add(self, *args) -> None:
        self.data = [a + b for a, b in zip(self.data, args)]

    def reset(self) -> None:
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx: int):
        v = self.data[idx]
        return float(v) if hasattr(v, "item") else v


def in_notebook() -> bool:
    """True inside a Jupyter or Colab kernel (where a figure can be shown inline), False in a plain process, a
    terminal IPython or a script. Does not import IPython: a process that never did is not a notebook."""
    if "google.colab" in sys.modules:
        return True
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    if shell is None:
        return False
    if getattr(shell, "kernel", None) is not None:
        return True
    try:
        return "IPKernelApp" in shell.config
    except Exception:
        return False


def _is_loss(name: str) -> bool:
    return "loss" in str(name).lower()


class Animator:
    """Plot data incrementally: ``Animator(xlabel, ylabel, legend, xlim, ylim, xscale, yscale, fmts, nrows,
    ncols, figsize)`` then ``add(x, ys)``, as in d2l.

    Beyond d2l: ``path`` (a PNG written at most every ``min_interval`` seconds, and on ``save()``), ``title``,
    ``live`` (show inline: None = when running in a notebook kernel) and ``split_loss`` (None = when the legend
    has both loss and non-loss series): loss series then go on a panel of their own, labelled "loss" and never
    clipped, the others on a second panel labelled ``ylabel`` (default "accuracy") where ``ylim`` applies; the
    figure is made 1.6 times wider for it. ``close()`` writes any points not yet in the PNG.
    """

    def __init__(self, xlabel: Optional[str] = None, ylabel: Optional[str] = None,
                 legend: Optional[Sequence[str]] = None, xlim=None, ylim=None, xscale: str = "linear",
                 yscale: str = "linear", fmts: Sequence[str] = ("-", "m--", "g-.", "r:"), nrows: int = 1,
                 ncols: int = 1, figsize=(3.5, 2.5), path: Optional[str] = None, title: Optional[str] = None,
                 min_interval: float = 2.0, split_loss: Optional[bool] = None, live: Optional[bool] = None) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.legend = list(legend or [])
        losses = [_is_loss(n) for n in self.legend]
        can_split = nrows * ncols == 1 and any(losses) and not all(losses)
        self.split = can_split if split_loss is None else bool(split_loss) and can_split
        if self.split:
            ncols, figsize = 2, (figsize[0] * 1.6, figsize[1])
        self.fig = Figure(figsize=figsize)
        FigureCanvasAgg(self.fig)
        self.axes = list(self.fig.subplots(nrows, ncols, squeeze=False).flat)
        self.xlabel, self.ylabel = xlabel, ylabel
        self.xlim, self.ylim, self.xscale, self.yscale = xlim, ylim, xscale, yscale
        self.fmts, self.title = list(fmts), title
        self.X: Optional[List[List[float]]] = None
        self.Y: Optional[List[List[float]]] = None
        self.path = path
        self.min_interval = min_interval
        self.live = in_notebook() if live is None else bool(live)
        self._last_write = 0.0
        self._dirty = False
        self._display = None

    @classmethod
    def for_training(cls, num_epochs: int, path: Optional[str] = None, figsize=(5, 3.5), **kwargs) -> "Animator":
        """The figure ``trainf`` draws: x "epoch" over ``[0, num_epochs]``, the training loss on its own panel,
        training and test accuracy on a [0, 1] panel; ``add(x, (train_loss, train_acc, test_acc))``."""
        return cls(xlabel="epoch", xlim=[0, num_epochs], ylim=[0, 1.0], legend=["train loss", "train acc", "test acc"],
                   figsize=figsize, path=path, **kwargs)

    def _panel(self, i: int) -> int:
        """The axes index that series ``i`` is drawn on."""
        if not self.split:
            return 0
        return 0 if i < len(self.legend) and _is_loss(self.legend[i]) else 1

    def _panel_setup(self, p: int) -> tuple:
        """(ylabel, ylim) of panel ``p``."""
        if not self.split:
            return self.ylabel, self.ylim
        if p == 0:
            return "loss", None
        names = [n for n in self.legend if not _is_loss(n)]
        default = "accuracy" if any("acc" in str(n).lower() for n in names) else None
        return self.ylabel or default, self.ylim

    def _config_axes(self, p: int, ax) -> None:
        ylabel, ylim = self._panel_setup(p)
        if self.xlabel:
            ax.set_xlabel(self.xlabel)
        if ylabel:
            ax.set_ylabel(ylabel)
        ax.set_xscale(self.xscale)
        ax.set_yscale(self.yscale)
        if self.xlim:
            ax.set_xlim(self.xlim)
        if ylim:
            ax.set_ylim(ylim)
        if any(not label.startswith("_") for label in ax.get_legend_handles_labels()[1]):
            ax.legend(fontsize=8)
        if self.title and p == 0:
            ax.set_title(self.title, fontsize=9)
        ax.grid(True, alpha=0.3)

    def add(self, x, y) -> None:
        """Add one point per series; a ``None`` in ``y`` skips that series at this ``x``."""
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        if self.X is None:
            self.X = [[] for _ in range(n)]
            self.Y = [[] for _ in range(n)]
        for i, (a, b) in enumerate(zip(x, y)):
            if a is not None and b is not None:
                self.X[i].append(float(a))
                self.Y[i].append(float(b))
        self._dirty = True
        if self.live or (self.path and time.monotonic() - self._last_write >= self.min_interval):
            self.draw()

    def _render(self) -> None:
        used = sorted({self._panel(i) for i in range(len(self.X or []))} | ({0, 1} if self.split else {0}))
        for p in used:
            self.axes[p].cla()
        for i, (x, y) in enumerate(zip(self.X or [], self.Y or [])):
            label = self.legend[i] if i < len(self.legend) else None
            style = {"marker": "o"} if len(x) == 1 else {}  # a lone point of a line format would be invisible
            self.axes[self._panel(i)].plot(x, y, self.fmts[i % len(self.fmts)], label=label, **style)
        for p in used:
            self._config_axes(p, self.axes[p])
        self.fig.tight_layout()

    def png(self, dpi: Optional[float] = None) -> bytes:
        """The figure as PNG bytes (as last rendered)."""
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=dpi or self.fig.dpi)
        return buf.getvalue()

    def _repr_png_(self) -> bytes:  # a notebook shows an Animator that ends a cell as its figure
        self._render()
        return self.png()

    def draw(self) -> None:
        """Redraw; show the figure inline (updating the same output) when live, and write ``path`` if set."""
        self._render()
        if self.live:
            from IPython import display
            image = display.Image(data=self.png(), format="png")
            if self._display is None:
                self._display = display.display(image, display_id=True)
            else:
                self._display.update(image)
        if self.path:
            self.save(render=False)

    def save(self, path: Optional[str] = None, render: bool = True) -> Optional[str]:
        """Write the PNG (atomically: a temporary file, then rename) and return its path."""
        path = path or self.path
        if not path:
            return None
        if render:
            self._render()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp.png"
        self.fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
        self._last_write = time.monotonic()
        if path == self.path:
            self._dirty = False
        return path

    def close(self) -> None:
        """Write points that are not in the PNG yet. The figure is not registered with pyplot, so nothing else
        holds it: it is freed with the Animator."""
        if self._dirty and self.path:
            self.save()
        self._display = None


def plot_run_metrics(runs: Sequence[str | Path],
                     columns: Sequence[str],
                     path: str | Path,
                     ylabel: str = "accuracy",
                     title: Optional[str] = None) -> Path:
    """Draw per-epoch ``columns`` of each run directory's ``metrics.csv`` against the epoch into one PNG (one
    line per run and column, labelled ``run: column``). Raises ``ValueError`` (one line) for a run without
    ``metrics.csv`` or a missing column. Returns the path written."""
    import csv

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for run in runs:
        f = Path(run) / "metrics.csv"
        if not f.is_file():
            raise ValueError(f"{run}: no metrics.csv (not a run directory?)")
        with open(f) as fh:
            rows = list(csv.DictReader(fh))
        for col in columns:
            if not rows or col not in rows[0]:
                have = ", ".join(rows[0]) if rows else "nothing"
                raise ValueError(f"{f}: no column {col!r} (it has: {have})")
            ax.plot([float(r["epoch"]) for r in rows], [float(r[col]) for r in rows], marker=".",
                    label=f"{Path(run).name}: {col}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
