"""Percentiles from raw samples, and the slope of a line through points.

The samples are kept raw (a few hundred thousand floats at most) and sorted once,
which is exact where a bucketed histogram would round: the p99.9 of a 10-second
run rests on a few dozen samples, so rounding them would hide what we look for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p999", 99.9),
)


def percentile(sorted_samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (what HdrHistogram reports), NaN when empty."""
    if not sorted_samples:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


def summarize_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean in milliseconds, from samples in seconds."""
    ordered = sorted(samples_s)
    summary = {name: round(percentile(ordered, pct) * 1000, 3) for name, pct in PERCENTILES}
    summary["max"] = round(ordered[-1] * 1000, 3) if ordered else math.nan
    summary["mean"] = round(sum(ordered) / len(ordered) * 1000, 3) if ordered else math.nan
    summary["count"] = len(ordered)
    return summary


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys on xs (0 when there are fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
