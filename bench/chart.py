"""Latency against rate per target, from results.json; run by bench/__main__.py in bench/.work/tools-venv.

    python bench/chart.py bench/results/results.json bench/results/latency.png

Kept free of the bench package's imports so that it runs in the tools venv, where matplotlib lives.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402


def main(src: str, dest: str) -> None:
    with open(src) as fh:
        data: dict[str, Any] = json.load(fh)
    summary = data["summary"]
    rates = sorted({float(rate) for row in summary.values() for rate in row.get("rates", {})})
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, pct in zip(axes, ("p50", "p99"), strict=True):
        for name, row in summary.items():
            points = sorted((float(rate), lat[f"{pct}_ms"]) for rate, lat in row.get("rates", {}).items()
                            if lat.get("achieved_rps", 0) >= 0.95 * float(rate))
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(rates, [f"{r:g}" for r in rates])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("requests/s (fixed rate, non-streaming)")
        ax.set_title(f"{pct} latency")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms")
    axes[0].legend()
    meta = data["meta"]
    fig.suptitle(f"Latency against rate ({meta['started']}, {meta['mode']}; rates a target could not keep up "
                 "with are left out)", fontsize=10)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
