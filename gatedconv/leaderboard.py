"""A leaderboard of registered models trained at one stated budget on this machine.

Every model x seed is one ordinary run (:func:`gatedconv.run.run_training`) in ``OUT/<model>/seed<S>``; finished
runs (``final.json``) are reused, interrupted ones resumed. After each run the final checkpoint is evaluated
independently on the official test split with :func:`gatedconv.load_model` (fp32, raw [0, 1] images, the
model's own normalisation), giving top-1/top-3/top-5 in ``RUN/topk.json``. The results are summarised per model
(parameters, epochs, top-1 mean ± std over seeds, top-5 mean, training time and throughput on this machine)
beside the numbers the original comparison claimed, as a markdown table, a JSON file and two figures.

``scripts/leaderboard.py`` is the command-line front end.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .grid import run_grid, train_or_reuse
from .rundir import write_json as _write_json_file

__all__ = [
    "DEFAULT_MODELS", "RECIPES", "RECIPE_NOTES", "CLAIMS", "LeaderboardError", "parse_recipes", "merge_recipes",
    "make_config", "plan", "train_or_reuse", "saved_topk", "evaluate_topk", "collect_run", "summarize",
    "run_leaderboard", "recipe_text", "budget_text", "write_table", "write_json", "plot_acc_vs_params",
    "plot_acc_vs_time", "write_outputs", "machine_text",
]

# The CPU-feasible default set: the gated network, the cnn_base family, and the small baselines. Left out:
# resnet (ResNet-18, 11.2M parameters, ~40x the compute of gatedconv per image) and previt (ViT-B/16 at 224 px,
# needs a local weights file); name them in --models to include them.
DEFAULT_MODELS = (
    "gatedconv", "cnn_base", "cnn_base_bn", "cnn_base_bn_dropout", "cnn_base_wide", "cnn_base_deep",
    "cnn_small", "resnet_small", "vit", "mlp", "convnet", "convnet_small", "convnet_tiny", "cnn_medium",
)

_RESNET = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"}

# Built-in per-model recipes (RunConfig overrides). Models without one get the package default, which is the
# gatedconv network's original recipe: Adam lr 1e-3, weight decay 1e-4, constant lr, batch 128.
RECIPES: Dict[str, dict] = {
    "cnn_small": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.01, "batch_size": 128},
    "resnet": dict(_RESNET),
    "resnet_small": dict(_RESNET),
}

RECIPE_NOTES: Dict[str, str] = {
    "cnn_small": "original recipe: Adam lr 1e-4, weight decay 0.01, batch 128",
    "resnet": "original optimizer (SGD lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4); DIFFERS in the "
              "schedule: cosine annealing over the budget instead of the original ReduceLROnPlateau",
    "resnet_small": "resnet's recipe (SGD lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4, cosine instead of "
                    "ReduceLROnPlateau); not He et al.'s ResNet-20 recipe (weight decay 1e-4, step schedule)",
}

# What the original comparison claimed, printed beside our numbers. top1/top5 are fractions (for the figure);
# text is what the table shows.
CLAIMS: Dict[str, dict] = {
    "gatedconv": {"text": "83.5% (30 epochs)", "top1": 0.835, "epochs": 30},
    "cnn_small": {"text": "~50%", "top1": 0.50},
    "resnet": {"text": "~91% (50 epochs)", "top1": 0.91, "epochs": 50},
    "previt": {"text": "97.6% (fine-tuned, cross-validated)", "top1": 0.976},
    "mlp": {"text": "42% after 3 epochs", "top1": 0.42, "epochs": 3},
    "convnet_tiny": {"text": "50%", "top1": 0.50},
    "cnn_medium": {"text": "82% top-1 / 98% top-5", "top1": 0.82, "top5": 0.98},
}
# Models whose row points at a related model's claim (shown in brackets, not plotted).
_RELATED_CLAIMS = {"resnet_small": "resnet"}

# RunConfig fields the leaderboard sets itself; a recipe may override any other field.
_NOT_IN_RECIPES = ("model", "seed", "out", "data_dir", "validation", "first_1000", "cv_fold")
TOPK = (1, 3, 5)
TOPK_NAME = "topk.json"


class LeaderboardError(ValueError):
    """Bad leaderboard input or a run directory that does not fit; one line, shown without a traceback."""


# ------------------------------------------------------------------------------------------------------
# recipes and run configs


def _recipe_fields() -> List[str]:
    from .run import RunConfig
    return [f.name for f in fields(RunConfig) if f.name not in _NOT_IN_RECIPES]


def parse_recipes(text: Optional[str]) -> Dict[str, dict]:
    """``--recipes``: a JSON object ``{model: {RunConfig field: value}}``, or the path of a file holding one."""
    if text is None or not str(text).strip():
        return {}
    src = str(text)
    if not src.lstrip().startswith("{") and Path(src).is_file():
        src = Path(src).read_text()
    try:
        rec = json.loads(src)
    except ValueError as e:
        raise LeaderboardError(f"--recipes is not valid JSON ({e})") from None
    if not isinstance(rec, dict) or not all(isinstance(v, dict) for v in rec.values()):
        raise LeaderboardError('--recipes must be a JSON object of objects, e.g. {"cnn_small": {"lr": 1e-4}}')
    return rec


def merge_recipes(*layers: Dict[str, dict]) -> Dict[str, dict]:
    """Per-model merge, later layers winning key by key (built-in defaults, then ``--recipes``)."""
    out: Dict[str, dict] = {}
    for layer in layers:
        for model, rec in (layer or {}).items():
            out.setdefault(model, {}).update(rec)
    return out


def _check_recipes(recipes: Dict[str, dict]) -> None:
    from .models import is_model, list_models

    allowed = _recipe_fields()
    for model, rec in recipes.items():
        if not is_model(model):
            raise LeaderboardError(f"--recipes names unknown model {model!r}; choose from: {', '.join(list_models())}")
        bad = [k for k in rec if k not in allowed]
        if bad:
            raise LeaderboardError(f"--recipes for {model}: unknown or reserved field(s) {', '.join(bad)}; allowed: "
                                   f"{', '.join(allowed)}")
        if "model_kwargs" in rec and not isinstance(rec["model_kwargs"], dict):
            raise LeaderboardError(f"--recipes for {model}: model_kwargs must be a JSON object")


def make_config(model: str, seed: int, epochs: int, out: str | Path, data_dir: Optional[str] = None,
                base: Optional[dict] = None, recipe: Optional[dict] = None):
    """The RunConfig of one leaderboard run: package defaults < ``base`` (the global flags) < the model's
    ``recipe``; the run directory is ``out/<model>/seed<seed>``."""
    from .run import RunConfig

    kw = {"epochs": epochs}
    kw.update({k: v for k, v in (base or {}).items() if v is not None})
    kw.update(recipe or {})
    return RunConfig(model=model, seed=seed, out=str(Path(out) / model / f"seed{seed}"), data_dir=data_dir, **kw)


def plan(models: Sequence[str], seeds: Sequence[int], epochs: int, out: str | Path, data_dir: Optional[str] = None,
         base: Optional[dict] = None, recipes: Optional[Dict[str, dict]] = None) -> list:
    """Validate everything up front (not hours into the grid) and return the RunConfigs, model-major."""
    from .models import create_model, is_model, list_models
    from .run import RunError

    models = list(dict.fromkeys(models))
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not models:
        raise LeaderboardError("no models chosen")
    if not seeds:
        raise LeaderboardError("no seeds chosen")
    if epochs < 1:
        raise LeaderboardError(f"--epochs must be a positive integer, got {epochs}")
    unknown = [m for m in models if not is_model(m)]
    if unknown:
        raise LeaderboardError(f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(list_models())}")
    recipes = recipes or {}
    _check_recipes(recipes)
    cfgs = []
    for m in models:
        for s in seeds:
            cfg = make_config(m, s, epochs, out, data_dir, base, recipes.get(m))
            try:
                cfg.validate()
            except RunError as e:
                raise LeaderboardError(f"{m}: {e}") from None
            except TypeError:  # e.g. "lr": "1e-4" (a string) in --recipes
                raise LeaderboardError(f"{m}: a recipe value has the wrong type ({recipes.get(m)})") from None
            cfgs.append(cfg)
        try:
            with torch.device("meta"):  # builds the architecture without allocating or initialising weights
                create_model(m, **cfgs[-1].model_kwargs)
        except (TypeError, ValueError) as e:
            raise LeaderboardError(f"cannot build model {m!r}: {str(e).strip().splitlines()[0]}") from None
    return cfgs


def recipe_text(cfg: dict) -> str:
    """``adam lr 0.001 wd 0.0001, batch 128`` from a (saved or live) config dict."""
    s = f"{cfg['optimizer']} lr {cfg['lr']:g}"
    if cfg["optimizer"] == "sgd":  # RunConfig's SGD is always Nesterov
        s += f" momentum {cfg['momentum']:g} nesterov"
    s += f" wd {cfg['weight_decay']:g}"
    if cfg.get("schedule", "none") != "none":
        s += f", {cfg['schedule']}"
    s += f", batch {cfg['batch_size']}"
    if not cfg.get("augment", True):
        s += ", no aug"
    if cfg.get("label_smoothing"):
        s += f", ls {cfg['label_smoothing']:g}"
    if cfg.get("model_kwargs"):
        s += f", `{json.dumps(cfg['model_kwargs'])}`"
    return s


# ------------------------------------------------------------------------------------------------------
# running and evaluating


def saved_topk(run_dir: str | Path) -> Optional[dict]:
    """``RUN/topk.json`` if it exists and belongs to the run's final epoch, else None."""
    run_dir = Path(run_dir)
    path = run_dir / TOPK_NAME
    if not path.exists() or not (run_dir / "final.json").exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        return None
    final = json.loads((run_dir / "final.json").read_text())
    if saved.get("epoch") != final.get("epoch") or not all(f"top{k}" in saved for k in TOPK):
        return None
    return saved


