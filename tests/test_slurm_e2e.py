"""End to end under a real Slurm (issue 5): jobs go through sbatch/srun, slurmd runs the hooks
that `efajob install hooks` wrote, an `efajob daemon` runs per simulated node, and the records
land in one job store. Job steps drive known traffic through `efajob simulate traffic`, so every
record and report is compared with the exact injected totals.

The cluster (tests/slurm_cluster.py) costs seconds to start: one is shared by the tests of a
configuration (PrologFlags=Alloc or not) and at most one runs at a time. Between tests the
queue is emptied, daemons restarted and node states checked: a test that leaves a node drained
fails. Slurm missing: skipped locally, a failure in CI (`CI=true`).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import time
from typing import Dict, List, Optional

import pytest

import slurm_cluster as sc
from conftest import require, wait_until
from fault_ledger import Row, record

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

ALLOC_NODES = 4
NOALLOC_NODES = 2


# -- the shared cluster ------------------------------------------------------------------------
class _Pool:
    """At most one running cluster; asking for another configuration stops the current one."""

    def __init__(self, factory):
        self.factory = factory
        self.current: Optional[sc.SlurmCluster] = None
        self.key = None
        self.failed: Dict[tuple, str] = {}
        self.started: List[float] = []

    def get(self, alloc: bool, nodes: int) -> sc.SlurmCluster:
        key = (alloc, nodes)
        if key in self.failed:
            pytest.fail(f"test cluster could not start (earlier): {self.failed[key]}")
        if self.key == key and self.current is not None:
            return self.current
        self.close()
        require("root", os.geteuid() == 0, "slurmd runs the test jobs and hooks as root")
        if sc.missing_binaries() and not shutil.which("apt-get"):
            require("Slurm", False, f"missing {', '.join(sc.missing_binaries())}")
        root = str(self.factory.mktemp("slurm-alloc" if alloc else "slurm-noalloc"))
        c = sc.SlurmCluster(root, nodes=nodes, alloc=alloc, interval=0.2)
        try:
            c.start()
        except sc.HarnessError as e:
            if sc.missing_binaries():  # the apt install failed: a missing component
                require("Slurm", False, str(e))
            self.failed[key] = str(e)
            pytest.fail(f"test cluster did not start: {e}")
        self.started.append(c.started_in)
        self.current, self.key = c, key
        return c

    def close(self) -> None:
        if self.current is not None:
            self.current.stop()
        self.current, self.key = None, None


@pytest.fixture(scope="session")
def _pool(tmp_path_factory):
    pool = _Pool(tmp_path_factory)
    yield pool
    pool.close()


def _use(pool: _Pool, alloc: bool, nodes: int):
    c = pool.get(alloc, nodes)
    c.ensure_daemons()
    c.wait_nodes(("idle",), timeout=120)
    yield c
    # Leave the cluster as the next test expects it, and fail this test if it drained a node.
    c.cancel_all()
    states = c.wait_nodes(("idle", "drained", "draining", "down", "down*", "drained*"),
                          timeout=120)
    bad = {n: f"{s} ({c.node_reason(n)})" for n, s in states.items() if s != "idle"}
    for n in bad:
        c.resume(n)
    c.ensure_daemons()
    if bad:
        pytest.fail(f"nodes not idle after the test (a hook drained them?): {bad}")


@pytest.fixture
def cluster(_pool):
    """A 4-node cluster with PrologFlags=Alloc (the prolog runs on every node at allocation)."""
    yield from _use(_pool, True, ALLOC_NODES)


@pytest.fixture
def noalloc_cluster(_pool):
    """A 2-node cluster without PrologFlags (the prolog runs only where a step runs)."""
    yield from _use(_pool, False, NOALLOC_NODES)


# -- helpers -----------------------------------------------------------------------------------
def script(c: sc.SlurmCluster, name: str, body: str) -> str:
    path = c.lay.p("out", f"{name}.sh")
    with open(path, "w") as f:
        f.write("#!/bin/bash\nset -e\n" + body.strip() + "\n")
    return path


def traffic(c: sc.SlurmCluster, tag: str, tx: str, rx: str, seconds: float, extra: str = "") -> str:
    """A shell command for inside a step: known traffic on this node's simulated devices, the
    exact injected deltas saved as out/inj.<jobid>.<tag>.<node>.json. Steps get the submitter's
    PATH but efajob is called by absolute path anyway (the venv's). `tx`/`rx` may be shell
    arithmetic on SLURM_NODEID, to make every node's traffic different."""
    name = f"{c.lay.p('out')}/inj.$SLURM_JOB_ID.{tag}.$SLURMD_NODENAME.json"
    # Written aside and renamed: a test polling for the file never reads half of it.
    return (f"{c.efajob} simulate traffic --root {c.lay.p('sys')}/$SLURMD_NODENAME "
            f"--tx-gbps {tx} --rx-gbps {rx} --seconds {seconds} {extra} --format json "
            f"> {name}.tmp && mv {name}.tmp {name}")


def srun_all(nodes: int, cmd: str) -> str:
    return f"srun -N{nodes} --ntasks-per-node=1 bash -c '{cmd}'"


Counters = Dict[str, Dict[str, int]]  # {device: {counter: value}}


def injected(c: sc.SlurmCluster, job_id: str, tag: Optional[str] = None) -> Dict[str, Counters]:
    """{node: {device: {counter: delta}}} summed over the job's injections (all tags, or one)."""
    out: Dict[str, Counters] = {}
    for path in sorted(glob.glob(c.lay.p("out", f"inj.{job_id}.{tag or '*'}.*.json"))):
        node = path.rsplit(".", 2)[1]
        with open(path) as f:
            inj = json.load(f)
        devs = out.setdefault(node, {})
        for dev, counters in inj["devices"].items():
            d = devs.setdefault(dev, {})
            for k, v in counters.items():
                d[k] = d.get(k, 0) + v
    return out


def wait_injected(c: sc.SlurmCluster, job_id: str, nodes: int, tag: Optional[str] = None,
                  timeout: float = 120) -> None:
    """Until `nodes` nodes have saved their injected totals (the traffic step is done)."""
    deadline = time.monotonic() + timeout
    while len(injected(c, job_id, tag)) < nodes:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id}: traffic {tag or ''} not done on {nodes} nodes "
                                 f"after {timeout} s\n" + c.diagnostics(job_id))
        time.sleep(sc.POLL)


