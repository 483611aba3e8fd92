"""The simulator's public API: simulated sysfs trees for EFA nodes, and simulated traffic on them.

`build_node()` writes, under any directory, the part of `/sys` efajob reads on an EFA node;
`SimNode.traffic()` then advances the counters as if a job had moved data, and returns exactly
what it injected, so tests can compare a reader's numbers with the truth. The user guide is
docs/simulator.md.

Import from here (tests, bench, demo and the CLI do). The work is split in two modules:
- sim/layout.py: counter layouts per kernel and driver (in-tree or AWS's, by version);
- sim/tree.py: the trees (building nodes and clusters with their
  mlx5/ENA/lo neighbours and ENA ethtool files, opening, copying, removing);
- sim/traffic.py: the traffic (the plan, patterns, faults, in-place counter writes,
  `cluster_traffic`, `Injected`).

Standard library only.
"""
from __future__ import annotations

from efajob.sim.traffic import (CMDS_ERR_PER_S, ENA_BW_OUT_EXCEEDED_PER_S, ENA_PACKET_BYTES,
                                ENA_PPS_EXCEEDED_PER_S, FAULTS, GARBAGE_COUNTER, GARBAGE_TEXT,
                                NO_COMPLETION_EVERY_S, PATTERNS, RDMA_READ_WR_ERR_PER_S,
                                RDMA_WRITE_WR_ERR_PER_S, Injected, cluster_traffic, parse_value,
                                run_plans, vanish_device)
from efajob.sim.layout import (AWS_LAYOUT_VERSIONS, AWS_NEWEST, DEFAULT_DRIVER, DEVICE_COUNTERS,
                               DRIVERS, ETHTOOL_DIR, IN_TREE, KERNELS, KVERBS_DEVICE_COUNTERS,
                               MARKER, NETDEV_STATS, PAYLOAD_BYTES, PORT_COUNTERS, RDMA_WR_BYTES,
                               SEND_PERCENT, SEND_WR_BYTES, SRD_COUNTERS, aws_version,
                               counter_layout, ethtool_path, module_version, rate_text,
                               supported_counters)
from efajob.sim.tree import (TREE_FAULTS, SimNode, build_cluster, build_node, copy_tree, open_node,
                             open_tree, remove_tree)

__all__ = [
    # trees (sim/tree.py)
    "KERNELS", "DRIVERS", "IN_TREE", "DEFAULT_DRIVER", "AWS_LAYOUT_VERSIONS", "AWS_NEWEST",
    "MARKER", "DEVICE_COUNTERS", "KVERBS_DEVICE_COUNTERS", "SRD_COUNTERS", "PORT_COUNTERS",
    "NETDEV_STATS", "ETHTOOL_DIR", "PAYLOAD_BYTES", "SEND_PERCENT", "SEND_WR_BYTES",
    "RDMA_WR_BYTES", "counter_layout", "supported_counters", "rate_text", "aws_version",
    "module_version", "TREE_FAULTS", "SimNode", "build_node", "build_cluster", "ethtool_path",
    "open_node", "open_tree", "remove_tree", "copy_tree",
    # traffic (sim/traffic.py)
    "PATTERNS", "FAULTS", "RDMA_READ_WR_ERR_PER_S", "RDMA_WRITE_WR_ERR_PER_S", "CMDS_ERR_PER_S",
    "NO_COMPLETION_EVERY_S", "ENA_PACKET_BYTES", "ENA_BW_OUT_EXCEEDED_PER_S",
    "ENA_PPS_EXCEEDED_PER_S", "GARBAGE_COUNTER", "GARBAGE_TEXT", "Injected", "parse_value",
    "vanish_device", "run_plans", "cluster_traffic",
]
