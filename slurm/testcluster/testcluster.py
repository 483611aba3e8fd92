"""`slurm/testcluster/up` and `down`: the test cluster of tests/slurm_cluster.py for a person
(docs/testcluster.md). `up` starts it and returns, leaving it running; `down` stops it by PID.

Standard library only (runs under the venv's python when there is one, else any python3).
"""
from __future__ import annotations

import argparse
import atexit
import os
import sys
from typing import Optional, Sequence

# The harness lives with the tests that use it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))

from slurm_cluster import CLUSTER_NAME, HarnessError, SlurmCluster, stop_root  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="testcluster", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster in DIR and leave it running")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--alloc", action="store_true", help="PrologFlags=Alloc")
    up.add_argument("--no-daemons", action="store_true", help="do not start `efajob daemon`s")
    up.add_argument("--accounting", action="store_true",
                    help="slurmdbd over a private MariaDB (sacct, sacctmgr, accounts phys, bio)")
    up.add_argument("--interval", type=float, default=1.0, help="daemon sampling interval (s)")
    up.add_argument("dir")
    down = sub.add_parser("down", help="stop the cluster in DIR (by PID)")
    down.add_argument("dir")
    a = ap.parse_args(argv)
    if a.cmd == "down":
        pids = stop_root(a.dir)
        print(f"stopped {len(pids)} processes" if pids else "nothing was running")
        return 0
    os.makedirs(a.dir, exist_ok=True)
    c = SlurmCluster(a.dir, nodes=a.nodes, alloc=a.alloc, daemons=not a.no_daemons,
                     interval=a.interval, accounting=a.accounting)
    try:
        c.start()
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    atexit.unregister(c.stop)  # `up` leaves the cluster running: `down` stops it
    c._stopped = True
    v = "%d.%02d" % tuple(c.version) if c.version else "?"
    print(f"Slurm {v} cluster {CLUSTER_NAME!r} up in {c.started_in:.1f} s: nodes "
          f"{','.join(c.nodes)} on 127.0.0.1 (slurmctld port {c.ctld_port})"
          f"{', PrologFlags=Alloc' if c.alloc else ''}"
          f"{f', slurmdbd port {c.dbd_port}' if c.accounting else ''}")
    print(f"export SLURM_CONF={c.lay.slurm_conf} EFAJOB_CONFIG={c.lay.efajob_conf}")
    print(f"job store {c.lay.store}, simulated sysfs {c.lay.p('sys')}/<node>, "
          f"logs {c.lay.p('log')}")
    print(f"stop it with: slurm/testcluster/down {c.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
