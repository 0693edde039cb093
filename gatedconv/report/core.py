"""The report's shared pieces: the results files (``load_results``, ``Results``, ``ReportError`` and the record
checks), the statistics of a group of records (``Stat``, ``stat``, ``value_stat``), the Markdown they are printed
in (``num``, ``fmt_*``, ``md_table``, ``code``, ``commands``, ``provenance_table``), the figure setup every topic's
figures use (``_new_figure``, ``_save``) and ``collect``, which copies run summaries into a results file.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence

from ..summary import SUMMARY_NAME, dump_results


RESULTS_DIR = "results"
FIGURES_DIR = "figures"
REQUIRED_FIELDS = ("name", "command", "host", "date", "carried_over")


class ReportError(ValueError):
    """Bad results data, a bad marker or a bad argument: the message is one line naming the file."""


# ------------------------------------------------------------------------------------------------------------
# Results data
# ------------------------------------------------------------------------------------------------------------

def _check_record(rec, where: str) -> None:
    if not isinstance(rec, dict):
        raise ReportError(f"{where}: a record must be a JSON object")
    missing = [k for k in REQUIRED_FIELDS if k not in rec]
    if missing:
        raise ReportError(f"{where}: missing field(s) {', '.join(missing)}")
    if not isinstance(rec["carried_over"], bool):
        raise ReportError(f"{where}: carried_over must be true or false")


def _read_results_file(path: Path, label: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{label}: cannot read it ({e})") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{label}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ReportError(f"{label}: expected an object with a 'records' list")
    for i, rec in enumerate(data["records"]):
        _check_record(rec, f"{label}: record {i + 1}")
    return data


def load_results(root) -> Dict[str, List[dict]]:
    """``results/NAME.json`` -> ``{NAME: records}`` for every results file under ``root``."""
    folder = Path(root) / RESULTS_DIR
    if not folder.is_dir():
        raise ReportError(f"{folder}: no results directory")
    return {f.stem: _read_results_file(f, f"{RESULTS_DIR}/{f.name}")["records"] for f in sorted(folder.glob("*.json"))}


class Results:
    """The loaded results with lookups that fail with the file and name in the message."""

    def __init__(self, data: Dict[str, List[dict]]) -> None:
        self.data = data

    def file(self, name: str) -> List[dict]:
        if name not in self.data:
            raise ReportError(f"{RESULTS_DIR}/{name}.json is missing")
        return self.data[name]

    def group(self, file: str, name: str) -> List[dict]:
        recs = [r for r in self.file(file) if r["name"] == name]
        if not recs:
            raise ReportError(f"{RESULTS_DIR}/{file}.json has no record named {name!r}")
        return recs

    def names(self, file: str, where: Callable[[dict], bool] = lambda r: True) -> List[str]:
        seen: List[str] = []
        for r in self.file(file):
            if where(r) and r["name"] not in seen:
                seen.append(r["name"])
        return seen


# ------------------------------------------------------------------------------------------------------------
# Statistics and number formatting
# ------------------------------------------------------------------------------------------------------------

class Stat(NamedTuple):
    mean: Optional[float]
    std: Optional[float]
    n: int
    lo: Optional[float] = None
    hi: Optional[float] = None


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _of_values(values: Sequence[float]) -> Stat:
    return Stat(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


def value_stat(value, n: int = 1) -> Optional[Stat]:
    """A stored metric value as a Stat: a number, ``{"mean", "std"}``, ``{"values"}``, ``{"min", "max"}`` or a list."""
    if _is_num(value):
        return Stat(float(value), None, n)
    if isinstance(value, list) and value and all(_is_num(v) for v in value):
        return _of_values(value)
    if isinstance(value, dict):
        if "values" in value:
            return _of_values(value["values"])
        if "mean" in value:
            return Stat(value["mean"], value.get("std"), n)
        if "min" in value and "max" in value:
            return Stat(None, None, n, value["min"], value["max"])
    return None


def stat(records: Iterable[dict], key: str) -> Optional[Stat]:
    """One metric over a group of records: an aggregate record's figure where one holds the metric, else the
    mean and sample standard deviation of the per-run records' values."""
    records = list(records)
    for r in records:
        if r.get("aggregate") and key in r:
            return value_stat(r[key], r.get("n", 1))
    values = [r[key] for r in records if not r.get("aggregate") and _is_num(r.get(key))]
    return _of_values(values) if values else None


