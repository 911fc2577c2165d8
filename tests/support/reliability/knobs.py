"""How long the reliability scenarios run, set from the environment (`make soak`)."""

from __future__ import annotations

import os

SHORT_SECONDS = 10.0


def load_seconds() -> float:
    return float(os.environ.get("RELIABILITY_SECONDS", SHORT_SECONDS))


def report_every() -> float:
    return float(os.environ.get("RELIABILITY_REPORT_EVERY", 60))


def is_soak() -> bool:
    return load_seconds() > SHORT_SECONDS
