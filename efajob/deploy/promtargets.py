"""Prometheus file_sd targets from Slurm's node list (`efajob prometheus targets`).

Prometheus re-reads a file_sd file whenever it changes, so the head node can keep the list of
node exporters current by rewriting it from `sinfo` (from cron: ParallelCluster's dynamic
nodes come and go). Nodes that are powered off or powering up or down (sinfo's `~`, `#`, `%`
suffixes) are left out: nothing listens there, and a target that cannot answer would raise
EfajobExporterDown for a node that is simply not running. A node that is down (`*`, not
responding) stays in: that is what the alert is for.

`parse_sinfo_nodes` and `build_file_sd` are pure; `read_sinfo_nodes` runs sinfo.
"""
from __future__ import annotations

import json
import subprocess
from typing import Callable, Dict, List, Sequence, Tuple

from efajob.errors import SlurmError

SINFO_FORMAT = "%N|%o|%t"  # node name, NodeAddr, compact state ("idle~", "down*", "mix")
# sinfo(1) state suffixes of a node that is not running: powered off, powering up, powering
# down, pending power-down.
_NOT_RUNNING = ("~", "#", "%", "!")
SINFO_TIMEOUT = 30.0


def parse_sinfo_nodes(text: str) -> List[Tuple[str, str]]:
    """`sinfo -h -N -o '%N|%o|%t'` -> [(node, address)] of running nodes, each once (a node
    in two partitions is listed twice by -N), in sinfo's order."""
    seen: Dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3 or not parts[0]:
            continue
        name, addr, state = parts
        if any(s in state for s in _NOT_RUNNING):
            continue
        seen.setdefault(name, addr or name)
    return list(seen.items())


def build_file_sd(nodes: Sequence[Tuple[str, str]], port: int) -> List[dict]:
    """One target group per node, labelled with the Slurm node name as `slurm_node` (not
    `node` or `cluster`: efajob_node_info carries those, and a target label of the same name
    would rename the exported one to exported_node)."""
    return [{"targets": [f"{addr}:{port}"], "labels": {"slurm_node": name}}
            for name, addr in nodes]


def render_file_sd(groups: Sequence[dict]) -> str:
    return json.dumps(list(groups), indent=2) + "\n"


Runner = Callable[..., "subprocess.CompletedProcess"]


def read_sinfo_nodes(partition: str = "", *, runner: Runner = subprocess.run) -> List[Tuple[str, str]]:
    """The running nodes sinfo lists (all partitions, or one). Raises SlurmError."""
    from efajob.slurm.adapter import find_command, summarize_stderr

    exe = find_command("sinfo")
    if exe is None:
        raise SlurmError("sinfo not found (is Slurm installed here?)")
    argv = [exe, "-h", "-N", "-o", SINFO_FORMAT] + (["-p", partition] if partition else [])
    try:
        p = runner(argv, capture_output=True, text=True, timeout=SINFO_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"sinfo did not answer within {SINFO_TIMEOUT:g} s") from None
    except OSError as e:
        raise SlurmError(f"cannot run {exe}: {e.strerror}") from None
    if p.returncode != 0:
        raise SlurmError(f"sinfo failed: {summarize_stderr(p.stderr)}")
    return parse_sinfo_nodes(p.stdout)
