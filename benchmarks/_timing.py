"""Timing shared by the benchmarks."""
from __future__ import annotations

import time


def best_of(fn, repeats: int = 3):
    """Result and the best of ``repeats`` wall-clock timings. Every method gets the same number of tries, so
    one-off set-up costs (oneDNN's first call of a batch shape) and a noisy neighbour on a shared CPU do not
    decide the ratio."""
    best, value = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - started)
    return value, best
