"""Gating someone else's network (``gatedconv.convert``): torchvision's ResNet-18 trained plain and converted, at
the same short budget (``gatedconv-train -m tv_resnet18 [--model-kwargs '{"convert": {...}}']`` records,
collected into ``results/convert_example.json``)."""
from __future__ import annotations

from .core import Results, fmt_minutes, fmt_stat, num, provenance_table, stat, _seeds


def table_convert_example(R: Results) -> str:
    """One row per network (record name), over its seeds: mean ± sample std of accuracy, mean speed and time."""
    recs = R.data.get("convert_example", [])
    if not recs:
        return "No converted run recorded yet: `gatedconv-train -m tv_resnet18 --model-kwargs '{\"convert\": {}}' " \
               "--out DIR`, then `gatedconv-report collect DIR --into results/convert_example.json`."
    rows = []
    for name in dict.fromkeys(r["name"] for r in recs):
        rs = [r for r in recs if r["name"] == name]
        speed, train = stat(rs, "img_per_s"), stat(rs, "train_s")
        rows.append((rs, [name, _seeds(rs), str(rs[0].get("epochs", "-")),
                          f"{rs[0]['params']:,}" if "params" in rs[0] else "-", fmt_stat(stat(rs, "acc_pct"), 2, "%"),
                          num(speed.mean, 0) if speed else "-", fmt_minutes(train.mean if train else None)]))
    return provenance_table(["network", "seeds", "epochs", "params", "test acc (fp32, weight average; mean ± std)",
                             "training img/s (mean)", "training time (mean)"], rows, "llrrrrr")


TABLES = {"convert_example": table_convert_example}
FIGURES: dict = {}
