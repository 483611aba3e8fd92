"""The admin-queue cost of sampling (efajob/node/adminq.py): how long the Sampler takes to read
one counter group (one directory's files, back to back) on a simulated node, against the
kernel's 10 ms `lifespan`, and the admin commands a second that sampling costs the device.

Reading any file of a group refreshes the whole group through admin commands unless it was
refreshed less than `lifespan` ms ago, so a group read that fits inside the lifespan costs one
refresh. The read time measured here is the syscall cost on plain files; on a real node the
first read of a group also waits for the refresh's commands (each a round trip to the
device), and the cache window starts only after they return.

    python bench/adminq.py [--instance-type p5.48xlarge] [--kernel 6.17] [--driver aws-2.17.0]
                           [--interval 1] [--device-counter-interval 10] [--rounds 200]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from efajob import sim  # noqa: E402
from efajob.node import adminq  # noqa: E402
from efajob.node.sysfs import Sampler  # noqa: E402

LIFESPAN_MS = 10.0  # RDMA_HW_STATS_DEFAULT_LIFESPAN


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instance-type", default="p5.48xlarge")
    ap.add_argument("--kernel", default="6.17")
    ap.add_argument("--driver", default=sim.DEFAULT_DRIVER)
    ap.add_argument("--interval", type=float, default=1.0, help="the daemon's `interval`")
    ap.add_argument("--device-counter-interval", type=float, default=10.0,
                    help="the daemon's `device_counter_interval`")
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="efajob-bench-") as tmp:
        node = sim.build_node(tmp, args.instance_type, args.kernel, driver=args.driver)
        with Sampler(tmp, include_net=False, rediscover_interval=float("inf")) as s:
            groups = [(g[3], g[4]) for g in s._groups]  # (start, end) slots of one directory
            fds = s._fds
            pread, clock = os.pread, time.perf_counter
            per_group = []
            for _ in range(args.rounds):
                for start, end in groups:
                    t0 = clock()
                    for fd in fds[start:end]:
                        pread(fd, 64, 0)
                    per_group.append(clock() - t0)
            t0 = clock()
            for _ in range(args.rounds):
                s.sample()
            whole = (clock() - t0) / args.rounds

    it = node.instance_type
    port, dev = node.layout
    write = it.nitro >= 4
    port_cmds = adminq.commands_per_refresh(port, write)
    dev_cmds = adminq.commands_per_refresh(dev, write)
    rate = adminq.commands_per_second(it.devices, port_cmds, dev_cmds, args.interval,
                                      args.device_counter_interval)
    per_group.sort()
    med, worst = statistics.median(per_group) * 1e6, per_group[-1] * 1e6
    p99 = per_group[int(len(per_group) * 0.99)] * 1e6
    print(f"{it.name} kernel {args.kernel} driver {args.driver}: {it.devices} devices, "
          f"{len(groups)} counter groups ({len(port)} port + {len(dev)} device counters each)"
          f"{' [combined lists]' if adminq.is_combined(port) else ''}")
    # The worst read is the scheduler's doing (a preempted process), not the reads': it is
    # what could, rarely, split one group over two refreshes.
    print(f"  one group read   median {med:7.1f} us   p99 {p99:7.1f} us   worst {worst:8.1f} us"
          f"   ({len(per_group):,} reads; lifespan {LIFESPAN_MS:g} ms = {LIFESPAN_MS * 1e3 / p99:,.0f}x p99)")
    print(f"  one full sample           {whole * 1e6:8.1f} us")
    print(f"  admin commands per refresh: port group {port_cmds}, device group {dev_cmds}")
    print(f"  at interval {args.interval:g} s, device_counter_interval "
          f"{args.device_counter_interval:g} s: {rate:,.1f} admin commands/s "
          f"({it.devices} x ({port_cmds}/{args.interval:g} + {dev_cmds}/"
          f"{max(args.interval, args.device_counter_interval):g}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
