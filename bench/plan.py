"""How long and how hard each benchmark runs: the full plan and the quick one.

`make bench` must finish within 10 minutes and `make bench-quick` within one on
this 2-core machine, start-up of every process included; these numbers are what
keeps them there. Quick runs are for "does it still work", not for figures.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    quick: bool
    rounds: int  # closed-loop runs alternate between targets this many times; best kept
    closed_seconds: float
    open_seconds: float
    warmup: float
    concurrency: int
    rates: tuple[int, ...]
    pipeline_seconds: float
    customers: int
    pipeline_rates: tuple[int, ...]
    worker_counts: tuple[int, ...]
    consume_count: int
    soak_messages: int
    soak_customers: int
    soak_seconds: float  # the soak stops at soak_messages or here, whichever comes first


FULL = Plan(
    quick=False,
    rounds=2,
    closed_seconds=7.0,
    open_seconds=8.0,
    warmup=1.0,
    concurrency=32,
    rates=(250, 500, 1000, 1500, 2000, 2500, 3000),
    pipeline_seconds=12.0,
    customers=64,
    pipeline_rates=(100, 200, 400),
    worker_counts=(1, 2),
    consume_count=30_000,
    soak_messages=100_000,
    soak_customers=200,
    soak_seconds=200.0,
)

QUICK = Plan(
    quick=True,
    rounds=1,
    closed_seconds=1.5,
    open_seconds=1.5,
    warmup=0.3,
    concurrency=32,
    rates=(1000,),
    pipeline_seconds=2.0,
    customers=32,
    pipeline_rates=(200,),
    worker_counts=(1, 2),
    consume_count=3_000,
    soak_messages=1_500,
    soak_customers=32,
    soak_seconds=20.0,
)
