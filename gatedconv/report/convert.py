"""Gating someone else's network (``gatedconv.convert``): torchvision's ResNet-18 trained plain and converted, at
the same short budget (``gatedconv-train -m tv_resnet18 [--model-kwargs '{"convert": {...}}']`` records,
collected into ``results/convert_example.json``)."""
from __future__ import annotations

from .core import Results, fmt_minutes, fmt_stat, provenance_table, stat


def table_convert_example(R: Results) -> str:
    recs = R.data.get("convert_example", [])
    if not recs:
        return "No converted run recorded yet: `gatedconv-train -m tv_resnet18 --model-kwargs '{\"convert\": {}}' " \
               "--out DIR`, then `gatedconv-report collect DIR --into results/convert_example.json`."
    rows = [([r], [r["name"], str(r.get("epochs", "-")), f"{r['params']:,}" if "params" in r else "-",
                   fmt_stat(stat([r], "acc_pct"), 2, "%"), fmt_stat(stat([r], "img_per_s"), 0),
                   fmt_minutes(r.get("train_s"))]) for r in recs]
    return provenance_table(["run", "epochs", "params", "test acc (fp32, weight average)", "training img/s",
                             "training time"], rows, "lrrrrr")


TABLES = {"convert_example": table_convert_example}
FIGURES: dict = {}
