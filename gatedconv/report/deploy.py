"""Deployed forms (``gatedconv.reparameterize``): a trained run evaluated as trained and deployed, side by side
(``gatedconv-evaluate RUN [--deploy] --output DIR`` records, collected into ``results/deploy_check.json``)."""
from __future__ import annotations

from .core import Results, provenance_table


def table_deploy_check(R: Results) -> str:
    recs = R.data.get("deploy_check", [])
    if not recs:
        return "No deployed evaluation recorded yet: `gatedconv-evaluate RUN --deploy --output DIR` records one."
    rows = []
    for run in dict.fromkeys(r["run"] for r in recs):
        trained = [r for r in recs if r["run"] == run and not r["deployed"]]
        deployed = [r for r in recs if r["run"] == run and r["deployed"]]
        if not trained or not deployed:
            continue
        t, d = trained[-1], deployed[-1]
        rows.append(([t, d], [f"`{run}`", f"{t['acc_pct']:.2f}% ({t['correct']:,}/{t['test_images']:,})",
                              f"{d['acc_pct']:.2f}% ({d['correct']:,}/{d['test_images']:,})",
                              f"{d['correct'] - t['correct']:+d}"]))
    if not rows:
        return "No run evaluated both as trained and deployed yet."
    return provenance_table(["run", "trained (fp32)", "deployed (fp32)", "images deployed - trained"], rows, "lrrr")


TABLES = {"deploy_check": table_deploy_check}
FIGURES: dict = {}
