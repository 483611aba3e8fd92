"""The node's SQLite store: round trips, windows, rollups, retention, schema and failure modes."""
from __future__ import annotations

import os
import random
import sqlite3

import pytest

from efajob.errors import StoreError
from efajob.node.localstore import (SCHEMA_VERSION, LocalStore, SampleRow, current_boot_id,
                                    encode_jobs)

P5_DEVICES = [f"rdmap{b}s0" for s in (79, 96, 113, 130, 147, 164, 181, 198) for b in range(s, s + 4)]


def row(i: int, *, boot: str = "b1", mono0: float = 1000.0, wall0: float = 1_700_000_000.0,
        deltas=None, jobs=(), resets=(), seconds: float = 1.0) -> SampleRow:
    return SampleRow(
        boot_id=boot, mono=mono0 + i, wall=wall0 + i, seconds=seconds,
        deltas={"tx_bytes": 1000 * i, "rx_bytes": 10, "send_bytes": 3} if deltas is None else deltas,
        device_tx_bytes={"efa_0": 600 * i, "efa_1": 400 * i}, device_rx_bytes={"efa_0": 10},
        jobs=tuple(jobs), resets=tuple(resets),
    )


@pytest.fixture
def store(tmp_path):
    s = LocalStore.open(str(tmp_path / "state" / "efajob.db"))
    yield s
    s.close()


def test_round_trip_keeps_absent_counters_absent(store):
    r = SampleRow("b1", 5.5, 1_700_000_000.25, 0.5, {"tx_bytes": 2**64 - 1, "rdma_read_bytes": 0},
                  {"efa_0": 7}, {}, ("12", "13.1"), ("efa_0/tx_bytes",))
    store.add_sample(r)
    (got,) = store.samples_between("b1", 0, 10)
    assert got == r
    assert "rx_bytes" not in got.deltas  # absent, not zero
    assert got.rate("tx_bytes") == (2**64 - 1) / 0.5
    assert got.rate("rx_bytes") is None


def test_window_bounds_and_boots(store):
    for i in range(10):
        store.add_sample(row(i))
        store.add_sample(row(i, boot="b2"))
    got = store.samples_between("b1", 1002.0, 1005.0)
    assert [r.mono for r in got] == [1003.0, 1004.0, 1005.0]  # (mono0, mono1]
    assert all(r.boot_id == "b1" for r in got)
    assert store.samples_between("nope", 0, 1e9) == []
    assert store.jobs_between("nope", 0, 1e9) == set()


def test_jobs_between(store):
    for i in range(6):
        store.add_sample(row(i, jobs=("7",) if i < 3 else ("7", "9.2") if i < 5 else ()))
    assert store.jobs_between("b1", 999, 1002) == {"7"}
    assert store.jobs_between("b1", 999, 1010) == {"7", "9.2"}
    assert store.jobs_between("b1", 1004.5, 1010) == set()


def test_job_keys_with_commas_are_refused(store):
    with pytest.raises(StoreError, match="','"):
        store.add_sample(row(0, jobs=("1,2",)))
    assert encode_jobs(["3", "1", "3", "a,b", ""]) == ("1", "3")


