"""Reliability suite: simulated customers through the whole system while faults are injected."""
