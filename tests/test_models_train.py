"""Every registered model trains through the same harness (what `scripts/trainf.py -m NAME` calls)."""
from __future__ import annotations

import json

import pytest

from gatedconv import list_models
from gatedconv.run import RunConfig, run_training


@pytest.mark.parametrize("name", [n for n in list_models() if n != "previt"])
def test_model_trains_one_epoch_in_the_harness(name, tiny_cifar, tmp_path):
    out = tmp_path / name
    cfg = RunConfig(model=name, epochs=1, batch_size=50, eval_batch_size=100, data_dir=str(tiny_cifar),
                    out=str(out), precision="fp32", compile="off")
    final = run_training(cfg, print_fn=lambda *a, **k: None)
    assert 0.0 <= final["test_acc"] <= 1.0 and final["train_loss"] == final["train_loss"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"] == name and saved["num_params"] > 0
