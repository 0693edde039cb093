"""The generated blocks of the documents: ``TABLES`` and ``FIGURES`` (every topic's generators by name), the
markers ``<!-- report:NAME -->`` ... ``<!-- /report:NAME -->`` in README.md and docs/*.md, and ``render``,
``check`` and ``write`` over them; ``draw_figures`` draws every figure into figures/."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, List

from . import bench, convert, deploy, leaderboard, runs, speedrun, study
from .core import FIGURES_DIR, ReportError, Results, load_results, _rel


_NAME = r"[A-Za-z0-9_.-]+"
_BLOCK = re.compile(rf"<!-- report:(?P<name>{_NAME}) -->(?P<body>.*?)<!-- /report:(?P=name) -->", re.S)
_OPEN = re.compile(rf"<!-- report:({_NAME}) -->")
_CLOSE = re.compile(rf"<!-- /report:({_NAME}) -->")

# the generators of every topic, by the name a marker or figures/ file gives them
TABLES: Dict[str, Callable[[Results], str]] = {
    **runs.TABLES, **leaderboard.TABLES, **speedrun.TABLES, **bench.TABLES, **study.TABLES, **deploy.TABLES,
    **convert.TABLES,
}
FIGURES: Dict[str, Callable[[Results, Path], Path]] = {**leaderboard.FIGURES, **speedrun.FIGURES, **study.FIGURES}


def documents(root) -> List[Path]:
    """The files that may hold generated blocks: README.md and docs/*.md."""
    root = Path(root)
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    return files + sorted((root / "docs").glob("*.md"))


def render_text(text: str, R: Results, label: str = "<text>") -> str:
    """``text`` with every generated block replaced by its current content."""
    opened, closed = _OPEN.findall(text), _CLOSE.findall(text)
    if sorted(opened) != sorted(closed):
        unmatched = sorted(set(opened) ^ set(closed)) or sorted(set(opened))
        raise ReportError(f"{label}: report marker(s) without their pair: {', '.join(unmatched)}")
    cache: Dict[str, str] = {}

    def replace(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise ReportError(f"{label}: unknown report marker {name!r} (known: {', '.join(sorted(TABLES))})")
        if name not in cache:
            cache[name] = TABLES[name](R).strip()
        body = m.group("body")
        inline = not body.startswith("\n")
        content = cache[name] if inline else f"\n{cache[name]}\n"
        return f"<!-- report:{name} -->{content}<!-- /report:{name} -->"

    return _BLOCK.sub(replace, text)


def render(root) -> Dict[Path, str]:
    """``{path: new text}`` for every document under ``root`` that holds generated blocks."""
    root = Path(root)
    R = Results(load_results(root))
    out: Dict[Path, str] = {}
    for path in documents(root):
        text = path.read_text()
        if _OPEN.search(text) or _CLOSE.search(text):
            out[path] = render_text(text, R, _rel(path, root))
    return out


def check(root) -> List[str]:
    """The documents (paths relative to ``root``) whose generated blocks differ from the generator's output."""
    root = Path(root)
    return [_rel(p, root) for p, text in render(root).items() if p.read_text() != text]


def write(root) -> List[str]:
    """Rewrite the stale documents; returns them (paths relative to ``root``)."""
    root = Path(root)
    changed = []
    for path, text in render(root).items():
        if path.read_text() != text:
            path.write_text(text)
            changed.append(_rel(path, root))
    return changed


def draw_figures(root, out_dir=None) -> List[Path]:
    """Draw every figure in FIGURES from the results under ``root`` into ``out_dir`` (default ``root/figures``)."""
    R = Results(load_results(root))
    out = Path(out_dir) if out_dir is not None else Path(root) / FIGURES_DIR
    return [draw(R, out / name) for name, draw in FIGURES.items()]
