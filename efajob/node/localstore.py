"""The node's local SQLite store: the daemon writes one row per tick, the epilog and `status` read.

Layout (schema version 3, `PRAGMA user_version`):
- `samples`: one row per tick, kept `retention_hours` (24 h). The six common node counters are
  integer columns (NULL when absent: absent is not zero); every other port counter and the
  per-device tx/rx bytes go into one packed blob of unsigned 64-bit integers whose names are
  stored once in `layouts` (the set of counters and devices changes rarely). That keeps a row
  on a busy p5 (32 devices, ~25 counters) at a few hundred bytes instead of ~2 KB of JSON.
- `rollup_1m`: one row per wall-clock minute (sum of deltas, packed like the samples; min and
  max of the common node rates as packed doubles; avg = sum / seconds), kept `rollup_days`
  (30 days). Rolled up from raw rows when a tick crosses a minute. Since version 2 it also
  keeps the job keys seen in the minute (`jobs`) and each device's fastest tx and rx rate
  (`peaks`, packed doubles in the order of the layout's device names); NULL for minutes
  rolled up before, meaning unknown. A long job's epilog then asks "who else ran here" of
  1,440 rollups instead of scanning 86,400 raw rows, and takes per-device peaks from every
  minute instead of decoding the raw rows of the busiest five. Since version 3 the minute's
  tx and rx byte sums and fastest node tx and rx rates are plain columns too (`tx_bytes`,
  `rx_bytes`, `tx_max`, `rx_max`; NULL: absent), so an epilog reads what it needs of a minute
  without decoding its blobs (node/minutes.py).
- `rollup_1h` (version 3): per wall-clock hour, each device's fastest tx and rx rate over its
  minutes (packed as in `rollup_1m`) and the raw rows folded in; a 24-hour epilog takes the
  device peaks of ~23 whole hours from here and only the minutes at the two ends from
  `rollup_1m`. An hour counts only when its `samples` equal its minutes' (otherwise its
  minutes are read: an hour partly expired, or rolled up by an older daemon).
- an index on (boot, mono): the epilog's "samples of this node between t0 and t1" is a range
  scan, cheap even for a 24 h job.

Concurrency: WAL (readers never block the writer), `timeout=` on every connection, one
transaction per tick, retention deleted in small batches so no lock is held long.

On the hook import path (the epilog reads job windows): standard library only.
"""
from __future__ import annotations

import os
import sys
import zlib
from array import array

from efajob import fastjson
from efajob.errors import StoreError
from efajob.node.minutes import MinuteWindow, from_rollups, max_peaks, raise_peaks

TYPE_CHECKING = False
if TYPE_CHECKING:  # no `typing` or `dataclasses` at run time: the epilog imports this
    import sqlite3
    from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple
else:
    try:
        # The C module that `sqlite3` re-exports whole: sqlite3/dbapi2.py adds only the
        # datetime adapters (importing `datetime` and `collections.abc`, ~10 ms of an epilog,
        # bench/hooks.py), which efajob never uses: every column here is a number, text or
        # a blob. Its classes and exceptions are sqlite3's own objects.
        import _sqlite3 as sqlite3
    except ImportError:  # pragma: no cover - an interpreter without the private name
        import sqlite3
    from collections import namedtuple

SCHEMA_VERSION = 3
# A reader opens any version from this one up to SCHEMA_VERSION (what it does not find, it
# reads the old way): an epilog must not lose the daemon's rows between an upgrade of the
# package and the daemon's restart, which migrates the file.
READABLE_FROM = 1

# The node counters most queries need, as plain integer columns (SQL can aggregate them).
COMMON = ("tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts", "rx_drops", "retrans_pkts")
_RAW_BATCH = 1000  # raw rows deleted per retention step: a few ms of lock at most
_ROLLUP_BATCH = 200
_ROLLUP_ROWS = 5000  # raw rows rolled up per tick at most (catching up after a restart)
_BLOB_RAW, _BLOB_ZLIB = b"\x00", b"\x01"
_BIG_ENDIAN = sys.byteorder == "big"
_MAX_I64 = (1 << 63) - 1
_MAX_U64 = (1 << 64) - 1


# Rows are named tuples, not dataclasses: an epilog decodes thousands (a tuple's __new__ is
# the cheapest construction), and `dataclasses`/`typing.NamedTuple` cost the hooks their
# imports; the typed class below is what mypy sees, the collections one what runs.
if TYPE_CHECKING:
    class _SampleRow(NamedTuple):
        boot_id: str
        mono: float  # CLOCK_MONOTONIC at the sample
        wall: float  # epoch seconds
        seconds: float  # time since the previous sample (the deltas' interval)
        deltas: Dict[str, int]  # node totals of port-counter deltas over `seconds`
        device_tx_bytes: Dict[str, int]  # per-device tx_bytes delta
        device_rx_bytes: Dict[str, int]
        jobs: Tuple[str, ...]  # active job keys at this tick (runfiles keys)
        resets: Tuple[str, ...]  # "device/counter" reset during this interval

    class _Rollup(NamedTuple):
        minute: int  # epoch seconds // 60
        samples: int
        seconds: float
        sums: Dict[str, int]  # every port counter's delta summed over the minute
        rate_min: Dict[str, float]  # common counters only
        rate_max: Dict[str, float]
        jobs: Optional[Tuple[str, ...]] = None  # job keys seen in the minute; None: unknown
        # (tx device names, rx device names, their fastest rates in bytes/s, tx then rx)
        device_peaks: Optional[Tuple[Tuple[str, ...], Tuple[str, ...], array]] = None