def test_a_failed_insert_forgets_the_layout_it_made(store, monkeypatch):
    """A sample whose transaction rolls back after making a new layout row: the row is gone
    and its id may go to another layout, so the store must not keep it."""
    from efajob.node import localstore

    store.add_sample(row(0))
    real = localstore._pack
    monkeypatch.setattr(localstore, "_pack", lambda values: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # after the new layout row was inserted
        store.add_sample(row(1, deltas={"tx_bytes": 5, "rdma_read_bytes": 1}))
    monkeypatch.setattr(localstore, "_pack", real)
    other = row(2, deltas={"tx_bytes": 6, "send_wrs": 2})
    store.add_sample(other)  # a third layout: may take the id of the one rolled back
    again = row(3, deltas={"tx_bytes": 7, "rdma_read_bytes": 1})
    store.add_sample(again)
    got = store.samples_between("b1", 0, 1e9)
    assert [g.deltas for g in got] == [row(0).deltas, other.deltas, again.deltas]


def test_minute_rollups(store):
    wall0 = 1_700_000_010.5  # mid-minute: the first and last minutes are partial
    for i in range(150):
        store.add_sample(row(i, wall0=wall0, deltas={"tx_bytes": 100 * (i % 60), "rx_pkts": 1}))
    rolls = store.rollups_between(wall0 - 120, wall0 + 600)
    # Only complete minutes are rolled up: the last (current) one waits.
    minutes = {int((wall0 + i) // 60) for i in range(150)}
    assert [r.minute for r in rolls] == sorted(minutes)[:-1]
    first = rolls[0]
    idx = [i for i in range(150) if int((wall0 + i) // 60) == first.minute]
    assert first.samples == len(idx)
    assert first.sums["tx_bytes"] == sum(100 * (i % 60) for i in idx)
    assert first.sums["rx_pkts"] == len(idx)
    assert first.rate_max["tx_bytes"] == max(100 * (i % 60) for i in idx)
    assert first.rate_min["tx_bytes"] == min(100 * (i % 60) for i in idx)
    assert first.rate_avg("tx_bytes") == pytest.approx(first.sums["tx_bytes"] / len(idx))
    assert "rx_bytes" not in first.sums


def test_retention_deletes_in_batches_and_only_rolled_rows(tmp_path):
    s = LocalStore.open(str(tmp_path / "db"), retention_hours=1.0, rollup_days=1.0)
    wall0 = 1_700_000_000.0
    for i in range(2500):
        s.add_sample(row(i, wall0=wall0))
    assert s.counts()["samples"] == 2500
    # Two hours later: everything is expired, but one tick deletes one batch only.
    later = wall0 + 2 * 3600 + 2500
    s.add_sample(row(5000, wall0=later - 5000))
    n1 = s.counts()["samples"]
    assert 1 < n1 < 2501 and 2501 - n1 <= 1000
    for k in range(1, 5):
        s.add_sample(row(5000 + k, wall0=later - 5000))
    assert s.counts()["samples"] == 5  # the backlog is gone, new rows stay
    # Rollups of the deleted rows survive them.
    assert sum(r.samples for r in s.rollups_between(wall0, later)) >= 2500
    # Two days later the rollups expire too.
    s.add_sample(row(0, wall0=wall0 + 3 * 86400))
    assert s.rollups_between(wall0, later) == []
    s.close()


def test_p5_rows_are_compact(tmp_path):
    path = str(tmp_path / "db")
    s = LocalStore.open(path)
    rnd = random.Random(1)
    names = ["tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts", "rx_drops", "retrans_pkts",
             "send_bytes", "send_wrs", "recv_bytes", "recv_wrs", "rdma_read_bytes",
             "rdma_read_wrs", "rdma_read_resp_bytes", "rdma_read_wr_err", "rdma_write_bytes",
             "rdma_write_wrs", "rdma_write_recv_bytes", "rdma_write_wr_err", "retrans_bytes",
             "retrans_timeout_events", "unresponsive_remote_events", "impaired_remote_conn_events"]
    n = 2000
    for i in range(n):
        tx = {d: rnd.randrange(10**9, 12 * 10**9) for d in P5_DEVICES}
        rx = {d: rnd.randrange(10**9, 12 * 10**9) for d in P5_DEVICES}
        deltas = {k: rnd.randrange(0, 10**11) for k in names}
        s.add_sample(SampleRow("b", float(i), 1.7e9 + i, 1.0, deltas, tx, rx, ("42",), ()))
    s.close()
    db = sqlite3.connect(path)
    rollup = db.execute("SELECT AVG(LENGTH(sums) + LENGTH(rates)) FROM rollup_1m").fetchone()[0]
    assert rollup < 300, rollup  # ~30 days of them stay around 10 MB
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages, size = db.execute("PRAGMA page_count").fetchone()[0], db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    per_row = pages * size / n
    # Full random traffic on 32 devices: bounded by the packed layout (JSON would be ~2.5 KB).
    assert per_row < 800, per_row


def test_readonly_reader_alongside_writer(store, tmp_path):
    store.add_sample(row(1, jobs=("5",)))
    ro = LocalStore.open(store.path, readonly=True)
    try:
        assert [r.mono for r in ro.last_samples(5)] == [1001.0]
        store.add_sample(row(2))
        assert [r.mono for r in ro.last_samples(5)] == [1001.0, 1002.0]
        with pytest.raises(StoreError, match="read-only"):
            ro.add_sample(row(3))
    finally:
        ro.close()


def test_readonly_missing_file(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        LocalStore.open(str(tmp_path / "none.db"), readonly=True)


def test_corrupt_file_names_the_recovery(tmp_path):
    path = tmp_path / "efajob.db"
    path.write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(StoreError, match=r"corrupt.*mv .*efajob\.db .*efajob\.db\.corrupt"):
        LocalStore.open(str(path))


def test_damaged_pages_fail_quick_check(tmp_path):
    path = str(tmp_path / "efajob.db")
    s = LocalStore.open(path)
    for i in range(3000):
        s.add_sample(row(i))
    s.close()
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # scribble over the middle pages, keep the header intact
        f.seek(size // 2)
        f.write(os.urandom(16384))
    with pytest.raises(StoreError, match="corrupt"):
        s = LocalStore.open(path)
        try:
            s.check()
            s.samples_between("b1", 0, 1e9)
        finally:
            s.close()


def test_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "db")
    LocalStore.open(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    for ro in (False, True):
        with pytest.raises(StoreError, match="newer"):
            LocalStore.open(path, readonly=ro)


def test_empty_file_is_migrated(tmp_path):
    path = tmp_path / "db"
    path.write_bytes(b"")
    s = LocalStore.open(str(path))
    s.add_sample(row(0))
    s.close()
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_locked_store_is_a_clear_error(tmp_path):
    path = str(tmp_path / "db")
    s = LocalStore.open(path, timeout=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            s.add_sample(row(0))
        with pytest.raises(StoreError, match="locked"):
            LocalStore.open(str(tmp_path / "db"), timeout=0.05).add_sample(row(1))
    finally:
        other.execute("ROLLBACK")
        other.close()
    s.add_sample(row(2))  # usable again once the lock is gone
    assert [r.mono for r in s.samples_between("b1", 0, 1e9)] == [1002.0]
    s.close()


def test_current_boot_id(tmp_path):
    (tmp_path / "sys" / "kernel" / "random").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "random" / "boot_id").write_text("abc-123\n")
    assert current_boot_id(str(tmp_path)) == "abc-123"
    assert current_boot_id(str(tmp_path / "missing")) == "unknown"


# -- the jobs of the minute rollups (schema 2) -------------------------------------------------
def _jobs_at(i: int) -> tuple:
    """Who ran at second i of a 2-hour window: job 1 throughout, job 2 for a few seconds in
    minute 40, job 3 in the head (before the first whole minute) and job 4 in the last
    seconds (not rolled up yet)."""
    return (("1",) + (("2",) if 2400 <= i < 2405 else ()) + (("3",) if i < 20 else ())
            + (("4",) if i > 7190 else ()))


def _long_window(path: str) -> LocalStore:
    # wall0 20 s before a minute: rows 0-19 are the head, row 7,199 the last (in the open minute)
    s = LocalStore.open(path)
    for i in range(7200):
        s.add_sample(row(i, wall0=1_700_000_040.0 - 20, jobs=_jobs_at(i)))
    return s


def test_rollups_keep_their_minutes_jobs(tmp_path):
    from efajob.hooks.finish import _read_long_window

    s = _long_window(str(tmp_path / "db"))
    s.close()
    with LocalStore.open(str(tmp_path / "db"), readonly=True) as ro:
        rollups = ro.rollups_between(0, 2e9)
        assert all(r.jobs is not None for r in rollups)
        assert {j for r in rollups for j in r.jobs} == {"1", "2", "3"}  # 4: not rolled up yet
        assert ro.unrolled_jobs("b1", 0, 1e9) == {"1", "4"}
        off = 1_700_000_020.0 - 1000.0
        windows = ((999.0, 8199.0), (1100.0, 8100.0), (1000.0 + 2500, 8199.0))
        scanned = [ro.jobs_between("b1", *w) for w in windows]
        ro.jobs_between = None  # the scan is what the rollups' jobs replace
        for w, want in zip(windows, scanned):
            assert _read_long_window(ro, "b1", *w, off)[3] == want, w
        assert scanned[0] == {"1", "2", "3", "4"} and scanned[2] == {"1", "4"}


def downgrade(path: str, version: int) -> None:
    """Make a store as an older efajob left it (its columns and tables dropped)."""
    db = sqlite3.connect(path)
    if version < 3:
        for col in ("tx_bytes", "rx_bytes", "tx_max", "rx_max"):
            db.execute(f"ALTER TABLE rollup_1m DROP COLUMN {col}")
        db.execute("DROP TABLE rollup_1h")
    if version < 2:
        db.execute("ALTER TABLE rollup_1m DROP COLUMN jobs")
        db.execute("ALTER TABLE rollup_1m DROP COLUMN peaks")
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


def test_a_version_1_store_is_read_then_migrated(tmp_path):
    from efajob.hooks.finish import _read_long_window

    path = str(tmp_path / "db")
    _long_window(path).close()
    downgrade(path, 1)  # as efajob before schema 2 left it
    off = 1_700_000_020.0 - 1000.0
    with LocalStore.open(path, readonly=True) as ro:  # the epilog before the daemon restarts
        assert ro.version == 1
        assert all(r.jobs is None and r.device_peaks is None for r in ro.rollups_between(0, 2e9))
        assert _read_long_window(ro, "b1", 999.0, 8199.0, off)[3] == {"1", "2", "3", "4"}
    s = LocalStore.open(path)  # the daemon migrates: old minutes stay unknown
    s.add_sample(row(7260, wall0=1_700_000_040.0 - 20, jobs=("5",)))
    s.close()
    with LocalStore.open(path, readonly=True) as ro:
        assert ro.version == SCHEMA_VERSION == 3
        rollups = ro.rollups_between(0, 2e9)
        assert rollups[0].jobs is None and rollups[-1].jobs == ("1", "4")
        assert rollups[0].device_peaks is None and rollups[-1].device_peaks is not None
        assert _read_long_window(ro, "b1", 999.0, 8300.0, off)[3] == {"1", "2", "3", "4", "5"}


def test_rollups_keep_each_devices_fastest_rate(tmp_path):
    """A device's peak in a quiet minute (not among the busiest by node rate, which is where
    raw rows were read before schema 2): the rollups' peaks equal the peaks of every raw row."""
    from efajob.hooks.finish import _read_long_window
    from efajob.hooks.records import _fold_device_peaks, _row_peaks

    path = str(tmp_path / "db")
    s = LocalStore.open(path)
    rows = []
    for i in range(3600):
        busy = 600 <= i < 900  # five busy minutes on efa_0
        r = SampleRow("b1", 1000.0 + i, 1_700_000_040.0 - 20 + i, 0.5 if i == 3000 else 1.0,
                      {"tx_bytes": 10**9 if busy else 10**6},
                      {"efa_0": 10**9 if busy else 10**6, "efa_1": 7 * 10**6 if i == 3000 else 10},
                      {"efa_0": 5, "efa_1": 3 * 10**6 if i == 1500 else 1}, ("1",), ())
        rows.append(r)
        s.add_sample(r)
    s.close()
    want = _row_peaks(rows)[2:]
    off = 1_700_000_020.0 - 1000.0
    with LocalStore.open(path, readonly=True) as ro:
        head_tail, minutes, peak_rows, _ = _read_long_window(ro, "b1", 999.0, 4599.0, off)
        assert peak_rows == [] and minutes.peaks_complete
        tx, rx = _row_peaks(head_tail)[2:]
        _fold_device_peaks(minutes, tx, rx)
    assert (tx, rx) == want
    assert tx["efa_1"] == pytest.approx(7 * 10**6 / 0.5 * 8 / 1e9)  # the quiet minute's spike