def evaluate_topk(run_dir: str | Path, data=None, data_dir: Optional[str] = None, device: str = "cpu",
                  batch_size: int = 500, reuse: bool = True) -> dict:
    """Top-1/3/5 of the run's final checkpoint on the official test split: ``gatedconv.load_model(run_dir)``
    (eval mode, normalisation included) fed raw [0, 1] images in fp32 with eager kernels, as
    ``scripts/evaluate.py`` and the run's own final report do (so top-1 equals final.json's ``test_acc_fp32``
    where the harness writes it). Saved in ``RUN/topk.json`` and reused while it belongs to the run's final
    epoch. ``data`` may be a loaded :class:`gatedconv.data.CIFAR10` (else it is read from ``data_dir``)."""
    from .checkpoint import load_model
    from .data import load_cifar10
    from .train import evaluate_images, resolve_device

    run_dir = Path(run_dir)
    final = json.loads((run_dir / "final.json").read_text())
    if reuse:
        saved = saved_topk(run_dir)
        if saved is not None:
            return saved
    if data is None:
        data = load_cifar10(data_dir)
    model = load_model(run_dir, device=resolve_device(device))
    m = evaluate_images(model, data.test_x, data.test_y, batch_size=batch_size, topk=TOPK)
    res = {**{f"top{k}": m[f"top{k}"] for k in TOPK}, "n": len(data.test_y), "epoch": final.get("epoch"),
           "split": "official test set", "batch_size": batch_size,
           "method": "gatedconv.load_model(run) in fp32 on raw [0, 1] images (model's own normalisation)"}
    _write_json_file(run_dir / TOPK_NAME, res)
    return res


