"""A long window's minutes read from the store's columns and hour rows (schema 3) must say
exactly what the decoded minute rollups say: every window, after a migration, with hours that
do not count, and in the record an epilog writes."""
from __future__ import annotations

import random
import shutil
import sqlite3

import pytest

from efajob.hooks.finish import _read_long_window
from efajob.hooks.records import JobIdentity, build_record
from efajob.node import localstore
from efajob.node.localstore import LocalStore, SampleRow
from efajob.node.minutes import from_rollups
from efajob.node.readings import DeviceReading, Snapshot
from tests.test_localstore import downgrade

MONO0, WALL0 = 1000.0, 1_700_001_250.0  # 50 s before minute 28,333,355; mid-hour
STEP = 5.0
ROWS = int(4 * 3600 / STEP)  # four hours of ticks


def _fleet_row(rng: random.Random, i: int) -> SampleRow:
    """Rows with what changes on a real node: a device appears after 70 minutes, rx_bytes is
    absent for a while, jobs come and go, a quiet device spikes once, an extra counter."""
    t = i * STEP
    devs = ["efa_0", "efa_1"] + (["efa_2"] if t > 4200 else [])
    deltas = {"tx_bytes": rng.randrange(10 ** 9), "send_bytes": rng.randrange(100)}
    if not 6000 <= t < 6200:
        deltas["rx_bytes"] = rng.randrange(10 ** 9)
    jobs = ("7",) + (("8",) if 2000 <= t < 2080 else ()) + (("9.1",) if t > 12000 else ())
    tx = {d: rng.randrange(10 ** 8) for d in devs}
    if t == 8645:
        tx["efa_1"] = 10 ** 11
    return SampleRow("b1", MONO0 + i * STEP, WALL0 + i * STEP, STEP, deltas, tx,
                     {d: rng.randrange(10 ** 8) for d in devs}, jobs, ())


def _fill(path: str) -> None:
    rng = random.Random(5)
    with LocalStore.open(path, rollup_days=3650, retention_hours=24 * 3650) as s:
        for i in range(ROWS):
            s.add_sample(_fleet_row(rng, i))


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("minutes") / "db")
    _fill(path)
    return path


def _same(got, want) -> None:
    assert got.minutes == want.minutes
    assert (got.samples, got.tx_max, got.rx_max) == (want.samples, want.tx_max, want.rx_max)
    assert got.jobs == want.jobs
    assert got.device_peaks == want.device_peaks and got.peaks_complete == want.peaks_complete
    assert got.sums == want.sums and list(got.sums or ()) == list(want.sums or ())


def _windows(first_minute: int):
    f = first_minute
    return [(f, f + 240), (f + 1, f + 239), (f + 10, f + 130), (f + 5, f + 65), (f + 100, f + 101),
            (f + 30, f + 30), (f - 50, f + 500)]


