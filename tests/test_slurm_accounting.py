"""Slurm's accounting end to end (issue 16): a real slurmdbd over a private MariaDB on
127.0.0.1 (tests/slurm_cluster.py, accounting=True). Jobs run under two accounts and two
names, `efajob index update` writes their summaries into AdminComment, `sacct` shows them,
`efajob jobs` filters agree with sacct's own filters on the same jobs, and `efajob report` of a
job pruned from the store answers from the summary. Slurm or MariaDB missing: skipped
locally, a failure in CI.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Dict, List

import pytest

import slurm_cluster as sc
from conftest import require
from efajob.accounting.summary import decode
from test_slurm_e2e import script, srun_all, traffic

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


@pytest.fixture(scope="module")
def acl(tmp_path_factory):
    require("root", os.geteuid() == 0, "slurmd runs the test jobs and hooks as root")
    if sc.missing_binaries(accounting=True) and not shutil.which("apt-get"):
        require("Slurm accounting", False,
                f"missing {', '.join(sc.missing_binaries(accounting=True))}")
    c = sc.SlurmCluster(str(tmp_path_factory.mktemp("slurm-acct")), nodes=3, accounting=True,
                        interval=0.2)
    try:
        c.start()
    except sc.HarnessError as e:
        if sc.missing_binaries(accounting=True):
            require("Slurm accounting", False, str(e))
        pytest.fail(f"accounting cluster did not start: {e}")
    try:
        yield c
    finally:
        c.stop()


def _efajob(c: sc.SlurmCluster, *args: str, check: bool = True):
    r = c.run(c.efajob, *args, check=False, timeout=180,
              env=dict(c.env, EFAJOB_CONFIG=c.lay.efajob_conf))
    if check and r.returncode != 0:
        raise AssertionError(f"efajob {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r


@pytest.fixture(scope="module")
def ran(acl):
    """Four finished jobs, indexed and summarised: {label: job id}; plus the test's window."""
    c = acl
    t0 = time.time() - 2
    step = srun_all(2, traffic(c, "a", "$((20+10*SLURM_NODEID))", "10", 1.0))
    jobs = {
        "train_bio": c.sbatch("-N2", "-A", "bio", "-J", "train", script(c, "acct_train", step)),
        "eval_phys": c.sbatch("-N1", "-A", "phys", "-J", "eval", wrap="true"),
        "train_phys_failed": c.sbatch("-N1", "-A", "phys", "-J", "train", wrap="exit 3"),
        "site_bio": c.sbatch("-N1", "-A", "bio", "-J", "site", wrap="true"),
    }
    # Cancelled while running: CANCELLED is a state only Slurm knows (the records say FAILED).
    jobs["cancelled_bio"] = c.sbatch("-N1", "-A", "bio", "-J", "long", wrap="sleep 300")
    c.wait_running(jobs["cancelled_bio"])
    c.run("scancel", jobs["cancelled_bio"])
    hosts: Dict[str, List[str]] = {}
    for label, j in jobs.items():
        c.wait_done(j)
        hosts[label] = c.run("scontrol", "show", "hostnames",
                             c.sacct("-j", j, "--format=NodeList")[0][0]).stdout.split()
        c.wait_records(j, hosts[label])
    ids = ",".join(jobs.values())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # slurmdbd hears of a job's end after squeue does
        states = [r[0] for r in c.sacct("-j", ids, "--format=State")]
        if len(states) == len(jobs) and all(s.split()[0] in sc.TERMINAL_STATES for s in states):
            break
        time.sleep(sc.POLL)
    # A site's own note, there before efajob writes: it must be kept.
    c.run("sacctmgr", "-i", "modify", "job", "where", f"jobid={jobs['site_bio']}", "set",
          "AdminComment=ticket-42 checked")
    r = _efajob(c, "index", "update")
    return {"jobs": jobs, "hosts": hosts, "t0": t0, "update": r.stderr}


def comments(c: sc.SlurmCluster, ids) -> Dict[str, str]:
    return {j: comment for j, comment in c.sacct("-j", ",".join(ids),
                                                 "--format=JobIDRaw,AdminComment")}


def test_summaries_land_in_admin_comment(acl, ran):
    c, jobs = acl, ran["jobs"]
    assert "accounting: 5 summaries written to slurmdbd (cluster efatest)" in ran["update"]
    got = comments(c, jobs.values())
    listed = {r["job_id"]: r for r in json.loads(_efajob(c, "jobs", "--format", "json",
                                                         "-n", "50").stdout)["jobs"]}
    for label, j in jobs.items():
        s = decode(got[j])
        assert s is not None, (label, got[j])
        row = listed[j]
        assert (s.verdict, s.num_nodes, s.tx_bytes, s.rx_bytes) == (
            row["verdict"], row["num_nodes"], row["tx_bytes"], row["rx_bytes"]), label
        assert list(s.findings) == sorted(row["findings"]), label
    big = decode(got[jobs["train_bio"]])
    assert big is not None and big.tx_bytes and big.tx_bytes > 10 ** 9  # the injected traffic
    # The site's note is kept byte for byte, ours after it.
    assert got[jobs["site_bio"]].startswith("ticket-42 checked efajob1:v=")
    # Written once: a second update has nothing to do, and the comments stay as they are.
    again = _efajob(c, "index", "update").stderr
    assert "summaries written" not in again
    assert comments(c, jobs.values()) == got


