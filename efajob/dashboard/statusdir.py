"""One cluster's node status directory between dashboard refreshes: what each file was when
last read, so that a refresh reads the files that changed and nothing else.

Daemons write every status_interval (15 s) while the page refreshes every few seconds, so
most files have not changed. The writers replace a file by rename, a new inode each write,
and the directory's listing gives each name's inode without a stat: a file listed with the
inode of its last read is not read again. The listing and its comparison with the last one
are dictionary and set operations (C loops): at 10,000 nodes the per-file Python loop they
replace was a fifth of a refresh. A file that changed under the same inode (rewritten in
place by another writer, or a filesystem that gave a new version the inode of its version
before last) is caught by a rotating check: each refresh also stats one file in RECHECK (by
position and `turn`, the refresh's number) and reads it again when its mtime or size moved.
Such a change shows within RECHECK refreshes (16 s at the page's 2 s), about one status
interval. A filesystem that lists no inodes (0: some FUSE ones) gets every file stat'ed.

A file that cannot be read or parsed is a note (the daemon rewrites it every few seconds),
not an error, and is forgotten: the next refresh tries it again.
"""
from __future__ import annotations

import os
from itertools import compress
from operator import ne
from typing import Callable, Dict, List, Optional, Tuple

from efajob.dashboard.model import NeedWhole
from efajob.errors import StoreError
from efajob.store.reader import MAX_STATUS_BYTES, NODES_DIR
from efajob.values import loads_checked, read_regular_stat

RECHECK = 8  # each refresh stats one file in RECHECK of those whose inode did not change
# parse(bytes, cluster, previous parse of the file or None, whole) -> what the refresh keeps
Parse = Callable[[bytes, str, object, bool], object]


def _json(data: bytes, _cluster: str, _previous: object, _whole: bool) -> object:
    return loads_checked(data)


class StatusDir:
    """The files of one directory as last read, by name: listing inode, (mtime_ns, size) of
    what was read, and its parse. Kept by the dashboard's refresh thread (one at a time)."""

    __slots__ = ("inodes", "stats", "parsed")

    def __init__(self) -> None:
        self.inodes: Dict[str, int] = {}
        self.stats: Dict[str, Tuple[int, int]] = {}
        self.parsed: Dict[str, object] = {}

    def _forget(self, name: str, removed: List[object]) -> None:
        self.inodes.pop(name, None)
        self.stats.pop(name, None)
        if name in self.parsed:
            removed.append(self.parsed.pop(name))

    def refresh(self, d: str, cluster: str, parse: Parse = _json, turn: int = 0,
                head: int = 0) -> Tuple[List[object], List[object], List[str]]:
        """Bring the files of directory `d` up to date: (removed, added, notes), the parses
        that went (of files gone, unreadable now or read anew) and came (of files read
        anew: a rewritten file is in both). `head` > 0:
        each file's first `head` bytes are read and parsed (`whole` False unless that was
        all of it); a parse that raises NeedWhole (dashboard/model.py) gets the whole file. StoreError when the
        directory cannot be listed (a missing one is empty)."""
        try:
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            gone = list(self.parsed.values())
            self.inodes, self.stats, self.parsed = {}, {}, {}
            return gone, [], []
        except OSError as e:
            raise StoreError(f"cannot read node status directory {d}: {e.strerror}") from None
        notes: List[str] = []
        removed: List[object] = []
        added: List[object] = []
        try:
            try:
                with os.scandir(dfd) as it:  # "." prefix: a writer's temporary file
                    listing = {e.name: e.inode() for e in it
                               if e.name.endswith(".json") and not e.name.startswith(".")}
            except OSError as err:
                raise StoreError(f"cannot read node status directory {d}: {err.strerror}") from None
            for name in self.inodes.keys() - listing.keys():  # files that went
                self._forget(name, removed)
            old = self.inodes
            new = set(compress(listing, map(ne, listing.values(), map(old.get, listing))))
            names = list(listing)
            # The rotating recheck (the old loop's `(i + turn) % RECHECK == 0`, i from 1), or
            # every file where the listing has no inodes.
            check = names if 0 in listing.values() else names[(-turn - 1) % RECHECK::RECHECK]
            for name in check:
                if name in new:
                    continue
                try:
                    st = os.stat(name, dir_fd=dfd)
                except OSError:
                    new.add(name)  # gone or unreadable meanwhile: the read below says which
                    continue
                if (st.st_mtime_ns, st.st_size) != self.stats.get(name):
                    new.add(name)
            for name in sorted(new):
                self._read(dfd, name, listing[name], cluster, parse, head, notes, removed, added)
        finally:
            os.close(dfd)
        return removed, added, notes

    def _read(self, dfd: int, name: str, ino: int, cluster: str, parse: Parse, head: int,
              notes: List[str], removed: List[object], added: List[object]) -> None:
        last = self.parsed.get(name)
        try:
            data, st = read_regular_stat(name, MAX_STATUS_BYTES, dir_fd=dfd, first=head)
            try:
                parsed = parse(data, cluster, last, not head or len(data) < head)
            except NeedWhole:
                data, st = read_regular_stat(name, MAX_STATUS_BYTES, dir_fd=dfd)
                parsed = parse(data, cluster, last, True)
        except (OSError, ValueError) as err:
            why = err.strerror if isinstance(err, OSError) else "not valid JSON"
            notes.append(f"node status {cluster}/{name[:80]} unreadable ({why})")
            self._forget(name, removed)
            return
        if name in self.parsed:
            removed.append(last)
        added.append(parsed)
        # Each file's three entries change together: a refresh cut short leaves every file
        # either as it was or as read, and the next refresh carries on from there.
        self.inodes[name], self.stats[name], self.parsed[name] = ino, (st.st_mtime_ns, st.st_size), parsed


def read_status_docs(store: str, cluster: str, cache: Optional[StatusDir] = None,
                     parse: Parse = _json, turn: int = 0,
                     head: int = 0) -> Tuple[List[Tuple[str, object]], List[str]]:
    """([(cluster, parse(bytes, cluster, previous, whole))], notes) of a cluster's node status
    files (`parse`: the JSON by default), in the order they were first seen; `cache` carries
    the files between refreshes (StatusDir.refresh)."""
    sd = cache if cache is not None else StatusDir()
    _removed, _added, notes = sd.refresh(os.path.join(store, cluster, NODES_DIR), cluster, parse, turn, head)
    return [(cluster, p) for p in sd.parsed.values()], notes
