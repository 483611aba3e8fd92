"""Reads of the shared job store that cannot hang the command that makes them.

A FIFO or device planted in the store is refused at open (values.read_regular), but a hung NFS
server blocks `stat`, `listdir` and `read` in the kernel, where no timeout reaches. So the
head-node commands (`report`, `jobs`, `dashboard build`) read the store in a worker thread
and watch it: as long as reads complete (values.reads_done() moves) the work goes on, however
long it takes; when none completes for `timeout` seconds the command gives up with a
StoreError (exit 4) saying so. The stuck thread is a daemon thread and dies with the process.
(The dashboard server has its own deadline per request: dashboard/server.py.)
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, TypeVar

from efajob.errors import StoreError
from efajob.values import reads_done

T = TypeVar("T")


def call_watched(fn: Callable[[], T], *, store: str, timeout: float, poll: float = 0.5,
                 progress: Callable[[], int] = reads_done,
                 clock: Callable[[], float] = time.monotonic) -> T:
    """fn(), run in a worker thread; its exception re-raised here. StoreError when `progress`
    stands still for `timeout` seconds while fn runs."""
    out: Dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            out["error"] = e

    worker = threading.Thread(target=run, name="efajob-store-read", daemon=True)
    worker.start()
    seen, since = progress(), clock()
    while True:
        worker.join(poll)
        if not worker.is_alive():
            break
        now = progress()
        if now != seen:
            seen, since = now, clock()
        elif clock() - since >= timeout:
            raise StoreError(f"the job store {store} answered nothing for {timeout:g} s (a hung "
                             "NFS mount?): gave up; raise store_timeout if it is only slow")
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]  # type: ignore[return-value]
