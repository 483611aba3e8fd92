"""Slurm's ClusterName from slurm.conf, for processes that do not run under slurmd.

The hooks take the cluster from SLURM_CLUSTER_NAME when the config leaves `cluster` at its
built-in "default" (hook.resolve_cluster). The daemon and the CLI never see that variable, so
without this they would file node status files and CloudWatch metrics under "default" while
the records of the same node's jobs sit under the real name. Standard library only.
"""
from __future__ import annotations

import os
import re
from typing import Iterable, Mapping, Optional

# Where slurm.conf lives: Debian/Ubuntu packages and most source builds, ParallelCluster,
# old Debian packages, and the configless copy slurmd caches (22.05+: /run/slurm/conf).
SLURM_CONF_PATHS = ("/etc/slurm/slurm.conf", "/opt/slurm/etc/slurm.conf",
                    "/etc/slurm-llnl/slurm.conf", "/run/slurm/conf/slurm.conf",
                    "/var/spool/slurmd/conf-cache/slurm.conf")
_LINE_RE = re.compile(r"^\s*clustername\s*=\s*(\S+)", re.IGNORECASE)
_MAX_BYTES = 1 << 20


def parse_cluster_name(text: str) -> Optional[str]:
    """ClusterName from slurm.conf text, lowercased as Slurm itself maps it (slurm.conf(5):
    upper case letters "will be silently mapped to lower case"). The last setting wins."""
    found = None
    for line in text.splitlines():
        m = _LINE_RE.match(line.split("#", 1)[0])
        if m:
            found = m.group(1).strip("\"'").lower() or None
    return found


def read_cluster_name(env: Mapping[str, str] = os.environ,
                      paths: Iterable[str] = SLURM_CONF_PATHS) -> Optional[str]:
    """From $SLURM_CONF when set (as Slurm's own tools do, no fallback then), else the first
    readable file of `paths`. None when there is none or it names no cluster."""
    candidates = [env["SLURM_CONF"]] if env.get("SLURM_CONF") else list(paths)
    for path in candidates:
        try:
            with open(path, "rb") as f:
                text = f.read(_MAX_BYTES).decode("utf-8", "replace")
        except OSError:
            continue
        return parse_cluster_name(text)
    return None