else:
    _SampleRow = namedtuple("SampleRow", ("boot_id", "mono", "wall", "seconds", "deltas",
                                          "device_tx_bytes", "device_rx_bytes", "jobs", "resets"))
    _Rollup = namedtuple("Rollup", ("minute", "samples", "seconds", "sums", "rate_min", "rate_max",
                                    "jobs", "device_peaks"), defaults=(None, None))


class SampleRow(_SampleRow):
    """One tick of the node daemon. Counter names are the kernel's; absent counters are absent.
    Fields: see _SampleRow."""

    __slots__ = ()

    def rate(self, name: str) -> Optional[float]:
        """Per-second node rate of one counter; None when absent or no time passed."""
        v = self.deltas.get(name)
        if v is None or self.seconds <= 0:
            return None
        return v / self.seconds


class Rollup(_Rollup):
    """One wall-clock minute of node baseline. Rates are per second; absent counters absent.
    Fields: see _Rollup."""

    __slots__ = ()

    def rate_avg(self, name: str) -> Optional[float]:
        v = self.sums.get(name)
        return None if v is None or self.seconds <= 0 else v / self.seconds


class RecentSums:
    """Totals of the newest rows (LocalStore.recent_sums): seconds covered, and of that with a
    job running; every extra counter summed over all rows; each device's tx and rx bytes
    summed over the rows with a job; every device named by any row's layout."""

    __slots__ = ("rows", "seconds", "busy_seconds", "extra", "busy_tx", "busy_rx", "devices")

    def __init__(self) -> None:
        self.rows = 0
        self.seconds = 0.0
        self.busy_seconds = 0.0
        self.extra: Dict[str, int] = {}
        self.busy_tx: Dict[str, int] = {}
        self.busy_rx: Dict[str, int] = {}
        self.devices: Set[str] = set()


def _add_columns(into: Dict[str, int], names: Sequence[str], rows: List[array],
                 start: int) -> None:
    """into[names[i]] += the sum of column start+i over rows: a column at a time (sum() over
    zip's tuples runs in C), not a dict update per value of every row."""
    if not rows or not names:
        return
    columns = zip(*rows) if start == 0 and len(names) == len(rows[0]) else zip(
        *(r[start:start + len(names)] for r in rows))
    for name, column in zip(names, columns):
        into[name] = into.get(name, 0) + sum(column)


_URI_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~/")


def _uri_path(path: str) -> str:
    """urllib.parse.quote(path) (what a `file:` URI needs: `?`, `#`, `%` and the rest escaped),
    without importing urllib.parse, which imports `re` (the epilog opens the store read-only)."""
    return "".join(c if c in _URI_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8"))
                   for c in path)


def current_boot_id(proc_root: str = "/proc") -> str:
    """The kernel's boot id: CLOCK_MONOTONIC values are only comparable within one boot."""
    try:
        with open(os.path.join(proc_root, "sys", "kernel", "random", "boot_id")) as f:
            value = f.read(64).strip()
    except OSError:
        return "unknown"
    return value or "unknown"


