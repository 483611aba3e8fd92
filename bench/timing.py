"""What the benches share: the median wall time of a few rounds of a call (the median, not the
mean, because a loaded machine's outliers are all slow ones)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, List


def median_time(fn: Callable[[], object], rounds: int) -> float:
    took: List[float] = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        took.append(time.perf_counter() - t)
    return statistics.median(took)
