"""The pure half of the Slurm test cluster (tests/slurm_cluster.py): names, the directory
layout, and the generated slurm.conf and efajob config. No I/O: tested on literal strings in
tests/test_slurm_e2e.py::test_harness_helpers.

Standard library only.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Tuple

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
# Slurm's accounting (SlurmCluster(accounting=True)): slurmdbd over a MariaDB on 127.0.0.1.
ACCT_PACKAGES = ("slurmdbd", "mariadb-server")
DB_USER = "slurm"
DB_NAME = "slurm_acct_db"
MARKER_ENV = "EFAJOB_TESTCLUSTER"
CLUSTER_NAME = "efatest"
STATE_FILE = "testcluster.json"
TERMINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED",
})
POLL = 0.1  # squeue/sinfo poll period (sbatch --wait polls every 2-10 s: far too slow here)


class HarnessError(Exception):
    """The test cluster could not be built, started or queried."""


# -- pure helpers ----------------------------------------------------------------------------
def parse_slurm_version(text: str) -> Tuple[int, int]:
    """`slurm-wlm 22.05.8` (Debian 12) or `slurm 24.11.5` (Debian 13) -> (22, 5)."""
    m = re.search(r"(\d+)\.(\d+)(?:\.\d+)?", text)
    if not m:
        raise HarnessError(f"cannot parse a Slurm version from {text!r}")
    return int(m.group(1)), int(m.group(2))


def parse_sbatch_id(out: str) -> str:
    """`sbatch --parsable` prints `<id>` or `<id>;<cluster>`."""
    first = out.strip().split(";")[0]
    if not first.isdigit():
        raise HarnessError(f"sbatch printed no job id: {out!r}")
    return first


def node_names(n: int) -> List[str]:
    return [f"n{i}" for i in range(1, n + 1)]


@dataclass(frozen=True)
class Layout:
    """Paths under the cluster root; the efajob config templates per-node ones on `{node}`."""

    root: str
    # munged wants every directory above its socket searchable by all (pytest's tmp dirs are
    # 0700): the socket lives in its own directory under /tmp, also short enough for sun_path.
    munge_dir: str = ""

    def p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def slurm_conf(self) -> str:
        return self.p("etc", "slurm.conf")

    @property
    def efajob_conf(self) -> str:
        return self.p("etc", "efajob.toml")

    @property
    def scripts(self) -> str:
        return self.p("scripts")

    @property
    def store(self) -> str:
        return self.p("store")

    @property
    def munge_socket(self) -> str:
        return os.path.join(self.munge_dir or self.p("munge"), "munge.socket")

    def sysfs(self, node: str) -> str:
        return self.p("sys", node)

    def run_dir(self, node: str) -> str:
        return self.p("nodes", node, "run")

    def state_dir(self, node: str) -> str:
        return self.p("nodes", node, "state")

    def record_path(self, job_id: str, host: str, restart: int = 0) -> str:
        name = host + (f".{restart}" if restart else "") + ".json"
        return self.p("store", CLUSTER_NAME, "jobs", job_id, name)


def render_slurm_conf(lay: Layout, *, hostname: str, ctld_port: int, node_ports: Dict[str, int],
                      alloc: bool, hooks: bool, dbd_port: int = 0) -> str:
    """slurm.conf for one host, no systemd, no cgroups, nothing outside the root."""
    lines = [
        f"ClusterName={CLUSTER_NAME}",
        f"SlurmctldHost={hostname}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire (default 120 s) is also how long a requeued job waits before it may
        # start again (an earlier start is killed: "Job credential revoked").
        f"AuthInfo=socket={lay.munge_socket},cred_expire=10",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        *(["AccountingStorageType=accounting_storage/slurmdbd",
           "AccountingStorageHost=127.0.0.1", f"AccountingStoragePort={dbd_port}",
           # With slurmdbd, the munge socket for its connections is AccountingStoragePass,
           # not AuthInfo (slurm.conf(5)); without it sacctmgr asks /run/munge.
           f"AccountingStoragePass={lay.munge_socket}"]
          if dbd_port else ["AccountingStorageType=accounting_storage/none"]),
        "MpiDefault=none",
        "MailProg=/bin/true",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        # Trust the node lines below, not the hardware: four 2-CPU nodes on a 2-core host.
        "SlurmdParameters=config_overrides",
        # batch_sched_delay: the scheduler otherwise waits up to 3 s before starting a batch
        # job; sched_interval: a job that becomes eligible by time (a requeued job) is
        # otherwise picked up by the next periodic pass, up to 60 s later.
        "SchedulerParameters=batch_sched_delay=0,sched_interval=1",
        # A node that failed to register or was drained by a test comes back by itself.
        "ReturnToService=2",
        "KillWait=2",
        "InactiveLimit=0",
        "MinJobAge=600",
        f"StateSaveLocation={lay.p('state')}",
        f"SlurmdSpoolDir={lay.p('spool', '%n')}",
        f"SlurmctldPidFile={lay.p('run', 'slurmctld.pid')}",
        f"SlurmdPidFile={lay.p('run', 'slurmd.%n.pid')}",
        f"SlurmctldLogFile={lay.p('log', 'slurmctld.log')}",
        f"SlurmdLogFile={lay.p('log', 'slurmd.%n.log')}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
    ]
    if hooks:
        # Globs are expanded at each run (22.05+): the layout ParallelCluster uses.
        lines += [f"Prolog={lay.p('scripts', 'prolog.d', '*')}",
                  f"Epilog={lay.p('scripts', 'epilog.d', '*')}"]
    if alloc:
        lines.append("PrologFlags=Alloc")
    for node, port in node_ports.items():
        lines.append(f"NodeName={node} NodeHostname={hostname} NodeAddr=127.0.0.1 Port={port} "
                     "CPUs=2 RealMemory=1000 State=UNKNOWN")
    nodes = ",".join(node_ports)
    # batch: whole nodes, as on GPU clusters, so a job's counters are its own. shared: jobs
    # overlap on a node (the `shared` flag of records).
    lines += [f"PartitionName=batch Nodes={nodes} Default=YES MaxTime=INFINITE State=UP "
              "OverSubscribe=EXCLUSIVE",
              f"PartitionName=shared Nodes={nodes} MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"]
    return "\n".join(lines) + "\n"


def render_slurmdbd_conf(lay: Layout, *, hostname: str, dbd_port: int, db_port: int,
                         db_pass: str) -> str:
    """slurmdbd.conf (mode 0600: it holds the database password) for a MariaDB on 127.0.0.1.
    DbdHost must name this host (slurmdbd refuses to start elsewhere); DbdAddr is where
    slurmctld and the commands reach it."""
    return "\n".join([
        f"DbdHost={hostname}", "DbdAddr=127.0.0.1", f"DbdPort={dbd_port}",
        "SlurmUser=root", "AuthType=auth/munge", f"AuthInfo=socket={lay.munge_socket}",
        "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
        f"StoragePort={db_port}", f"StorageUser={DB_USER}", f"StoragePass={db_pass}",
        f"StorageLoc={DB_NAME}", f"LogFile={lay.p('log', 'slurmdbd.log')}",
        f"PidFile={lay.p('run', 'slurmdbd.pid')}", "DebugLevel=info",
    ]) + "\n"


def render_efajob_conf(lay: Layout, *, interval: float) -> str:
    """One config for every node: paths templated on `{node}` (SLURMD_NODENAME in the hooks,
    `--node` for the daemon); one shared store."""
    return (
        f'cluster = "{CLUSTER_NAME}"\n'
        f'sysfs_root = "{lay.p("sys", "{node}")}"\n'
        f'run_dir = "{lay.p("nodes", "{node}", "run")}"\n'
        f'state_dir = "{lay.p("nodes", "{node}", "state")}"\n'
        f'store = "{lay.store}"\n'
        f'log_file = "{lay.p("log", "efajob.{node}.log")}"\n'
        # The simulator's ENA allowance counters (what `ethtool -S` shows on a real node).
        f'ethtool = "{lay.p("sys", "{node}", ".efajob-sim", "ethtool")}"\n'
        'instance_type = "p5.48xlarge"\n'
        f"interval = {interval}\n"
        f"status_interval = {max(interval, 0.5)}\n"
        # Hooks wait this long at most for a delivery or a lock: on a busy test machine 1 s
        # can run out and leave a record in the outbox that the test reads from the store.
        "hook_wait = 120\n"
    )
