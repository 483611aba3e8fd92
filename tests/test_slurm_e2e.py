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
import signal
import subprocess
import time
from typing import Dict, List, Optional

import pytest

import slurm_cluster as sc
from conftest import IN_CI, require

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
        if sc.missing_binaries() and (os.geteuid() != 0 or not shutil.which("apt-get")):
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
    c.wait_nodes(("idle",), timeout=30)
    yield c
    # Leave the cluster as the next test expects it, and fail this test if it drained a node.
    c.cancel_all()
    states = c.wait_nodes(("idle", "drained", "draining", "down", "down*", "drained*"),
                          timeout=30)
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
    return (f"{c.efajob} simulate traffic --root {c.lay.p('sys')}/$SLURMD_NODENAME "
            f"--tx-gbps {tx} --rx-gbps {rx} --seconds {seconds} {extra} --format json "
            f"> {c.lay.p('out')}/inj.$SLURM_JOB_ID.{tag}.$SLURMD_NODENAME.json")


def srun_all(nodes: int, cmd: str) -> str:
    return f"srun -N{nodes} --ntasks-per-node=1 bash -c '{cmd}'"


def injected(c: sc.SlurmCluster, job_id: str, tag: Optional[str] = None) -> Dict[str, Dict[str, Dict[str, int]]]:
    """{node: {device: {counter: delta}}} summed over the job's injections (all tags, or one)."""
    out: Dict[str, Dict[str, Dict[str, int]]] = {}
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


def node_sum(devs: Dict[str, Dict[str, int]], counter: str) -> int:
    return sum(d.get(counter, 0) for d in devs.values())


def record_counters(rec: dict) -> Dict[str, Dict[str, int]]:
    return {d["name"]: {**d["counters"], **d["device_counters"]} for d in rec["devices"]}


def assert_exact(rec: dict, inj: Dict[str, Dict[str, int]]) -> None:
    """Every injected counter of every device equals the record's delta, and node totals match."""
    assert rec["complete"], rec["incomplete_reasons"]
    assert rec["resets"] == []
    got = record_counters(rec)
    assert sorted(got) == sorted(inj)
    for dev, counters in inj.items():
        assert {k: got[dev].get(k) for k in counters} == counters, dev
    for k in ("tx_bytes", "rx_bytes", "tx_pkts", "rx_pkts"):
        assert rec["totals"][k] == node_sum(inj, k), k


def assert_idle(c: sc.SlurmCluster, *nodes: str) -> None:
    """Never drained: sinfo says idle and scontrol has no Reason."""
    for n in nodes:
        assert c.node_state(n) == "idle", (n, c.node_reason(n))
        assert c.node_reason(n) == "", n


def report_nodes(rep: dict) -> Dict[str, dict]:
    return {n["host"]: n for n in rep["nodes"]}


# -- 1. a multi-node job with known traffic ---------------------------------------------------
def test_multi_node_job_exact_totals(cluster):
    c = cluster
    body = "\n".join([
        srun_all(3, traffic(c, "s1", "$((10*(SLURM_NODEID+1)))", "7", 3)),
        srun_all(3, traffic(c, "s2", "4", "$((3*(SLURM_NODEID+1)))", 2, "--pattern bursty --devices 0,5,9")),
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
