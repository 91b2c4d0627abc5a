"""Measurements shared by the benchmark scripts, so that their figures mean the same thing."""

from __future__ import annotations

import time


def predict_titles_per_s(clf, titles: list[str], repeats: int = 3) -> float:
    """``Classifier.predict`` throughput on ``titles``: best of ``repeats`` after a warm-up
    (the machine is shared and noisy; the best run is the least disturbed one)."""
    clf.predict(titles[:100])  # warm-up: first-call allocations and thread start-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        clf.predict(titles)
        best = min(best, time.perf_counter() - t)
    return len(titles) / best
