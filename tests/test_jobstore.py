"""Reading the job store: locating jobs (clusters, restarts, array/het ids, running jobs), reading
records (corrupt ones skipped with a reason), node status files, listing and --since."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pytest

from efajob.errors import AmbiguousJobError, JobNotFoundError, StoreError, UsageError
from efajob.store.reader import (find_job, list_clusters, list_job_dirs, load_job,
                                 parse_node_status, parse_record_name, parse_since,
                                 read_node_statuses, read_records, scan_job_dir)

NOW = 1714560000.0


def rec(job_id="5", host="n1", restart=0, cluster="c1", **kw):
    d = {"schema": "efajob/job-node-record", "version": 1, "cluster": cluster, "job_id": job_id,
         "restart": restart, "key": job_id if not restart else f"{job_id}.{restart}", "host": host,
         "devices": [], "totals": {}}
    d.update(kw)
    return d


def put(store, r, name=None):
    d = os.path.join(store, r["cluster"], "jobs", r["job_id"])
    os.makedirs(d, exist_ok=True)
    name = name or r["host"] + (f".{r['restart']}" if r["restart"] else "") + ".json"
    with open(os.path.join(d, name), "w") as f:
        json.dump(r, f)
    return os.path.join(d, name)


def status(store, cluster, node, jobs, t=NOW - 10, **kw):
    d = os.path.join(store, cluster, "nodes")
    os.makedirs(d, exist_ok=True)
    doc = {"schema": "efajob/node-status", "version": 1, "cluster": cluster, "node": node,
           "time": t, "tx_gbps": 10.0, "rx_gbps": 9.0, "jobs": jobs}
    doc.update(kw)
    with open(os.path.join(d, node + ".json"), "w") as f:
        json.dump(doc, f)


@pytest.mark.parametrize("name,want", [
    ("n1.json", ("n1", 0)), ("n1.2.json", ("n1", 2)), ("ip-10-0-0-1.json", ("ip-10-0-0-1", 0)),
    (".n1.json.123.abcd.tmp", None), (".n1.json", None), ("n1.txt", None), ("n1.0.json", ("n1.0", 0)),
    ("bad name.json", None), ("gpu.3.0.json", ("gpu.3", 0)), ("gpu.3.2.json", ("gpu.3", 2)),
    ("gpu.3.json", ("gpu", 3)), ("10.0.0.7.0.json", ("10.0.0.7", 0)),
])
def test_parse_record_name(name, want):
    assert parse_record_name(name) == want


@pytest.mark.parametrize("host", ["n1", "gpu.3", "gpu", "a.b.10", "n1.0", "ip-10-0-0-1", "x.07"])
@pytest.mark.parametrize("restart", [0, 1, 3, 999999])
def test_record_names_read_back_as_written(host, restart):
    from efajob.hooks.outbox import store_path

    path = store_path("/s", {"cluster": "c1", "job_id": "5", "host": host, "restart": restart})
    assert parse_record_name(os.path.basename(path)) == (host, restart)


def test_a_host_ending_in_digits_and_another_hosts_restart_do_not_collide(tmp_path):
    """gpu.3 (restart 0) and gpu (restart 3) once shared gpu.3.json: the later overwrote the
    earlier, and gpu.3's record read back as gpu's restart 3 and was skipped."""
    from efajob.hooks.outbox import store_path

    recs = {h: {"cluster": "c1", "job_id": "5", "host": h, "restart": r}
            for h, r in (("gpu.3", 0), ("gpu", 3))}
    paths = {h: store_path(str(tmp_path), rec) for h, rec in recs.items()}
    assert len(set(paths.values())) == 2
    for p in paths.values():
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "w").close()
    assert scan_job_dir(os.path.dirname(paths["gpu"])) == {0: [paths["gpu.3"]], 3: [paths["gpu"]]}


def test_find_plain_and_restarts(tmp_path):
    s = str(tmp_path)
    p1, p2 = put(s, rec(host="n1")), put(s, rec(host="n2"))
    put(s, rec(host="n1", restart=1))
    put(s, rec(host="n1"), name=".n1.json.99.abcd.tmp")  # a writer's temp file: never read
    f = find_job(s, "5", now=NOW)
    assert (f.cluster, f.restart, f.restarts, f.restart_defaulted) == ("c1", 1, (0, 1), True)
    assert len(f.paths) == 1
    f = find_job(s, "5", restart=0, now=NOW)
    assert f.paths == (p1, p2) and not f.restart_defaulted
    with pytest.raises(JobNotFoundError, match="no restart 4"):
        find_job(s, "5", restart=4, now=NOW)


def test_find_ambiguous_clusters(tmp_path):
    s = str(tmp_path)
    put(s, rec(cluster="c1"))
    put(s, rec(cluster="c2"))
    with pytest.raises(AmbiguousJobError, match="c1, c2") as e:
        find_job(s, "5", now=NOW)
    assert e.value.exit_code == 6
    assert find_job(s, "5", cluster="c2", now=NOW).cluster == "c2"


def test_not_found_and_bad_input(tmp_path):
    s = str(tmp_path)
    put(s, rec())
    with pytest.raises(JobNotFoundError, match="job 6 has no records") as e:
        find_job(s, "6", now=NOW)
    assert e.value.exit_code == 5
    with pytest.raises(UsageError):
        find_job(s, "../etc", now=NOW)
    with pytest.raises(UsageError):
        find_job(s, "5", cluster="../x", now=NOW)
    with pytest.raises(StoreError, match="does not exist"):
        find_job(str(tmp_path / "nope"), "5", now=NOW)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        list_clusters(str(f))


def test_array_and_het_ids(tmp_path):
    s = str(tmp_path)
    # Records are filed under SLURM_JOB_ID; they carry the array and het ids.
    put(s, rec(job_id="41", array_job_id="40", array_task_id="3"))
    put(s, rec(job_id="42", array_job_id="40", array_task_id="4"))
    put(s, rec(job_id="51", het_job_id="50", het_job_offset="1"))
    assert find_job(s, "40_3", now=NOW).job_id == "41"
    assert find_job(s, "50+1", now=NOW).job_id == "51"
    with pytest.raises(JobNotFoundError):
        find_job(s, "40_9", now=NOW)
    # Directories named by the array form (another writer): the base id lists its parts.
    put(s, rec(job_id="70_1"))
    put(s, rec(job_id="70_2"))
    with pytest.raises(AmbiguousJobError, match="array job; report one of its parts: 70_1, 70_2"):
        find_job(s, "70", now=NOW)


def test_running_job_from_node_status(tmp_path):
    s = str(tmp_path)
    os.makedirs(os.path.join(s, "c1", "jobs"))
    status(s, "c1", "n1", [{"key": "9", "job_id": "9", "user": "u", "start": NOW - 60}])
    status(s, "c1", "n2", ["9"])  # a bare key works too
    status(s, "c1", "n3", [{"key": "9", "job_id": "9"}], t=NOW - 3600)  # stale
    f = find_job(s, "9", now=NOW)
    assert f.paths == () and sorted(f.live) == ["n1", "n2"]
    assert f.live["n1"].jobs[0].start == NOW - 60 and f.live["n1"].tx_gbps == 10.0
    with pytest.raises(JobNotFoundError):
        find_job(s, "9", now=NOW + 3600)


def test_read_records_skips_bad_files(tmp_path):
    s = str(tmp_path)
    good = put(s, rec(host="n1"))
    half = put(s, rec(host="n2"))
    with open(half, "r+") as f:
        f.truncate(20)
    wrong = put(s, rec(host="n3", schema="other"))
    newer = put(s, rec(host="n4", version=2))
    moved = put(s, rec(host="n5"), name="n6.json")
    other = put(s, rec(host="n7", job_id="8"), name="n7.json")
    loaded = read_records([good, half, wrong, newer, moved], job_id="5", restart=0)
    assert [r["host"] for r in loaded.records] == ["n1"]
    why = dict(loaded.skipped)
    assert "not valid JSON" in why[half] and "half-written" in why[half]
    assert why[wrong] == "not a job-node record"
    assert "version 2 is not supported" in why[newer]
    assert "not the 'n6' of its file name" in why[moved]
    assert "holds job '8', not 5" in dict(read_records([other], job_id="5").skipped)[other]
    assert "vanished" in dict(read_records([str(tmp_path / "x.json")]).skipped)[str(tmp_path / "x.json")]


@pytest.mark.parametrize("text,why", [
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"schema": "efajob/job-node-record", "totals": {"tx_bytes": 1%s}}' % ("0" * 400,),
     "integer of 401 digits out of range"),
    ('{"schema": "efajob/job-node-record", "elapsed_s": 1e400}', "number 1e400 out of range"),
    ('{"schema": "efajob/job-node-record", "elapsed_s": NaN}', "NaN is not a number"),
    ('{"schema": "efajob/job-node-record", "elapsed_s": -Infinity}', "-Infinity is not a number"),
])
def test_hostile_records_are_skipped_with_a_reason(tmp_path, text, why):
    """Anyone who can write a record (its job's owner, with private_records) once crashed every
    listing with RecursionError or OverflowError; now the record is skipped and says why."""
    path = put(str(tmp_path), rec(host="n1"))
    with open(path, "w") as f:
        f.write(text)
    loaded = read_records([path], job_id="5", restart=0)
    assert loaded.records == [] and why in dict(loaded.skipped)[path]


def test_checked_parser_keeps_every_real_value():
    """What the writers really write parses exactly as json does: u64 counters to 2^64 - 1,
    small and large floats, digits and "NaN" inside strings."""
    from efajob.values import loads_checked

    doc = {"c": (1 << 64) - 1, "neg": -5, "f": 1.5e-300, "g": 1.7976931348623157e+308,
           "name": "NaN Infinity 123456789012345678901234", "t": 1700000000.123}
    data = json.dumps(doc).encode()
    assert loads_checked(data) == json.loads(data) == doc
    with pytest.raises(ValueError, match="out of range"):
        loads_checked(json.dumps({"c": 10 ** 20}).encode())  # 21 digits


@pytest.mark.parametrize("text", [b'{"a": NaN}', b'[Infinity]', b'{"a": [1, -Infinity]}',
                                  b'{"a": 1e400}', b'[1E+999]', b'[123456789012345678901]'])
def test_checked_parser_refuses_what_is_not_a_counter(text):
    from efajob.values import loads_checked

    with pytest.raises(ValueError):
        loads_checked(text)


def test_capital_letters_keep_the_fast_parser():
    """Every status file holds a port state like "4: ACTIVE": that alone must not send it
    through the checking parser (1,100 parse_int calls for a p5's file)."""
    from efajob.values import _suspect

    assert not _suspect(b'{"state": "4: ACTIVE", "name": "INIT", "n": 18446744073709551615}')
    assert _suspect(b'{"name": "NaN"}')  # a false alarm: only the slower parse


def test_load_job(tmp_path):
    s = str(tmp_path)
    put(s, rec(host="n1"))
    loaded = load_job(find_job(s, "5", now=NOW))
    assert len(loaded.records) == 1 and not loaded.skipped


def test_node_status_parsing(tmp_path):
    assert parse_node_status({"node": "../x"}) is None
    assert parse_node_status([]) is None
    st = parse_node_status({"node": "n1", "time": NOW, "tx_gbps": True,
                            "jobs": ["5.1", {"job_id": "6", "restart": 2}, {"key": "../x"}, 7]})
    assert st.tx_gbps is None and [(j.job_id, j.restart) for j in st.jobs] == [("5", 1), ("6", 2)]
    assert st.instance_type is None
    assert parse_node_status({"node": "n1", "instance_type": "p5.48xlarge"}).instance_type == "p5.48xlarge"
    assert parse_node_status({"node": "n1", "instance_type": 5}).instance_type is None
    s = str(tmp_path)
    status(s, "c1", "n1", [])
    with open(os.path.join(s, "c1", "nodes", "n2.json"), "w") as f:
        f.write("{half")
    assert list(read_node_statuses(s, "c1")) == ["n1"]


def test_list_job_dirs_newest_first_and_since(tmp_path):
    s = str(tmp_path)
    for i, jid in enumerate(("3", "1", "2")):
        put(s, rec(job_id=jid))
        os.utime(os.path.join(s, "c1", "jobs", jid), (NOW - 100 + i, NOW - 100 + i))
    os.makedirs(os.path.join(s, "c1", "jobs", "not-a-job"))
    assert [d.job_id for d in list_job_dirs(s)] == ["2", "1", "3"]
    assert [d.job_id for d in list_job_dirs(s, since=NOW - 99)] == ["2", "1"]


@pytest.mark.parametrize("text,want", [
    ("90m", NOW - 5400), ("6h", NOW - 6 * 3600), ("2d", NOW - 2 * 86400), ("1w", NOW - 7 * 86400),
    ("1714000000", 1714000000.0),
    ("2024-05-01T10:00:00+00:00", datetime(2024, 5, 1, 10, tzinfo=timezone.utc).timestamp()),
    ("2024-05-01T10:00Z", datetime(2024, 5, 1, 10, tzinfo=timezone.utc).timestamp()),
])
def test_parse_since(text, want):
    assert parse_since(text, NOW) == want


def test_parse_since_rejects_garbage():
    with pytest.raises(UsageError, match="--since"):
        parse_since("last tuesday", NOW)


@pytest.mark.parametrize("bad", [10**400, 1e308 * 10, float("nan"), -5, True, "12"])
def test_node_status_with_corrupt_numbers_is_tolerated(bad):
    from efajob.store.reader import parse_node_status

    st = parse_node_status({"node": "n1", "time": bad, "tx_gbps": bad, "rx_gbps": 1.5,
                            "jobs": [{"key": "7", "user": "u", "start": bad}]})
    assert st is not None and st.wall is None and st.tx_gbps is None and st.rx_gbps == 1.5
    assert st.jobs[0].start is None


def _bounded(fn, timeout=120):
    """fn() in a thread: a regression that blocks fails the test instead of hanging the run."""
    import threading

    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn()), daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked reading the store"
    return out["v"]


def test_a_fifo_in_the_store_is_skipped_not_waited_on(tmp_path):
    """Issue 13, case 1: a FIFO (standing in for a hung mount) made every reader of the store
    block forever in open(2)."""
    s = str(tmp_path)
    good = put(s, rec(host="n1"))
    fifo = os.path.join(os.path.dirname(good), "n2.json")
    os.mkfifo(fifo)
    loaded = _bounded(lambda: read_records([good, fifo], job_id="5", restart=0))
    assert [r["host"] for r in loaded.records] == ["n1"]
    assert dict(loaded.skipped)[fifo] == "unreadable: not a regular file"
    status(s, "c1", "n1", [])
    os.mkfifo(os.path.join(s, "c1", "nodes", "n2.json"))
    assert sorted(_bounded(lambda: read_node_statuses(s, "c1"))) == ["n1"]


def test_names_with_a_trailing_newline_are_not_names(tmp_path):
    """`$` matches before a final newline: a record naming host "n1\\n", or a cluster directory
    "c1\\n", would pass a `^...$` check. The reader's checks end at the end."""
    s = str(tmp_path)
    path = put(s, rec(host="n1\n"), name="n1.json")
    assert dict(read_records([path]).skipped)[path] == "no valid host"
    os.makedirs(os.path.join(s, "c2\n"))
    assert list_clusters(s) == ["c1"]
    assert parse_record_name("n1\n.json") is None


def _status(jobs, recent=None, job_recent=None) -> dict:
    doc = {"schema": "efajob/node-status", "version": 1, "cluster": "c1", "node": "n1",
           "time": 100.0, "tx_gbps": 1.0, "rx_gbps": 2.0,
           "jobs": [dict({"key": j, "job_id": j, "restart": 0, "user": "alice", "start": 50.0},
                         **({"recent": job_recent} if job_recent else {})) for j in jobs]}
    if recent is not None:
        doc["recent"] = recent
    return doc


WINDOW = {"seconds": 60.0, "counters": {"tx_bytes": 5}, "devices": {
    "rdmap0s6": {"counters": {"tx_bytes": 5}, "device_counters": {}}},
    "resets": [], "vanished": [], "appeared": []}


@pytest.mark.parametrize("doc", [
    _status(["7"], WINDOW),                       # the daemon's layout: recent last
    _status(["7"], WINDOW, job_recent=WINDOW),    # a job's own window too (inside the list)
    _status(["7"]),                               # no window
    {"recent": WINDOW, **_status(["7"])},         # recent first: parsed whole
    _status(["7"], {"seconds": 60.0, "counters": {"x": '"recent": 1'}}),  # the key in a string
    dict(_status(["7"], WINDOW), zz={"a": 1}),    # an object after the window: parsed whole
])
def test_status_window_is_parsed_on_demand_with_the_same_result(tmp_path, doc):
    """load_status leaves the top-level window unparsed until node_window asks; whatever the
    layout, the node and its window come out as a whole parse gives them."""
    from efajob.store.reader import load_status, node_window, parse_node_status

    from efajob.daemon.nodestatus import encode_node_status

    texts = [json.dumps(doc), json.dumps(doc, indent=2), json.dumps(doc, sort_keys=True),
             encode_node_status(doc).decode()]  # the daemon's; older daemons sorted all keys
    assert json.loads(texts[-1]) == doc
    for text in texts:
        data = text.encode()
        lazy, whole = parse_node_status(load_status(data)), parse_node_status(json.loads(text))
        assert lazy == whole and node_window(lazy) == node_window(whole)
        assert lazy.jobs[0].recent == whole.jobs[0].recent


def test_a_garbled_window_leaves_the_node_without_one(tmp_path):
    from efajob.store.reader import load_status, node_window, parse_node_status

    good = json.dumps(_status(["7"], WINDOW))
    bad = good.replace('"seconds": 60.0', '"seconds": 6e999999')
    st = parse_node_status(load_status(bad.encode()))
    assert st is not None and st.jobs[0].job_id == "7" and node_window(st) is None
    broken = good[:good.rindex("}")]  # cut short: not a status file at all
    with pytest.raises(ValueError):
        load_status(broken.encode())
    d = tmp_path / "store" / "c1" / "nodes"
    d.mkdir(parents=True)
    (d / "n1.json").write_text(good)
    st = read_node_statuses(str(tmp_path / "store"), "c1")["n1"]
    assert node_window(st) is not None and node_window(st).counters == {"tx_bytes": 5}
