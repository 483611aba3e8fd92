"""Job summaries in Slurm's accounting (efajob/accounting/): the AdminComment token, merging
with a site's own text, sacct's output, and the sync's choice of jobs against a real index
with a fake slurmdbd (tests/test_slurm_accounting.py runs the real one)."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import pytest
from conftest import cli_runner

from efajob.accounting import summary as sm
from efajob.accounting.slurmdb import SEP, AcctJob, parse_sacct, pick
from efajob.accounting.sync import pending, slurm_version, slurmdbd_cluster, sync
from efajob.cli.main import main
from efajob.config import Config, build_config
from efajob.errors import ConfigError, SlurmError, UsageError
from efajob.index import db
from efajob.index.update import update
from efajob.sim.jobstore import T0, build_store

ROW = {"verdict": "Warning", "num_nodes": 2, "elapsed_s": 3600.4, "tx_bytes": 10 ** 12,
       "rx_bytes": 5, "avg_gbps_per_node": 12.3456, "peak_gbps_per_node": 40.0,
       "findings": ["straggler", "rx_drops"], "records": 2, "restart": 1}


def test_token_round_trip_and_form():
    s = sm.from_row(ROW)
    t = sm.encode(s)
    assert t == ("efajob1:v=warning;n=2;s=3600;tx=1000000000000;rx=5;avg=12.346;peak=40;"
                 "f=rx_drops+straggler;rec=2;r=1")
    assert sm.decode(t) == s
    # Beside a site's text, and as Slurm 22.05's sacctmgr stores it (lower case).
    assert sm.decode(f"JS1:abc {t.upper().replace('EFAJOB1:', 'efajob1:')} ticket 7") == s
    assert set(t) <= set("abcdefghijklmnopqrstuvwxyz0123456789=;:.+_")
    assert sm.from_row({"verdict": "Running: problems seen"}) is None
    lean = sm.from_row({"verdict": "Healthy", "tx_bytes": float("nan"), "rx_bytes": -1})
    assert lean is not None and sm.encode(lean) == "efajob1:v=healthy;r=0"


@pytest.mark.parametrize("comment", [
    None, "", "efajob1", "efajob1:", "xefajob1:v=healthy", "efajob1:v=great", "efajob1:tx=1",
    "efajob1:v=healthy;tx=-1", "efajob1:v=healthy;tx=1e9", "efajob1:v=healthy;tx=１",
    "efajob1:v=healthy;tx=" + "9" * 30, "efajob1:v=healthy;avg=nan", "efajob1:v=healthy;avg=inf",
    "efajob1:v=healthy;peak=1e300", "efajob1:v=healthy;f=Drops+../x", "efajob1:v=healthy;v=failure",
    "efajob1:v=healthy;tx", "efajob1:v=healthy;;",
])
def test_hostile_or_garbled_comments_decode_to_nothing(comment):
    assert sm.decode(comment) is None


def test_merge_policies():
    t = sm.encode(sm.from_row(ROW))
    old = sm.encode(sm.from_row(dict(ROW, verdict="Healthy")))
    assert sm.merge(None, t, "append") == (t, "written")
    assert sm.merge("  ", t, "skip") == (t, "written")
    assert sm.merge(t, t, "append") == (None, "unchanged")
    assert sm.merge("ticket-42  checked", t, "append") == (f"ticket-42  checked {t}", "appended")
    assert sm.merge("ticket-42", t, "skip")[0] is None
    # Ours is replaced where it stands, the site's text around it kept byte for byte (also
    # under skip: the text is ours to update); a second copy of ours goes.
    assert sm.merge(f"a  {old} b {old}", t, "skip") == (f"a  {t} b", "replaced")
    assert sm.merge(t, t, "off") == (None, "off")
    with pytest.raises(ValueError):
        sm.merge(t, t, "overwrite")


def test_what_sacctmgr_would_alter():
    assert not sm.sacctmgr_alters("ticket-42 efajob1:v=healthy;r=0", (22, 5))
    assert sm.sacctmgr_alters("Ticket-42 efajob1:v=healthy;r=0", (22, 5))  # 22.05 lower-cases
    assert not sm.sacctmgr_alters("Ticket-42 efajob1:v=healthy;r=0", (23, 2))
    for bad in ('say "hi"', "it's", "a\\b", "two\nlines"):
        assert sm.sacctmgr_alters(bad, (24, 11))
    assert sm.sacctmgr_alters("Ticket", (0, 0))  # unknown version: the cautious side


def test_parse_sacct_keeps_pipes_and_newlines_in_comments():
    out = (f"12{SEP}12{SEP}alice{SEP}COMPLETED{SEP}efajob1:v=healthy;r=0\n"
           f"13{SEP}12_1{SEP}bob{SEP}CANCELLED by 0{SEP}a|b\nsecond line\n"
           f"14{SEP}14{SEP}carol{SEP}RUNNING{SEP}\n")
    rows = parse_sacct(out)
    assert [(r.job_id_raw, r.job_id, r.state, r.admin_comment) for r in rows] == [
        ("12", "12", "COMPLETED", "efajob1:v=healthy;r=0"),
        ("13", "12_1", "CANCELLED", "a|b\nsecond line"), ("14", "14", "RUNNING", "")]
    assert [r.finished for r in rows] == [True, True, False]
    a = AcctJob("1", "1", "alice", "COMPLETED", "")
    b = AcctJob("1", "1", "bob", "COMPLETED", "")
    assert pick([a, b], "alice") is a and pick([a, b], None) is None and pick([], "x") is None


def test_slurm_config_checks():
    assert slurmdbd_cluster({"AccountingStorageType": "accounting_storage/slurmdbd",
                             "ClusterName": "c1"}) == ("c1", None)
    assert slurmdbd_cluster({"AccountingStorageType": "accounting_storage/none"})[0] is None
    assert slurmdbd_cluster({"AccountingStorageType": "accounting_storage/slurmdbd"})[0] is None
    assert slurm_version({"SLURM_VERSION": "24.11.1"}) == (24, 11)
    assert slurm_version({"SLURM_VERSION": "garbage"}) == (0, 0)


def test_config_section():
    cfg = build_config({"accounting": {"admin_comment": "skip", "settle_s": 60}}, env={})
    assert cfg.accounting.admin_comment == "skip" and cfg.accounting.settle_s == 60
    with pytest.raises(ConfigError, match="append"):
        build_config({"accounting": {"admin_comment": "overwrite"}}, env={})
    with pytest.raises(ConfigError):
        build_config({"accounting": {"max_age_days": -1}}, env={})


# -- the sync, against a real index and a fake slurmdbd ------------------------------------
NOW = T0 + 86400.0


class FakeDB:
    """slurmdbd as SlurmDB shows it: {job id: AcctJob}; writes change it, or fail."""

    def __init__(self, jobs: Dict[str, AcctJob], fail: Tuple[str, ...] = ()):
        self.jobs, self.fail = jobs, fail
        self.reads: List[List[str]] = []
        self.writes: List[Tuple[str, str, Optional[str], str]] = []

    def read(self, job_ids, cluster):
        self.reads.append(list(job_ids))
        return {j: [self.jobs[j]] for j in job_ids if j in self.jobs}

    def write(self, job_id, cluster, user, value):
        if job_id in self.fail:
            raise SlurmError("sacctmgr modify job: slurmdbd is down")
        self.writes.append((job_id, cluster, user, value))
        j = self.jobs[job_id]
        self.jobs[job_id] = AcctJob(j.job_id_raw, j.job_id, j.user, j.state, value)


@pytest.fixture
def index(tmp_path):
    store = str(tmp_path / "store")
    build_store(store, jobs=6, now=NOW)
    cfg = Config(store=store, state_dir=str(tmp_path / "state"))
    update(cfg, now=NOW)
    conn = db.open_writer(cfg.job_index_path)
    yield cfg, conn
    conn.close()


def _slurm(conn, **states) -> Dict[str, AcctJob]:
    rows = conn.execute("SELECT job_id, user FROM jobs WHERE latest = 1").fetchall()
    return {j: AcctJob(j, j, u, states.get(f"j{j}", "COMPLETED"), "") for j, u in rows}


def _sync(conn, fake, policy="append", now=NOW, **kw):
    return sync(conn, fake, "sim", policy=policy, now=now, settle_s=600,  # type: ignore[arg-type]
                max_age_s=7 * 86400, version=(22, 5), **kw)


def test_sync_writes_each_finished_job_once(index):
    cfg, conn = index
    jobs = _slurm(conn, j1001="RUNNING")
    jobs["1002"] = AcctJob("1002", "1002", jobs["1002"].user, "COMPLETED", "ticket-9")
    jobs["1003"] = AcctJob("1003", "1003", jobs["1003"].user, "COMPLETED", "Say \"x\"")
    del jobs["1004"]  # not in slurmdbd (yet)
    fake = FakeDB(jobs, fail=("1005",))
    s = _sync(conn, fake)
    assert s.pending == 6 and len(fake.reads) == 1  # one sacct for the lot
    assert s.written == 2 and s.skipped == 1 and s.waiting == 2 and len(s.errors) == 1
    assert {w[0] for w in fake.writes} == {"1000", "1002"}
    assert fake.jobs["1002"].admin_comment.startswith("ticket-9 efajob1:v=")
    assert sm.decode(fake.jobs["1000"].admin_comment).tx_bytes == conn.execute(
        "SELECT tx_bytes FROM jobs WHERE job_id = '1000'").fetchone()[0]
    assert fake.jobs["1003"].admin_comment == "Say \"x\""  # quotes: left alone
    # At once again: nothing due (waiting and failed jobs are retried later, not now).
    assert _sync(conn, fake).pending == 0
    # A minute on the waiting jobs are asked again; ten minutes on the failed one too.
    fake.jobs["1001"] = AcctJob("1001", "1001", jobs["1001"].user, "COMPLETED", "")
    fake.fail = ()
    s = _sync(conn, fake, now=NOW + 61)
    assert s.pending == 2 and s.written == 1 and s.waiting == 1
    s = _sync(conn, fake, now=NOW + 700)
    assert {w[0] for w in fake.writes} == {"1000", "1001", "1002", "1005"}
    # A job re-indexed (a late record: its landing time moves) is written again, only if
    # its summary changed.
    conn.execute("UPDATE jobs SET landed = landed + 1, tx_bytes = 7 WHERE job_id = '1000'")
    conn.execute("UPDATE jobs SET landed = landed + 1 WHERE job_id = '1002'")
    s = _sync(conn, fake, now=NOW + 800)
    assert s.pending == 2 and s.written == 1 and s.unchanged == 1
    assert sm.decode(fake.jobs["1000"].admin_comment).tx_bytes == 7


def test_sync_waits_for_every_node_or_the_settle_time(index):
    cfg, conn = index
    conn.execute("UPDATE jobs SET records = 1, landed = ? WHERE job_id = '1000'", (NOW - 60,))
    fake = FakeDB(_slurm(conn))
    assert "1000" not in {w[0] for w in (_sync(conn, fake), fake.writes)[1]}
    _sync(conn, fake, now=NOW + 600)
    assert "1000" in {w[0] for w in fake.writes}
    # Older than max_age: never written; another cluster's rows: not this Slurm's jobs.
    conn.execute("DELETE FROM acct")
    conn.execute("UPDATE jobs SET landed = ? WHERE job_id = '1001'", (NOW - 8 * 86400,))
    conn.execute("UPDATE jobs SET cluster = 'other' WHERE job_id = '1002'")
    due = {r["job_id"] for r in pending(conn, "sim", now=NOW, settle_s=600,
                                        max_age_s=7 * 86400)}
    assert due == {"1003", "1004", "1005"}  # 1000: one record of two, not settled yet


def test_skip_policy_and_off(index):
    cfg, conn = index
    jobs = _slurm(conn)
    jobs["1000"] = AcctJob("1000", "1000", jobs["1000"].user, "COMPLETED", "ticket-9")
    fake = FakeDB(jobs)
    s = _sync(conn, fake, policy="skip")
    assert s.written == 5 and s.skipped == 1 and fake.jobs["1000"].admin_comment == "ticket-9"


def test_cli_sync_without_slurmdbd_says_why(tmp_path, monkeypatch):
    cfg_file = tmp_path / "efajob.toml"
    cfg_file.write_text(f'store = "{tmp_path}/store"\nstate_dir = "{tmp_path}/state"\n'
                        '[accounting]\nadmin_comment = "off"\n')
    (tmp_path / "store").mkdir()
    r = cli_runner().invoke(main, ["accounting", "sync", "--config", str(cfg_file)])
    assert r.exit_code == 0 and "nothing written: accounting.admin_comment is off" in r.output


# -- jobs --source sacct -------------------------------------------------------------------
def test_sacct_argv_passes_filters_verbatim():
    from efajob.accounting.listing import sacct_argv

    argv = sacct_argv(users={"b", "a"}, accounts={"bio"}, partitions={"gpu"}, names={"train"},
                      states={"TIMEOUT"}, nodes=["n[1-4]"], start="now-2days", cluster="c1")
    tail = argv[argv.index("-o") + 2:]
    assert tail == ["-u", "a,b", "-A", "bio", "-r", "gpu", "--name", "train", "-s", "TIMEOUT",
                    "-N", "n[1-4]", "-S", "now-2days", "-E", "now", "-M", "c1"]
    assert "-S" not in sacct_argv()  # the caller widens the window
    with pytest.raises(UsageError):
        sacct_argv(states={"ENDED"})


def test_sacct_rows_take_efa_columns_from_the_summary():
    from efajob.accounting.listing import FIELDS, list_from_sacct, parse_rows

    t = sm.encode(sm.from_row(ROW))

    def line(raw, state, comment, end="2026-12-04T10:00:05"):
        f = {"JobIDRaw": raw, "JobID": raw if raw != "13" else "12_1", "Cluster": "c1",
             "User": "alice", "Account": "bio", "Partition": "gpu", "JobName": "train",
             "State": state, "Start": "2026-12-04T10:00:00", "End": end, "ElapsedRaw": "5",
             "NNodes": "2", "AdminComment": comment}
        return SEP.join(f[k] for k in FIELDS)

    out = "\n".join([line("12", "COMPLETED", f"ticket {t}"), line("13", "TIMEOUT", "a\nb"),
                     line("14", "RUNNING", "", end="Unknown"), "garbage"]) + "\n"
    rows = parse_rows(out)
    assert [r["job_id"] for r in rows] == ["12", "13", "14"]
    assert rows[0]["tx_bytes"] == 10 ** 12 and rows[0]["verdict"] == "Warning"
    assert rows[0]["restart"] == 1 and rows[1]["alias"] == "12_1"
    assert rows[1]["verdict"] is None and rows[1]["state"] == "TIMEOUT"
    assert rows[2]["running"] and rows[2]["end"] is None

    class Backend:
        def __init__(self):
            self.calls = []

        def _cmd(self, argv):
            self.calls.append(argv)
            day = int(len(self.calls) >= 2)  # the second window holds the jobs
            return type("P", (), {"returncode": 0, "stdout": out if day else "", "stderr": ""})

    b = Backend()
    got = list_from_sacct(b, ["sacct"], limit=2, start_given=False, now=T0)
    assert len(b.calls) == 2 and [r["job_id"] for r in got] == ["14", "13"]
    b = Backend()
    assert list_from_sacct(b, ["sacct", "-S", "x"], limit=2, start_given=True) == []
    assert len(b.calls) == 1

    class Down:
        def _cmd(self, argv):
            return type("P", (), {"returncode": 1, "stdout": "",
                                  "stderr": "sacct: error: Slurm accounting storage is disabled"})
    with pytest.raises(SlurmError, match="disabled"):
        list_from_sacct(Down(), ["sacct"], limit=2, start_given=True)


def test_sacctmgr_write_checks_the_job_was_modified():
    from efajob.accounting.slurmdb import SlurmDB

    class Backend:
        def __init__(self, out, rc=0):
            self.out, self.rc, self.argv = out, rc, None

        def _cmd(self, argv):
            self.argv = argv
            return type("P", (), {"returncode": self.rc, "stdout": self.out, "stderr": ""})

    ok = Backend(" Modified jobs...\n  12 submitted at 2026-12-04T10:00:00\n")
    SlurmDB(ok).write("12", "c1", "alice", "efajob1:v=healthy;r=0")
    assert ok.argv[1:] == ["-i", "modify", "job", "where", "jobid=12", "cluster=c1", "user=alice",
                           "set", "AdminComment=efajob1:v=healthy;r=0"]
    # 24.11 prints "Modified jobs..." first whatever happens.
    for out, rc in ((" Modified jobs...\n  Nothing modified\n", 1),
                    (" Modified jobs...\n  Nothing modified\n", 0), ("", 1)):
        with pytest.raises(SlurmError):
            SlurmDB(Backend(out, rc)).write("12", "c1", None, "x")
