"""A simulated fleet's job history: many multi-node jobs over a pool of nodes, some nodes planted
bad (always, or in a share of their jobs), for `efajob nodes` (tests/test_fabric.py,
bench/nodes.py).

Every record comes from the epilog's own `build_record` over start and end snapshots of 4 EFA
devices (p4d.24xlarge), one template per kind of node-job (VARIANTS), so the reports judge
them as they judge real records: a `straggler` node moves a fifth of its peers' bytes, an
`idle` one has a device that moved nothing, `drops` drops packets, `errors` counts RDMA read
work requests in error. Seeded: the same arguments write the same store.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from efajob.hooks.records import JobIdentity, build_record
from efajob.node.readings import DeviceReading, Snapshot
from efajob.sim.jobstore import T0
from efajob.sim.layout import DEVICE_COUNTERS, PORT_COUNTERS

DEVICES = ("rdmap16s27", "rdmap32s27", "rdmap144s27", "rdmap160s27")
MOVED = 4 * 10**10  # bytes per device and byte counter in a healthy node-job
VARIANTS = ("ok", "straggler", "idle", "drops", "errors")


@dataclass(frozen=True)
class FleetJob:
    job_id: str
    end: float
    kinds: Dict[str, str]  # host -> variant


def _moves(variant: str, device: str) -> Tuple[float, Dict[str, int]]:
    """(share of MOVED this device moves, other counters' deltas)."""
    if variant == "straggler":
        return 0.2, {}
    if variant == "idle" and device == DEVICES[-1]:
        return 0.0, {}
    if variant == "drops" and device == DEVICES[0]:
        return 1.0, {"rx_drops": 50000}
    if variant == "errors" and device == DEVICES[0]:
        return 1.0, {"rdma_read_wr_err": 40}
    return 1.0, {}


def _template(cluster: str, variant: str) -> dict:
    def snap(t: float, end: bool) -> Snapshot:
        devs = {}
        for d in DEVICES:
            share, extra = _moves(variant, d)
            port = {}
            for n in PORT_COUNTERS:
                v = 10**12
                if end and n.endswith("bytes"):
                    v += int(MOVED * share)
                elif end and n.endswith(("_pkts", "_wrs")):
                    v += int(MOVED * share) // 8192
                if end:
                    v += extra.get(n, 0)
                port[n] = v
            devs[d] = DeviceReading(d, 1, port, {n: 10**6 for n in DEVICE_COUNTERS})
        return Snapshot(mono=100.0 + t, wall=T0 + t, devices=devs, net={})

    ident = JobIdentity(cluster=cluster, job_id="1", restart=0, host="n0", user="alice", uid=1000,
                        partition="gpu", account="ml", nodelist="n0", num_nodes=1, exit_code="0:0",
                        start_wall=T0, start_mono=100.0)
    return build_record(ident, snap(0, False), snap(600, True), instance_type="p4d.24xlarge",
                        expected_devices=len(DEVICES), efajob_version="0.1.0")


class Fleet:
    """Writes fleet jobs into a store (templates built once)."""

    def __init__(self, store: str, cluster: str = "sim") -> None:
        self.store, self.cluster = store, cluster
        self.templates = {v: _template(cluster, v) for v in VARIANTS}

    def write(self, job_id: str, start: float, kinds: Mapping[str, str]) -> FleetJob:
        d = os.path.join(self.store, self.cluster, "jobs", job_id)
        os.makedirs(d, exist_ok=True)
        hosts = sorted(kinds)
        end = start + 600.0
        for host in hosts:
            rec = dict(self.templates[kinds[host]], job_id=job_id, key=job_id, host=host,
                       nodelist=",".join(hosts), num_nodes=len(hosts), start=start, end=end)
            path = os.path.join(d, f"{host}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(rec, f, separators=(",", ":"))
            os.utime(path, (end + 5, end + 5))
        os.utime(d, (end + 5, end + 5))
        return FleetJob(job_id=job_id, end=end, kinds=dict(kinds))


def build_fleet(store: str, *, jobs: int, nodes: int, nodes_per_job: int,
                bad: Mapping[str, Tuple[str, float]] = {}, noise: float = 0.0,
                seed: int = 18, cluster: str = "sim", first_id: int = 1000,
                hosts: Optional[Sequence[str]] = None, progress=None) -> List[FleetJob]:
    """`jobs` jobs (ids first_id..), each on `nodes_per_job` nodes drawn from n0..n{nodes-1}.
    `bad`: host -> (variant, share of its jobs it shows it in); any other node-job shows a
    random fault with probability `noise` (the unlucky jobs every fleet has)."""
    rng = random.Random(seed)
    pool = list(hosts) if hosts is not None else [f"n{k}" for k in range(nodes)]
    fleet = Fleet(store, cluster)
    faults = VARIANTS[1:]
    out = []
    for i in range(jobs):
        kinds = {}
        for h in rng.sample(pool, nodes_per_job):
            if h in bad:
                variant, share = bad[h]
                kinds[h] = variant if rng.random() < share else "ok"
            else:
                kinds[h] = rng.choice(faults) if rng.random() < noise else "ok"
        out.append(fleet.write(str(first_id + i), T0 + 900.0 * i, kinds))
        if progress is not None and (i + 1) % 1000 == 0:
            progress(i + 1, jobs)
    if out:
        last = out[-1].end + 5
        os.utime(os.path.join(store, cluster, "jobs"), (last, last))
    return out
