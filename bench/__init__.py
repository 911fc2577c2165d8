"""Benchmarks of orderbot against same-run baselines on this machine.

Every figure is reported next to a ceiling measured in the same run, because on a
shared 2-core machine absolute numbers drift from run to run while ratios hold.
"""