def _throughput(run_dir: Path, final: dict) -> Optional[float]:
    """Images per second over the whole run (sum of images / sum of epoch seconds, from metrics.csv); falls back
    to final.json's last-epoch figure."""
    p = run_dir / "metrics.csv"
    if p.exists():
        with open(p) as f:
            rows = list(csv.DictReader(f))
        try:
            secs = sum(float(r["seconds"]) for r in rows)
            imgs = sum(float(r["seconds"]) * float(r["examples_per_sec"]) for r in rows)
            if secs > 0:
                return imgs / secs
        except (KeyError, ValueError):
            pass
    return final.get("examples_per_sec")


def collect_run(run_dir: str | Path, topk: Optional[dict] = None) -> dict:
    """One finished run's numbers: parameters, epochs, recipe, the accuracy the run reported, top-k of the
    independent fp32 evaluation, training seconds and images/s."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    final = json.loads((run_dir / "final.json").read_text())
    topk = topk if topk is not None else json.loads((run_dir / TOPK_NAME).read_text())
    return {
        "model": config["model"], "seed": config["seed"], "run_dir": str(run_dir), "epochs": config["epochs"],
        "num_params": config["num_params"], "recipe": recipe_text(config),
        "reported_test_acc": final["test_acc"], "reported_test_acc_fp32": final.get("test_acc_fp32"),
        **{f"top{k}": topk[f"top{k}"] for k in TOPK},
        "train_seconds": final.get("train_seconds"), "img_per_sec": _throughput(run_dir, final),
        "autocast": config.get("autocast_dtype"), "device": config.get("device_resolved"),
        "eval_split": config.get("eval_split", ""), "test_examples": topk.get("n"),
    }


def _claim_text(model: str) -> str:
    if model in CLAIMS:
        return CLAIMS[model]["text"]
    rel = _RELATED_CLAIMS.get(model)
    if rel in CLAIMS:
        return f"({rel}: {CLAIMS[rel]['text']})"
    return ""


def summarize(model: str, runs: List[dict]) -> dict:
    """The leaderboard row of ``model`` from its per-seed runs."""
    def mean(key):
        vals = [r[key] for r in runs if r.get(key) is not None]
        return statistics.fmean(vals) if vals else None

    top1 = [r["top1"] for r in runs]
    return {
        "model": model, "num_params": runs[0]["num_params"], "epochs": runs[0]["epochs"],
        "seeds": [r["seed"] for r in runs], "top1": top1, "top1_mean": statistics.fmean(top1),
        "top1_std": statistics.stdev(top1) if len(top1) > 1 else None,
        "top3_mean": mean("top3"), "top5_mean": mean("top5"), "reported_test_acc_mean": mean("reported_test_acc"),
        "train_seconds_mean": mean("train_seconds"), "img_per_sec_mean": mean("img_per_sec"),
        "recipe": runs[0]["recipe"], "claim": _claim_text(model), "claim_top1": CLAIMS.get(model, {}).get("top1"),
        "claim_top5": CLAIMS.get(model, {}).get("top5"), "runs": runs,
    }


def run_leaderboard(cfgs: Sequence, print_fn: Callable = print, run_print_fn: Optional[Callable] = None,
                    eval_device: str = "cpu", launcher=None) -> List[dict]:
    """Train (or reuse) every run of :func:`plan`, evaluate top-k after each, and return one row per model in
    the order of ``cfgs``. Raises RunInterrupted / RunError / DataError / ... as ``run_training`` does.
    ``launcher``: where the missing runs train (``gatedconv.launch``; default here, in turn)."""
    from .data import load_cifar10

    data_cache: dict = {}

    def data_for(data_dir):
        if data_dir not in data_cache:
            data_cache[data_dir] = load_cifar10(data_dir)
        return data_cache[data_dir]

    per_model: Dict[str, List[dict]] = {}

    def evaluate_run(model: str, run_dir: Path) -> None:
        topk = saved_topk(run_dir)
        if topk is None:
            cfg = next(c for c in cfgs if Path(c.out) == run_dir)
            topk = evaluate_topk(run_dir, data=data_for(cfg.data_dir), device=eval_device, reuse=False)
            print_fn(f"    fp32 test top-1 {topk['top1']:.4f}, top-3 {topk['top3']:.4f}, top-5 {topk['top5']:.4f}")
        per_model.setdefault(model, []).append(collect_run(run_dir, topk))

    run_grid([(cfg.model, cfg) for cfg in cfgs], print_fn, run_print_fn, after_run=evaluate_run, launcher=launcher)
    return [summarize(m, runs) for m, runs in per_model.items()]


# ------------------------------------------------------------------------------------------------------
# outputs


def machine_text() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {cores} core(s) available, {torch.get_num_threads()} torch thread(s){gpu}, "
            f"torch {torch.__version__}")


def _fmt_seconds(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def write_table(path: str | Path, rows: List[dict], header: str = "") -> Path:
    """Markdown table, rows sorted by top-1 (best first)."""
    lines = [header, ""] if header else []
    lines += ["| # | model | parameters | epochs | seeds | top-1 (mean ± std) | top-5 (mean) | train time / run "
              "| img/s | recipe | original claim |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for i, r in enumerate(sorted(rows, key=lambda r: -r["top1_mean"]), 1):
        std = f" ± {100 * r['top1_std']:.2f}" if r["top1_std"] is not None else ""
        ips = "-" if r["img_per_sec_mean"] is None else f"{r['img_per_sec_mean']:,.0f}"
        lines.append(f"| {i} | {r['model']} | {r['num_params']:,} | {r['epochs']} | {len(r['seeds'])} | "
                     f"{100 * r['top1_mean']:.2f}{std} % | {_pct(r['top5_mean'])} | "
                     f"{_fmt_seconds(r['train_seconds_mean'])} | {ips} | {r['recipe']} | {r['claim'] or '-'} |")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_json(path: str | Path, rows: List[dict], budget: str = "", machine: str = "") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"budget": budget, "machine": machine, "claims": CLAIMS, "recipe_notes": RECIPE_NOTES,
                                "rows": rows}, indent=1) + "\n")
    return path


def _figure(width=6.4, height=4.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _scatter_labelled(ax, xs, rows, claims: bool) -> None:
    ys = [100 * r["top1_mean"] for r in rows]
    errs = [100 * (r["top1_std"] or 0.0) for r in rows]
    ax.errorbar(xs, ys, yerr=errs, fmt="o", color="C0", ecolor="C0", capsize=3, label="ours (fp32 test top-1)")
    for x, y, r in zip(xs, ys, rows):
        ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if claims:
        pts = [(x, 100 * r["claim_top1"], y) for x, y, r in zip(xs, ys, rows) if r.get("claim_top1") is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], facecolors="none", edgecolors="C3", marker="D",
                       label="original claim")
            for x, c, y in pts:
                ax.plot([x, x], [y, c], color="C3", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.margins(x=0.12)
    ax.set_ylim(bottom=0, top=max([100.0] + [y + e + 2 for y, e in zip(ys, errs)]))
    ax.set_ylabel("top-1 test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _finish_plot(fig, ax, path: str | Path, title: str) -> Path:
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_acc_vs_params(path: str | Path, rows: List[dict], title: str = "") -> Path:
    fig, ax = _figure()
    _scatter_labelled(ax, [r["num_params"] for r in rows], rows, claims=True)
    ax.set_xlabel("parameters (log scale)")
    return _finish_plot(fig, ax, path, title)


def plot_acc_vs_time(path: str | Path, rows: List[dict], title: str = "") -> Path:
    timed = [r for r in rows if r["train_seconds_mean"]]
    fig, ax = _figure()
    _scatter_labelled(ax, [r["train_seconds_mean"] for r in timed], timed, claims=False)
    from matplotlib.ticker import FuncFormatter
    tick = lambda v, _: f"{v:.3g} s" if v < 120 else _fmt_seconds(v)  # noqa: E731
    ax.xaxis.set_major_formatter(FuncFormatter(tick))
    lo, hi = ax.get_xlim()
    narrow = hi / max(lo, 1e-12) < 10  # less than a decade: label the minor ticks too
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: tick(v, _) if narrow else ""))
    ax.tick_params(axis="x", which="minor", labelsize=6)
    ax.set_xlabel("training time per run on this machine (log scale)")
    return _finish_plot(fig, ax, path, title)


def budget_text(rows: List[dict], base: Optional[dict] = None) -> str:
    epochs = sorted({r["epochs"] for r in rows})
    seeds = sorted({s for r in rows for s in r["seeds"]})
    runs = [x for r in rows for x in r["runs"]]
    names = {"None": "none (fp32)", "torch.bfloat16": "bf16", "torch.float16": "fp16"}
    autocast = sorted({names.get(str(x["autocast"]), str(x["autocast"])) for x in runs})
    split = {x["eval_split"] for x in runs}
    n_test = {x["test_examples"] for x in runs}
    s = (f"{'/'.join(map(str, epochs))} epoch(s) per run, seed(s) {','.join(map(str, seeds))}, training autocast "
         f"{'/'.join(autocast)}; top-k from the final checkpoint in fp32 on the {'/'.join(sorted(split))} "
         f"({'/'.join(str(n) for n in sorted(n_test))} images)")
    extra = [f"{k}={v}" for k, v in (base or {}).items() if v is not None]
    if extra:
        s += f"; global flags {', '.join(extra)}"
    return s


def write_outputs(rows: List[dict], out: str | Path, table: Optional[str | Path] = None,
                  figures_dir: Optional[str | Path] = "figures", base: Optional[dict] = None) -> dict:
    """Table (default OUT/leaderboard.md), OUT/leaderboard.json and, unless ``figures_dir`` is None, the two
    figures; returns the paths written."""
    out = Path(out)
    budget, machine = budget_text(rows, base), machine_text()
    notes = [f"* {m}: {t}" for m, t in RECIPE_NOTES.items() if any(r["model"] == m for r in rows)]
    header = "\n".join([
        "## Leaderboard", "",
        f"Budget: {budget}.", f"Machine: {machine}.", "",
        "top-1 / top-5: independent evaluation of each run's final checkpoint (`gatedconv.load_model`, fp32); the "
        "std is over seeds (sample std; blank for one seed). Train time: mean over seeds of `final.json` "
        "`train_seconds` (training epochs only, evaluation excluded); img/s: training images per second over the "
        "whole run. All runs use random-crop + flip augmentation. Models without a recipe of their own use the "
        "package default (Adam lr 1e-3, weight decay 1e-4, constant lr, batch 128). The original claims come from "
        "other budgets, machines and pipelines: compare with care.",
        *([""] + ["Recipe notes:"] + notes if notes else []),
    ])
    paths = {"table": write_table(Path(table) if table else out / "leaderboard.md", rows, header),
             "json": write_json(out / "leaderboard.json", rows, budget, machine)}
    if figures_dir is not None:
        fd = Path(figures_dir)
        paths["acc_vs_params"] = plot_acc_vs_params(fd / "leaderboard_acc_vs_params.png", rows, budget)
        paths["acc_vs_time"] = plot_acc_vs_time(fd / "leaderboard_acc_vs_time.png", rows, budget)
    return paths
