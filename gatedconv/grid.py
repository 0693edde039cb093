"""Train-or-reuse over a grid of runs: the one runner behind the leaderboard, the ablation and studies.

Each cell of a grid is an ordinary run (:func:`gatedconv.run.run_training`) in its own directory. A finished
run (``final.json``) is reused, an interrupted one resumed, a missing one trained; a directory that holds a
*different* run is an error, never overwritten. So a grid command can simply be run again after a stop, or with
more seeds, and it trains only what is missing. Where the missing runs train is the launcher's business
(``gatedconv.launch``): in this process, one after the other (the default), or as cluster jobs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from .checkpoint import CheckpointError, load_checkpoint, plain
from .launch import LocalLauncher
from .rundir import CONFIG_NAME, FINAL_NAME, RunError, is_finished, read_json, write_json

__all__ = ["GridError", "MUST_MATCH", "check_reusable", "train_or_reuse", "run_grid"]

# Fields that must agree between an existing run directory and the wanted run before it is reused.
MUST_MATCH = ("model", "epochs", "seed", "model_kwargs", "batch_size", "lr", "weight_decay", "optimizer",
              "momentum", "schedule", "augment", "label_smoothing", "precision", "validation", "first_1000",
              "cv_fold", "ema_decay", "temperature_anneal")
# What a saved config without a field meant by it: a run without ema_decay evaluated the live weights.
_MISSING_MEANS = {"ema_decay": 0.0}


class GridError(RunError):
    """A grid cell whose directory holds a different run, or that did not finish; one line."""


def _final_from_checkpoint(out: Path) -> None:
    """A run stopped between its last checkpoint and ``final.json``: write ``final.json`` from the checkpoint."""
    try:
        state = load_checkpoint(out)
    except CheckpointError as e:
        raise GridError(str(e)) from None
    if not state.get("finished"):
        raise GridError(f"{out}: the run did not finish and wrote no {FINAL_NAME}")
    rows = state["history"]["epochs"]
    write_json(out / FINAL_NAME, {**rows[-1], "train_seconds": sum(r["seconds"] for r in rows)})


def check_reusable(cfg) -> Optional[dict]:
    """The saved config in ``cfg.out`` (None: no run there yet); :class:`GridError` if it is a different run."""
    out = Path(cfg.out)
    saved = read_json(out / CONFIG_NAME)
    if saved is not None:
        for key in MUST_MATCH:
            have, want = saved.get(key, _MISSING_MEANS.get(key)), plain(getattr(cfg, key, None))
            if have != want:
                raise GridError(f"{out} holds a run with a different {key} ({have!r}, wanted {want!r}); use "
                                "another output directory or move that run away")
    return saved


def train_or_reuse(cfg, print_fn: Callable = print) -> Path:
    """Make sure the run ``cfg`` (a :class:`gatedconv.run.RunConfig`) describes is finished in ``cfg.out``:
    reuse it if finished, resume it if interrupted, train it otherwise. Returns the run directory."""
    from .run import run_training

    out = Path(cfg.out)
    saved = check_reusable(cfg)
    if not is_finished(out):
        run_training(cfg, resume=saved is not None, print_fn=print_fn)
        if not is_finished(out):
            _final_from_checkpoint(out)
    return out


def run_grid(cells: Iterable[Tuple[str, object]], print_fn: Callable = print,
             run_print_fn: Optional[Callable] = None,
             after_run: Optional[Callable[[str, Path], None]] = None, launcher=None) -> Dict[str, List[Path]]:
    """Train or reuse every ``(label, RunConfig)`` cell in order; returns label -> its run directories.
    ``after_run(label, run_dir)`` is called after each cell (e.g. an independent evaluation). ``launcher``
    (``gatedconv.launch``): where the missing runs train (default: here, in turn); a launcher whose jobs failed
    raises its error after the cells that finished."""
    launcher = launcher if launcher is not None else LocalLauncher()
    cells = list(cells)
    launcher.launch(cells, train_or_reuse, print_fn, check=check_reusable)
    done: Dict[str, List[Path]] = {}
    for label, cfg in cells:
        state = "reuse" if is_finished(cfg.out) else "resume" if read_json(Path(cfg.out) / CONFIG_NAME) else "train"
        print_fn(f"--- {label} seed {cfg.seed} ({state}) -> {cfg.out}")
        run_dir = launcher.run(cfg, train_or_reuse, run_print_fn if run_print_fn is not None else print_fn)
        if run_dir is None:  # its job failed: launcher.finish() names it
            continue
        if after_run is not None:
            after_run(label, run_dir)
        done.setdefault(label, []).append(run_dir)
    launcher.finish()
    return done
