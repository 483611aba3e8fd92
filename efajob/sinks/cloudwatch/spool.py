"""A bounded on-disk spool of CloudWatch requests that could not be sent (endpoint down).

One JSON file per request, named so that sorting by name is oldest first
(`<epoch ns>-<seq>.json`), written atomically (temp file + rename) so a crash leaves either
the whole request or nothing. The total size is bounded by `max_bytes`: past it the oldest
requests are dropped, and every drop is counted (`dropped_items`, `dropped_count`: the datums
or events they held) and logged, never silent. A file that cannot be parsed is dropped the
same way. The spool survives a daemon restart: a new sink sends what the old one left.

Standard library only.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, List, Optional, Tuple

log = logging.getLogger("efajob.cloudwatch")

SUFFIX = ".json"


class Spool:
    def __init__(self, directory: str, max_bytes: int, *,
                 wall_ns: Callable[[], int] = time.time_ns):
        self.directory = directory
        self.max_bytes = max(0, int(max_bytes))
        self._wall_ns = wall_ns
        self._seq = 0
        self.dropped_items = 0
        self.dropped_count = 0
        self.written_items = 0
        self._files: List[Tuple[str, int]] = []  # (name, size), oldest first
        self._bytes = 0
        self._scan()

    # -- state -----------------------------------------------------------------------------
    def _scan(self) -> None:
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(SUFFIX))
        except FileNotFoundError:
            names = []
        except OSError as e:
            log.error("cannot list the CloudWatch spool %s: %s", self.directory, e.strerror)
            names = []
        files = []
        for n in names:
            try:
                files.append((n, os.path.getsize(os.path.join(self.directory, n))))
            except OSError:
                continue
        self._files = files
        self._bytes = sum(s for _, s in files)

    def __len__(self) -> int:
        return len(self._files)

    @property
    def bytes(self) -> int:
        return self._bytes

    # -- writing ---------------------------------------------------------------------------
    def put(self, item: dict) -> bool:
        """Store one request; False (counted as a drop) when it cannot be stored at all."""
        data = json.dumps(item, separators=(",", ":"), allow_nan=False).encode()
        count = int(item.get("count", 0))
        if len(data) > self.max_bytes:
            self._count_drop(1, count, f"a request of {len(data)} bytes is larger than the whole "
                                       f"spool ({self.max_bytes} bytes)")
            return False
        while self._files and self._bytes + len(data) > self.max_bytes:
            self._drop_oldest("the spool is full")
        self._seq += 1
        name = f"{self._wall_ns():020d}-{self._seq:06d}{SUFFIX}"
        path = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            self._count_drop(1, count, f"cannot write {path}: {e.strerror}")
            return False
        self._files.append((name, len(data)))
        self._bytes += len(data)
        self.written_items += 1
        return True

    # -- reading ---------------------------------------------------------------------------
    def oldest(self) -> Optional[Tuple[str, dict]]:
        """(name, request) of the oldest stored request; unreadable files are dropped."""
        while self._files:
            name, _ = self._files[0]
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    item = json.loads(f.read())
                if not isinstance(item, dict):
                    raise ValueError("not an object")
                return name, item
            except FileNotFoundError:
                self._forget(name)
            except (OSError, ValueError) as e:
                log.error("CloudWatch spool file %s is unreadable (%s): dropped", name, e)
                self._remove(name)
                self.dropped_items += 1
        return None

    def remove(self, name: str) -> None:
        """Forget a request that was sent."""
        self._remove(name)

    def _remove(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.directory, name))
        except FileNotFoundError:
            pass
        except OSError as e:
            log.error("cannot remove CloudWatch spool file %s: %s", name, e.strerror)
        self._forget(name)

    def _forget(self, name: str) -> None:
        for i, (n, s) in enumerate(self._files):
            if n == name:
                del self._files[i]
                self._bytes -= s
                return

    def _drop_oldest(self, why: str) -> None:
        name, _ = self._files[0]
        count = 0
        try:
            with open(os.path.join(self.directory, name), "rb") as f:
                count = int(json.loads(f.read()).get("count", 0))
        except (OSError, ValueError, AttributeError, TypeError):
            pass
        self._remove(name)
        self._count_drop(1, count, why)

    def _count_drop(self, items: int, count: int, why: str) -> None:
        self.dropped_items += items
        self.dropped_count += count
        log.warning("CloudWatch spool: dropped %d request(s) holding %d datums/events (%s); "
                    "%d request(s) dropped so far", items, count, why, self.dropped_items)
