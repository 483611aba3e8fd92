"""What the benches share: the median wall time of a few rounds of a call (the median, not the
mean, because a loaded machine's outliers are all slow ones), and a child process timed
without the sleeps of a polled wait."""
from __future__ import annotations

import statistics
import subprocess
import threading
import time
from typing import Callable, List, Mapping, Optional, Sequence, Tuple


def median_time(fn: Callable[[], object], rounds: int) -> float:
    took: List[float] = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        took.append(time.perf_counter() - t)
    return statistics.median(took)


def run_child(argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
              limit: float = 600.0, stdout: object = subprocess.DEVNULL,
              stderr: object = subprocess.DEVNULL) -> Tuple[int, bytes]:
    """Run a child to completion: (exit status, its stderr when `stderr` is PIPE).

    Not `subprocess.run(..., timeout=...)`: with a timeout, Popen.wait polls with sleeps that
    double from 0.5 ms to 50 ms, so a 30 ms child measures 64 ms and a 11 ms one 16 ms (the
    sum of the sleeps to the next step). A blocking wait returns when the child exits; a timer
    kills a child that outlives `limit` instead."""
    p = subprocess.Popen(list(argv), env=None if env is None else dict(env),
                         stdout=stdout, stderr=stderr)  # type: ignore[arg-type]
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        p.kill()

    killer = threading.Timer(limit, kill)
    killer.start()
    try:
        err = p.stderr.read() if p.stderr is not None else b""
        rc = p.wait()
    finally:
        killer.cancel()
        if p.stderr is not None:
            p.stderr.close()
    # Timer.finished is set by cancel() too: only our own flag says the limit was reached.
    if fired.is_set():
        raise SystemExit(f"{argv[0]}: still running after {limit:g} s, killed")
    return rc, err
