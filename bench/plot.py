"""The PNG in bench/README.md: latency against offered load, from open-loop runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a server or in CI
import matplotlib.pyplot as plt


def plot_latency(results: dict[str, Any], path: Path) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"bare-http": "tab:gray", "bare-publish": "tab:blue", "orderbot": "tab:red"}
    for target, color in styles.items():
        runs = sorted(
            (r for r in results["ingest"]["open"] if r["target"] == target),
            key=lambda r: float(r["offered_rate"]),
        )
        rates = [float(r["offered_rate"]) for r in runs]
        for pct, style in (("p50", ":"), ("p99", "-")):
            values = [float(r["latency_ms"][pct]) for r in runs]
            left.plot(rates, values, style, marker="o", color=color, label=f"{target} {pct}")
    left.set(
        title="Ingest: webhook latency (open loop)",
        xlabel="offered load (req/s)",
        ylabel="latency (ms, log)",
        yscale="log",
    )
    left.axhline(15, color="black", linewidth=0.8, linestyle="--")
    left.annotate("p99 target 15 ms", (left.get_xlim()[0], 15), fontsize=8, va="bottom")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)

    colors = {"1": "tab:red", "2": "tab:purple"}
    for workers, run in results["pipeline"]["workers"].items():
        runs = sorted(run["open"], key=lambda r: float(r["offered_rate"]))
        rates = [float(r["offered_rate"]) for r in runs]
        for pct, style in (("p50", ":"), ("p99", "-")):
            values = [float(r["accept_to_reply_ms"][pct]) for r in runs]
            label = f"{workers} worker{'s' if workers != '1' else ''} {pct}"
            right.plot(rates, values, style, marker="o", color=colors.get(workers), label=label)
    right.set(
        title="Pipeline: webhook accepted → reply received (open loop)",
        xlabel="offered load (dialog steps/s)",
        ylabel="latency (ms, log)",
        yscale="log",
    )
    right.axhline(50, color="black", linewidth=0.8, linestyle="--")
    right.annotate("p99 target 50 ms", (right.get_xlim()[0], 50), fontsize=8, va="bottom")
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
