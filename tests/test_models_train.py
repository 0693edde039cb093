"""Every registered model trains through the same harness (what `scripts/trainf.py -m NAME` calls)."""
from __future__ import annotations

import csv
import json

import pytest

from gatedconv import list_models, load_model
from gatedconv.data import load_cifar10
from gatedconv.run import RunConfig, run_training
from gatedconv.train import evaluate_images


@pytest.mark.parametrize("name", [n for n in list_models() if n != "previt"])
def test_model_trains_one_epoch_in_the_harness(name, tiny_cifar, tmp_path):
    """One epoch of every model through run_training writes config.json, a metrics.csv row and final.json that
    agree with the returned figures, and the saved model scores the reported fp32 test accuracy."""
    out = tmp_path / name
    cfg = RunConfig(model=name, epochs=1, batch_size=50, eval_batch_size=100, data_dir=str(tiny_cifar),
                    out=str(out), precision="fp32", compile="off")
    final = run_training(cfg, print_fn=lambda *a, **k: None)
    assert json.loads((out / "final.json").read_text()) == final
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 1 and float(rows[0]["train_loss"]) == pytest.approx(final["train_loss"], rel=1e-5)
    data = load_cifar10(str(tiny_cifar))
    assert evaluate_images(load_model(out), data.test_x, data.test_y)["top1"] == final["test_acc_fp32"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"] == name and saved["num_params"] > 0
