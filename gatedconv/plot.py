"""Timer, Accumulator and Animator with the API people know from d2l, working without a display.

The Animator draws with matplotlib's Agg backend and writes its PNG as training goes; inside a Jupyter
notebook it also shows the figure live. d2l is not a dependency: ``trainf`` accepts any object with
``add(x, ys)``, so ``d2l.torch.Animator`` can be passed in as well.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Optional, Sequence

__all__ = ["Timer", "Accumulator", "Animator", "plot_run_metrics"]


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


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
        ip = get_ipython()
        return ip is not None and ip.__class__.__name__ == "ZMQInteractiveShell"
    except Exception:
        return False


class Animator:
    """Plot data incrementally: ``Animator(xlabel, ylabel, legend, xlim, ylim, xscale, yscale, fmts, nrows,
    ncols, figsize)`` then ``add(x, ys)``. Writes ``path`` (a PNG) at most every ``min_interval`` seconds and on
    ``save()``; in a notebook it also redraws inline."""

    def __init__(self, xlabel: Optional[str] = None, ylabel: Optional[str] = None,
                 legend: Optional[Sequence[str]] = None, xlim=None, ylim=None, xscale: str = "linear",
                 yscale: str = "linear", fmts: Sequence[str] = ("-", "m--", "g-.", "r:"), nrows: int = 1,
                 ncols: int = 1, figsize=(3.5, 2.5), path: Optional[str] = None, title: Optional[str] = None,
                 min_interval: float = 2.0) -> None:
        import matplotlib
        if not _in_notebook():
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        self._plt = plt
        self.fig, axes = plt.subplots(nrows, ncols, figsize=figsize)
        self.axes = [axes] if nrows * ncols == 1 else list(axes.flat)
        self.xlabel, self.ylabel, self.legend = xlabel, ylabel, list(legend or [])
        self.xlim, self.ylim, self.xscale, self.yscale = xlim, ylim, xscale, yscale
        self.fmts, self.title = fmts, title
        self.X: Optional[List[List[float]]] = None
        self.Y: Optional[List[List[float]]] = None
        self.path = path
        self.min_interval = min_interval
        self._last_write = 0.0
        self._notebook = _in_notebook()
        self._display = None

    def _config_axes(self, ax) -> None:
        ax.set_xlabel(self.xlabel)
        ax.set_ylabel(self.ylabel)
        ax.set_xscale(self.xscale)
        ax.set_yscale(self.yscale)
        if self.xlim:
            ax.set_xlim(self.xlim)
        if self.ylim:
            ax.set_ylim(self.ylim)
        if self.legend:
            ax.legend(self.legend)
        if self.title:
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
        if self._notebook or (self.path and time.monotonic() - self._last_write >= self.min_interval):
            self.draw()

    def _render(self) -> None:
        ax = self.axes[0]
        ax.cla()
        for x, y, fmt in zip(self.X or [], self.Y or [], self.fmts):
            ax.plot(x, y, fmt)
        self._config_axes(ax)
        self.fig.tight_layout()

    def draw(self) -> None:
        self._render()
        if self._notebook:
            from IPython import display
            if self._display is None:
                self._display = display.display(self.fig, display_id=True)
            else:
                self._display.update(self.fig)
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
        return path

    def close(self) -> None:
        self._plt.close(self.fig)


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
