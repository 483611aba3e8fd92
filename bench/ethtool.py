"""Cost of reading ENA allowance counters (efajob/node/ethtool.py), beside the sampler's cost.

Prints, from one run (medians over interleaved rounds):
- IoctlReader: one allowance read (GSSET_INFO + GSTATS, names cached) on a real interface of
  this machine (`--ifname`, default the first with ethtool statistics), its first read (names
  learned: + GSTRINGS), and `read_all`; the same through `ethtool -S` (a subprocess) when
  installed, for comparison. The interface need not be ENA: the ioctls cost the same, except
  that ENA's GSTATS also asks the device for its ENI statistics (an admin command).
- FileReader: one read of a simulated `ethtool -S` file.
- Sampler.sample() of a simulated node with its netdevs, without and with the file reader
  (the ratio shows what merging costs per sample).

    python bench/ethtool.py [--ifname eth0] [--rounds 20] [--per-round 200] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from efajob.node.ethtool import FileReader, IoctlReader  # noqa: E402
from efajob.sim import ETHTOOL_DIR, build_node  # noqa: E402
from efajob.node.sysfs import Sampler  # noqa: E402


def _per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def _first_interface() -> str:
    probe = IoctlReader("/sys")
    try:
        for name in sorted(os.listdir("/sys/class/net")):
            if probe.read_all(name):
                return name
    finally:
        probe.close()
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ifname", default=None, help="interface for the ioctl figures")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    med = statistics.median
    res: dict = {"python": sys.version.split()[0]}

    ifname = args.ifname or _first_interface()
    res["ifname"] = ifname or None
    if ifname:
        r = IoctlReader("/sys")
        t0 = time.perf_counter()
        stats = r.read_all(ifname)
        res["ioctl_first_read_us"] = (time.perf_counter() - t0) * 1e6
        res["ioctl_stat_count"] = len(stats or {})
        t_read, t_all = [], []
        for _ in range(args.rounds):
            t_read.append(_per_call(lambda: r(ifname), args.per_round))
            t_all.append(_per_call(lambda: r.read_all(ifname), args.per_round))
        r.close()
        res["ioctl_read_us"] = med(t_read) * 1e6
        res["ioctl_read_all_us"] = med(t_all) * 1e6
        # What an ENA read does (GSSET_INFO, GSTATS, 6 values picked), on any interface: a
        # non-ENA one has no allowance names, so `read` stops after the count.
        entry = r._entry(ifname)
        if entry is not None:
            picks = list(range(min(6, entry.count)))

            def ena_shaped():
                r._count(ifname)
                r._values(ifname, entry, picks)

            res["ioctl_ena_shaped_us"] = med([_per_call(ena_shaped, args.per_round)
                                              for _ in range(args.rounds)]) * 1e6
        tool = shutil.which("ethtool") or ("/usr/sbin/ethtool" if os.path.exists("/usr/sbin/ethtool") else None)
        if tool:
            def sub():
                subprocess.run([tool, "-S", ifname], capture_output=True, timeout=10, check=False)
            res["ethtool_subprocess_us"] = med([_per_call(sub, 10) for _ in range(5)]) * 1e6

    with tempfile.TemporaryDirectory(prefix="efajob-bench-") as tmp:
        node = build_node(tmp, "p5.48xlarge", driver="in-tree")  # as measured in docs
        fr = FileReader(os.path.join(node.root, ETHTOOL_DIR))
        res["file_read_us"] = med([_per_call(lambda: fr("eth0"), args.per_round)
                                   for _ in range(args.rounds)]) * 1e6
        with Sampler(tmp, rediscover_interval=float("inf")) as plain, \
                Sampler(tmp, rediscover_interval=float("inf"), ethtool=fr) as merged:
            n = max(1, args.per_round // 10)
            t_plain, t_merged = [], []
            for _ in range(args.rounds):
                t_plain.append(_per_call(plain.sample, n))
                t_merged.append(_per_call(merged.sample, n))
        res["sample_with_net_us"] = med(t_plain) * 1e6
        res["sample_with_net_and_file_reader_us"] = med(t_merged) * 1e6
        res["merge_ratio"] = med(t_merged) / med(t_plain)

    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"python {res['python']}")
    if ifname:
        print(f"ioctl on {ifname} ({res['ioctl_stat_count']} statistics):")
        print(f"  first read (names learned)   {res['ioctl_first_read_us']:9.1f} us")
        print(f"  allowance read (cached)      {res['ioctl_read_us']:9.1f} us  (no ENA names: count only)")
        if "ioctl_ena_shaped_us" in res:
            print(f"  count + GSTATS, 6 picked     {res['ioctl_ena_shaped_us']:9.1f} us  (an ENA read's work)")
        print(f"  read_all                     {res['ioctl_read_all_us']:9.1f} us")
        if "ethtool_subprocess_us" in res:
            print(f"  `ethtool -S` subprocess      {res['ethtool_subprocess_us']:9.1f} us  "
                  f"({res['ethtool_subprocess_us'] / res.get('ioctl_ena_shaped_us', res['ioctl_read_us']):.0f}x)")
    else:
        print("ioctl: no interface with ethtool statistics here (pass --ifname)")
    print(f"file source read               {res['file_read_us']:9.1f} us")
    print(f"p5 sample with netdevs         {res['sample_with_net_us']:9.1f} us")
    print(f"  + file reader merge          {res['sample_with_net_and_file_reader_us']:9.1f} us  "
          f"({res['merge_ratio']:.3f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