def node_sum(devs: Counters, counter: str) -> int:
    return sum(d.get(counter, 0) for d in devs.values())


def record_counters(rec: dict) -> Counters:
    return {d["name"]: {**d["counters"], **d["device_counters"]} for d in rec["devices"]}


def assert_exact(rec: dict, inj: Counters) -> None:
    """Every injected counter of every device equals the record's delta, node totals match, and
    the job had the node to itself (no test here shares a node unless it says so)."""
    assert rec["complete"], rec["incomplete_reasons"]
    assert rec["resets"] == [] and rec["shared"] == [], (rec["resets"], rec["shared"])
    got = record_counters(rec)
    assert sorted(got) == sorted(inj)
    for dev, counters in inj.items():
        assert {k: got[dev].get(k) for k in counters} == counters, dev
    for k in ("tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts"):
        assert rec["totals"][k] == node_sum(inj, k), k


def slurm_row(c: sc.SlurmCluster, scenario: str, faults: str, job: str,
              recs: Dict[str, dict], inj: Dict[str, Counters], expected: int,
              flagged_ok: bool = False) -> Row:
    """The fault suite's row for a fault run through the real Slurm (docs/reliability.md).
    A record is exact when every injected counter matches it, flagged when it says it is not
    (complete false, a reset, a reason); a hook that exits non-zero drains its node, so drained
    nodes count as hook non-zero exits."""
    exact = flagged = wrong = 0
    for host, rec in recs.items():
        try:
            assert_exact(rec, inj[host])
            exact += 1
        except AssertionError:
            if flagged_ok and (not rec["complete"] or rec["resets"] or rec["incomplete_reasons"]):
                flagged += 1
            else:
                wrong += 1
    drained = sum(1 for n in recs if c.node_state(n) != "idle" or c.node_reason(n))
    return record(Row(f"real Slurm: {scenario}", faults, 1, expected, len(recs), exact, flagged,
                      wrong, drained))


def assert_idle(c: sc.SlurmCluster, *nodes: str) -> None:
    """Never drained: sinfo says idle and scontrol has no Reason."""
    for n in nodes:
        assert c.node_state(n) == "idle", (n, c.node_reason(n))
        assert c.node_reason(n) == "", n


def report_nodes(rep: dict) -> Dict[str, dict]:
    return {n["host"]: n for n in rep["nodes"]}


