"""A simulated fleet of node status files, for the dashboard's tests and bench/dashboard.py:
N p5.48xlarge nodes (32 EFA devices each) as the daemon writes them, running jobs of
`nodes_per_job` nodes, with faults at fixed strides so a test can count what it must see.

No randomness: node `k`'s job, traffic and fault follow from `k`. Faults:
- every `drop_every`-th node drops packets (`rx_drops` in its last-minute window and rates);
- every `missing_every`-th node lists 31 of its 32 devices;
- every `stale_every`-th node wrote its file an hour ago (its daemon stopped).
Names are ParallelCluster's (`gpu-dy-p5-1`, ...), folded by slurm/hostlist.py as
`gpu-dy-p5-[1-1000]`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from efajob.daemon.nodestatus import encode_node_status
from efajob.report.nodeverdict import node_verdict
from efajob.sim.jobstore import STATUS_DEVICES, USERS
from efajob.sim.layout import DEVICE_COUNTERS, PORT_COUNTERS

LINK_GBPS = 100.0  # p5.48xlarge: 32 x 100 Gbps
HEALTH = ("rx_drops", "retrans_pkts", "retrans_timeout_events", "impaired_remote_conn_events",
          "unresponsive_remote_events", "rdma_read_wr_err", "rdma_write_wr_err")


def host_name(k: int, prefix: str = "gpu-dy-p5-") -> str:
    return f"{prefix}{k + 1}"


@dataclass
class Fleet:
    """What write_fleet wrote (the truth tests compare with)."""
    hosts: List[str] = field(default_factory=list)
    dropping: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    stale: List[str] = field(default_factory=list)
    jobs: Dict[str, List[str]] = field(default_factory=dict)  # job id -> its hosts


def fleet_doc(cluster: str, host: str, now: float, *, job: Optional[Tuple[str, str]],
              gbps: float, drops: float = 0.0, devices: int = STATUS_DEVICES) -> dict:
    """One node's status document: `job` (id, user) or None (idle), `gbps` sent and received,
    `drops` rx drops per second over the last minute."""
    per_dev = gbps / STATUS_DEVICES
    window = 60.0
    dev_bytes = int(per_dev * 1e9 / 8 * window)
    zero = {n: 0 for n in PORT_COUNTERS if n in HEALTH}
    moving = {n: dev_bytes if "bytes" in n else dev_bytes // 4096
              for n in PORT_COUNTERS if n not in HEALTH}
    recent_devs = {}
    for i in range(devices):
        c = dict(moving, **zero)
        if drops and i == 0:
            c["rx_drops"] = int(drops * window)
        recent_devs[f"rdmap{i}s0"] = {"counters": c, "device_counters": {n: 0 for n in DEVICE_COUNTERS}}
    totals = {n: sum(d["counters"].get(n, 0) for d in recent_devs.values()) for n in PORT_COUNTERS}
    rates = {"rx_drops": drops, "retrans_pkts": 0.0, "tx_bytes": gbps * 1e9 / 8, "rx_bytes": gbps * 1e9 / 8}
    doc = {
        "schema": "efajob/node-status", "version": 1, "cluster": cluster, "node": host,
        "instance_type": "p5.48xlarge", "time": now, "boot_id": "sim",
        "daemon": {"pid": 1, "version": "sim", "interval": 1.0, "healthy": True,
                   "last_sample": now, "last_sample_age": 0.2, "store": "ok"},
        "rates": rates,
        "tx_gbps": gbps, "rx_gbps": gbps, "error_rates": {}, "expected_devices": STATUS_DEVICES,
        "link_gbps": LINK_GBPS * devices,
        "devices": [{"name": f"rdmap{i}s0", "state": "4: ACTIVE", "link_gbps": LINK_GBPS,
                     "tx_gbps": per_dev, "rx_gbps": per_dev, "port_counters": len(PORT_COUNTERS),
                     "errors": {}} for i in range(devices)],
        "jobs": [] if job is None else [{"key": job[0], "job_id": job[0], "restart": 0, "user": job[1],
                                         "partition": "gpu", "start": now - 600.0}],
        "recent": {"seconds": window, "counters": totals, "devices": recent_devs},
    }
    # What the daemon writes with default thresholds (daemon/nodestatus.py build_node_status).
    doc["verdict"] = node_verdict(host, [(f"rdmap{i}s0", {}, len(PORT_COUNTERS)) for i in range(devices)],
                                  STATUS_DEVICES, doc["recent"], rates, None, "p5.48xlarge")
    return doc


def write_fleet(store: str, cluster: str, nodes: int, now: float, *, nodes_per_job: int = 16,
                idle_every: int = 10, drop_every: int = 0, missing_every: int = 0,
                stale_every: int = 0, first_id: int = 500000, prefix: str = "gpu-dy-p5-") -> Fleet:
    """`nodes` status files in `<store>/<cluster>/nodes/`; every `idle_every`-th group of
    `nodes_per_job` nodes runs no job; a stride of 0 turns that fault off."""
    d = os.path.join(store, cluster, "nodes")
    os.makedirs(d, exist_ok=True)
    fleet = Fleet()
    for k in range(nodes):
        host = host_name(k, prefix)
        group = k // nodes_per_job
        job = None
        if not idle_every or group % idle_every != idle_every - 1:
            job = (str(first_id + group), USERS[group % len(USERS)])
            fleet.jobs.setdefault(job[0], []).append(host)
        dropping = bool(drop_every) and k % drop_every == drop_every - 1
        missing = bool(missing_every) and k % missing_every == missing_every - 1
        stale = bool(stale_every) and k % stale_every == stale_every - 1
        gbps = 0.0 if job is None else 1000.0 + 10.0 * (k % 200)
        doc = fleet_doc(cluster, host, now - (3600.0 if stale else 0.0), job=job, gbps=gbps,
                        drops=50.0 if dropping else 0.0,
                        devices=STATUS_DEVICES - 1 if missing else STATUS_DEVICES)
        fleet.hosts.append(host)
        for cond, where in ((dropping and not stale, fleet.dropping), (missing, fleet.missing),
                            (stale, fleet.stale)):
            if cond:
                where.append(host)
        path = os.path.join(d, f"{host}.json")
        with open(path + ".tmp", "wb") as f:
            f.write(encode_node_status(doc))  # as the daemon writes it: devices, recent last
        os.replace(path + ".tmp", path)
    return fleet
