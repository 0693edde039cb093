"""examples/quickstart.ipynb runs headless from top to bottom on generated data and draws its figures."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"
SMALL = "EPOCHS = 1\nTINY = True\nN_TRAIN = 256\nBATCH_SIZE = 64\n"


def _cell(nb, needle: str):
    cells = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    assert len(cells) == 1, needle
    return cells[0]


def _has_png(cell) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.outputs)


def test_notebook_is_saved_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert nb.metadata.kernelspec.name == "python3"


def test_quickstart_runs_and_draws(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_DIR", raising=False)  # the generated data, whatever this machine has
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "EPOCHS" in params[0].source and "N_TRAIN" in params[0].source
    params[0].source = SMALL  # the notebook as shipped, on a smaller budget (as papermill's parameters would)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [out for c in nb.cells if c.cell_type == "code" for out in c.outputs if out.output_type == "error"]
    assert not errors, errors[0].get("evalue") if errors else ""
    train = _cell(nb, "trainf(")
    assert _has_png(train), "the live Animator showed no figure"
    printed = "".join(out.get("text", "") for out in train.outputs if out.output_type == "stream")
    assert "test acc" in printed  # trainf's lines are not wiped by the live figure
    assert _has_png(_cell(nb, "plot_class_heatmap")), "no gate heat map"
    assert "block1" in "".join(out.get("text", "") for out in _cell(nb, "plot_class_heatmap").outputs
                               if out.output_type == "stream")
