"""Helpers shared by the benchmarks (run as scripts: `python bench/NAME.py`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def rounded(value: object) -> object:
    """Floats to 4 decimals, recursively, for the closing JSON line."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return median(times)
