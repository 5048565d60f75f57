"""Draw a results JSON as a PNG bar chart (run with the bench tools venv, which has matplotlib)."""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(src: str, dst: str) -> int:
    with open(src, encoding="utf-8") as f:
        data = json.load(f)
    rows = [r for r in data["rows"] if "unsupported" not in r]
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(9, 2.2 * len(scenarios) + 0.6), squeeze=False)
    for ax, sc in zip(axes[:, 0], scenarios, strict=True):
        mine = [r for r in rows if r["scenario"] == sc]
        metric = "mib_per_s" if data["scenarios"][sc]["size"] >= 1 << 20 else "objects_per_s"
        values = [r[metric] for r in mine]
        colors = ["tab:green" if r["family"] == "rekey" else "tab:gray" for r in mine]
        colors = [c if r["ok"] else "tab:red" for c, r in zip(colors, mine, strict=True)]
        ax.barh([r["tool"] for r in mine], values, color=colors)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:g}", va="center", fontsize=8)
        ax.set_title(f"{sc}: {data['scenarios'][sc]['count']} x {data['scenarios'][sc]['size']} B to "
                     f"{data['scenarios'][sc]['target']} ({'MiB/s' if metric == 'mib_per_s' else 'objects/s'})",
                     fontsize=9)
        ax.tick_params(labelsize=8)
        ax.invert_yaxis()
    fig.suptitle(f"rekey vs peers, {data['mode']} run {data['started']} (red: failed its check)", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