@pytest.mark.parametrize("args", [
    ("-A", "bio"), ("-A", "phys"), ("--name", "train"), ("-s", "F"), ("-s", "CD"),
    ("-A", "phys", "--name", "train"), ("-N", "n2"), ("-N", "n[1-2]", "-A", "bio"),
    ("-s", "CA"), ("-s", "CA,F", "-A", "bio"),
], ids=lambda a: " ".join(a))
def test_jobs_filters_match_sacct(acl, ran, args):
    """The same filters through `efajob jobs` (the index, the scan, and sacct underneath) and
    sacct itself, on the jobs of this module: the same jobs."""
    c, jobs = acl, ran["jobs"]
    # -E too: sacct -s without -E looks at the instant -S only (sacct(1), --state).
    window = ("-S", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ran["t0"])), "-E", "now")
    ours = set(jobs.values())
    sacct_args = ["--nodelist" if a == "-N" else a for a in args]
    theirs = {r[0] for r in c.sacct(*window, *sacct_args, "--format=JobIDRaw")} & ours
    # The scan has no job names: the records carry none (slurmd's hooks are not told them),
    # the index has them from Slurm (docs/jobindex.md). Nor do the records know CANCELLED
    # (the cancelled job's epilog saw 0:0: its records say COMPLETED): the index takes it
    # from Slurm, a --state only Slurm knows goes to sacct by itself (auto), and the scan,
    # which asks Slurm nothing, is left out of the state filters.
    sources = [(), ("--source", "sacct")] + (
        [] if "--name" in args or "-s" in args else [("--no-index",)])
    for source in sources:
        rows = json.loads(_efajob(c, "jobs", *window, *args, *source, "--format", "json",
                                  "-n", "100").stdout)["jobs"]
        assert {r["job_id"] for r in rows} & ours == theirs, (args, source)
    assert theirs, f"{args} selects none of the jobs: the test would prove nothing"


def test_report_of_pruned_job_comes_from_accounting(acl, ran):
    c, j = acl, ran["jobs"]["eval_phys"]
    before = json.loads(_efajob(c, "report", j, "--format", "json").stdout)
    shutil.rmtree(os.path.dirname(c.lay.record_path(j, "x")))  # as `efajob index prune` does
    _efajob(c, "index", "update")
    r = _efajob(c, "report", j, "--format", "json")
    got = json.loads(r.stdout)
    assert got["source"] == "slurm_accounting" and got["pruned"] is True
    assert got["verdict"] == before["verdict"] and got["job_id"] == j
    text = _efajob(c, "report", j).stdout
    assert "from Slurm's accounting" in text and "no longer in the store" in text
    # A job neither in the store nor in slurmdbd is still "no such job" (exit 5).
    assert _efajob(c, "report", "999999", check=False).returncode == 5


def test_jobs_from_sacct_carry_the_summaries(acl, ran):
    """`--source sacct`: Slurm's states and the EFA columns from AdminComment, the same as the
    index's for the same jobs; without -S the window widens until jobs are found."""
    c, jobs = acl, ran["jobs"]
    ours = set(jobs.values())
    from_sacct = {r["job_id"]: r for r in json.loads(_efajob(
        c, "jobs", "--source", "sacct", "--format", "json", "-n", "50").stdout)["jobs"]}
    indexed = {r["job_id"]: r for r in json.loads(_efajob(
        c, "jobs", "--format", "json", "-n", "50").stdout)["jobs"]}
    assert ours <= set(from_sacct)
    for j in ours & set(indexed):
        a, b = from_sacct[j], indexed[j]
        keys = ("user", "account", "name", "num_nodes", "tx_bytes", "rx_bytes", "verdict",
                "findings")
        assert [a[k] for k in keys] == [b[k] for k in keys], j
    assert from_sacct[jobs["train_phys_failed"]]["state"] == "FAILED"
    text = _efajob(c, "jobs", "--source", "sacct", "-A", "bio").stdout
    assert "train" in text or jobs["train_bio"] in text
    bad = _efajob(c, "jobs", "--source", "sacct", "-s", "ED", check=False)
    assert bad.returncode == 2 and "efajob's own" in bad.stderr