def wait_active(c: sc.SlurmCluster, job_id: str, nodes: List[str], timeout: float = 120) -> None:
    """Until the prolog's active-job file exists on every node (the job has really started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(os.path.exists(os.path.join(c.lay.run_dir(n), "active", f"{job_id}.json"))
               for n in nodes):
            return
        time.sleep(sc.POLL)
    raise AssertionError(f"job {job_id}: no active-job file on {nodes} after {timeout} s\n"
                         + c.diagnostics(job_id))


def job_nodes(c: sc.SlurmCluster, job_id: str) -> List[str]:
    """The nodes Slurm allocated (expanded by Slurm itself)."""
    nodelist = c.run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%N").stdout.strip()
    return c.run("scontrol", "show", "hostnames", nodelist).stdout.split()


def findings(rep: dict, code: str) -> List[dict]:
    return [f for f in rep["findings"] if f["code"] == code]


# -- 1. a multi-node job with known traffic ---------------------------------------------------
def test_multi_node_job_exact_totals(cluster):
    c = cluster
    body = "\n".join([
        srun_all(3, traffic(c, "s1", "$((10*(SLURM_NODEID+1)))", "7", 3)),
        srun_all(3, traffic(c, "s2", "4", "$((3*(SLURM_NODEID+1)))", 2,
                            "--pattern bursty --devices 0,5,9")),
    ])
    job = c.sbatch("-N3", script(c, "multi", body))
    assert c.wait_done(job) == "COMPLETED", c.diagnostics(job)
    inj = injected(c, job)
    hosts = sorted(inj)
    assert len(hosts) == 3
    recs = c.wait_records(job, hosts)
    for h in hosts:
        assert_exact(recs[h], inj[h])
        assert recs[h]["job_id"] == job and recs[h]["restart"] == 0 and recs[h]["host"] == h
        assert recs[h]["cluster"] == sc.CLUSTER_NAME and recs[h]["shared"] == []
    # Every node moved something different: a mix-up of nodes cannot pass.
    assert len({node_sum(inj[h], "tx_bytes") for h in hosts}) == 3
    # slurmd's hooks see the job's directory (sbatch ran in c.root) but not its name: that
    # comes from slurmctld, through the head node's `efajob index update` (one scontrol).
    assert {os.path.realpath(recs[h]["work_dir"]) for h in hosts} == {os.path.realpath(c.root)}
    conf = ("--config", c.lay.efajob_conf)
    c._efajob("index", "update", *conf)
    listed = json.loads(c._efajob("jobs", "--name", "multi.sh", "--format", "json", *conf))
    assert [r["job_id"] for r in listed["jobs"]] == [job], listed

    rep = c.report(job)
    nodes = report_nodes(rep)
    assert sorted(nodes) == hosts
    for h in hosts:
        assert nodes[h]["tx_bytes"] == node_sum(inj[h], "tx_bytes")
        assert nodes[h]["rx_bytes"] == node_sum(inj[h], "rx_bytes")
        assert nodes[h]["complete"] is True
        devs = {d["name"]: d["counters"] for d in nodes[h]["devices"]}
        assert {d: v.get("tx_bytes") for d, v in devs.items()} == \
            {d: v["tx_bytes"] for d, v in inj[h].items()}
    assert rep["totals"]["tx_bytes"] == sum(node_sum(inj[h], "tx_bytes") for h in hosts)
    assert rep["totals"]["rx_bytes"] == sum(node_sum(inj[h], "rx_bytes") for h in hosts)
    assert_idle(c, *hosts)


# -- 2b. NCCL's log in the job's output quoted beside efa_unused (report/nccllog.py) --------------
def test_nccl_socket_fallback_is_quoted_from_the_jobs_output(cluster):
    c = cluster
    log = os.path.join(os.path.dirname(__file__), "nccl_logs", "socket_fallback.log")
    # Two nodes, no EFA traffic, and NCCL's log (as NCCL_DEBUG=INFO would print it) in the
    # job's output: Slurm's StdOut, which `report` asks scontrol for.
    job = c.sbatch("-N2", script(c, "nccl", srun_all(2, "true") + f"\ncat {log}"))
    assert c.wait_done(job) == "COMPLETED", c.diagnostics(job)
    hosts = job_nodes(c, job)
    c.wait_records(job, hosts)
    unused = findings(c.report(job), "efa_unused")
    assert len(unused) == 1, unused
    assert f"Confirmed by NCCL's log ({job}.out): " in unused[0]["message"]
    assert "NET/Socket : Using [0]eth0:10.0.1.17<0>" in unused[0]["message"]
    assert_idle(c, *hosts)


# -- 3. two jobs sharing a node -----------------------------------------------------------------
def test_two_jobs_sharing_a_node_name_each_other(cluster):
    c = cluster
    # a runs until b has started (a marker b writes), however long b takes to be scheduled:
    # the two overlap on every machine, not only on a fast one.
    marker = c.lay.p("out", "share-b.started")
    a = c.sbatch("-p", "shared", "-w", "n1", "-n1",
                 script(c, "share-a", traffic(c, "a", "10", "10", 1)
                        + f"\nfor i in $(seq 1500); do [ -e {marker} ] && break; sleep 0.2; done"))
    wait_active(c, a, ["n1"])
    b = c.sbatch("-p", "shared", "-w", "n1", "-n1", "--wrap", f"touch {marker}; sleep 0.5")
    wait_active(c, b, ["n1"])
    assert c.wait_done(b) == "COMPLETED"
    assert c.wait_done(a) == "COMPLETED"
    ra = c.wait_records(a, ["n1"])["n1"]
    rb = c.wait_records(b, ["n1"])["n1"]
    assert ra["shared"] == [b] and rb["shared"] == [a]
    rep = c.report(a)
    assert report_nodes(rep)["n1"]["shared"] == [b]
    assert findings(rep, "shared_node")
    assert_idle(c, "n1")


# -- 4. cancelled, failing, requeued, array ----------------------------------------------------
def test_cancelled_job_has_records_on_every_node(cluster):
    c = cluster
    body = srun_all(2, traffic(c, "s1", "8", "8", 1)) + "\nsleep 600"  # until cancelled
    job = c.sbatch("-N2", script(c, "cancel", body))
    c.wait_running(job)
    nodes = job_nodes(c, job)
    wait_active(c, job, nodes)
    wait_injected(c, job, 2)  # the traffic step done: then the totals are known
    c.run("scancel", job)
    assert c.wait_done(job) == "CANCELLED"
    inj = injected(c, job)
    recs = c.wait_records(job, nodes)
    for n in nodes:
        assert_exact(recs[n], inj[n])
    assert_idle(c, *nodes)


def test_failing_job_records_exit_code(cluster):
    c = cluster
    body = srun_all(2, traffic(c, "s1", "3", "5", 1)) + "\nexit 3"
    job = c.sbatch("-N2", script(c, "fail", body))
    assert c.wait_done(job) == "FAILED"
    inj = injected(c, job)
    nodes = sorted(inj)
    recs = c.wait_records(job, nodes)
    for n in nodes:
        assert_exact(recs[n], inj[n])
    # The batch host knows the script's status; every epilog gets the job's exit code.
    codes = {n: recs[n]["exit_code"] for n in nodes}
    assert set(codes.values()) == {"3:0"}, codes
    assert_idle(c, *nodes)


def test_requeued_job_keeps_its_id_with_restart_count(cluster):
    c = cluster
    body = f"""
