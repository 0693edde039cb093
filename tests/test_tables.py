"""Every table of the report (``gatedconv.report.TABLES``) rendered from a few hand-made records, against the
Markdown written out here by hand: means, sample standard deviations, ratios, orders, columns and the provenance
line. The tables go through the documents' path: results files, a marker in README.md, ``report.render``.

The expected figures were worked out from the records by hand; the Welch figures (study comparisons and verdict)
come from SciPy's ``ttest_ind(a, b, equal_var=False)`` and its ``confidence_interval()``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pytest

from gatedconv import report

BASE = {"command": "python scripts/x.py", "host": "test host", "date": "2026-01-02", "carried_over": False}
CAPTION = "Command: `python scripts/x.py`. Host: test host. Date: 2026-01-02. Source: collected."
XEON, EPYC = "Intel Xeon (2 vCPU)", "AMD EPYC (2 vCPU)"
COVERED = set()


def renders(*names):
    """Mark a test as the one that checks the tables ``names``."""
    COVERED.update(names)
    return lambda test: test


def rec(name: str, **fields) -> dict:
    return {"name": name, **BASE, **fields}


def render(root: Path, table: str, files: Dict[str, List[dict]]) -> str:
    """The block ``table`` of a README.md holding only its markers, from results files holding ``files``."""
    (root / "results").mkdir(parents=True)
    for file, records in files.items():
        (root / "results" / f"{file}.json").write_text(report.dump_results({"about": "test", "records": records}))
    opening, closing = f"<!-- report:{table} -->\n", f"\n<!-- /report:{table} -->\n"
    (root / "README.md").write_text(opening + closing)
    text = report.render(root)[root / "README.md"]
    assert text.startswith(opening) and text.endswith(closing)
    return text[len(opening):-len(closing)]


def test_every_table_has_a_test_here():
    """A new table is not published without its hand-written expected Markdown."""
    assert COVERED == set(report.TABLES)


@renders("headline")
def test_headline_means_sample_std_times_commands_and_hosts(tmp_path):
    """One row per headline entry: mean ± sample std over the group (an aggregate record's own figures), n,
    mean time, the per-seed commands read as one, the hosts."""
    trainf = "python scripts/trainf.py --seed {0} --out runs/m_seed{0}"
    muon = "m --first-seed {0} --out runs/muon/gated"
    files = {
        "main": [rec("gatedconv", seed=0, acc_pct=85.0, acc_live_pct=83.0, wall_s=1500.0, command=trainf.format(0),
                     host="host A"),
                 rec("gatedconv", seed=1, acc_pct=85.5, acc_live_pct=84.0, wall_s=1600.0, command=trainf.format(1),
                     host="host A")],
        "ablation_5ep": [rec("relu", seed=0, acc_pct=73.5, command="gatedconv-ablate --epochs 5", host="host A"),
                         rec("constant", seed=1, acc_pct=75.2, command="gatedconv-ablate --epochs 5", host="host A")],
        "speedrun": [rec("speedrun_12", aggregate=True, n=5, seeds=[0, 1, 2, 3, 4], acc_tta_pct={"mean": 94.13, "std": 0.1},
                         time_s={"mean": 2099.4, "std": 3.0}, command="gatedconv-speedrun --seeds 5 --epochs 12",
                         host="host A"),
                     rec("speedrun_11", seed=0, acc_tta_pct=94.09, time_s=722.0,
                         command="gatedconv-speedrun --seeds 1 --epochs 11", host="host B"),
                     rec("speedrun_budget3", seed=0, acc_tta_pct=93.33, time_s=499.6,
                         command="gatedconv-speedrun --epochs 7.6", host="host B"),
                     rec("speedrun_plain3", seed=0, acc_tta_pct=93.8, command="gatedconv-speedrun --paths 3",
                         host="host B")],
        "speedrun_muon": [rec("muon_gated", seed=0, acc_tta_pct=94.0, time_s=1065.0, command=muon.format(0),
                              host="host B"),
                          rec("muon_gated", seed=1, acc_tta_pct=94.1, time_s=1067.0, command=muon.format(1),
                              host="host C"),
                          rec("muon_gated_equal_time", seed=0, acc_tta_pct=93.11, time_s=778.0, command="m --epochs 5.75",
                              host="host B"),
                          rec("muon_plain", seed=0, acc_tta_pct=94.02, time_s=828.0, command="m --paths 3",
                              host="host B")],
    }
    assert render(tmp_path, "headline", files) == """\
| what | test accuracy (mean ± std over n runs) | time per run | command | host |
| --- | ---: | ---: | --- | --- |
| Original recipe, 30 epochs: the weight average (what `load_model` returns) | 85.25 ± 0.35% (n = 2) | 1,550 s | `python scripts/trainf.py --seed S --out runs/m_seedS` | host A |
| Same runs, live weights (the original's evaluation) | 83.50 ± 0.71% (n = 2) | 1,550 s | `python scripts/trainf.py --seed S --out runs/m_seedS` | host A |
| Original recipe, 5 epochs, live weights: the ReLU gate | 73.50% (n = 1) | - | `gatedconv-ablate --epochs 5` | host A |
| Same, constant gate (no gating) | 75.20% (n = 1) | - | `gatedconv-ablate --epochs 5` | host A |
| Fast recipe (`gatedconv_fast`), 12 epochs, with TTA | 94.13 ± 0.10% (n = 5) | 2,099 s | `gatedconv-speedrun --seeds 5 --epochs 12` | host A |
| Fast recipe, 11 epochs, with TTA | 94.09% (n = 1) | 722 s | `gatedconv-speedrun --seeds 1 --epochs 11` | host B |
| Fast recipe in airbench94's time (7.6 epochs), with TTA | 93.33% (n = 1) | 500 s | `gatedconv-speedrun --epochs 7.6` | host B |
| airbench94 in the same harness (`--paths 3`), with TTA | 93.80% (n = 1) | - | `gatedconv-speedrun --paths 3` | host B |
| Muon recipe (`--recipe airbench94_muon`), gated, 8 epochs, with TTA | 94.05 ± 0.07% (n = 2) | 1,066 s | `m --first-seed S --out runs/muon/gated` | host B, host C |
| Muon recipe, gated, in about the reference's time (5.75 epochs), with TTA | 93.11% (n = 1) | 778 s | `m --epochs 5.75` | host B |
| airbench94_muon in the same harness (`--paths 3`), with TTA | 94.02% (n = 1) | 828 s | `m --paths 3` | host B |"""


@renders("main")
def test_main_rows_per_seed_in_seed_order_then_mean_and_std(tmp_path):
    """A row per seed (sorted), then the mean ± sample std of each column (wall time in minutes), a metric only
    one seed has shown alone; other record names in the file are left out."""
    trainf = "python scripts/trainf.py --seed {0} --out runs/m_seed{0}"
    files = {"main": [
        rec("gatedconv", seed=1, acc_pct=85.5, acc_epoch_pct=85.3, acc_live_pct=84.0, wall_s=1600.0, img_per_s=420.0,
            command=trainf.format(1)),
        rec("gatedconv", seed=0, acc_pct=85.0, acc_epoch_pct=84.9, acc_live_pct=83.0, top5_pct=99.1, wall_s=1500.0,
            img_per_s=400.0, command=trainf.format(0)),
        rec("gatedconv_small", seed=0, acc_pct=1.0, command=trainf.format(0)),
    ]}
    assert render(tmp_path, "main", files) == """\
| seed | test acc: weight average (fp32, `load_model`) | same weights, per-epoch eval (bf16) | live weights (fp32) | top-5 (fp32) | wall time | training img/s |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| 0 | 85.00% | 84.90% | 83.00% | 99.10% | 25.0 min | 400 |
| 1 | 85.50% | 85.30% | 84.00% | - | 26.7 min | 420 |
| **mean ± std (n = 2)** | **85.25 ± 0.35%** | 85.10 ± 0.28% | 83.50 ± 0.71% | 99.10% | 25.8 ± 1.2 min | 410 ± 14 |

Command: `python scripts/trainf.py --seed S --out runs/m_seedS`. Host: test host. Date: 2026-01-02. Source: collected."""


@renders("misc")
def test_misc_values_and_per_row_provenance_columns(tmp_path):
    """Stored values as printed (integer, approximate with a unit, a count, a list with its mean ± std); commands,
    dates and sources that differ between rows get columns, the shared host the caption."""
    files = {"misc": [
        rec("cpu threads", value=2, command="cmd a", date="2026-01-01", carried_over=True),
        rec("eval speed", value=1234.5, unit="img/s", approx=True, command="cmd a", date="2026-01-01"),
        rec("first 1000 accuracy", value=61.2, unit="%", correct=612, total=1000, command="cmd b"),
        rec("seeds", value=[85.51, 85.17, 85.39], unit="%", decimals=2, mean_std=True, command="cmd b"),
    ]}
    assert render(tmp_path, "misc", files) == """\
| figure | value | command | date | source |
| --- | ---: | --- | --- | --- |
| cpu threads | 2 | `cmd a` | 2026-01-01 | carried over |
| eval speed | ~1,234.5 img/s | `cmd a` | 2026-01-01 | collected |
| first 1000 accuracy | 61.2% (612/1000) | `cmd b` | 2026-01-02 | collected |
| seeds | 85.51 / 85.17 / 85.39% (mean ± std: 85.36 ± 0.17%) | `cmd b` | 2026-01-02 | collected |

Host: test host."""


@renders("superseded")
def test_superseded_values_ranges_and_replacements(tmp_path):
    """A value, a range kept at its stored precision, what replaced each; carried-over records say so."""
    files = {"superseded": [
        rec("old speedrun", value=93.1, unit="%", superseded_by="speedrun_12", carried_over=True),
        rec("old timing", value={"min": 1.2, "max": 3.25}, unit="s", carried_over=True),
    ]}
    assert render(tmp_path, "superseded", files) == f"""\
| figure | value | replaced by |
| --- | ---: | --- |
| old speedrun | 93.1% | speedrun_12 |
| old timing | 1.20-3.25 s | - |

{CAPTION.removesuffix(" Source: collected.")} Carried over from the documentation of the original runs (their \
run directories were not kept)."""


@renders("leaderboard_5ep")
def test_leaderboard_5ep_sorted_by_top1_best_first(tmp_path):
    """Ranked by top-1, best first (the file lists them worst first), seconds or minutes of training, claims."""
    files = {"leaderboard_5ep": [
        rec("mlp", params=1738890, acc_pct=45.1, top5_pct=90.02, train_s=61.4, img_per_s=4074.6,
            claim="42% after 3 epochs"),
        rec("gatedconv", params=1247922, acc_pct=70.25, top5_pct=97.5, train_min=12.34, img_per_s=1013.4),
        rec("convnet_tiny", params=62006, acc_pct=52.0, top5_pct=93.0, train_s=30, img_per_s=8333, claim="50%"),
    ]}
    assert render(tmp_path, "leaderboard_5ep", files) == f"""\
| # | model | parameters | top-1 (seed 0) | top-5 | train time | img/s | original claim (its budget) |
| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |
| 1 | gatedconv | 1,247,922 | 70.25% | 97.50% | 12.3 min | 1,013 | - |
| 2 | convnet_tiny | 62,006 | 52.00% | 93.00% | 30 s | 8,333 | 50% |
| 3 | mlp | 1,738,890 | 45.10% | 90.02% | 61 s | 4,075 | 42% after 3 epochs |

{CAPTION}"""


@renders("leaderboard_small3")
def test_leaderboard_small3_mean_and_sample_std_over_seeds(tmp_path):
    """Three seeds 45.1/46.3/44.2: mean 45.20, sample std 1.05 (population: 0.86); an aggregate record's own
    figures; seed 0 of the 5-epoch leaderboard beside them, or '-'."""
    cmd = "gatedconv-leaderboard --models mlp,cnn_small --seeds 0,1,2"
    files = {
        "leaderboard_5ep": [rec("mlp", params=1738890, acc_pct=45.1, top5_pct=90.0, train_s=61.0, img_per_s=4000)],
        "leaderboard_small3": [rec("mlp", seed=s, acc_pct=a, command=cmd) for s, a in ((0, 45.1), (1, 46.3), (2, 44.2))]
        + [rec("cnn_small", aggregate=True, n=3, seeds=[0, 1, 2], acc_pct={"mean": 50.5, "std": 1.25}, command=cmd)],
    }
    assert render(tmp_path, "leaderboard_small3", files) == f"""\
| model | top-1 after 5 epochs (mean ± sample std) | seeds | seed 0 alone |
| --- | ---: | --- | ---: |
| mlp | 45.20 ± 1.05% (n = 3) | 0, 1, 2 | 45.10% |
| cnn_small | 50.50 ± 1.25% (n = 3) | 0, 1, 2 | - |

Command: `{cmd}`. Host: test host. Date: 2026-01-02. Source: collected."""


@renders("ablation_5ep")
def test_ablation_5ep_variants_in_file_order_with_mean_std_and_n(tmp_path):
    """Per variant: parameters (and those when measured), top-1 mean ± sample std, n, training seconds."""
    cmd = "gatedconv-ablate --epochs 5 --seeds 0 --control-seeds 1"
    files = {"ablation_5ep": [
        rec("relu", seed=0, acc_pct=72.5, train_s=300, params=1247922, params_when_measured=1247900,
            what="the ReLU gate", time_note="shared host", command=cmd),
        rec("relu", seed=1, acc_pct=74.5, train_s=310, params=1247922, command=cmd),
        rec("constant", seed=0, acc_pct=75.2, params=1247922, command=cmd),
    ]}
    assert render(tmp_path, "ablation_5ep", files) == f"""\
| variant | what changes | parameters | top-1 after 5 epochs | n | train s / run | timing note |
| --- | --- | ---: | ---: | ---: | ---: | --- |
| `relu` | the ReLU gate | 1,247,922 (1,247,900 when measured) | 73.50 ± 1.41% | 2 | 305 ± 7 | shared host |
| `constant` | - | 1,247,922 | 75.20% | 1 | - |  |

Command: `{cmd}`. Host: test host. Date: 2026-01-02. Source: collected."""


GATES_CMD = "gatedconv-analyze-gates runs/main_seed0"


@renders("gates")
def test_gates_blocks_in_order_and_the_analysed_network(tmp_path):
    """Blocks sorted by number: mean gate and exactly-zero share per path, entropy; then the network's line."""
    files = {"gates": [
        rec("block", block=2, map="8x8", mean_gate=[0.5, 1.25, 0.0], zero_pct=[0, 12.5, 100], entropy=0.9876,
            command=GATES_CMD),
        rec("block", block=1, map="16x16", mean_gate=[1.0, 0.333, 0.75], zero_pct=[0.0, 3.04, 0], entropy=0.5,
            command=GATES_CMD),
        rec("network", note="seed 0, 30 epochs", acc_pct=85.36, command=GATES_CMD),
    ]}
    assert render(tmp_path, "gates", files) == f"""\
| block | map | mean gate per path | exactly-zero gates per path | normalised gate entropy |
| --- | --- | --- | --- | --- |
| 1 | 16x16 | 1.00 / 0.33 / 0.75 | 0% / 3.0% / 0% | 0.500 |
| 2 | 8x8 | 0.50 / 1.25 / 0.00 | 0% / 12.5% / 100.0% | 0.988 |

Command: `{GATES_CMD}`. Host: test host. Date: 2026-01-02. Source: collected.

The analysed network (seed 0, 30 epochs): top-1 85.36% (`{GATES_CMD}`)."""


@renders("gates_per_class")
def test_gates_per_class_rows_for_classes_and_training(tmp_path):
    """Per-class rows and the over-training row, in file order; block records are not part of this table."""
    files = {"gates": [
        rec("class", block=3, path=1, cls="cat", zero_pct=87.6, mean_gate=0.046, command=GATES_CMD),
        rec("block", block=1, map="16x16", mean_gate=[1.0], zero_pct=[0], entropy=0.5, command=GATES_CMD),
        rec("class", block=3, path=2, cls="ship", zero_pct=12.4, command=GATES_CMD),
        rec("training", block=1, path=0, zero_pct_start=5, zero_pct_end=40.4, command=GATES_CMD),
    ]}
    assert render(tmp_path, "gates_per_class", files) == f"""\
| block | path | class | exactly-zero share | mean gate |
| ---: | ---: | --- | ---: | ---: |
| 3 | 1 | cat | 88% | 0.05 |
| 3 | 2 | ship | 12% | - |
| 1 | 0 | all, over training | ~5% at the start, 40% later | - |

Command: `{GATES_CMD}`. Host: test host. Date: 2026-01-02. Source: collected."""


def _speedrun_records() -> List[dict]:
    """speedrun_a: two seeds and their aggregate; speedrun_b: one seed; both on the Xeon. speedrun_c on the EPYC;
    an ingredient ablation (it has a baseline) that no run table shows."""
    agg = dict(network="gatedconv_fast", epochs=12, host=XEON)
    return [
        rec("speedrun_a", seed=0, acc_tta_pct=94.0, acc_pct=93.4, time_s=698.6, steps=1999, train_s=655.4,
            command="gatedconv-speedrun --first-seed 0 --seeds 1", **agg),
        rec("speedrun_a", seed=1, acc_tta_pct=94.2, time_s=701.0, steps=1999, train_s=660.0,
            command="gatedconv-speedrun --first-seed 1 --seeds 1", **agg),
        rec("speedrun_a", aggregate=True, n=2, seeds=[0, 1], acc_tta_pct={"mean": 94.1, "std": 0.12},
            acc_pct={"mean": 93.5, "std": 0.2}, time_s={"mean": 700, "std": 10}, steps=2000, tflops_per_s=1.25,
            command="gatedconv-speedrun --seeds 2", **agg),
        rec("speedrun_b", seed=3, network="airbench94", epochs=9.9, acc_tta_pct=93.8, acc_pct=93.1, time_s=501.2,
            time_to_target_s=120.6, s_per_step=0.2512, peak_pct=31.3, epoch_s_approx=50.3, host=XEON,
            command="gatedconv-speedrun --paths 3 --first-seed 3 --seeds 1"),
        rec("speedrun_c", seed=0, epochs=7.6, acc_tta_pct=93.33, time_s=500.0, host=EPYC,
            command="gatedconv-speedrun --epochs 7.6"),
        rec("no_whiten", seed=0, baseline="speedrun_a", epochs=12, acc_tta_pct=93.2, host=XEON),
    ]


SPEEDRUN_HEADER = ("| run | network | epochs | seeds | test acc with TTA | without TTA | time per run | time to 83.5% "
                   "| s per step | % of matmul peak | other figures")


@renders("speedrun_xeon")
def test_speedrun_xeon_rows_of_that_host_with_aggregates_first(tmp_path):
    """The Xeon's runs only: an aggregate record's figures over its seeds' (steps 2,000, not 1,999), figures only
    the seeds hold taken from the first seed; the two rows' commands differ, so they get a column."""
    assert render(tmp_path, "speedrun_xeon", {"speedrun": _speedrun_records()}) == f"""\
{SPEEDRUN_HEADER} | command |
| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |
| speedrun_a | gatedconv_fast | 12 | 0, 1 | 94.10 ± 0.12% | 93.50 ± 0.20% | 700 ± 10 s | - | - | - | steps 2,000; \
training 655 s; training 1.250 TFLOP/s | `gatedconv-speedrun --seeds 2` |
| speedrun_b | airbench94 | 9.9 | 3 | 93.80% | 93.10% | 501 s | 121 s | 0.25 | 31.3% | per epoch ~50 s | \
`gatedconv-speedrun --paths 3 --first-seed 3 --seeds 1` |

Host: {XEON}. Date: 2026-01-02. Source: collected."""


@renders("speedrun_epyc")
def test_speedrun_epyc_rows_of_that_host_only(tmp_path):
    """The EPYC's one run, with '-' for every figure it lacks."""
    assert render(tmp_path, "speedrun_epyc", {"speedrun": _speedrun_records()}) == f"""\
{SPEEDRUN_HEADER} |
| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |
| speedrun_c | - | 7.6 | 0 | 93.33% | - | 500 s | - | - | - | - |

Command: `gatedconv-speedrun --epochs 7.6`. Host: {EPYC}. Date: 2026-01-02. Source: collected."""


@renders("speedrun_seeds")
def test_speedrun_seeds_lists_the_seeds_behind_aggregates(tmp_path):
    """Only seeds of runs with an aggregate record (not one-seed runs, aggregates or ablations), with their own
    figures; the per-seed commands read as one."""
    assert render(tmp_path, "speedrun_seeds", {"speedrun": _speedrun_records()}) == f"""\
| run | seed | test acc with TTA | other figures of the seed |
| --- | ---: | ---: | --- |
| speedrun_a | 0 | 94.00% | without TTA 93.40%; time 699 s |
| speedrun_a | 1 | 94.20% | time 701 s |

Command: `gatedconv-speedrun --first-seed S --seeds 1`. Host: {XEON}. Date: 2026-01-02. Source: collected."""


@renders("speedrun_ingredients")
def test_speedrun_ingredients_differences_against_the_same_seed(tmp_path):
    """The recipe's seed 0, the TTA gain over the aggregate (-0.70), each ablation against its baseline's same
    seed, and the plain network against the gated 9.9-epoch run."""
    files = {"speedrun": [
        rec("speedrun_1100", seed=0, acc_tta_pct=94.0, acc_pct=93.5, s_per_step=0.52, peak_pct=12.3),
        rec("speedrun_1100", aggregate=True, n=5, acc_tta_pct={"mean": 94.1, "std": 0.15},
            acc_pct={"mean": 93.4, "std": 0.2}, s_per_step={"mean": 0.52, "std": 0.01},
            peak_pct={"mean": 12.0, "std": 0.5}),
        rec("no_whiten", seed=0, baseline="speedrun_1100", what="no whitening stem", flags="--no-whiten",
            acc_tta_pct=93.2, acc_pct=92.9, s_per_step=0.5, peak_pct=11.0),
        rec("speedrun_plain", seed=0, acc_tta_pct=93.8, acc_pct=93.0, s_per_step=0.41, peak_pct=15.0),
        rec("speedrun2", seed=0, acc_tta_pct=94.1, acc_pct=93.6),
    ]}
    assert render(tmp_path, "speedrun_ingredients", files) == """\
| ingredient | flags | seed 0: test acc with TTA (without) | against the recipe, same seed | s per step | % of matmul peak |
| --- | --- | ---: | ---: | ---: | ---: |
| the recipe: whitening stem, softmax gate, activation after the sum, EMA, label smoothing, TTA | (none) | \
94.00% (93.50%) |  | 0.52 | 12.3 |
| no test-time augmentation | (the same runs, without TTA) | 5 seeds: 93.40 ± 0.20% against 94.10 ± 0.15% | \
**-0.70** (5 seeds) |  |  |
| no whitening stem | `--no-whiten` | 93.20% (92.90%) | -0.80 (-0.60) | 0.50 | 11.0 |
| one 3x3 path per block = airbench94 (9.9 epochs, against the gated 9.9-epoch run) | `--paths 3` | \
93.80% (93.00%) against 94.10% (93.60%) | -0.30 (-0.60) | 0.41 against 0.52 ± 0.01 (the 5 gated 6.7-epoch runs) | \
15.0 against 12.0 ± 0.5 |

Host: test host. Date: 2026-01-02. Source: collected."""


def test_speedrun_ingredients_without_the_aggregate_names_what_is_missing(tmp_path):
    """A recipe recorded without its aggregate record is a one-line ReportError naming it, not a StopIteration."""
    files = {"speedrun": [rec("speedrun_1100", seed=0, acc_tta_pct=94.0, acc_pct=93.5)]}
    with pytest.raises(report.ReportError, match="no aggregate record of speedrun_1100"):
        render(tmp_path, "speedrun_ingredients", files)


@renders("speedrun_frontier")
def test_speedrun_frontier_time_ratio_to_the_reference_and_the_94_line(tmp_path):
    """Time against the named reference's mean time (600 / 400 s = 1.50x), 1.00x for airbench94 itself, '-'
    without a reference; 'yes' from a mean of exactly 94.0% up; dates that differ get a column."""
    gated = dict(network="gatedconv_fast", epochs=12, reference="plain9")
    files = {"speedrun": [
        rec("plain9", seed=0, network="airbench94", epochs=9.9, acc_tta_pct=93.8, time_s=400.0),
        rec("gated12", seed=0, acc_tta_pct=94.0, time_s=590.0, **gated),
        rec("gated12", seed=1, acc_tta_pct=94.2, time_s=610.0, **gated),
        rec("gated7", seed=0, epochs=7.6, acc_tta_pct=94.0, date="2026-01-03"),
        rec("no_whiten", seed=0, baseline="gated12", epochs=12, acc_tta_pct=93.0),
    ]}
    assert render(tmp_path, "speedrun_frontier", files) == """\
| run | network | epochs | test acc with TTA | time per run | time against airbench94 on the same host | mean ≥ 94.0% \
| date |
| --- | --- | ---: | ---: | ---: | ---: | --- | --- |
| plain9 | airbench94 | 9.9 | 93.80% (n = 1) | 400 s | 1.00x | no | 2026-01-02 |
| gated12 | gatedconv_fast | 12 | 94.10 ± 0.14% (n = 2) | 600 ± 14 s | 1.50x (plain9) | yes | 2026-01-02 |
| gated7 | - | 7.6 | 94.00% (n = 1) | - | - | yes | 2026-01-03 |

Host: test host. Source: collected."""


@renders("bench_loop")
def test_bench_loop_ratios_and_phase_notes(tmp_path):
    """trainf / naive images per second (1250 / 500 = 2.50x; 1100 / 400 = 2.75x), the older two-record layout
    and the newer one, and the phases a profiled record holds."""
    files = {"bench_loop": [
        rec("naive", img_per_s=500.0, command="python benchmarks/bench_loop.py"),
        rec("trainf", img_per_s=1250.0, command="python benchmarks/bench_loop.py"),
        rec("loop", naive_img_per_s=400.0, trainf_img_per_s=1100.0, naive_data_ms=10.0, trainf_data_ms=1.3,
            naive_forward_ms=100.0, trainf_forward_ms=80.04, naive_optimizer_ms=5.0, trainf_optimizer_ms=4.0,
            command="python benchmarks/bench_loop.py --profile"),
    ]}
    assert render(tmp_path, "bench_loop", files) == """\
| naive loop, images/s | trainf, images/s | trainf / naive | command |
| ---: | ---: | ---: | --- |
| 500 | 1,250 | **2.50x** | `python benchmarks/bench_loop.py` |
| 400 | 1,100 | **2.75x** | `python benchmarks/bench_loop.py --profile` |

Host: test host. Date: 2026-01-02. Source: collected.

Where a step's time goes (test host, `python benchmarks/bench_loop.py --profile`), ms per step naive / trainf: \
data 10.0 / 1.3, forward 100.0 / 80.0, optimizer + metrics 5.0 / 4.0."""


@renders("bench_block")
def test_bench_block_speeds_and_notes(tmp_path):
    """Images per second of the reference, auto and compiled forms with their speed-ups; a ratio-only record is
    a note under the table."""
    files = {"bench_block": [
        rec("batch 128", ref_img_s=512.4, auto_img_s=900.0, auto_x=1.76, compiled_img_s=1000.6, compiled_x=1.95),
        rec("gemm", what="the gemm form alone", gemm_x=1.3),
    ]}
    assert render(tmp_path, "bench_block", files) == f"""\
| setting | reference img/s | `auto` | `auto` + compiled gated sum |
| --- | ---: | ---: | ---: |
| batch 128 | 512 | 900 (1.76x) | 1,001 (1.95x) |

{CAPTION}

the gemm form alone: 1.30x (`python scripts/x.py`, 2026-01-02)."""


@renders("bench_gemm")
def test_bench_gemm_runs_side_by_side(tmp_path):
    """Per block shape: the reference time, the gemm and dense ratios of run 1 / run 2 (whatever the file order),
    '-' for a run not measured."""
    files = {"bench_gemm": [
        rec("64x16x16", run=2, ref_ms=12.34, gemm_x=1.5, dense_x=0.75, block="stage 2"),
        rec("64x16x16", run=1, gemm_x=1.25, dense_x=0.8, block="stage 2"),
        rec("128x8x8", run=1, gemm_x=2.0, dense_x=1.1),
    ]}
    assert render(tmp_path, "bench_gemm", files) == f"""\
| block shape | reference (run 2) | `gemm` (run 1 / run 2) | `dense` (run 1 / run 2) |
| --- | ---: | ---: | ---: |
| 64x16x16 (stage 2) | 12.3 ms | 1.25x / 1.50x | 0.80x / 0.75x |
| 128x8x8 | - | 2.00x / - | 1.10x / - |

{CAPTION}"""


@renders("bench_fast")
def test_bench_fast_variants_and_profile_notes(tmp_path):
    """Milliseconds and ratio to plain per variant (a ratio alone, '-'), the profile record's note, and the
    extra-time split of a variant against plain."""
    files = {"bench_fast": [
        rec("profile", what="gated against plain", conv_backward_extra_s=1.234, conv_forward_extra_s=0.5,
            elementwise_extra_s_approx=0.33, command="python benchmarks/bench_fast.py --profile"),
        rec("step", plain_ms=100, gated_ms=125.4, gated_x=1.254, compiled_x=1.1, gated_extra_s=0.25,
            gated_extra_conv_fwd_s=0.1, gated_extra_conv_bwd_s=0.12, gated_extra_other_s=0.03,
            command="python benchmarks/bench_fast.py"),
    ]}
    assert render(tmp_path, "bench_fast", files) == """\
| plain (airbench94) | gated, eager sums | gated, compiled sums | whole forward compiled |
| ---: | ---: | ---: | ---: |
| 100 ms | 125 ms (1.25x) | 1.10x | - |

Command: `python benchmarks/bench_fast.py`. Host: test host. Date: 2026-01-02. Source: collected.

Profile (gated against plain; `python benchmarks/bench_fast.py --profile`): convolution backward +1.23 s, \
convolution forward +0.50 s, elementwise multiply / add / sum ~0.3 s.

Profile of gated, eager sums against plain (test host, self CPU time per step, `python benchmarks/bench_fast.py`): \
all +0.25 s, convolution forward +0.10 s, convolution backward +0.12 s, the rest (gated sums, gate, copies) +0.03 s."""


def _malloc_records() -> List[dict]:
    pair = [(1, 300, 0.5, 120000, 200, 0.05, 1500), (2, 330, 0.6, 130000, 300, 0.07, 1600),
            (3, 250, 0.4, 110000, 100, 0.04, 1400)]
    keys = ("pair", "default_ms", "default_sys_s", "default_faults", "keep_ms", "keep_sys_s", "keep_faults")
    return ([rec("pair", **dict(zip(keys, p))) for p in pair]
            + [rec("whole run", default_ms=5000, keep_ms=4000, keep_x=1.25),
               rec("step_gatedconv", model="gatedconv", step_s=0.456),
               rec("step_cnn_base", model="cnn_base", step_s=1.2)])


@renders("bench_malloc")
def test_bench_malloc_pairs_and_their_median(tmp_path):
    """Default / keep per pair (1.50x, 1.10x, 2.50x), their median 1.50x (the mean would be 1.70x), then other
    measurements; step timings are not rows here."""
    assert render(tmp_path, "bench_malloc", {"bench_malloc": _malloc_records()}) == f"""\
| measurement | default malloc | kernel time | page faults | keep_freed_memory | kernel time | page faults | \
speed-up per step |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| pair 1 | 300 ms | 0.50 s | 120,000 | 200 ms | 0.05 s | 1,500 | 1.50x |
| pair 2 | 330 ms | 0.60 s | 130,000 | 300 ms | 0.07 s | 1,600 | 1.10x |
| pair 3 | 250 ms | 0.40 s | 110,000 | 100 ms | 0.04 s | 1,400 | 2.50x |
| **median of the pairs** |  |  |  |  |  |  | **1.50x** |
| whole run | 5,000 ms | - | - | 4,000 ms | - | - | 1.25x |

{CAPTION}"""


@renders("bench_step")
def test_bench_step_lists_the_step_records(tmp_path):
    """The records named step_*: model and step time."""
    assert render(tmp_path, "bench_step", {"bench_malloc": _malloc_records()}) == f"""\
| model | bf16 training step, batch 128 |
| --- | ---: |
| gatedconv | 0.46 s |
| cnn_base | 1.20 s |

{CAPTION}"""


@renders("speedrun_muon")
def test_speedrun_muon_closing_lines_time_ratios_and_welch(tmp_path):
    """Per group: the closing line (mean +- sample std, mean time), time over the reference's mean (1215 / 810 =
    1.50x), and Welch's test against the reference (df = 2: -0.40, 95% CI -1.01 to +0.21, p = 0.106); one seed
    or the reference itself get no test."""
    cmd = "gatedconv-speedrun --recipe airbench94_muon --first-seed {} --seeds 1 --out runs/muon/{}"
    files = {"speedrun_muon": [
        rec("muon_gated", seed=s, acc_tta_pct=a, acc_pct=a - 0.5, time_s=t, params=1200, command=cmd.format(s, "gated"))
        for s, a, t in ((0, 93.6, 1200.0), (1, 93.8, 1230.0))
    ] + [
        rec("muon_plain", seed=s, acc_tta_pct=a, acc_pct=a - 0.5, time_s=t, params=1000, command=cmd.format(s, "plain"))
        for s, a, t in ((0, 94.0, 800.0), (1, 94.2, 820.0))
    ] + [rec("muon_single", seed=0, acc_tta_pct=93.0, time_s=900.0, params=1200, command=cmd.format(0, "single"))]}
    assert render(tmp_path, "speedrun_muon", files) == f"""\
| run | seeds | parameters | closing line (accuracy with TTA) | without TTA | time (x `muon_plain`) | \
accuracy - reference (95% CI), Welch p | command |
| --- | ---: | ---: | --- | ---: | ---: | --- | --- |
| `muon_gated` | 0, 1 | 1,200 | mean 93.70% +- 0.14 over 2 seeds, 1215.0 s per run | 93.20 ± 0.14% | 1.50x | \
-0.40 (-1.01 to +0.21), p = 0.106 | `{cmd.format("S", "gated")}` |
| `muon_plain` | 0, 1 | 1,000 | mean 94.10% +- 0.14 over 2 seeds, 810.0 s per run | 93.60 ± 0.14% | 1.00x | - | \
`{cmd.format("S", "plain")}` |
| `muon_single` | 0 | 1,200 | 93.00% (1 seed), 900.0 s per run | - | 1.11x | - | \
`{cmd.format(0, "single")}` |

Host: test host. Date: 2026-01-02. Source: collected."""


STUDY = "gatedconv-study --epochs 30 --seeds 0,1"


def _study_run(variant: str, seed: int, acc: float, **fields) -> dict:
    run = dict(kind="train", variant=variant, seed=seed, epochs=30, params=1247922, train_flops=2.5e15,
               s_per_epoch=50.0, acc_pct=acc, command=STUDY)
    return rec(variant, **{**run, **fields})


@renders("study")
def test_study_variants_in_study_order_with_costs_flops_and_accuracy(tmp_path):
    """Variants in the study's order (not the file's), the 30-epoch runs only; the step cost is the mean over
    the sittings (0.9 and 0.96: 0.93), '-' where none was timed; mean ± sample std of time and accuracy."""
    sitting = dict(kind="step_costs", rounds=5, steps=10, command="gatedconv-study --step-costs")
    files = {"gating_study": [
        _study_run("constant", 0, 84.0, train_flops=2.0e15, s_per_epoch=45.0),
        _study_run("constant", 1, 84.4, train_flops=2.1e15, s_per_epoch=47.0),
        _study_run("relu", 0, 85.0),
        _study_run("relu", 1, 85.6, s_per_epoch=52.0),
        _study_run("relu", 2, 10.0, epochs=5),
        _study_run("softmax", 0, 84.9, params=1247925, s_per_epoch=55.0),
        rec("step costs", ratio={"relu": 1.0, "constant": 0.9}, ms_per_step={"relu": 100.0, "constant": 90.0},
            **sitting),
        rec("step costs", ratio={"relu": 1.0, "constant": 0.96}, ms_per_step={"relu": 100.0, "constant": 96.0},
            **sitting),
    ]}
    assert render(tmp_path, "study", files) == f"""\
| variant | what | seeds | parameters (trained / deployed) | training PFLOPs | step cost (x relu) | s per epoch | \
inference MFLOPs | deployed latency b1 (x plain) | b128 (x plain) | test accuracy (mean ± std) |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| `relu` | ReLU gate (the package default, the original gate) | 0, 1 | 1,247,922 / - | 2.500 | 1.00 | 51.0 ± 1.4 | \
- | - | - | 85.30 ± 0.42% |
| `softmax` | softmax gate over the 3 paths | 0 | 1,247,925 / - | 2.500 | - | 55.0 | - | - | - | 84.90% |
| `constant` | constant gate: every path 1/3, no gating (same paths) | 0, 1 | 1,247,922 / - | 2.050 | 0.93 | 46.0 ± 1.4 | \
- | - | - | 84.20 ± 0.28% |

Command: `{STUDY}`. Host: test host. Date: 2026-01-02. Source: collected."""


INFER = dict(kind="bench", command="python benchmarks/bench_infer.py --output runs/bench/infer")


@renders("bench_infer")
def test_study_and_bench_infer_read_the_newest_deployed_costs(tmp_path):
    """The study table takes its deployed axes from the newest inference record (not the first); the inference
    table lists the variants in the study's order with each setting's time and ratio, and the profile split."""
    old = rec("bench_infer", plain_params=1, plain_mflops=1.0, plain_fp32_b1_x=1.0, plain_fp32_b128_x=1.0, **INFER)
    new = rec("bench_infer", date="2026-01-03", **INFER,
              plain_params=461962, plain_mflops=10.46, plain_fp32_b1_ms=0.3, plain_fp32_b1_x=1.0,
              plain_fp32_b128_ms=10.0, plain_fp32_b128_img_s=12800, plain_fp32_b128_x=1.0,
              dyconv_params=1645578, dyconv_mflops=13.61, dyconv_fp32_b1_ms=0.54, dyconv_fp32_b1_x=1.8,
              dyconv_fp32_b128_ms=17.5, dyconv_fp32_b128_img_s=7314, dyconv_fp32_b128_x=1.77,
              plain_b1_conv_ms=0.15, plain_b1_matmul_ms=0.01, plain_b1_other_ms=0.08,
              dyconv_b1_conv_ms=0.2, dyconv_b1_matmul_ms=0.15, dyconv_b1_other_ms=0.2)
    runs = [_study_run("dyconv", 0, 86.0, params=1645578), _study_run("plain", 0, 84.0, params=462210)]
    files = {"gating_study": runs, "bench_infer": [old, new]}
    assert render(tmp_path / "a", "study", files) == f"""\
| variant | what | seeds | parameters (trained / deployed) | training PFLOPs | step cost (x relu) | s per epoch | \
inference MFLOPs | deployed latency b1 (x plain) | b128 (x plain) | test accuracy (mean ± std) |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| `plain` | one 3x3 path per block (a plain CNN) at the same widths | 0 | 462,210 / 461,962 | 2.500 | - | 50.0 | \
10.5 | 1.00 | 1.00 | 84.00% |
| `dyconv` | Dynamic Convolution: 4 kernels mixed per sample, softmax attention with a hidden layer (C/4), \
temperature annealed 30 -> 1 over the first tenth of training | 0 | 1,645,578 / 1,645,578 | 2.500 | - | 50.0 | 13.6 | \
1.80 | 1.77 | 86.00% |

Command: `{STUDY}`. Host: test host. Date: 2026-01-02. Source: collected.

Deployed costs (`gatedconv.reparameterize`, fp32, eval, channels-last) from \
`python benchmarks/bench_infer.py --output runs/bench/infer` on test host, 2026-01-03."""
    assert render(tmp_path / "b", "bench_infer", files) == """\
| deployed variant | parameters | MFLOPs / image | fp32 latency, batch 1 (x plain) | \
fp32 images/s, batch 128 (time x plain) |
| --- | ---: | ---: | ---: | ---: |
| `plain` | 461,962 | 10.5 | 0.300 ms (1.00x) | 12,800 (1.00x) |
| `dyconv` | 1,645,578 | 13.6 | 0.540 ms (1.80x) | 7,314 (1.77x) |

Command: `python benchmarks/bench_infer.py --output runs/bench/infer`. Host: test host. Date: 2026-01-03. \
Source: collected.

Where a deployed forward pass spends its time (fp32, profiler self time per forward: convolutions / matrix \
multiplies, i.e. the kernel mixing and the head / everything else): batch 1: plain conv 0.150 / matmul 0.010 / \
other 0.080 ms, dyconv 0.200 / 0.150 / 0.200 ms."""


def test_bench_infer_shows_a_figure_the_record_lacks_as_a_dash(tmp_path):
    """A partial record (no MFLOPs, no batch-128 figures for dyconv) renders with '-' in their cells."""
    partial = rec("bench_infer", **INFER, plain_params=10, plain_mflops=1.0, plain_fp32_b1_ms=0.3, plain_fp32_b1_x=1.0,
                  plain_fp32_b128_img_s=100, plain_fp32_b128_x=1.0, dyconv_params=20, dyconv_fp32_b1_ms=0.6,
                  dyconv_fp32_b1_x=2.0)
    assert render(tmp_path, "bench_infer", {"bench_infer": [partial]}).splitlines()[2:4] == [
        "| `plain` | 10 | 1.0 | 0.300 ms (1.00x) | 100 (1.00x) |",
        "| `dyconv` | 20 | - | 0.600 ms (2.00x) | - (-x) |"]


@renders("study_deployed")
def test_study_deployed_comparisons_with_their_questions(tmp_path):
    """The deployed-cost pairs in their fixed order, variant minus control (SciPy: dyconv - plain +2.00, 95% CI
    +1.77 to +2.23, p = 1.6e-5, df = 4; dyconv - fixed_mix +1.85, +1.36 to +2.34, p = 0.0016, df = 2.74;
    fixed_mix - plain +0.15, -0.34 to +0.64, p = 0.382); pairs without two runs a side (condconv) left out."""
    accs = {"dyconv": (86.0, 86.1, 86.2), "plain": (84.0, 84.1, 84.2), "fixed_mix": (84.0, 84.3, 84.45)}
    files = {"gating_study": [_study_run(v, s, a) for v, xs in accs.items() for s, a in enumerate(xs)]
             + [_study_run("condconv", 0, 90.0)]}
    assert render(tmp_path, "study_deployed", files) == """\
| question | comparison | difference (points) | 95% interval | Welch p | runs | verdict |
| --- | --- | ---: | ---: | ---: | ---: | --- |
| does it pay over the plain network of the same widths? | `dyconv` - `plain` | +2.00 | +1.77 to +2.23 | < 0.001 | \
3 / 3 | helps (higher accuracy) |
| is it the input dependence? | `dyconv` - `fixed_mix` | +1.85 | +1.36 to +2.34 | 0.002 | 3 / 3 | \
helps (higher accuracy) |
| is it the over-parameterisation? | `fixed_mix` - `plain` | +0.15 | -0.34 to +0.64 | 0.382 | 3 / 3 | \
no measurable difference at this budget |"""


@renders("study_costs")
def test_study_costs_one_row_per_sitting(tmp_path):
    """Each sitting's milliseconds and ratio per variant ('-' where it did not time one), rounds x steps."""
    sitting = dict(kind="step_costs", command="gatedconv-study --step-costs")
    files = {"gating_study": [
        rec("step costs", ratio={"relu": 1.0, "constant": 0.9}, ms_per_step={"relu": 120.0, "constant": 108.04},
            rounds=5, steps=10, date="2026-01-01", **sitting),
        rec("step costs", ratio={"relu": 1.0, "plain_matched": 1.02},
            ms_per_step={"relu": 118.2, "plain_matched": 120.6}, rounds=3, steps=20, **sitting),
    ]}
    assert render(tmp_path, "study_costs", files) == """\
| `relu` | `constant` | `plain_matched` | rounds x steps | date |
| ---: | ---: | ---: | ---: | --- |
| 120.0 ms (1.000x) | 108.0 ms (0.900x) | - | 5 x 10 | 2026-01-01 |
| 118.2 ms (1.000x) | - | 120.6 ms (1.020x) | 3 x 20 | 2026-01-02 |

Command: `gatedconv-study --step-costs`. Host: test host. Source: collected."""


@renders("study_comparisons")
def test_study_comparisons_welch_against_the_relu_gate(tmp_path):
    """Each variant against relu (SciPy: softmax -5.10, 95% CI -7.50 to -2.70, p = 0.019, df = 1.30; constant
    -1.10, -2.89 to +0.69, p = 0.110), with the verdict at the 5% level."""
    files = {"gating_study": [_study_run("relu", s, a) for s, a in ((0, 85.0), (1, 85.6))]
             + [_study_run("softmax", s, a) for s, a in ((0, 80.0), (1, 80.2), (2, 80.4))]
             + [_study_run("constant", s, a) for s, a in ((0, 84.0), (1, 84.4))]}
    assert render(tmp_path, "study_comparisons", files) == """\
| comparison | difference (points) | 95% interval | Welch p | runs | verdict |
| --- | ---: | ---: | ---: | ---: | --- |
| `softmax` - `relu` | -5.10 | -7.50 to -2.70 | 0.019 | 3 / 2 | hurts (lower accuracy) |
| `constant` - `relu` | -1.10 | -2.89 to +0.69 | 0.110 | 2 / 2 | no measurable difference at this budget |"""


@renders("study_verdict")
def test_study_verdict_reads_both_comparisons_as_gating_minus_its_control(tmp_path):
    """relu - constant: +2.00 (SciPy: 95% CI +1.77 to +2.23, p = 1.6e-5, df = 4): gating helps; relu -
    plain_matched, stored the other way round: +0.07 (-0.47 to +0.61, p = 0.70): no measurable difference."""
    accs = {"relu": (85.0, 85.1, 85.2), "constant": (83.0, 83.1, 83.2), "plain_matched": (84.8, 85.0, 85.3)}
    files = {"gating_study": [_study_run(v, s, a) for v, xs in accs.items() for s, a in enumerate(xs)]}
    assert render(tmp_path, "study_verdict", files) == (
        "**Input gating helps** at 30 epochs of the original recipe (at least 3 seeds per variant): the ReLU gate "
        "against no gating (constant gate): +2.00 points (95% CI +1.77 to +2.23, p < 0.001; gating helps); the "
        "ReLU-gated network against a plain one of equal cost: +0.07 points (95% CI -0.47 to +0.61, p = 0.702; no "
        "measurable difference). At deployed cost (K = 4 kernels mixed per sample, then one convolution) "
        "there is no answer yet: no run of `dyconv`, `condconv`, `fixed_mix`, `plain_deployed` recorded yet, and a "
        "comparison needs two runs on each side. Details: [docs/research.md](docs/research.md#does-gating-pay).")


@renders("study_calibration")
def test_study_calibration_reads_the_last_calibration(tmp_path):
    """The latest calibration record, as one sentence."""
    cal = dict(kind="calibration", rounds=5, batch_size=64)
    files = {"gating_study": [
        rec("calibration", widths=[20, 40, 80, 160, 320], multiplier=1.25, ratio=0.95, command="old", **cal),
        rec("calibration", widths=[24, 48, 96, 192, 384], multiplier=1.5, ratio=1.013,
            command="gatedconv-study --calibrate", date="2026-01-05", **{**cal, "rounds": 7, "batch_size": 128}),
    ]}
    assert render(tmp_path, "study_calibration", files) == (
        "Cost-matched plain widths (24, 48, 96, 192, 384) (x1.50 the default widths): one training step of it took "
        "1.01x the ReLU-gated network's step, timed side by side in one process (interleaved rounds, median of 7 "
        "per-round ratios, batch 128, bf16 autocast where native, channels_last, compiled gated sum), on test host, "
        "2026-01-05: `gatedconv-study --calibrate`.")


@renders("deploy_check")
def test_deploy_check_pairs_each_runs_trained_and_deployed_evaluation(tmp_path):
    """One row per run evaluated both ways (the newest of each), the difference in correctly classified images;
    a run evaluated one way only is left out."""
    ev = dict(kind="evaluate", test_images=10000, command="gatedconv-evaluate")
    files = {"deploy_check": [
        rec("evaluate", run="runs/a", deployed=False, correct=8600, acc_pct=86.0, **ev),
        rec("evaluate", run="runs/a", deployed=True, correct=8599, acc_pct=85.99, **ev),
        rec("evaluate", run="runs/b", deployed=True, correct=8000, acc_pct=80.0, **ev),
    ]}
    assert render(tmp_path, "deploy_check", files) == """\
| run | trained (fp32) | deployed (fp32) | images deployed - trained |
| --- | ---: | ---: | ---: |
| `runs/a` | 86.00% (8,600/10,000) | 85.99% (8,599/10,000) | -1 |

Command: `gatedconv-evaluate`. Host: test host. Date: 2026-01-02. Source: collected."""


@renders("convert_example")
def test_convert_example_one_row_per_network_over_its_seeds(tmp_path):
    """Rows in file order by record name; accuracy mean ± sample std over the seeds (71.0 and 72.0: 71.50 ± 0.71),
    mean img/s and time; each row names its own command, the seed written as S for the two-seed row."""
    files = {"convert_example": [
        rec("tv_resnet18", kind="train", seed=0, epochs=1, params=11173962, acc_pct=71.0, img_per_s=95.0,
            train_s=1000.0, command="gatedconv-train -m tv_resnet18 --seed 0 --out runs/r_seed0"),
        rec("tv_resnet18 converted", kind="train", seed=0, epochs=1, params=44144010, acc_pct=70.5, img_per_s=25.04,
            train_s=3993.0, command="gatedconv-train -m tv_resnet18 --model-kwargs x --seed 0"),
        rec("tv_resnet18", kind="train", seed=1, epochs=1, params=11173962, acc_pct=72.0, img_per_s=97.0,
            train_s=1100.0, command="gatedconv-train -m tv_resnet18 --seed 1 --out runs/r_seed1"),
    ]}
    assert render(tmp_path, "convert_example", files) == """\
| network | seeds | epochs | params | test acc (fp32, weight average; mean ± std) | training img/s (mean) | \
training time (mean) | command |
| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |
| tv_resnet18 | 0, 1 | 1 | 11,173,962 | 71.50 ± 0.71% | 96 | 17.5 min | \
`gatedconv-train -m tv_resnet18 --seed S --out runs/r_seedS` |
| tv_resnet18 converted | 0 | 1 | 44,144,010 | 70.50% | 25 | 66.5 min | \
`gatedconv-train -m tv_resnet18 --model-kwargs x --seed 0` |

Host: test host. Date: 2026-01-02. Source: collected."""


def test_study_verdict_answers_at_deployed_cost_with_the_runs_behind_it(tmp_path):
    """With kernel-mixing runs on both sides, the verdict's second part reads each deployed comparison, variant
    minus control, with its run counts (SciPy: dyconv - plain +2.00, 95% CI +1.77 to +2.23, p = 1.6e-5)."""
    accs = {"relu": (85.0, 85.1, 85.2), "constant": (83.0, 83.1, 83.2), "dyconv": (86.0, 86.1, 86.2),
            "plain": (84.0, 84.1, 84.2)}
    files = {"gating_study": [_study_run(v, s, a) for v, xs in accs.items() for s, a in enumerate(xs)]}
    text = render(tmp_path, "study_verdict", files)
    assert text.endswith(
        "At deployed cost (K = 4 kernels mixed per sample, then one convolution): does it pay over the plain "
        "network of the same widths? `dyconv` - `plain` +2.00 points (95% CI +1.77 to +2.23, p < 0.001, 3 / 3 "
        "runs; it helps). Details: [docs/research.md](docs/research.md#does-gating-pay).")


def test_study_verdict_leads_with_equal_deployed_latency(tmp_path):
    """With plain_deployed runs, the deployed part opens with that comparison in bold (SciPy: dyconv -
    plain_deployed -2.00, 95% CI -2.23 to -1.77, p = 1.6e-5: it loses); the other questions follow."""
    accs = {"relu": (85.0, 85.1, 85.2), "constant": (83.0, 83.1, 83.2), "dyconv": (86.0, 86.1, 86.2),
            "plain": (84.0, 84.1, 84.2), "plain_deployed": (88.0, 88.1, 88.2)}
    files = {"gating_study": [_study_run(v, s, a) for v, xs in accs.items() for s, a in enumerate(xs)]}
    assert render(tmp_path, "study_verdict", files).endswith(
        "**At equal deployed latency (batch 1), Dynamic Convolution loses to a plain network**: `dyconv` - "
        "`plain_deployed` -2.00 points (95% CI -2.23 to -1.77, p < 0.001, 3 / 3 runs; it hurts). The other questions "
        "at deployed cost (K = 4 kernels mixed per sample, then one convolution): does it pay over the plain network "
        "of the same widths? `dyconv` - `plain` +2.00 points (95% CI +1.77 to +2.23, p < 0.001, 3 / 3 runs; it "
        "helps). Details: [docs/research.md](docs/research.md#does-gating-pay).")


def test_study_calibration_reads_the_latency_calibration_too(tmp_path):
    """The latency match of plain_deployed gets its own sentence, from its own record kind."""
    files = {"gating_study": [rec("plain_deployed calibration", kind="latency_calibration", widths=[32, 64, 128, 256, 512],
                                  multiplier=2.0, ratio=0.987, rounds=7, batch_size=1, command="gatedconv-study x")]}
    assert render(tmp_path, "study_calibration", files) == (
        "Latency-matched plain widths (`plain_deployed`) (32, 64, 128, 256, 512) (x2.00): its deployed forward pass "
        "took 0.99x the deployed dyconv network's, timed side by side in one process (interleaved rounds, median of "
        "7 per-round ratios, batch 1, fp32, channels_last), on test host, 2026-01-02: `gatedconv-study x`.")


def test_tables_without_their_records_say_what_is_missing(tmp_path):
    """The study and Muon tables render before their first records, saying what would fill them."""
    files = {"gating_study": [_study_run("relu", 0, 85.0)], "speedrun_muon": []}
    expected = {
        "study_verdict": "No 30-epoch comparison yet: 1 run(s) of 1 variant(s) recorded, and a comparison needs two "
                         "runs on each side; see [docs/research.md](docs/research.md#does-gating-pay).",
        "study_comparisons": "No comparison yet: each side needs at least two recorded runs.",
        "study_calibration": "Not calibrated yet.",
        "study_costs": "No step costs recorded yet: `gatedconv-study --step-costs` measures them.",
        "speedrun_muon": "No runs recorded yet in `results/speedrun_muon.json`.",
        "study_deployed": "No comparison at deployed cost yet: each side needs at least two recorded runs "
                          "(`gatedconv-study --variants dyconv,condconv,fixed_mix,plain_deployed,plain` ...).",
        "bench_infer": "No inference benchmark recorded yet: `python benchmarks/bench_infer.py --output DIR`.",
    }
    for i, (table, text) in enumerate(expected.items()):
        assert render(tmp_path / str(i), table, files) == text, table
    empty = {"gating_study": [_study_run("relu", 0, 85.0, epochs=5)]}
    assert render(tmp_path / "none", "study", empty) == (
        "No study runs recorded yet: `gatedconv-study --epochs 30 --seeds 0,1,2 --data-dir ../shared/cifar10 --out "
        "runs/study` records them in `results/gating_study.json`.")
