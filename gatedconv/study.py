"""Does input gating pay? Named variants of the original network and recipe, trained at one budget over seeds
on the grid runner (``gatedconv.grid``), each run summarised as a record of ``results/`` (``gatedconv.summary``
format plus the study's fields), compared with Welch's t-test (``gatedconv.stats``).

Variants (``VARIANTS``): the ReLU gate (the package default), the softmax gate, the constant gate (no gating
over the same paths), the softmax gate with its temperature annealed 30 -> 1 over the first tenth of training
(Dynamic Convolution, Chen et al. 2020, arXiv:1912.03458), a one-path plain network at the same widths, and a
one-path plain network whose widths are raised until its training step costs what the gated network's does
(``match_widths``: both steps timed side by side, interleaved, in one process).

Per run the record holds: variant, seed, parameters, training FLOPs (matmul/convolution FLOPs of the training
steps, ``gatedconv.flops``), training seconds, seconds per epoch and the official test accuracy (fp32) of the
model the run hands out (the weight average). The test set is never used for a choice: the budget, the
variants and the cost-matching are fixed before any run. A rerun reuses finished runs (their directories, or
their records in the results file), so the same command trains only what is missing.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .checkpoint import atomic_write_text, plain
from .rundir import read_json
from .summary import make_record

__all__ = ["VARIANTS", "Variant", "StudyError", "study_configs", "variant_kwargs", "match_widths", "step_costs",
           "run_study", "study_record", "BASE_WIDTHS", "DEFAULT_VARIANTS", "comparisons", "deployed_comparisons",
           "DEPLOYED_PAIRS", "TRAINING_VARIANTS"]

BASE_WIDTHS = (16, 32, 64, 128, 256)  # the gatedconv network's default widths
PLAIN = {"kernel_sizes": [3], "gate": "constant"}  # one path whose gate is identically 1: a plain conv + ReLU
MIX4 = {"kernel_sizes": [3, 3, 3, 3], "activation": "after_sum"}  # K = 4 kernels, one activation after the mix


@dataclass(frozen=True)
class Variant:
    """A named change to the original network and recipe: model keywords and RunConfig fields."""

    description: str
    model_kwargs: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)
    matched: str = ""  # "step": widths matched to the ReLU gate's training step; "latency": to dyconv's deployed
    # latency at batch 1 (match_widths both)


VARIANTS: Dict[str, Variant] = {
    "relu": Variant("ReLU gate (the package default, the original gate)"),
    "softmax": Variant("softmax gate over the 3 paths", {"gate": "softmax"}),
    "constant": Variant("constant gate: every path 1/3, no gating (same paths)", {"gate": "constant"}),
    "softmax_anneal": Variant("softmax gate, temperature annealed 30 -> 1 over the first tenth of training",
                              {"gate": "softmax"}, {"temperature_anneal": (30.0, 1.0, 0.1)}),
    "plain": Variant("one 3x3 path per block (a plain CNN) at the same widths", dict(PLAIN)),
    "plain_matched": Variant("one 3x3 path per block, widths raised to the gated network's cost per step",
                             dict(PLAIN), matched="step"),
    # kernel mixing (activation after the sum): K = 4 kernels mixed per sample cost about one convolution deployed
    "dyconv": Variant("Dynamic Convolution: 4 kernels mixed per sample, softmax attention with a hidden layer "
                      "(C/4), temperature annealed 30 -> 1 over the first tenth of training",
                      {**MIX4, "gate": "softmax", "rd_ratio": 0.25}, {"temperature_anneal": (30.0, 1.0, 0.1)}),
    "condconv": Variant("CondConv: 4 kernels mixed per sample, sigmoid routing", {**MIX4, "gate": "sigmoid"}),
    "fixed_mix": Variant("4 kernels averaged by a constant gate: the over-parameterised control (one Conv2d "
                         "deployed)", {**MIX4, "gate": "constant"}),
    "plain_deployed": Variant("one 3x3 path per block, widths raised until its deployed latency (batch 1) matches "
                              "the deployed dyconv network's", dict(PLAIN), matched="latency"),
}
MATCHED_AGAINST = {"step": "relu", "latency": "dyconv"}  # whose cost each kind of matching equals
DEFAULT_VARIANTS = tuple(VARIANTS)
REFERENCE = "relu"
# the question at equal training cost is about the original per-path block ...
TRAINING_VARIANTS = ("relu", "softmax", "constant", "softmax_anneal", "plain", "plain_matched")
# ... and at equal deployed cost about kernel mixing: (variant, against, the question the comparison answers)
DEPLOYED_PAIRS = (
    ("dyconv", "plain", "does it pay over the plain network of the same widths?"),
    ("dyconv", "plain_deployed", "does it pay at equal deployed latency?"),
    ("dyconv", "fixed_mix", "is it the input dependence?"),
    ("fixed_mix", "plain", "is it the over-parameterisation?"),
    ("condconv", "fixed_mix", "does CondConv's routing pay over the fixed mix?"),
)


class StudyError(ValueError):
    """Bad study input; one line."""


def variant_kwargs(name: str, matched_widths: Optional[Sequence[int] | Dict[str, Sequence[int]]] = None) -> dict:
    """The model keywords of variant ``name``. A cost-matched variant takes its widths from ``matched_widths``:
    a dict by variant name, or one list for the training-step-matched ``plain_matched``."""
    if name not in VARIANTS:
        raise StudyError(f"unknown variant {name!r}; choose from: {', '.join(VARIANTS)}")
    v, kw = VARIANTS[name], dict(VARIANTS[name].model_kwargs)
    if v.matched:
        if isinstance(matched_widths, dict):
            widths = matched_widths.get(name)
        else:
            widths = matched_widths if v.matched == "step" else None
        if widths is None:
            flag = "--matched-widths" if v.matched == "step" else "--latency-widths"
            raise StudyError(f"{name} needs {flag} (or the recorded calibration: see match_widths)")
        kw["widths"] = [int(w) for w in widths]
    return kw


def study_configs(variants: Sequence[str], seeds: Sequence[int], epochs: int, out: str | Path,
                  data_dir: Optional[str] = None, matched_widths: Optional[Sequence[int]] = None,
                  base: Optional[dict] = None) -> List[Tuple[str, object]]:
    """The (variant, RunConfig) cells, seed-major (every variant's seed 0 first), so a partial grid already
    covers every variant. ``base``: RunConfig fields for every run (e.g. batch size or precision)."""
    from .run import RunConfig

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise StudyError(f"unknown variant(s) {', '.join(unknown)}; choose from: {', '.join(VARIANTS)}")
    cells = []
    for seed in seeds:
        for name in variants:
            v, kw = VARIANTS[name], variant_kwargs(name, matched_widths)
            cfg = RunConfig(model="gatedconv", epochs=epochs, seed=seed, data_dir=data_dir,
                            out=str(Path(out) / name / f"seed{seed}"), model_kwargs=kw, **{**(base or {}), **v.run})
            cells.append((name, cfg))
    return cells


# ------------------------------------------------------------------------------------------------------
# cost matching


def _step_timer(model_kwargs: dict, batch_size: int, device: torch.device) -> Callable[[int], float]:
    """A function timing ``n`` training steps of the network, as ``gatedconv-train`` runs it on this device:
    autocast (bf16 where native), channels_last, Adam, the compiled gated sum on a CPU."""
    from .kernels import set_compiled_sum
    from .models import create_model
    from .train import _Loop, resolve_precision, train_step

    torch.manual_seed(0)
    net = create_model("gatedconv", **model_kwargs).to(device, memory_format=torch.channels_last).train()
    set_compiled_sum(net, device.type == "cpu")
    loop = _Loop(net, torch.nn.CrossEntropyLoss(), torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4),
                 device, resolve_precision("auto", device))
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def run(n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            train_step(loop, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / n
    run(3)  # warm-up: compilation, allocator
    return run


def _latency_timer(model_kwargs: dict, batch_size: int, device: torch.device) -> Callable[[int], float]:
    """A function timing ``n`` eval forward passes (fp32, channels-last) of the network's deployed form
    (``gatedconv.reparameterize``) on a batch of ``batch_size``: seconds per pass."""
    from .deploy import reparameterize
    from .models import create_model

    torch.manual_seed(0)
    net = reparameterize(create_model("gatedconv", **model_kwargs).eval()).to(device, memory_format=torch.channels_last)
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def run(n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / n
    run(5)  # warm-up
    return run


TIMERS = {"step": _step_timer, "latency": _latency_timer}  # what match_widths equalises


def _ratio(candidate: Callable[[int], float], reference: Callable[[int], float], rounds: int, steps: int) -> float:
    """Median over rounds of candidate / reference step time, the two interleaved within each round."""
    return statistics.median(candidate(steps) / reference(steps) for _ in range(rounds))


def _scaled(widths: Sequence[int], m: float) -> List[int]:
    """``widths`` times ``m``, rounded to multiples of 8 (oneDNN's channel blocking: other widths run slower per
    FLOP, which would make the match depend on rounding rather than on size)."""
    return [max(8, 8 * round(w * m / 8)) for w in widths]


def match_widths(reference_kwargs: Optional[dict] = None, base_widths: Sequence[int] = BASE_WIDTHS,
                 batch_size: int = 128, device: str = "auto", rounds: int = 7, steps: int = 4,
                 multipliers: Sequence[float] = (1.25, 1.5, 1.75, 2.0, 2.25), print_fn: Callable = print,
                 cost: str = "step") -> dict:
    """Widths of the one-path plain network whose cost equals the reference (gated) network's on this host:
    ``cost="step"`` a training step at ``batch_size``, ``cost="latency"`` an eval forward pass of the deployed
    forms. Each candidate width multiplier is timed against the reference side by side (interleaved rounds,
    median of the per-round ratios), then the midpoint of the two candidates that bracket a ratio of 1; the
    closest wins. Returns the widths, the multiplier and the measured ratio; the runs' own seconds per epoch check
    a step match afterwards."""
    from .train import resolve_device

    dev = resolve_device(device)
    timer = TIMERS[cost]
    reference = timer(dict(reference_kwargs or {}), batch_size, dev)

    def measure(m: float) -> dict:
        widths = _scaled(base_widths, m)
        r = _ratio(timer({**PLAIN, "widths": widths}, batch_size, dev), reference, rounds, steps)
        print_fn(f"  width x{m:.3f} {widths}: plain {cost} / gated {cost} = {r:.3f} (median of {rounds} rounds)")
        return {"widths": widths, "multiplier": m, "ratio": r}

    tried = [measure(m) for m in multipliers]
    below = [t for t in tried if t["ratio"] < 1]
    above = [t for t in tried if t["ratio"] >= 1]
    if below and above:
        lo, hi = max(below, key=lambda t: t["multiplier"]), min(above, key=lambda t: t["multiplier"])
        if _scaled(base_widths, (lo["multiplier"] + hi["multiplier"]) / 2) not in [t["widths"] for t in tried]:
            tried.append(measure((lo["multiplier"] + hi["multiplier"]) / 2))
    best = min(tried, key=lambda t: abs(t["ratio"] - 1))
    return {**best, "batch_size": batch_size, "rounds": rounds, "steps": steps, "device": str(dev), "cost": cost}


def step_costs(variants: Sequence[str], matched_widths: Optional[Sequence[int]] = None, batch_size: int = 128,
               device: str = "auto", rounds: int = 9, steps: int = 10, print_fn: Callable = print) -> dict:
    """The training step of every variant timed side by side in one process: each round times ``steps`` steps of
    each variant in turn (so drift in the machine's speed hits all alike); per variant the median step time and
    the median over rounds of its ratio to the ReLU gate's step (the cost axis of the study: one host's seconds,
    free of whatever else ran during the runs themselves)."""
    from .train import resolve_device

    dev = resolve_device(device)
    names = list(dict.fromkeys([REFERENCE, *variants]))
    timers = {name: _step_timer(variant_kwargs(name, matched_widths), batch_size, dev) for name in names}
    times: Dict[str, List[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names:
            times[name].append(timers[name](steps))
        print_fn(f"  round {i + 1}/{rounds}: " + ", ".join(f"{n} {1000 * t[-1]:.1f} ms" for n, t in times.items()))
    ratio = {name: round(statistics.median(a / b for a, b in zip(times[name], times[REFERENCE])), 4)
             for name in names}
    return {"reference": REFERENCE, "batch_size": batch_size, "rounds": rounds, "steps": steps, "device": str(dev),
            "ms_per_step": {n: round(1000 * statistics.median(t), 2) for n, t in times.items()}, "ratio": ratio}


# ------------------------------------------------------------------------------------------------------
# running and recording


def _train_flops(config: dict) -> int:
    """Matmul/convolution FLOPs of all the run's training steps (forward + backward; evaluation not counted)."""
    from .flops import training_step_flops
    from .models import create_model

    net = create_model(config["model"], **config["model_kwargs"])
    per_step = training_step_flops(net, (config["per_rank_batch_size"], 3, 32, 32), channels_last=False)
    steps_per_epoch = config["train_examples"] // config["global_batch_size"]
    return per_step * steps_per_epoch * config["epochs"] * config["world_size"]


def study_record(variant: str, run_dir: Path, command: str) -> dict:
    """The results record of one finished study run (``gatedconv.summary`` format + the study's fields)."""
    config, final = read_json(run_dir / "config.json"), read_json(run_dir / "final.json")
    rec = make_record(command=command, config=config, final=final, kind="train")
    rows = final.get("epoch") or config["epochs"]
    rec.update(name=variant, variant=variant, model_kwargs=config["model_kwargs"],
               train_flops=_train_flops(config), s_per_epoch=round(final["train_seconds"] / rows, 2),
               batch_size=config["batch_size"], first_1000=bool(config.get("first_1000")))
    if config.get("temperature_anneal"):
        rec["temperature_anneal"] = config["temperature_anneal"]
    return rec


def _done(records: List[dict], variant: str, cfg) -> bool:
    """A record for this variant, seed, budget and network already exists in the results file."""
    want = plain(cfg.model_kwargs)
    return any(r.get("variant") == variant and r.get("seed") == cfg.seed and r.get("epochs") == cfg.epochs
               and r.get("model_kwargs") == want and r.get("batch_size") == cfg.batch_size
               and r.get("first_1000") == cfg.first_1000 for r in records)


def run_study(cells: Sequence[Tuple[str, object]], results_path: str | Path, command: str,
              print_fn: Callable = print, run_print_fn: Optional[Callable] = None, launcher=None) -> List[dict]:
    """Train or reuse every cell; after each run append its record to ``results_path`` (one results file of
    ``results/``), so an interrupted study keeps what it finished. Returns the file's records. ``launcher``
    (``gatedconv.launch``): where the missing runs train (default: here, in turn); a launcher whose jobs failed
    raises its error after the finished runs are recorded."""
    from .grid import check_reusable, train_or_reuse
    from .launch import LocalLauncher
    from .summary import dump_results

    path = Path(results_path)
    data = read_json(path) or {"about": "gatedconv-study: the gating study (docs/research.md)", "records": []}
    launcher = launcher if launcher is not None else LocalLauncher()
    launcher.launch([(v, cfg) for v, cfg in cells if not _done(data["records"], v, cfg)], train_or_reuse, print_fn,
                    check=check_reusable)
    for variant, cfg in cells:
        if _done(data["records"], variant, cfg):
            print_fn(f"--- {variant} seed {cfg.seed}: recorded in {path}, nothing to train")
            continue
        print_fn(f"--- {variant} seed {cfg.seed} -> {cfg.out}")
        run_dir = launcher.run(cfg, train_or_reuse, run_print_fn if run_print_fn is not None else print_fn)
        if run_dir is None:  # its job failed: launcher.finish() names it
            continue
        data["records"].append(study_record(variant, run_dir, command))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, dump_results(data))
    launcher.finish()
    return data["records"]