def test_columns_and_hours_say_what_the_rollups_say(filled):
    first = int(-(-WALL0 // 60))
    with LocalStore.open(filled, readonly=True) as ro:
        assert ro.version == 3
        hours = ro._query("SELECT COUNT(*) FROM rollup_1h", ())[0][0]
        assert hours == 5  # four hours starting mid-hour touch five
        for lo, hi in _windows(first):
            for sums in (False, True):
                want = from_rollups(ro.rollups_between(lo * 60.0, hi * 60.0), sums)
                _same(ro.minute_window(lo, hi, with_sums=sums), want)
        w = ro.minute_window(first, first + 240)
        assert w.peaks_complete and w.jobs == {"7", "8", "9.1"}
        assert set(w.device_peaks[0]) == {"efa_0", "efa_1", "efa_2"}
        assert w.device_peaks[0]["efa_1"] == 10 ** 11 / STEP  # one spike in a quiet device
        assert any(m[4] is None for m in w.minutes)  # rx_bytes absent: absent, not zero


def test_an_hour_that_does_not_count_is_read_from_its_minutes(filled, tmp_path):
    path = str(tmp_path / "db")
    shutil.copy(filled, path)
    first = int(-(-WALL0 // 60))
    hour = -(-first // 60) + 1  # a whole hour inside
    db = sqlite3.connect(path)
    # Its row counts a row its minutes do not (as after a partial expiry) and claims a peak.
    (layout,) = db.execute("SELECT layout FROM rollup_1h WHERE hour = ?", (hour,)).fetchone()
    n = db.execute("SELECT COUNT(*) FROM rollup_1h").fetchone()[0]
    db.execute("UPDATE rollup_1h SET samples = samples + 1, peaks = ? WHERE hour = ?",
               (localstore._pack_doubles([1e30] * 6), hour))
    db.execute("DELETE FROM rollup_1h WHERE hour = ?", (hour + 1,))  # and the next has none
    db.commit()
    db.close()
    assert n == 5 and layout is not None
    with LocalStore.open(path, readonly=True) as ro:
        for lo, hi in _windows(first):
            _same(ro.minute_window(lo, hi, with_sums=True),
                  from_rollups(ro.rollups_between(lo * 60.0, hi * 60.0), True))


def test_minutes_merged_in_pieces_keep_their_hour(tmp_path, monkeypatch):
    """A backlog rolled up a few rows at a time (after a restart) splits minutes across
    merges: each hour still counts every row once and keeps the max of its minutes."""
    monkeypatch.setattr(localstore, "_ROLLUP_ROWS", 7)
    path = str(tmp_path / "db")
    _fill(path)
    with LocalStore.open(path) as s:  # the backlog drains on the next ticks
        for i in range(ROWS, ROWS + 240):
            s.add_sample(_fleet_row(random.Random(i), i))
    first = int(-(-WALL0 // 60))
    with LocalStore.open(path, readonly=True) as ro:
        for hour, n in ro._query("SELECT hour, samples FROM rollup_1h", ()):
            assert n == ro._query("SELECT SUM(samples) FROM rollup_1m WHERE minute / 60 = ?",
                                  (hour,))[0][0]
        for lo, hi in _windows(first):
            _same(ro.minute_window(lo, hi, with_sums=True),
                  from_rollups(ro.rollups_between(lo * 60.0, hi * 60.0), True))


def test_a_version_2_store_reads_the_same_before_and_after_its_migration(filled, tmp_path):
    path = str(tmp_path / "db")
    shutil.copy(filled, path)
    first = int(-(-WALL0 // 60))
    with LocalStore.open(filled, readonly=True) as ro:
        now = [ro.minute_window(lo, hi, with_sums=True) for lo, hi in _windows(first)]
    downgrade(path, 2)
    with LocalStore.open(path, readonly=True) as ro:  # an upgraded epilog, the old daemon
        assert ro.version == 2
        for w, (lo, hi) in zip(now, _windows(first)):
            _same(ro.minute_window(lo, hi, with_sums=True), w)
    LocalStore.open(path).close()  # the daemon restarts: migrated, columns and hours filled
    with LocalStore.open(path, readonly=True) as ro:
        assert ro.version == 3
        assert ro._query("SELECT COUNT(*) FROM rollup_1m WHERE tx_max IS NULL", ())[0][0] == 0
        for w, (lo, hi) in zip(now, _windows(first)):
            _same(ro.minute_window(lo, hi, with_sums=True), w)


def _snap(mono: float, tx: int) -> Snapshot:
    devs = {d: DeviceReading(d, 1, {"tx_bytes": tx, "rx_bytes": tx // 2}, {})
            for d in ("efa_0", "efa_1", "efa_2")}
    return Snapshot(mono=mono, wall=mono - MONO0 + WALL0, devices=devs)


@pytest.mark.parametrize("start", [True, False])
def test_the_record_does_not_depend_on_the_schema(filled, tmp_path, start):
    """What an epilog writes for a 3.5-hour job, from the schema-3 store and from the same
    rows as a schema-2 store (decoded rollups): equal, key for key."""
    old = str(tmp_path / "db")
    shutil.copy(filled, old)
    downgrade(old, 2)
    mono0, mono1 = MONO0 + 123.0, MONO0 + 3.5 * 3600 + 7.0
    ident = JobIdentity(cluster="c", job_id="7", restart=0, host="n1", start_mono=mono0,
                        start_wall=mono0 - MONO0 + WALL0)
    records = []
    for path in (filled, old):
        with LocalStore.open(path, readonly=True) as ro:
            rows, minutes, peak_rows, jobs = _read_long_window(
                ro, "b1", mono0, mono1, WALL0 - MONO0, with_sums=not start)
        assert minutes is not None and len(minutes) > 200 and peak_rows == []
        records.append(build_record(ident, _snap(mono0, 0) if start else None, _snap(mono1, 10 ** 12),
                                    rows, minutes=minutes, shared=jobs, instance_type="p5.48xlarge"))
    assert records[0] == records[1]
    assert list(records[0]["totals"]) == list(records[1]["totals"])
    assert records[0]["daemon_samples"] > 2000 and len(records[0]["series"]["t"]) > 100