def num(x: float, decimals: int = 2) -> str:
    return f"{x:,.{decimals}f}"


def _unit(unit: str) -> str:
    return unit if unit in ("", "x") or unit.startswith("%") else f" {unit}"


def _auto_decimals(x) -> int:
    """The decimals a stored number was given with (at most 3): 6.7 -> 1, 1.384 -> 3, 12 -> 0."""
    if isinstance(x, int):
        return 0
    text = repr(float(x))
    if "e" in text or "." not in text:
        return 3
    return min(len(text.split(".")[1].rstrip("0")), 3)


def fmt_stat(st: Optional[Stat], decimals: int = 2, unit: str = "", show_n: bool = False) -> str:
    """``85.36 ± 0.17%``; a range as ``1.2-3.2``; ``-`` for no value; ``(n = 3)`` appended with show_n."""
    if st is None:
        return "-"
    if st.mean is None:
        text = f"{num(st.lo, decimals)}-{num(st.hi, decimals)}{_unit(unit)}"
    elif st.std is None:
        text = f"{num(st.mean, decimals)}{_unit(unit)}"
    else:
        text = f"{num(st.mean, decimals)} ± {num(st.std, decimals)}{_unit(unit)}"
    return f"{text} (n = {st.n})" if show_n else text


def fmt_value(value, decimals: Optional[int] = None, unit: str = "") -> str:
    """A stored value as printed in tables: numbers, lists (``a / b / c``), ranges and mean/std objects."""
    if _is_num(value):
        d = decimals if decimals is not None else _auto_decimals(value)
        return f"{num(value, d)}{_unit(unit)}"
    if isinstance(value, list):
        return " / ".join(fmt_value(v, decimals) for v in value) + _unit(unit)
    if isinstance(value, dict) and "min" in value and "max" in value:  # a range keeps its stored precision
        d = max(_auto_decimals(value["min"]), _auto_decimals(value["max"]))
        return f"{num(value['min'], d)}-{num(value['max'], d)}{_unit(unit)}"
    st = value_stat(value)
    return fmt_stat(st, 2 if decimals is None else decimals, unit)


def fmt_minutes(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def fmt_seconds(st: Optional[Stat]) -> str:
    return fmt_stat(st, 0, "s")


# ------------------------------------------------------------------------------------------------------------
# Markdown pieces
# ------------------------------------------------------------------------------------------------------------

def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence], align: str = "") -> str:
    """A Markdown table; ``align`` holds one of ``l``/``r`` per column (default left)."""
    align = align.ljust(len(header), "l")
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def code(text: Optional[str]) -> str:
    return f"`{text}`" if text else "-"


def generic_command(rec: dict) -> Optional[str]:
    """The record's command with its own seed written as ``S`` (``--seed 0 --out runs/x_seed0`` -> ``S``;
    also ``--first-seed 0`` of a one-seed speedrun)."""
    cmd, seed = rec.get("command"), rec.get("seed")
    if not cmd or seed is None or rec.get("aggregate"):
        return cmd
    cmd = re.sub(rf"(--(?:first-)?seed[ =])({seed})(?!\S)", r"\1S", cmd)
    return re.sub(rf"(seed)({seed})\b", r"\1S", cmd)


def _unique(values: Iterable[Optional[str]]) -> List[str]:
    out: List[str] = []
    for v in values:
        if v and v not in out:
            out.append(v)
    return out


def commands(records: Sequence[dict]) -> List[str]:
    """The command(s) that reproduce a group of records: an aggregate record's; else the distinct commands, with
    the seed written as ``S`` where that makes the per-seed commands of a sweep one."""
    aggregates = _unique(r.get("command") for r in records if r.get("aggregate"))
    if aggregates:
        return aggregates[:1]
    raw = _unique(r.get("command") for r in records)
    generic = _unique(generic_command(r) for r in records)
    return generic if len(generic) < len(raw) else raw


def _distinct(records: Sequence[dict], key: str) -> List[str]:
    out: List[str] = []
    for r in records:
        v = r.get(key)
        v = "-" if v is None else str(v)
        if v not in out:
            out.append(v)
    return out