# ------------------------------------------------------------------------------------------------------
# reading


def by_variant(records: Sequence[dict]) -> Dict[str, List[dict]]:
    """The study's run records grouped by variant, in ``VARIANTS`` order."""
    groups: Dict[str, List[dict]] = {}
    for name in VARIANTS:
        rs = [r for r in records if r.get("variant") == name]
        if rs:
            groups[name] = rs
    return groups


def verdict(c, better: str = "higher") -> str:
    """A plain reading of a comparison at the 5% level."""
    if c.p >= 0.05:
        return "no measurable difference at this budget"
    return "helps (higher accuracy)" if c.diff > 0 else "hurts (lower accuracy)"


def _compare(groups: Dict[str, List[dict]], name: str, against: str, question: str = "") -> dict:
    from .stats import welch

    c = welch([r["acc_pct"] for r in groups[name]], [r["acc_pct"] for r in groups[against]])
    return {"variant": name, "against": against, "comparison": c, "verdict": verdict(c), "question": question}


def comparisons(records: Sequence[dict]) -> List[dict]:
    """At equal training cost: each variant of the original per-path block (``TRAINING_VARIANTS``) against the
    ReLU gate and against the cost-matched plain network: the mean difference of test accuracy (percentage points)
    with its 95% interval, Welch's t-test p-value and the verdict. Pairs with fewer than two runs on a side are
    left out."""
    groups = {k: v for k, v in by_variant(records).items() if k in TRAINING_VARIANTS}
    out = []
    for against in (REFERENCE, "plain_matched"):
        if len(groups.get(against, [])) < 2:
            continue
        for name, rs in groups.items():
            if name == against or len(rs) < 2 or any(c["variant"] == against and c["against"] == name for c in out):
                continue  # itself, too few runs, or the mirror of a comparison already made
            out.append(_compare(groups, name, against))
    return out


def deployed_comparisons(records: Sequence[dict]) -> List[dict]:
    """At equal deployed cost: the kernel-mixing variants against each other and the plain networks
    (``DEPLOYED_PAIRS``), each with the question it answers; pairs with fewer than two runs on a side are left
    out."""
    groups = by_variant(records)
    return [_compare(groups, a, b, q) for a, b, q in DEPLOYED_PAIRS
            if len(groups.get(a, [])) >= 2 and len(groups.get(b, [])) >= 2]
