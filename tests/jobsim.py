"""Job-node records built from simulator scenarios, through the real code path: simulated sysfs
trees (efajob.sim), snapshots read by efajob.node.sysfs, records assembled by
efajob.hooks.records.build_record. Only the daemon's rows are synthesised (evenly spread over the
job), with fixed clocks so that outputs are byte-for-byte stable (golden files).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from efajob import sim
from efajob.node.localstore import SampleRow
from efajob.hooks.outbox import store_path
from efajob.hooks.records import JobIdentity, build_record
from efajob.hooks.runfiles import atomic_write, dumps
from efajob.node.sysfs import read_snapshot

T0 = 1714557600.0  # 2024-05-01 10:00:00 UTC
MONO0 = 5000.0


@dataclass
class NodeSpec:
    tx_gbps: float = 400.0
    rx_gbps: float = 400.0
    fault: Optional[str] = None
    devices: Optional[Sequence] = None
    ena_tx_gbps: float = 0.0
    ena_rx_gbps: float = 0.0
    shared: Sequence[str] = ()
    prolog: bool = True  # False: no start snapshot (counted from the daemon's rows)
    rows: bool = True  # daemon samples present
    exit_code: Optional[str] = "0:0"
    pattern: str = "steady"
    extra: Dict[str, object] = field(default_factory=dict)  # record fields to override
    # Counter increments written into the simulated tree during the job, for counters no
    # simulator fault moves yet: {device index: {name: n}}; "device:name" is the device-level
    # hw_counters/name, a bare name the port's. The end snapshot reads them like any value.
    bump: Dict[int, Dict[str, int]] = field(default_factory=dict)
    # > 1: the daemon's rows come in bursts, every `burst`-th 1 s row carrying the bytes of
    # `burst` seconds (a simulator or sampler catching up): rates above the link.
    burst: int = 1


def bump_counters(node: sim.SimNode, bump: Dict[int, Dict[str, int]]) -> None:
    for index, counters in bump.items():
        dev = node.present_devices()[index]
        for name, n in counters.items():
            where, _, short = name.rpartition(":")
            sub = "hw_counters" if where == "device" else os.path.join("ports", "1", "hw_counters")
            path = os.path.join(node.device_path(dev), sub, short)
            with open(path) as f:
                value = int(f.read())
            with open(path, "w") as f:
                f.write(f"{value + n}\n")


def _rows(inj: sim.Injected, seconds: int, jobs: Sequence[str], burst: int = 1) -> List[SampleRow]:
    """`seconds` one-second rows carrying the injected totals (the first row at MONO0 + 1);
    with `burst` > 1 every burst-th row carries the last `burst` seconds' share."""
    rows = []
    for i in range(seconds):
        def share(v: int, i: int = i) -> int:
            if burst > 1:
                if (i + 1) % burst and i + 1 < seconds:
                    return 0
                lo = (i // burst) * burst
                return v * (i + 1) // seconds - v * lo // seconds
            return v * (i + 1) // seconds - v * i // seconds

        rows.append(SampleRow(
            boot_id="b", mono=MONO0 + i + 1, wall=T0 + i + 1, seconds=1.0,
            deltas={k: share(v) for k, v in inj.totals.items()},
            device_tx_bytes={d: share(c.get("tx_bytes", 0)) for d, c in inj.devices.items()},
            device_rx_bytes={d: share(c.get("rx_bytes", 0)) for d, c in inj.devices.items()},
            jobs=tuple(jobs), resets=()))
    return rows


class NodePool:
    """Simulated node trees reused across records: building a tree creates hundreds of files
    (slow on some disks), while a snapshot-traffic-snapshot cycle on an existing tree gives the
    same record. Faults that leave the tree changed or depend on its values (vanish, garbage, reset,
    missing-device) get a fresh tree, so records do not depend on which test ran before."""

    def __init__(self, root: str):
        self.root = root
        self.nodes: Dict[tuple, sim.SimNode] = {}
        self.built = 0

    def node(self, instance_type: str, kernel: str, device_limit: Optional[int],
             fresh: bool = False, driver: str = sim.DEFAULT_DRIVER,
             tree_fault: Optional[str] = None) -> sim.SimNode:
        key = (instance_type, kernel, device_limit, driver)
        if fresh or key not in self.nodes:
            self.built += 1
            node = sim.build_node(os.path.join(self.root, f"sim{self.built}"), instance_type,
                                  kernel, driver=driver, name=f"sim{self.built}",
                                  device_limit=device_limit, fault=tree_fault)
            if fresh:
                return node
            self.nodes[key] = node
        return self.nodes[key]


def job_records(pool: NodePool, specs: Dict[str, NodeSpec], *, job_id: str = "100",
                cluster: str = "test", seconds: int = 60, instance_type: str = "p5.48xlarge",
                kernel: str = "6.17", device_limit: Optional[int] = 8, user: str = "alice",
                restart: int = 0, start: float = T0, driver: str = sim.DEFAULT_DRIVER,
                expected_devices: Optional[int] = None, **ident_kw) -> List[dict]:
    """One record per node of `specs`, as the epilog would build it. A tree cut to
    `device_limit` devices stands for a node of that many (the record's `expected_devices`)
    unless `expected_devices` says otherwise: the full type's count models a missing device
    (as does the simulator's `missing-device` fault, which takes one device out of the tree)."""
    out = []
    hosts = sorted(specs)
    nodelist = ",".join(hosts)
    for host, spec in specs.items():
        # missing-device: the node came up without the device (the tree is built without it),
        # not one that vanished during the job (the traffic fault of the same name).
        missing = spec.fault == "missing-device"
        node = pool.node(instance_type, kernel, device_limit, driver=driver,
                         fresh=missing or spec.fault in ("vanish", "garbage", "reset"),
                         tree_fault=spec.fault if missing else None)
        before = read_snapshot(node.root, clock=lambda: MONO0, wall_clock=lambda: start)
        inj = node.traffic(spec.tx_gbps, spec.rx_gbps, seconds,
                           fault=None if missing else spec.fault,
                           devices=spec.devices, ena_tx_gbps=spec.ena_tx_gbps,
                           ena_rx_gbps=spec.ena_rx_gbps, pattern=spec.pattern)
        bump_counters(node, spec.bump)
        after = read_snapshot(node.root, clock=lambda: MONO0 + seconds,
                              wall_clock=lambda: start + seconds)
        ident = JobIdentity(cluster=cluster, job_id=job_id, restart=restart, host=host, user=user,
                            uid=1000, partition="gpu", account="ml", nodelist=nodelist,
                            num_nodes=len(hosts), exit_code=spec.exit_code,
                            derived_exit_code="0:0",
                            start_wall=None if spec.prolog else start,
                            start_mono=None if spec.prolog else MONO0, **ident_kw)
        key = ident.key
        rec = build_record(ident, before if spec.prolog else None, after,
                           _rows(inj, seconds, [key], spec.burst) if spec.rows else (),
                           shared=spec.shared, instance_type=instance_type,
                           prolog_seen=spec.prolog, efajob_version="0.1.0",
                           expected_devices=expected_devices or device_limit)
        rec.update(spec.extra)
        out.append(rec)
    return out


def write_store(store: str, records: Sequence[dict]) -> List[str]:
    """Put records where the daemon would deliver them."""
    paths = []
    for rec in records:
        p = store_path(store, rec)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        atomic_write(p, dumps(rec))
        paths.append(p)
    return paths


def healthy(n: int = 4, **kw) -> Dict[str, NodeSpec]:
    return {f"n{i}": NodeSpec(**kw) for i in range(1, n + 1)}


GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def check_golden(name: str, text: str, update: bool) -> None:
    """Compare `text` with tests/golden/<name> byte for byte (`pytest --update-golden` rewrites)."""
    path = os.path.join(GOLDEN, name)
    if update:
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    if not os.path.exists(path):
        raise AssertionError(f"golden file {path} is missing: run pytest --update-golden")
    with open(path, encoding="utf-8") as f:
        want = f.read()
    if text != want:
        import difflib

        diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True),
                                            "golden/" + name, "current", n=2))
        raise AssertionError(f"output differs from golden/{name} (pytest --update-golden "
                             f"rewrites it):\n{diff[:6000]}")