# -- schema ----------------------------------------------------------------------------------
def _run_script(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and a migration must be one transaction.
    for stmt in script.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _migrate_0_to_1(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE boots (id INTEGER PRIMARY KEY, boot_id TEXT NOT NULL UNIQUE);
        CREATE TABLE layouts (id INTEGER PRIMARY KEY, spec TEXT NOT NULL UNIQUE);
        CREATE TABLE samples (
            id INTEGER PRIMARY KEY,
            boot INTEGER NOT NULL,
            mono REAL NOT NULL,
            wall REAL NOT NULL,
            seconds REAL NOT NULL,
            tx_bytes INTEGER, rx_bytes INTEGER, tx_pkts INTEGER, rx_pkts INTEGER,
            rx_drops INTEGER, retrans_pkts INTEGER,
            layout INTEGER NOT NULL,
            packed BLOB NOT NULL,
            jobs TEXT,
            resets TEXT
        );
        CREATE INDEX samples_boot_mono ON samples (boot, mono);
        CREATE TABLE rollup_1m (
            minute INTEGER PRIMARY KEY,
            samples INTEGER NOT NULL,
            seconds REAL NOT NULL,
            layout INTEGER NOT NULL,
            sums BLOB NOT NULL,
            rates BLOB NOT NULL
        );
        """
    )


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE rollup_1m ADD COLUMN jobs TEXT")
    db.execute("ALTER TABLE rollup_1m ADD COLUMN peaks BLOB")


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    """The minute columns and the hour table, filled from the minutes already there (decoded
    once, at the daemon's first start: ~15 us a minute, 0.67 s for 30 days of p5 minutes)."""
    for col in ("tx_bytes INTEGER", "rx_bytes INTEGER", "tx_max REAL", "rx_max REAL"):
        db.execute(f"ALTER TABLE rollup_1m ADD COLUMN {col}")
    db.execute("CREATE TABLE rollup_1h (hour INTEGER PRIMARY KEY, samples INTEGER NOT NULL, "
               "layout INTEGER, peaks BLOB)")
    layouts = {k: fastjson.loads(spec) for k, spec in db.execute("SELECT id, spec FROM layouts")}
    hours: Dict[int, list] = {}
    updates = []
    for minute, n, layout, sums, rates, peaks in db.execute(
            "SELECT minute, samples, layout, sums, rates, peaks FROM rollup_1m ORDER BY minute"):
        names, tx_names, rx_names = layouts.get(layout, ((), (), ()))
        try:
            got = dict(zip(names, _unpack(sums)))
            hi: Sequence[float] = _unpack_doubles(rates)[len(COMMON):]
        except (ValueError, zlib.error):  # a damaged minute: its columns stay unknown (NULL)
            got, hi = {}, ()
        updates.append((_int_column(got.get("tx_bytes")), _int_column(got.get("rx_bytes")),
                        _rate_column(hi, "tx_bytes"), _rate_column(hi, "rx_bytes"), minute))
        h = hours.setdefault(minute // 60, [0, []])
        h[0] += n
        p = None if peaks is None else _device_peaks(tuple(tx_names), tuple(rx_names), peaks)
        if p is None or h[1] is None:
            h[1] = None  # a minute without device peaks: the hour's are unknown
        else:
            h[1].append(p)
    db.executemany("UPDATE rollup_1m SET tx_bytes = ?, rx_bytes = ?, tx_max = ?, rx_max = ? "
                   "WHERE minute = ?", updates)
    for hour, (n, groups) in hours.items():
        layout_id, blob = None, None
        if groups is not None:
            tx_names, rx_names, blob = _pack_peaks(*max_peaks(groups))
            layout_id = _layout_id(db, fastjson.dumps([(), tx_names, rx_names]))
        db.execute("INSERT INTO rollup_1h (hour, samples, layout, peaks) VALUES (?,?,?,?)",
                   (hour, n, layout_id, blob))


# Explicit migrations: from version N to N+1. A store newer than SCHEMA_VERSION is refused.
MIGRATIONS = {0: _migrate_0_to_1, 1: _migrate_1_to_2, 2: _migrate_2_to_3}


def _recovery_hint(path: str) -> str:
    return (f"stop the daemon, move the file aside (mv {path} {path}.corrupt; rm -f {path}-wal "
            f"{path}-shm) and start it again: a new store is created; the node baseline is lost, "
            "job records are not (docs/daemon.md)")


def _classify(path: str, e: sqlite3.Error, doing: str) -> StoreError:
    msg = str(e)
    if "locked" in msg or "busy" in msg:
        return StoreError(f"local store {path} is locked by another process while {doing} "
                          f"({msg}); is another efajob daemon running on this state_dir?")
    if isinstance(e, sqlite3.DatabaseError) and (
        "not a database" in msg or "malformed" in msg or "corrupt" in msg
    ):
        return StoreError(f"local store {path} is corrupt ({msg}): {_recovery_hint(path)}")
    return StoreError(f"local store {path}: {doing} failed: {msg}")


def _readable(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except PermissionError:
        return False
    except OSError:
        pass  # anything else: let SQLite say what it is
    return True


def _set_modes(path: str, mode: int) -> None:
    """The database and its WAL files (SQLite creates those with the database's mode, but
    they may predate a change of private_records)."""
    for p in (path, path + "-wal", path + "-shm"):
        try:
            os.chmod(p, mode)
        except FileNotFoundError:
            pass


# -- packing -----------------------------------------------------------------------------------
def _pack(values: Sequence[int]) -> bytes:
    a = array("Q", values)
    if _BIG_ENDIAN:  # pragma: no cover - stored little-endian so a copied file stays readable
        a.byteswap()
    raw = a.tobytes()
    z = zlib.compress(raw, 1)
    return _BLOB_ZLIB + z if len(z) < len(raw) else _BLOB_RAW + raw


def _unpack(blob: bytes) -> array:
    body = blob[1:]
    if blob[:1] == _BLOB_ZLIB:
        body = zlib.decompress(body)
    a = array("Q")
    a.frombytes(body)
    if _BIG_ENDIAN:  # pragma: no cover
        a.byteswap()
    return a


def _unpack_doubles(blob: bytes) -> array:
    """Raises ValueError when the blob is not a whole number of doubles."""
    a = array("d")
    a.frombytes(blob)
    if _BIG_ENDIAN:  # pragma: no cover
        a.byteswap()
    return a


def _pack_doubles(values: Sequence[float]) -> bytes:
    a = array("d", values)
    if _BIG_ENDIAN:  # pragma: no cover
        a.byteswap()
    return a.tobytes()


def _device_peaks(tx: Tuple[str, ...], rx: Tuple[str, ...], blob: bytes
                  ) -> Optional[Tuple[Tuple[str, ...], Tuple[str, ...], array]]:
    try:
        a = _unpack_doubles(blob)
    except ValueError:  # not a whole number of doubles: damaged, unknown
        return None
    return (tx, rx, a) if len(a) == len(tx) + len(rx) else None


def _int_column(v: Optional[int]) -> Optional[float]:
    # SQLite integers are signed 64-bit; a minute's sum above that (only after a reset to a
    # near-2^64 value) is kept as the double it is read back as anyway (the series adds floats).
    return v if v is None or v <= _MAX_I64 else float(v)


def _rate_column(hi: Sequence[float], name: str) -> Optional[float]:
    """A minute's fastest rate of a common counter from its packed maxima; NaN (absent) -> NULL."""
    i = COMMON.index(name)
    v = hi[i] if i < len(hi) else float("nan")
    return v if v == v else None


def _layout_id(db: sqlite3.Connection, spec: str) -> int:
    row = db.execute("SELECT id FROM layouts WHERE spec = ?", (spec,)).fetchone()
    if row:
        return row[0]
    rowid = db.execute("INSERT INTO layouts (spec) VALUES (?)", (spec,)).lastrowid
    assert rowid is not None
    return rowid


def _pack_peaks(tx: Dict[str, float], rx: Dict[str, float]
                ) -> Tuple[Tuple[str, ...], Tuple[str, ...], bytes]:
    """(tx names, rx names, packed doubles) of device peaks, names sorted (as stored)."""
    tx_names, rx_names = tuple(sorted(tx)), tuple(sorted(rx))
    return tx_names, rx_names, _pack_doubles([tx[d] for d in tx_names] + [rx[d] for d in rx_names])


class LocalStore:
    """Open with `LocalStore.open(path)`; one writer (the daemon), any number of readers."""

    def __init__(self, db: sqlite3.Connection, path: str, readonly: bool,
                 retention_hours: float, rollup_days: float):
        self._db = db
        self.path = path
        self.readonly = readonly
        self.retention_seconds = retention_hours * 3600.0
        self.rollup_seconds = rollup_days * 86400.0
        self._boots: Dict[str, int] = {}
        self._layouts: Dict[str, int] = {}
        # The same layout by its names: a tick's lookup without writing its JSON (~100 names
        # on a p5, a tenth of an insert).
        self._layout_ids: Dict[Tuple[Tuple[str, ...], ...], int] = {}
        self._layout_names: Dict[int, Tuple[Tuple[str, ...], Tuple[str, ...], Tuple[str, ...]]] = {}
        self._minute: Optional[int] = None
        self._retention_backlog = True  # look once after opening
        self.version = SCHEMA_VERSION  # the file's (_prepare): a reader may see an older one

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, *, readonly: bool = False, timeout: float = 2.0,
             retention_hours: float = 24.0, rollup_days: float = 30.0,
             private: bool = False) -> "LocalStore":
        """Open (and create or migrate, unless readonly) the store. Raises StoreError.
        `private` (private_records; the writer's): the file and its WAL are root's only, 0600,
        since its rows say which jobs ran here when."""
        try:
            if readonly:
                if not os.path.exists(path):
                    raise StoreError(f"local store {path} does not exist (is the daemon running?)")
                if not _readable(path):
                    raise StoreError(f"local store {path} is not readable by you (with "
                                     "private_records = true it is root's only)")
                db = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=timeout,
                                     isolation_level=None, check_same_thread=False)
            else:
                parent = os.path.dirname(path)
                if parent:
                    os.makedirs(parent, exist_ok=True)
                db = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                                     check_same_thread=False)
        except OSError as e:
            raise StoreError(f"cannot create the local store {path}: {e.strerror}") from None
        except sqlite3.Error as e:
            raise _classify(path, e, "opening") from None
        try:
            store = cls(db, path, readonly, retention_hours, rollup_days)
            store._prepare(timeout)
            if not readonly:
                _set_modes(path, 0o600 if private else 0o644)
        except sqlite3.Error as e:
            db.close()
            raise _classify(path, e, "opening") from None
        except StoreError:
            db.close()
            raise
        except OSError as e:
            db.close()
            raise StoreError(f"local store {path}: cannot set its mode: {e.strerror}") from None
        return store

    def _prepare(self, timeout: float) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"local store {self.path} has schema version {version}, newer than this efajob "
                f"understands ({SCHEMA_VERSION}): upgrade efajob, or move the file aside"
            )
        if self.readonly:
            if version < READABLE_FROM:
                raise StoreError(f"local store {self.path} has schema version {version} "
                                 f"(expected {SCHEMA_VERSION}): start the daemon to migrate it")
            self.version = version
            return
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise StoreError(f"local store {self.path}: cannot switch to WAL mode")
        # WAL + NORMAL: a commit is durable against process crashes without an fsync per tick.
        db.execute("PRAGMA synchronous = NORMAL")
        while version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION:
                    MIGRATIONS[version](db)
                    version += 1
                    db.execute(f"PRAGMA user_version = {version}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def check(self) -> None:
        """`PRAGMA quick_check`: raises StoreError naming the recovery when the file is damaged."""
        try:
            result = self._db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.Error as e:
            raise _classify(self.path, e, "checking") from None
        if result != "ok":
            raise StoreError(f"local store {self.path} is corrupt ({result}): "
                             f"{_recovery_hint(self.path)}")

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass

    def __enter__(self) -> "LocalStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- ids -------------------------------------------------------------------------------
    def _insert_id(self, sql: str, args: Tuple[str, ...]) -> int:
        """Run one INSERT; the new row's id."""
        rowid = self._db.execute(sql, args).lastrowid
        assert rowid is not None  # sqlite3 sets it after every INSERT of a row
        return rowid

    def _boot_key(self, boot_id: str, create: bool) -> Optional[int]:
        k = self._boots.get(boot_id)
        if k is None:
            row = self._db.execute("SELECT id FROM boots WHERE boot_id = ?", (boot_id,)).fetchone()
            if row is None:
                if not create:
                    return None
                k = self._insert_id("INSERT INTO boots (boot_id) VALUES (?)", (boot_id,))
            else:
                k = row[0]
            self._boots[boot_id] = k
        return k

    def _layout_key(self, extra: Tuple[str, ...], tx: Tuple[str, ...], rx: Tuple[str, ...]) -> int:
        names = (extra, tx, rx)
        k = self._layout_ids.get(names)
        if k is not None:
            return k
        spec = fastjson.dumps([extra, tx, rx])
        k = self._layouts.get(spec)
        if k is None:
            row = self._db.execute("SELECT id FROM layouts WHERE spec = ?", (spec,)).fetchone()
            k = row[0] if row else self._insert_id("INSERT INTO layouts (spec) VALUES (?)", (spec,))
            self._layouts[spec] = k
            self._layout_names[k] = names
        self._layout_ids[names] = k
        return k

    def _layout(self, k: int) -> Tuple[Tuple[str, ...], Tuple[str, ...], Tuple[str, ...]]:
        names = self._layout_names.get(k)
        if names is None:
            row = self._db.execute("SELECT spec FROM layouts WHERE id = ?", (k,)).fetchone()
            if row is None:
                raise StoreError(f"local store {self.path}: sample refers to unknown layout {k}")
            extra, tx, rx = fastjson.loads(row[0])
            names = self._layout_names[k] = (tuple(extra), tuple(tx), tuple(rx))
        return names

    # -- writing ---------------------------------------------------------------------------
    def add_sample(self, row: SampleRow) -> None:
        """Insert one tick (one transaction), rolling up and expiring old rows as minutes pass."""
        if self.readonly:
            raise StoreError(f"local store {self.path} is open read-only")
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._insert(row)
                minute = int(row.wall // 60)
                if self._minute is None or minute != self._minute or self._retention_backlog:
                    more = self._roll_up(minute * 60.0)
                    more = self._expire(row.wall) or more
                    # A full batch means more rows wait: keep going on the next ticks.
                    self._retention_backlog = more
                    self._minute = minute
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                # A boot or layout row made in this transaction is gone, and its id may be
                # given to another one: ask the file again.
                self._boots.clear()
                self._layouts.clear()
                self._layout_ids.clear()
                self._layout_names.clear()
                raise
        except sqlite3.Error as e:
            raise _classify(self.path, e, "writing a sample") from None

    def _insert(self, row: SampleRow) -> None:
        d = row.deltas
        # SQLite integers are signed 64-bit: a (theoretical) delta above that goes into the
        # unsigned packed blob instead of its column, which then stays NULL.
        big = [n for n in COMMON if d.get(n, 0) > _MAX_I64]
        if big:
            d = {k: v for k, v in d.items() if k not in big}
        extra = tuple(sorted(n for n in row.deltas if n not in COMMON or n in big))
        tx = tuple(sorted(row.device_tx_bytes))
        rx = tuple(sorted(row.device_rx_bytes))
        values = [row.deltas[n] for n in extra]
        values.extend(row.device_tx_bytes[n] for n in tx)
        values.extend(row.device_rx_bytes[n] for n in rx)
        for j in row.jobs:
            if "," in j:
                raise StoreError(f"job key {j!r} contains ','")
        self._db.execute(
            "INSERT INTO samples (boot, mono, wall, seconds, tx_bytes, rx_bytes, tx_pkts, "
            "rx_pkts, rx_drops, retrans_pkts, layout, packed, jobs, resets) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                self._boot_key(row.boot_id, True), row.mono, row.wall, row.seconds,
                d.get("tx_bytes"), d.get("rx_bytes"), d.get("tx_pkts"), d.get("rx_pkts"),
                d.get("rx_drops"), d.get("retrans_pkts"),
                self._layout_key(extra, tx, rx), _pack(values),
                ",".join(row.jobs) if row.jobs else None,
                fastjson.dumps(list(row.resets)) if row.resets else None,
            ),
        )

    def _meta_int(self, key: str, default: int) -> int:
        r = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(r[0]) if r else default

    def _set_meta(self, key: str, value: object) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def _roll_up(self, before_wall: float) -> bool:
        """Fold raw rows not yet rolled up and older than `before_wall` into minute rows."""
        done = self._meta_int("rollup_id", 0)
        rows = self._db.execute(
            f"SELECT id, {self._ROW_COLS} FROM samples WHERE id > ? AND wall < ? "
            f"ORDER BY id LIMIT {_ROLLUP_ROWS}", (done, before_wall)).fetchall()
        if not rows:
            return False
        minutes: Dict[int, List[SampleRow]] = {}
        for r in rows:
            s = self._row(r[1:], {})
            minutes.setdefault(int(s.wall // 60), []).append(s)
        for minute, samples in minutes.items():
            self._merge_minute(minute, samples)
        self._set_meta("rollup_id", rows[-1][0])
        return len(rows) == _ROLLUP_ROWS

    def _merge_minute(self, minute: int, samples: List[SampleRow]) -> None:
        old = self._db.execute(f"SELECT {self._rollup_cols()} FROM rollup_1m WHERE minute = ?",
                               (minute,)).fetchone()
        r = self._rollup(old) if old else Rollup(minute, 0, 0.0, {}, {}, {}, (), ((), (), array("d")))
        n, secs, sums, lo, hi = r.samples, r.seconds, r.sums, r.rate_min, r.rate_max
        # A minute partly rolled up before version 2 keeps "unknown" (NULL): its first rows'
        # jobs and device rates are gone.
        jobs = None if r.jobs is None else set(r.jobs)
        dev_tx = dev_rx = None
        if r.device_peaks is not None:
            old_tx, old_rx, vals = r.device_peaks
            dev_tx = dict(zip(old_tx, vals))
            dev_rx = dict(zip(old_rx, vals[len(old_tx):]))
        for s in samples:
            n += 1
            secs += s.seconds
            if jobs is not None:
                jobs.update(s.jobs)
            if dev_tx is not None and dev_rx is not None and s.seconds > 0:
                for per, got in ((dev_tx, s.device_tx_bytes), (dev_rx, s.device_rx_bytes)):
                    for d, v in got.items():
                        dev_rate = v / s.seconds
                        if dev_rate > per.get(d, -1.0):
                            per[d] = dev_rate
            for k, v in s.deltas.items():
                sums[k] = sums.get(k, 0) + v
            for k in COMMON:
                rate = s.rate(k)
                if rate is not None:
                    lo[k] = min(lo.get(k, rate), rate)
                    hi[k] = max(hi.get(k, rate), rate)
        names = tuple(sorted(sums))
        # A minute's sum only passes 2^64 after a reset to a near-2^64 value: clamp, as u64.
        clamped = {k: min(sums[k], _MAX_U64) for k in names}
        packed = _pack([clamped[k] for k in names])
        nan = float("nan")
        rates = _pack_doubles([lo.get(k, nan) for k in COMMON] + [hi.get(k, nan) for k in COMMON])
        tx_names: Tuple[str, ...] = ()
        rx_names: Tuple[str, ...] = ()
        peaks = None
        if dev_tx is not None and dev_rx is not None:
            tx_names, rx_names, peaks = _pack_peaks(dev_tx, dev_rx)
        self._db.execute(
            "INSERT OR REPLACE INTO rollup_1m (minute, samples, seconds, layout, sums, rates, jobs, "
            "peaks, tx_bytes, rx_bytes, tx_max, rx_max) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (minute, n, secs, self._layout_key(names, tx_names, rx_names), packed, rates,
             None if jobs is None else ",".join(encode_jobs(jobs)), peaks,
             _int_column(clamped.get("tx_bytes")), _int_column(clamped.get("rx_bytes")),
             hi.get("tx_bytes"), hi.get("rx_bytes")))
        self._merge_hour(minute // 60, len(samples),
                         None if dev_tx is None or dev_rx is None else (dev_tx, dev_rx))

    def _merge_hour(self, hour: int, samples: int,
                    peaks: Optional[Tuple[Dict[str, float], Dict[str, float]]]) -> None:
        """Fold a minute's new rows into its hour: their count, and the minute's device peaks
        (the minute's whole, old rows included: a max can take the same value twice)."""
        old = self._db.execute("SELECT samples, layout, peaks FROM rollup_1h WHERE hour = ?",
                               (hour,)).fetchone()
        n = samples
        tx: Dict[str, float] = {}
        rx: Dict[str, float] = {}
        known = peaks is not None
        if old is not None:
            n += old[0]
            got = None
            if old[2] is not None and old[1] is not None:
                _, tx_names, rx_names = self._layout(old[1])
                got = _device_peaks(tx_names, rx_names, old[2])
            if got is None:
                known = False
            else:
                tx, rx = max_peaks([got])
        layout: Optional[int] = None
        blob: Optional[bytes] = None
        if known and peaks is not None:
            raise_peaks(tx, peaks[0])
            raise_peaks(rx, peaks[1])
            tx_names, rx_names, blob = _pack_peaks(tx, rx)
            layout = self._layout_key((), tx_names, rx_names)
        self._db.execute("INSERT OR REPLACE INTO rollup_1h (hour, samples, layout, peaks) "
                         "VALUES (?,?,?,?)", (hour, n, layout, blob))

    def _rollup_cols(self) -> str:
        # A version-1 file (read-only, before the daemon migrated it) has no jobs column.
        return ("minute, samples, seconds, layout, sums, rates, "
                + ("jobs, peaks" if self.version >= 2 else "NULL, NULL"))

    def _rollup(self, r: tuple) -> Rollup:
        names, tx_names, rx_names = self._layout(r[3])
        rates = array("d")
        rates.frombytes(r[5])
        if _BIG_ENDIAN:  # pragma: no cover
            rates.byteswap()
        nc = len(COMMON)
        # NaN marks an absent counter (NaN != NaN).
        return Rollup(r[0], r[1], r[2], dict(zip(names, _unpack(r[4]))),
                      {k: v for k, v in zip(COMMON, rates[:nc]) if v == v},
                      {k: v for k, v in zip(COMMON, rates[nc:]) if v == v},
                      None if r[6] is None else tuple(r[6].split(",")) if r[6] else (),
                      None if r[7] is None else _device_peaks(tx_names, rx_names, r[7]))

    def _expire(self, now_wall: float) -> bool:
        """Delete one small batch of expired raw rows (only rolled-up ones) and rollups."""
        rolled = self._meta_int("rollup_id", 0)
        cutoff = now_wall - self.retention_seconds
        # Rows are inserted in time order, so the oldest ids are the candidates; look at one
        # batch from the start instead of scanning the table for old wall times.
        last = self._db.execute(
            f"SELECT MAX(id) FROM (SELECT id, wall FROM samples WHERE id <= ? ORDER BY id "
            f"LIMIT {_RAW_BATCH}) WHERE wall < ?", (rolled, cutoff)).fetchone()[0]
        deleted = 0
        if last is not None:
            deleted = self._db.execute(
                "DELETE FROM samples WHERE id <= ? AND wall < ?", (last, cutoff)).rowcount
        old_minute = int((now_wall - self.rollup_seconds) // 60)
        deleted_r = self._db.execute(
            f"DELETE FROM rollup_1m WHERE minute IN (SELECT minute FROM rollup_1m "
            f"WHERE minute < ? ORDER BY minute LIMIT {_ROLLUP_BATCH})", (old_minute,)).rowcount
        # An hour goes once all its minutes have (it is the max over them).
        self._db.execute("DELETE FROM rollup_1h WHERE hour < ?", (old_minute // 60,))
        return deleted >= _RAW_BATCH or deleted_r >= _ROLLUP_BATCH

    # -- reading ---------------------------------------------------------------------------
    _ROW_COLS = ("boot, mono, wall, seconds, tx_bytes, rx_bytes, tx_pkts, rx_pkts, rx_drops, "
                 "retrans_pkts, layout, packed, jobs, resets")

    def _row(self, r: tuple, boots: Dict[int, str]) -> SampleRow:
        boot = boots.get(r[0])
        if boot is None:
            got = self._db.execute("SELECT boot_id FROM boots WHERE id = ?", (r[0],)).fetchone()
            boot = boots[r[0]] = got[0] if got else "unknown"
        extra, tx, rx = self._layout(r[10])
        # One iterator over the packed values, consumed in layout order: zip() stops on the
        # names (its first argument) without pulling an extra value. (This loop is the cost of
        # a 24 h window: 86,400 rows.)
        values = iter(_unpack(r[11]))
        deltas = {k: v for k, v in zip(COMMON, r[4:10]) if v is not None}
        if extra:
            deltas.update(zip(extra, values))
        return SampleRow(
            boot_id=boot, mono=r[1], wall=r[2], seconds=r[3], deltas=deltas,
            device_tx_bytes=dict(zip(tx, values)),
            device_rx_bytes=dict(zip(rx, values)),
            jobs=tuple(r[12].split(",")) if r[12] else (),
            resets=tuple(fastjson.loads(r[13])) if r[13] else (),
        )

    def _query(self, sql: str, args: tuple) -> List[tuple]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise _classify(self.path, e, "reading") from None

    def samples_between(self, boot_id: str, mono0: float, mono1: float) -> List[SampleRow]:
        """Rows of that boot with mono0 < mono <= mono1, ascending (an index range scan)."""
        k = self._boot_key(boot_id, False)
        if k is None:
            return []
        rows = self._query(
            f"SELECT {self._ROW_COLS} FROM samples WHERE boot = ? AND mono > ? AND mono <= ? "
            "ORDER BY mono", (k, mono0, mono1))
        boots = {k: boot_id}
        return [self._row(r, boots) for r in rows]

    def jobs_between(self, boot_id: str, mono0: float, mono1: float) -> Set[str]:
        """Every job key seen active in that window (for the epilog's `shared` flag)."""
        return self._jobs_of(boot_id, mono0, mono1, unrolled_only=False)

    def unrolled_jobs(self, boot_id: str, mono0: float, mono1: float) -> Set[str]:
        """The jobs of that boot's rows with mono0 < mono <= mono1 not yet folded into a minute
        rollup (ids above `rollup_id`: the current minute, or a backlog after a restart).
        With the rollups' own jobs, every row's (hooks/finish.py)."""
        return self._jobs_of(boot_id, mono0, mono1, unrolled_only=True)

    def _jobs_of(self, boot_id: str, mono0: float, mono1: float, *, unrolled_only: bool) -> Set[str]:
        k = self._boot_key(boot_id, False)
        if k is None:
            return set()
        args: tuple
        if unrolled_only:
            # `+boot`, `+mono`: not the (boot, mono) index, whose range is the whole window;
            # the rowid range above rollup_id is a minute's rows.
            where, args = ("id > ? AND +boot = ? AND +mono > ? AND +mono <= ?",
                           (self._meta_int("rollup_id", 0), k, mono0, mono1))
        else:
            where, args = "boot = ? AND mono > ? AND mono <= ?", (k, mono0, mono1)
        out: Set[str] = set()
        for (jobs,) in self._query(
                f"SELECT DISTINCT jobs FROM samples WHERE {where} AND jobs IS NOT NULL", args):
            out.update(jobs.split(","))
        return out

    def last_samples(self, n: int = 1) -> List[SampleRow]:
        """The newest `n` rows (any boot), ascending: what `efajob status` shows."""
        rows = self._query(f"SELECT {self._ROW_COLS} FROM samples ORDER BY id DESC LIMIT ?", (n,))
        boots: Dict[int, str] = {}
        return [self._row(r, boots) for r in reversed(rows)]

    def recent_sums(self, n: int, since_wall: float) -> RecentSums:
        """Totals of the newest `n` rows (any boot) at or after `since_wall` (what
        `efajob-check-node` looks at): summed per layout a column at a time, without building a
        SampleRow per row (that was a sixth of a check's time)."""
        rows = self._query(
            "SELECT seconds, layout, packed, jobs IS NOT NULL AND jobs != '' FROM (SELECT wall, "
            "seconds, layout, packed, jobs FROM samples ORDER BY id DESC LIMIT ?) "
            "WHERE wall >= ?", (n, since_wall))
        out = RecentSums()
        every: Dict[int, List[array]] = {}
        busy: Dict[int, List[array]] = {}
        for seconds, layout, packed, has_job in rows:
            out.rows += 1
            out.seconds += seconds
            try:
                values = _unpack(packed)
            except (zlib.error, ValueError):
                raise StoreError(f"local store {self.path}: a sample's counters are damaged") from None
            every.setdefault(layout, []).append(values)
            if has_job:
                out.busy_seconds += seconds
                busy.setdefault(layout, []).append(values)
        for layout, arrays in every.items():
            extra, tx, rx = self._layout(layout)
            # A row shorter than its layout (a damaged blob) would shift every column after it.
            if any(len(a) != len(extra) + len(tx) + len(rx) for a in arrays):
                raise StoreError(f"local store {self.path}: a sample does not match its layout")
            out.devices.update(tx)
            out.devices.update(rx)
            _add_columns(out.extra, extra, arrays, 0)
            _add_columns(out.busy_tx, tx, busy.get(layout, []), len(extra))
            _add_columns(out.busy_rx, rx, busy.get(layout, []), len(extra) + len(tx))
        return out

    def rollups_between(self, wall0: float, wall1: float) -> List[Rollup]:
        """Minute rows whose minute starts in [wall0, wall1), ascending."""
        return [self._rollup(r) for r in self._query(
            f"SELECT {self._rollup_cols()} FROM rollup_1m "
            "WHERE minute >= ? AND minute < ? ORDER BY minute",
            (int(wall0 // 60), int(-(-wall1 // 60))))]

    def minute_window(self, first: int, end: int, *, with_sums: bool = False) -> MinuteWindow:
        """What an epilog needs of the minutes first <= minute < end (node/minutes.py): their
        columns, the distinct job lists, device peaks from the whole hours' rows and the other
        minutes' own; every counter's sums (blobs decoded) only `with_sums`. A store of an
        older schema is read as decoded Rollups, to the same result."""
        if self.version < 3:
            return from_rollups(self.rollups_between(first * 60.0, end * 60.0), with_sums)
        span = (first, end)
        minutes = self._query(
            "SELECT minute, samples, seconds, tx_bytes, rx_bytes, tx_max, rx_max FROM rollup_1m "
            "WHERE minute >= ? AND minute < ? ORDER BY minute", span)
        jobs: Optional[Set[str]] = set()
        for (j,) in self._query("SELECT DISTINCT jobs FROM rollup_1m "
                                "WHERE minute >= ? AND minute < ?", span):
            if j is None:
                jobs = None  # some minute did not keep its jobs
                break
            if j and jobs is not None:
                jobs.update(j.split(","))
        groups, complete = self._window_peaks(first, end, minutes)
        sums: Optional[Dict[str, int]] = None
        if with_sums:
            sums = {}
            for layout, blob in self._query("SELECT layout, sums FROM rollup_1m "
                                            "WHERE minute >= ? AND minute < ? ORDER BY minute", span):
                for k, v in zip(self._layout(layout)[0], _unpack(blob)):
                    sums[k] = sums.get(k, 0) + v
        tx, rx = max_peaks(groups)
        return MinuteWindow(minutes, jobs, (tx, rx), complete, sums)

    def _window_peaks(self, first: int, end: int, minutes: List[tuple]
                      ) -> Tuple[list, bool]:
        """The device-peak arrays covering minutes [first, end): one per whole hour whose row
        counts the same raw rows as its minutes, one per other minute; and whether every minute
        kept its peaks."""
        h0, h1 = -(-first // 60), end // 60  # the whole hours inside
        per_hour: Dict[int, int] = {}
        for row in minutes:
            if h0 * 60 <= row[0] < h1 * 60:
                per_hour[row[0] // 60] = per_hour.get(row[0] // 60, 0) + row[1]
        groups = []
        good: Set[int] = set()
        if h1 > h0:
            for hour, n, layout, blob in self._query(
                    "SELECT hour, samples, layout, peaks FROM rollup_1h WHERE hour >= ? AND hour < ?",
                    (h0, h1)):
                if blob is None or layout is None or n != per_hour.get(hour):
                    continue
                _, tx_names, rx_names = self._layout(layout)
                got = _device_peaks(tx_names, rx_names, blob)
                if got is not None:
                    groups.append(got)
                    good.add(hour)
        # The rest as runs of minutes: the head and the tail, and any hour that did not count.
        ranges: List[List[int]] = []
        m = first
        while m < end:
            if m // 60 in good and m % 60 == 0 and m + 60 <= end:
                m += 60
                continue
            stop = min(end, (m // 60 + 1) * 60)
            if ranges and ranges[-1][1] == m:
                ranges[-1][1] = stop
            else:
                ranges.append([m, stop])
            m = stop
        complete = True
        for lo, hi in ranges:
            for layout, blob in self._query("SELECT layout, peaks FROM rollup_1m "
                                            "WHERE minute >= ? AND minute < ?", (lo, hi)):
                _, tx_names, rx_names = self._layout(layout)
                got = None if blob is None else _device_peaks(tx_names, rx_names, blob)
                if got is None:
                    complete = False
                else:
                    groups.append(got)
        return groups, complete

    def counts(self) -> Dict[str, int]:
        """Row counts (for `status` and the benchmark)."""
        out = {}
        tables = ("samples", "rollup_1m") + (("rollup_1h",) if self.version >= 3 else ()) + (
            "layouts", "boots")
        for table in tables:
            out[table] = self._query(f"SELECT COUNT(*) FROM {table}", ())[0][0]
        return out


def encode_jobs(keys: Iterable[str]) -> Tuple[str, ...]:
    """Job keys as stored: sorted, unique, without ',' (the column separator)."""
    return tuple(sorted({k for k in keys if k and "," not in k}))
