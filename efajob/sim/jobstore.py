"""A simulated job store at cluster scale: N finished jobs and M live node status files, for
the tests and bench/jobs.py (`efajob jobs`, `efajob report` and the job index on big stores).

Records are copies of one template built by the epilog's own `build_record` (so every reader
accepts them) with the identity, times and totals varied per job; the node status files have
the daemon's shape, a `recent` window of 32 devices included (what makes parsing them cost what
it costs on a real cluster). Job directories get deterministic mtimes (`landed`: one job a
minute, newest last) because `efajob jobs` orders by them. No randomness: job `i`'s user,
partition, state and bytes follow from `i`, so tests can count the expected rows.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from efajob.hooks.records import JobIdentity, build_record
from efajob.node.readings import DeviceReading, Snapshot
from efajob.sim.layout import DEVICE_COUNTERS, PORT_COUNTERS

T0 = 1714557600.0  # 2024-05-01 10:00 UTC
USERS = ("alice", "bob", "carol", "dave")
PARTITIONS = ("gpu", "gpu-long")
NAMES = ("pretrain", "finetune", "eval")  # job i's name: NAMES[i % 3]
# Every FAIL_EVERY-th job exits 1:0 (FAILED); the others COMPLETED.
FAIL_EVERY = 5
STATUS_DEVICES = 32


@dataclass(frozen=True)
class SimJob:
    """What the builder wrote for one job (the truth tests compare with)."""

    job_id: str
    user: str
    partition: str
    state: str
    start: float
    end: float
    landed: float
    hosts: Tuple[str, ...]
    name: str = ""


def job_spec(i: int, *, nodes_per_job: int = 2, first_id: int = 1000) -> SimJob:
    """Job number `i` (0-based) of a simulated store."""
    start = T0 + 60.0 * i
    return SimJob(job_id=str(first_id + i), user=USERS[i % len(USERS)],
                  partition=PARTITIONS[(i // 2) % len(PARTITIONS)],
                  state="FAILED" if i % FAIL_EVERY == FAIL_EVERY - 1 else "COMPLETED",
                  start=start, end=start + 45.0, landed=start + 50.0,
                  hosts=tuple(f"n{(i + k) % 4096}" for k in range(nodes_per_job)),
                  name=NAMES[i % len(NAMES)])


def _template(cluster: str) -> dict:
    """One small valid record (2 devices, no daemon samples)."""
    moved = 10**9

    def snap(t: float, end: bool) -> Snapshot:
        devs = {d: DeviceReading(d, 1, {n: 10**12 + (moved if end and n.endswith("bytes") else 0)
                                        for n in PORT_COUNTERS},
                                 {n: 10**6 for n in DEVICE_COUNTERS})
                for d in ("rdmap0s1", "rdmap0s2")}
        return Snapshot(mono=100.0 + t, wall=T0 + t, devices=devs, net={})

    ident = JobIdentity(cluster=cluster, job_id="1", restart=0, host="n0", user="alice", uid=1000,
                        partition="gpu", account="ml", nodelist="n0", num_nodes=1, exit_code="0:0",
                        start_wall=T0, start_mono=100.0)
    return build_record(ident, snap(0, False), snap(45, True), instance_type="p4d.24xlarge",
                        expected_devices=2, efajob_version="0.1.0")


def job_records(template: dict, job: SimJob) -> List[dict]:
    """The records of one simulated job (one per host), from the template."""
    out = []
    for host in job.hosts:
        rec = dict(template, job_id=job.job_id, key=job.job_id, host=host, user=job.user,
                   partition=job.partition, nodelist=",".join(job.hosts),
                   num_nodes=len(job.hosts), start=job.start, end=job.end,
                   exit_code="1:0" if job.state == "FAILED" else "0:0",
                   job_name=job.name or None, work_dir=f"/home/{job.user}/{job.name}")
        out.append(rec)
    return out


def write_job(store: str, cluster: str, template: dict, job: SimJob) -> None:
    """One job directory, its mtime set to the job's landing time."""
    d = os.path.join(store, cluster, "jobs", job.job_id)
    os.makedirs(d, exist_ok=True)
    for rec in job_records(template, job):
        path = os.path.join(d, f"{rec['host']}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rec, f, separators=(",", ":"))
        os.utime(path, (job.landed, job.landed))
    os.utime(d, (job.landed, job.landed))


def status_doc(cluster: str, node: str, now: float, running: Sequence[Tuple[str, str]]) -> dict:
    """A node status file as the daemon writes it: `running` is [(job id, user)]."""
    counters = {n: 10**9 for n in PORT_COUNTERS}
    devices = {f"rdmap{k}s0": {"counters": dict(counters),
                                "device_counters": {n: 1 for n in DEVICE_COUNTERS}}
               for k in range(STATUS_DEVICES)}
    return {"schema": "efajob/node-status", "version": 1, "cluster": cluster, "node": node,
            "instance_type": "p5.48xlarge", "time": now, "tx_gbps": 400.0, "rx_gbps": 400.0,
            "jobs": [{"key": j, "job_id": j, "restart": 0, "user": u, "partition": "gpu",
                      "start": now - 600.0} for j, u in running],
            "recent": {"seconds": 60.0, "counters": counters, "devices": devices}}


def write_statuses(store: str, cluster: str, nodes: int, now: float, *,
                   nodes_per_running_job: int = 8, first_id: int = 900000) -> Dict[str, str]:
    """`nodes` fresh node status files; every `nodes_per_running_job` nodes run one job.
    Returns {running job id: user}."""
    d = os.path.join(store, cluster, "nodes")
    os.makedirs(d, exist_ok=True)
    running: Dict[str, str] = {}
    for k in range(nodes):
        jid = str(first_id + k // nodes_per_running_job)
        user = USERS[(k // nodes_per_running_job) % len(USERS)]
        running[jid] = user
        with open(os.path.join(d, f"s{k}.json"), "w", encoding="utf-8") as f:
            json.dump(status_doc(cluster, f"s{k}", now, [(jid, user)]), f, separators=(",", ":"))
    return running


def build_store(store: str, *, jobs: int, nodes_per_job: int = 2, status_nodes: int = 0,
                cluster: str = "sim", now: float = 0.0, first: int = 0,
                progress=None) -> List[SimJob]:
    """Jobs `first` .. `first + jobs - 1` (job ids 1000 + i) and `status_nodes` live nodes
    (their status files written at `now`). `progress(done, total)` is called every 1,000 jobs."""
    template = _template(cluster)
    out = []
    for i in range(first, first + jobs):
        job = job_spec(i, nodes_per_job=nodes_per_job)
        write_job(store, cluster, template, job)
        out.append(job)
        if progress is not None and (i - first + 1) % 1000 == 0:
            progress(i - first + 1, jobs)
    if out:  # the jobs directory changed when the last job's directory came
        os.utime(os.path.join(store, cluster, "jobs"), (out[-1].landed, out[-1].landed))
    if status_nodes:
        write_statuses(store, cluster, status_nodes, now)
    return out
