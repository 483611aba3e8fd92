"""Slurm's node list, parsed: `sinfo -h -N -o '%N %T'` -> {node: state} (pure, no I/O).

sinfo prints a node once per partition it is in (`-N`): the first state wins (a node has one
state; the lines agree). States are sinfo's long names in lower case with Slurm's suffix
flags: `*` not responding, `~` powered down (cloud or power saving), `#` powering up,
`%` powering down, `!` pending power down, `$` reservation, `@` pending reboot, `^` rebooting,
`-` planned (sinfo(1), "NODE STATE CODES"). ParallelCluster's dynamic nodes sit at `idle~`
while no instance exists and `down~` after a failed launch: no efajob daemon can write a
status for them, so their silence is no alert.
"""
from __future__ import annotations

import re
from typing import Dict

# Slurm node names as the store accepts them (config.validate_name's alphabet).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# Power-saving states: the node has no instance behind it, or is losing it.
_POWERED_DOWN_FLAGS = ("~", "%", "!")
_POWERED_DOWN_WORDS = ("powered_down", "powering_down", "power_down", "powered down")


def parse_sinfo_nodes(text: str) -> Dict[str, str]:
    """{node: state} from `sinfo -h -N -o '%N %T'`; lines that are not `NAME STATE` are skipped."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not NAME_RE.fullmatch(parts[0]):
            continue
        out.setdefault(parts[0], parts[1].lower()[:64])
    return out


def is_powered_down(state: str) -> bool:
    """A cloud or power-saved node without a running instance (`idle~`, `down~`,
    `IDLE+CLOUD+POWERED_DOWN`): expected to be silent."""
    s = state.lower()
    return s.endswith(_POWERED_DOWN_FLAGS) or any(w in s for w in _POWERED_DOWN_WORDS)


def is_down(state: str) -> bool:
    """Slurm itself says the node is down, drained or not responding."""
    s = state.lower().rstrip("*~#%!$@^-")
    return s.startswith(("down", "drain", "fail")) or state.endswith("*")