if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then
  {traffic(c, "r0", "6", "2", 1)}
  sleep 600  # until requeued
else
  {traffic(c, "r1", "9", "1", 1)}
fi
"""
    job = c.sbatch("-N1", "--requeue", script(c, "requeue", body))
    c.wait_running(job)
    first = job_nodes(c, job)
    wait_active(c, job, first)
    wait_injected(c, job, 1, "r0")
    c.run("scontrol", "requeue", job)
    # Slurm holds a requeued job for the credential lifetime (AuthInfo cred_expire, 10 s here;
    # 120 s by default, should a Slurm version ignore the setting).
    assert c.wait_done(job, timeout=150) == "COMPLETED", c.diagnostics(job)
    second = job_nodes(c, job)
    # Slurm 22.05 gives the requeued run's Epilog the next SLURM_JOB_RESTART_COUNT already:
    # its record must still be restart 0, and no run-dir file may be left behind.
    r0 = c.wait_records(job, first, restart=0)[first[0]]
    r1 = c.wait_records(job, second, restart=1)[second[0]]
    assert (r0["job_id"], r0["restart"], r0["key"]) == (job, 0, job)
    assert (r1["job_id"], r1["restart"], r1["key"]) == (job, 1, f"{job}.1")
    assert_exact(r0, injected(c, job, "r0")[first[0]])
    assert_exact(r1, injected(c, job, "r1")[second[0]])
    for n in set(first + second):
        assert os.listdir(os.path.join(c.lay.run_dir(n), "active")) == []
    assert_idle(c, *set(first + second))


def test_job_array_tasks_have_their_own_records(cluster):
    c = cluster
    body = traffic(c, "t", "$((SLURM_ARRAY_TASK_ID*5))", "1", 1)
    arr = c.sbatch("--array=1-3", "-N1", script(c, "array", body))
    c.wait_done(arr)
    tasks = raw_ids(c, arr)
    assert sorted(tasks) == [f"{arr}_{i}" for i in (1, 2, 3)]
    assert len(set(tasks.values())) == 3  # each task runs under its own SLURM_JOB_ID
    for task, raw in tasks.items():
        inj = injected(c, raw)
        assert len(inj) == 1, (task, raw)
        host = next(iter(inj))
        rec = c.wait_records(raw, [host])[host]
        assert_exact(rec, inj[host])
        assert rec["totals"]["tx_bytes"] == int(task.split("_")[1]) * 5 * 10**9 // 8
        rep = c.report(task)
        assert report_nodes(rep)[host]["tx_bytes"] == rec["totals"]["tx_bytes"]
    # The array's own id is also its last task's SLURM_JOB_ID: asked by it, efajob lists the
    # tasks (exit 6) rather than show one task as the whole array.
    assert_lists_parts(c, arr, f"job {arr} is an array job (3 tasks: {arr}_1, {arr}_2, {arr}_3)")


def raw_ids(c: sc.SlurmCluster, job_id: str) -> Dict[str, str]:
    """{array task or het component as Slurm shows it: the SLURM_JOB_ID its hooks saw}."""
    return dict(line.split() for line in c.run(
        "squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i %A").stdout.splitlines())


def assert_lists_parts(c: sc.SlurmCluster, job_id: str, message: str) -> None:
    """`efajob report <array or het id>` exits 6 and lists the parts (docs/report.md)."""
    r = c.run(c.efajob, "report", job_id, "--store", c.lay.store, "--cluster", sc.CLUSTER_NAME,
              check=False)
    assert r.returncode == 6, (r.returncode, r.stdout, r.stderr)
    assert message in r.stderr, r.stderr


def test_het_job_components_reported_one_at_a_time(cluster):
    c = cluster
    # Component 0 runs the batch script on n1; component 1 gets a step on n2. File names
    # carry a fixed tag: inside a het step SLURM_JOB_ID is not the component's own id.
    tag0, tag1 = "het0", "het1"
    body = (traffic(c, tag0, "4", "2", 1) + "\n"
            + f"srun --het-group=1 bash -c '{traffic(c, tag1, '6', '3', 1)}'")
    het = c.sbatch("-N1", "-w", "n1", ":", "-N1", "-w", "n2", script(c, "het", body))
    assert c.wait_done(het) == "COMPLETED", c.diagnostics(het)
    comps = raw_ids(c, het)
    assert sorted(comps) == [f"{het}+0", f"{het}+1"], comps
    for comp, tag, host, gbps in ((f"{het}+0", tag0, "n1", 4), (f"{het}+1", tag1, "n2", 6)):
        inj = injected(c, "*", tag)
        assert list(inj) == [host], (comp, inj)
        raw = comps[comp]
        rec = c.wait_records(raw, [host])[host]
        assert_exact(rec, inj[host])
        assert rec["totals"]["tx_bytes"] == gbps * 10**9 // 8
        rep = c.report(comp)
        assert (rep["job_id"], rep["alias"]) == (raw, comp)
        assert report_nodes(rep)[host]["tx_bytes"] == rec["totals"]["tx_bytes"]
    assert_lists_parts(c, het, f"job {het} is a heterogeneous job (2 components: {het}+0, {het}+1)")


# -- 5. faults: the node stays idle, records are exact or flagged, never missing -------------
def test_daemon_killed_during_job(cluster):
    c = cluster
    job = c.sbatch("-N2", "-w", "n1,n2", script(c, "nodaemon", srun_all(
        2, traffic(c, "s1", "12", "4", 2, "--realtime --step 0.2"))))
    wait_active(c, job, ["n1", "n2"])
    c.kill_daemon("n1")
    assert c.wait_done(job) == "COMPLETED"
    inj = injected(c, job)
    recs = c.wait_records(job, ["n1", "n2"])
    slurm_row(c, "daemon killed mid-job", "SIGKILL of n1's daemon while a 2-node job runs",
              job, recs, inj, 2).check()
    for n in ("n1", "n2"):
        assert_exact(recs[n], inj[n])  # totals come from the hooks' snapshots, not the daemon
    assert recs["n2"]["daemon_samples"] > 0  # n2's daemon was there all along
    assert_idle(c, "n1", "n2")


def test_run_dir_unusable(cluster):
    c = cluster
    # Root ignores permission bits: a file where the run dir should be makes every write fail.
    run = c.lay.run_dir("n2")
    aside = run + ".aside"
    os.rename(run, aside)
    try:
        with open(run, "w") as f:
            f.write("not a directory\n")
        job = c.sbatch("-N1", "-w", "n2", script(c, "norun", traffic(c, "s1", "5", "5", 1)))
        assert c.wait_done(job) == "COMPLETED", c.diagnostics(job)
        rec = c.wait_records(job, ["n2"])["n2"]
        slurm_row(c, "run dir unusable", "a file where n2's run dir should be", job,
                  {"n2": rec}, injected(c, job), 1, flagged_ok=True).check()
        assert rec["complete"] is False and rec["incomplete_reasons"], rec
        assert_idle(c, "n2")
        assert c.daemon_alive("n2")
    finally:
        os.unlink(run)
        os.rename(aside, run)


def test_job_store_unwritable_for_a_while(cluster):
    c = cluster
    jobs = os.path.join(c.lay.store, sc.CLUSTER_NAME, "jobs")
    aside = jobs + ".aside"
    os.makedirs(jobs, exist_ok=True)  # this test may be the first to run
    os.rename(jobs, aside)
    try:
        with open(jobs, "w") as f:
            f.write("not a directory\n")
        body = srun_all(2, traffic(c, "s1", "7", "3", 1))
        job = c.sbatch("-N2", "-w", "n3,n4", script(c, "nostore", body))
        assert c.wait_done(job) == "COMPLETED"
        for n in ("n3", "n4"):  # not lost: waiting in the node's outbox
            deadline = time.monotonic() + 120
            outbox = os.path.join(c.lay.state_dir(n), "outbox")
            while not glob.glob(os.path.join(outbox, f"{job}@{n}@*.json")):
                assert time.monotonic() < deadline, os.listdir(outbox)
                time.sleep(sc.POLL)
        time.sleep(1.0)
    finally:
        os.unlink(jobs)
        os.rename(aside, jobs)
    inj = injected(c, job)
    recs = c.wait_records(job, ["n3", "n4"], timeout=180)  # the daemon's retry backoff
    slurm_row(c, "store unwritable", "a file where the store's jobs dir should be, for the "
              "whole job", job, recs, inj, 2).check()
    for n in ("n3", "n4"):
        assert_exact(recs[n], inj[n])
        assert c.daemon_alive(n)
    assert_idle(c, "n3", "n4")


def test_counter_reset_mid_job_is_flagged(cluster):
    c = cluster
    body = "\n".join([
        traffic(c, "s1", "10", "10", 1),
        traffic(c, "s2", "10", "10", 1, "--fault reset"),
        traffic(c, "s3", "10", "10", 1),
    ])
    job = c.sbatch("-N1", "-w", "n1", script(c, "reset", body))
    assert c.wait_done(job) == "COMPLETED"
    rec = c.wait_records(job, ["n1"])["n1"]
    slurm_row(c, "counter reset mid-job", "one device's counters reset between two steps", job,
              {"n1": rec}, injected(c, job), 1, flagged_ok=True).check()
    with open(glob.glob(c.lay.p("out", f"inj.{job}.s2.n1.json"))[0]) as f:
        s2 = json.load(f)
    (dev,) = s2["resets"]
    inj = injected(c, job)["n1"]
    after = injected(c, job, "s3")["n1"][dev]
    assert f"{dev}/tx_bytes" in rec["resets"]
    got = record_counters(rec)
    for d, counters in inj.items():
        if d != dev:
            assert {k: got[d].get(k) for k in counters} == counters, d
    # After a reset the delta is the counter's value: what moved since the reset, never
    # negative, never the pre-reset traffic.
    base = s2["reset_bases"][dev]["tx_bytes"]
    assert got[dev]["tx_bytes"] == base + s2["devices"][dev]["tx_bytes"] + after["tx_bytes"]
    rep = c.report(job)
    assert [f.get("host") for f in findings(rep, "counter_reset")] == ["n1"]
    assert_idle(c, "n1")


# -- 6. the report of a running job ---------------------------------------------------------
def test_report_on_running_job_shows_live_progress(cluster):
    c = cluster
    # The job sends traffic in 0.5 s runs until the test, having seen live rates, opens the
    # gate: however slow the machine, the job is still running when the report is read.
    # n2 (node id 1) drops 0.1 % of what it receives (the simulator's `drops` fault): its
    # daemon's last minute says so before any record exists.
    gate = c.lay.p("out", "live.gate")
    loop = ("i=0; while [ ! -e %s ] && [ $i -lt 600 ]; do %s; i=$((i+1)); done"
            % (gate, traffic(c, "s1.$i", "40", "$((10*(SLURM_NODEID+1)))", 0.5,
                             "--realtime --step 0.1 "
                             "$([ $SLURM_NODEID -eq 1 ] && echo --fault drops)")))
    job = c.sbatch("-N2", "-w", "n1,n2", script(c, "live", srun_all(2, loop)))
    wait_active(c, job, ["n1", "n2"])
    deadline = time.monotonic() + 120  # only bounds a hang: the gate keeps the job running
    live = None
    try:
        while time.monotonic() < deadline and c.job_state(job) == "RUNNING":
            # Found once the daemons' next status files list the job (every 0.5 s here).
            rep = c.report(job, missing_ok=True)
            nodes = report_nodes(rep) if rep else {}
            # Waiting for n2's drops, not for any problem: a status file written while the
            # simulator was half way through writing its first step's 32 devices shows the
            # devices not yet written as idle for one window, and that alone also reads
            # "problems seen live" (a simulator artefact: real counters all move at once).
            if sorted(nodes) == ["n1", "n2"] and all((n.get("live_tx_gbps") or 0) > 0
                                                     for n in nodes.values()) \
                    and rep["verdict"] == "Running: problems seen live" \
                    and any(f["code"] == "rx_drops" for f in rep["findings"]):
                live = rep
                break
            time.sleep(0.3)
    finally:
        open(gate, "w").close()
    assert live is not None, "no live rates and live drops while the job ran"
    assert live["running"] is True and live["state"] == "RUNNING"
    assert live["user"] == "root" and live["partition"], live  # from Slurm, not n/a
    drops = [(f["host"], f.get("live")) for f in live["findings"] if f["code"] == "rx_drops"]
    assert drops == [("n2", True)], live["findings"]
    for n in report_nodes(live).values():
        # A rate of the daemon's newest tick: how near 40 Gb/s depends on the machine's speed,
        # so only its presence is checked; the totals below are exact.
        assert n["status"] == "running" and n["live_tx_gbps"] > 0, n
    assert c.wait_done(job) == "COMPLETED"
    inj = injected(c, job)
    c.wait_records(job, ["n1", "n2"])
    final = c.report(job)
    assert final["running"] is False and final["state"] == "COMPLETED"
    assert {h: n["tx_bytes"] for h, n in report_nodes(final).items()} == \
        {h: node_sum(inj[h], "tx_bytes") for h in ("n1", "n2")}


# -- 2. no PrologFlags=Alloc: a node with no step (near the end: another cluster) -----
def test_doctor_reads_the_running_slurms_config(cluster):
    """`efajob doctor` asks this slurmctld (scontrol show config) where the hooks are and
    whether PrologFlags has Alloc. (The daemon's freshness is judged on real clocks at a 0.2 s
    interval: not asserted here, the unit tests cover it with injected clocks.)"""
    c = cluster
    r = c.run(c.efajob, "doctor", "--config", c.lay.efajob_conf, "--node", c.nodes[0],
              "--format", "json", check=False)
    got = {x["name"]: x for x in json.loads(r.stdout)["checks"]}
    assert got["PrologFlags"]["status"] == "pass", got["PrologFlags"]
    assert "Alloc" in got["PrologFlags"]["message"]
    for kind, word in (("prolog", "last"), ("epilog", "first")):
        h = got[f"{kind} hook"]
        assert h["status"] == "pass" and f"{c.lay.scripts}/{kind}.d/" in h["message"], h
        assert f"runs {word}" in h["message"]
    assert got["job store"]["status"] == "pass" and got["efa devices"]["status"] != "fail"


def test_dashboard_reconciles_with_slurms_node_list(cluster, monkeypatch):
    """Issue 17, against the real sinfo: a daemon stopped cleanly clears its job list; a node
    taken down with an old status stays a stale alert (Slurm has it, with its state); a node
    without a status file is shown as without efajob; a node Slurm does not have is left out."""
    import signal as sig

    from efajob.config import build_config
    from efajob.dashboard.server import Collector
    from efajob.daemon.nodestatus import write_node_status

    c = cluster
    nodes_dir = os.path.join(c.lay.store, sc.CLUSTER_NAME, "nodes")
    jid = c.sbatch("-w", "n4", wrap="sleep 120")
    c.wait_running(jid)

    def status(node):
        with open(os.path.join(nodes_dir, f"{node}.json")) as f:
            return json.load(f)

    assert wait_until(lambda: [j["job_id"] for j in status("n4")["jobs"]] == [jid])
    c.kill_daemon("n4", sig.SIGTERM)  # a clean stop: its last status lists no job
    assert status("n4")["jobs"] == []
    c.cancel_all()
    old = status("n4")
    old["time"] -= 3600.0  # and then silent for an hour
    write_node_status(os.path.join(nodes_dir, "n4.json"), old)
    c.run("scontrol", "update", "nodename=n4", "state=down", "reason=efajob-dashboard-test")
    c.kill_daemon("n3")
    os.unlink(os.path.join(nodes_dir, "n3.json"))
    gone = dict(old, node="n9")
    write_node_status(os.path.join(nodes_dir, "n9.json"), gone)
    try:
        monkeypatch.setenv("SLURM_CONF", c.lay.slurm_conf)
        monkeypatch.setenv("PATH", c.env["PATH"])
        cfg = build_config({"cluster": sc.CLUSTER_NAME, "store": c.lay.store, "status_interval": 0.5},
                           env={}, node="head")
        d = Collector(cfg, use_slurm=True).collect()
        states = {n.host: (n.state, n.slurm_state) for n in d.nodes}
        assert set(states) == {"n1", "n2", "n3", "n4"}, d.notes  # n9: not in Slurm, stale: left out
        assert states["n3"] == ("no-efajob", "idle")
        assert states["n4"][0] == "stale" and states["n4"][1].startswith("down")
        assert {states[n][0] for n in ("n1", "n2")} <= {"ok", "warn"}
        assert "1 node status file(s) of nodes that left are not shown" in d.notes
        assert [h for _, h in next(g for g in d.problems if g.kind == "stale").hosts] == ["n4"]
    finally:
        os.unlink(os.path.join(nodes_dir, "n9.json"))
        c.resume("n4")
        c.ensure_daemons()


def test_without_alloc_node_without_step_is_flagged(noalloc_cluster):
    c = noalloc_cluster
    # The batch script and its one-task step run on the first node; the second node only
    # ever sees the Epilog (slurmd runs the Prolog where a step starts).
    job = c.sbatch("-N2", script(c, "nostep", "srun -N1 -n1 bash -c '"
                                 + traffic(c, "s1", "20", "10", 2) + "'"))
    assert c.wait_done(job) == "COMPLETED", c.diagnostics(job)
    allocated = job_nodes(c, job)
    inj = injected(c, job)
    assert len(allocated) == 2 and len(inj) == 1
    stepped = next(iter(inj))
    idle = next(n for n in allocated if n != stepped)
    recs = c.wait_records(job, allocated)
    assert_exact(recs[stepped], inj[stepped])
    flagged = recs[idle]
    assert flagged["complete"] is False
    assert flagged["prolog_seen"] is False and flagged["epilog_seen"] is True
    assert any(r.startswith("no_prolog") for r in flagged["incomplete_reasons"]), flagged
    rep = c.report(job)
    nodes = report_nodes(rep)
    assert sorted(nodes) == sorted(allocated)
    assert nodes[stepped]["complete"] is True and nodes[idle]["complete"] is False
    assert nodes[stepped]["tx_bytes"] == node_sum(inj[stepped], "tx_bytes")
    assert [f.get("host") for f in findings(rep, "incomplete")] == [idle]
    assert_idle(c, *allocated)


# -- the harness itself ------------------------------------------------------------------------
def test_doctor_fails_prologflags_without_alloc(noalloc_cluster):
    c = noalloc_cluster
    r = c.run(c.efajob, "doctor", "--config", c.lay.efajob_conf, "--node", c.nodes[0],
              "--format", "json", check=False)
    got = {x["name"]: x for x in json.loads(r.stdout)["checks"]}
    assert got["PrologFlags"]["status"] == "fail" and "PrologFlags=Alloc" in got["PrologFlags"]["fix"]
    assert r.returncode == 2


def test_harness_helpers():
    assert sc.parse_slurm_version("slurm-wlm 22.05.8\n") == (22, 5)  # Debian 12
    assert sc.parse_slurm_version("slurm 24.11.5") == (24, 11)  # Debian 13
    with pytest.raises(sc.HarnessError):
        sc.parse_slurm_version("slurmd: command not found")
    assert sc.parse_sbatch_id("17;efatest\n") == "17"
    lay = sc.Layout("/r", "/m")
    conf = sc.render_slurm_conf(lay, hostname="h", ctld_port=7001,
                                node_ports={"n1": 7002, "n2": 7003}, alloc=False, hooks=True)
    assert "PrologFlags" not in conf and "Prolog=/r/scripts/prolog.d/*\n" in conf
    assert "AuthInfo=socket=/m/munge.socket,cred_expire=10\n" in conf
    assert "NodeName=n2 NodeHostname=h NodeAddr=127.0.0.1 Port=7003 " in conf
    alloc = sc.render_slurm_conf(lay, hostname="h", ctld_port=1, node_ports={"n1": 2},
                                 alloc=True, hooks=True)
    assert "PrologFlags=Alloc\n" in alloc


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_stop_leaves_no_process_behind(_pool):
    """What the session finalizer (and atexit) does after a failed test: a job still running,
    every daemon up. Last in the file: it stops the shared cluster."""
    c = _pool.get(False, NOALLOC_NODES)
    job = c.sbatch("-N1", "--wrap", "sleep 300")
    c.wait_running(job)
    deadline = time.monotonic() + 120
    while not any(_cmdline(p).startswith("sleep 300") for p in sc.marked_pids(c.root)):
        assert time.monotonic() < deadline, "the job's processes do not carry the marker"
        time.sleep(sc.POLL)
    procs = list(c.procs.values())
    assert len(procs) == 2 + 2 * NOALLOC_NODES  # munged, slurmctld, slurmd and daemon per node
    _pool.close()
    assert [p.args[0] for p in procs if p.poll() is None] == []
    assert sc.marked_pids(c.root) == []
    assert not os.path.exists(c.lay.munge_dir)
    assert not os.path.exists(c.lay.p(sc.STATE_FILE))