def _source(records: Sequence[dict]) -> str:
    flags = {bool(r["carried_over"]) for r in records}
    return "carried over" if flags == {True} else "collected" if flags == {False} else "carried over + collected"


def provenance_table(header: List[str], rows: List[tuple], align: str = "", command: bool = True) -> str:
    """A table of ``(records, cells)`` rows, followed by a provenance line: command, host, date and source go in
    that line where every row shares them, and into per-row columns where they differ."""
    all_recs = [r for recs, _ in rows for r in recs]
    row_cmds = [commands(recs) for recs, _ in rows]
    distinct_cmds = set(_unique(c for cs in row_cmds for c in cs))
    if len(distinct_cmds) > 1 and not any(r.get("aggregate") for r in all_recs):
        generic = set(_unique(generic_command(r) for r in all_recs))
        if len(generic) == 1:  # the rows of one sweep over seeds
            distinct_cmds = generic
    extra_header, extra_cells, caption = [], [[] for _ in rows], []
    if command:
        if len(distinct_cmds) == 1:
            caption.append(f"Command: {code(next(iter(distinct_cmds)))}.")
        elif distinct_cmds:
            extra_header.append("command")
            for cells, cs in zip(extra_cells, row_cmds):
                cells.append("; ".join(code(c) for c in cs) or "-")
    for key, label in (("host", "Host"), ("date", "Date")):
        values = _distinct(all_recs, key)
        if len(values) == 1:
            caption.append(f"{label}: {values[0]}.")
        else:
            extra_header.append(key)
            for cells, (recs, _) in zip(extra_cells, rows):
                cells.append(", ".join(_distinct(recs, key)))
    sources = {_source(recs) for recs, _ in rows}
    if len(sources) == 1:
        src = next(iter(sources))
        caption.append("Carried over from the documentation of the original runs (their run directories were not "
                       "kept)." if src == "carried over" else f"Source: {src}.")
    else:
        extra_header.append("source")
        for cells, (recs, _) in zip(extra_cells, rows):
            cells.append(_source(recs))
    table = md_table(list(header) + extra_header, [list(c) + e for (_, c), e in zip(rows, extra_cells)],
                     align + "l" * len(extra_header))
    return f"{table}\n\n{' '.join(caption)}" if caption else table


def _seeds(records: Sequence[dict]) -> str:
    for r in records:
        if r.get("aggregate"):
            return ", ".join(str(s) for s in r.get("seeds", [])) or f"{r.get('n', '?')} runs"
    return ", ".join(str(r["seed"]) for r in records if r.get("seed") is not None) or "-"


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------------------

def _new_figure(width: float = 7.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata={"Software": None})
    return path


# ------------------------------------------------------------------------------------------------------------
# Collecting run summaries
# ------------------------------------------------------------------------------------------------------------

def _summaries(run_dir: Path) -> List[Path]:
    if (run_dir / SUMMARY_NAME).is_file():
        return [run_dir / SUMMARY_NAME]
    found = sorted(run_dir.glob(f"*/{SUMMARY_NAME}"))  # e.g. a speedrun --out folder with its seed*/ runs
    if not found:
        raise ReportError(f"{run_dir}: no {SUMMARY_NAME} in it or in its subfolders (not a finished run?)")
    return found


def collect(run_dirs: Sequence, into, name: Optional[str] = None, about: Optional[str] = None) -> int:
    """Append the ``summary.json`` records of ``run_dirs`` to the results file ``into`` (created if missing);
    ``name`` overrides the records' name (the row they belong to). Records already there are not added twice.
    Returns how many were added."""
    into = Path(into)
    if into.suffix != ".json":
        raise ReportError(f"{into}: a results file must end in .json")
    records = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ReportError(f"{run_dir}: not a directory")
        for path in _summaries(run_dir):
            try:
                rec = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ReportError(f"{path}: not valid JSON ({e})") from None
            _check_record(rec, str(path))
            if name:
                rec["name"] = name
            records.append(rec)
    data = _read_results_file(into, str(into)) if into.exists() else {"about": about or "", "records": []}
    if about:
        data["about"] = about
    added = 0
    for rec in records:
        if rec not in data["records"]:
            data["records"].append(rec)
            added += 1
    into.parent.mkdir(parents=True, exist_ok=True)
    into.write_text(dump_results(data))
    return added
