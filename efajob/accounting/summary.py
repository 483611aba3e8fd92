"""A job's efajob summary in Slurm's accounting: the text kept in the job's AdminComment, and
how it is merged with what a site already keeps there. Pure: no Slurm, no I/O.

The form is one whitespace-free token, schema-versioned by its prefix:

    efajob1:v=warning;n=2;s=3600;tx=123456789;rx=123456000;avg=12.345;peak=40.1;f=rx_drops+straggler;rec=2;r=0

(v verdict, n nodes, s elapsed seconds, tx/rx EFA bytes, avg/peak Gb/s per node, f finding
codes of warning and critical findings, rec record files behind it, r the restart). Not JSON:
`sacctmgr modify job ... set AdminComment=` turns every `"` and `'` into a backtick
(strip_quotes() in src/sacctmgr/common.c, every version), and after slurmctld forgets a job
sacctmgr is the only way in; `|` would break `sacct -P`. So the token holds only letters,
digits and `=;:.+_-`, which both writers keep as given, and all in lower case: Slurm 22.05's
sacctmgr lower-cases AdminComment (fixed in 23.02, SchedMD commit 933bf55510). One token, so it can sit beside a
site's own text (Princeton's jobstats keeps `JS1:` there) and be found and replaced in it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

PREFIX = "efajob1:"
POLICIES = ("append", "skip", "off")
# Verdicts a finished job's row carries (report/findings.py); a summary with another is refused.
VERDICTS = ("Healthy", "Warning", "Failure")
_BY_LOWER = {v.lower(): v for v in VERDICTS}
_CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TOKEN_RE = re.compile(r"(?:^|(?<=\s))" + re.escape(PREFIX) + r"(\S*)")
_INT_KEYS = {"n": "num_nodes", "s": "elapsed_s", "tx": "tx_bytes", "rx": "rx_bytes",
             "rec": "records", "r": "restart"}
_FLOAT_KEYS = {"avg": "avg_gbps_per_node", "peak": "peak_gbps_per_node"}
_MAX_INT = 2 ** 63 - 1
_MAX_GBPS = 1e6  # a per-node rate above a petabit is garbage, not a measurement


@dataclass(frozen=True)
class Summary:
    """What the AdminComment carries of one job run (None: not known)."""

    verdict: str
    num_nodes: Optional[int] = None
    elapsed_s: Optional[int] = None
    tx_bytes: Optional[int] = None
    rx_bytes: Optional[int] = None
    avg_gbps_per_node: Optional[float] = None
    peak_gbps_per_node: Optional[float] = None
    findings: Tuple[str, ...] = ()
    records: Optional[int] = None
    restart: int = 0


def from_row(row: Mapping) -> Optional[Summary]:
    """A job index row (db.from_db, or a jobs_row) -> its Summary; None when the row has no
    verdict a summary can carry (a running job, one without data)."""
    v = row.get("verdict")
    if v not in VERDICTS:
        return None

    def raw(key: str) -> Optional[float]:
        x = row.get(key)
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            return None
        return float(x)

    def whole(key: str) -> Optional[int]:
        x = raw(key)
        return None if x is None else int(round(x))

    def rate(key: str) -> Optional[float]:
        x = raw(key)
        return None if x is None else round(x, 3)

    return Summary(
        verdict=v, num_nodes=whole("num_nodes"), elapsed_s=whole("elapsed_s"),
        tx_bytes=whole("tx_bytes"), rx_bytes=whole("rx_bytes"),
        avg_gbps_per_node=rate("avg_gbps_per_node"),
        peak_gbps_per_node=rate("peak_gbps_per_node"),
        findings=tuple(sorted(c for c in (row.get("findings") or ())
                              if isinstance(c, str) and _CODE_RE.fullmatch(c))),
        records=whole("records"), restart=int(row.get("restart") or 0))


def _g(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


def encode(s: Summary) -> str:
    parts = [f"v={s.verdict.lower()}"]
    for key, attr in (("n", "num_nodes"), ("s", "elapsed_s"), ("tx", "tx_bytes"),
                      ("rx", "rx_bytes")):
        if getattr(s, attr) is not None:
            parts.append(f"{key}={getattr(s, attr)}")
    for key, attr in _FLOAT_KEYS.items():
        if getattr(s, attr) is not None:
            parts.append(f"{key}={_g(getattr(s, attr))}")
    if s.findings:
        parts.append("f=" + "+".join(s.findings))
    if s.records is not None:
        parts.append(f"rec={s.records}")
    parts.append(f"r={s.restart}")
    return PREFIX + ";".join(parts)


def find(comment: Optional[str]) -> Optional[str]:
    """The body of the first efajob1 token in an AdminComment, or None."""
    m = _TOKEN_RE.search(comment or "")
    return None if m is None else m.group(1)


def decode(comment: Optional[str]) -> Optional[Summary]:
    """The Summary in an AdminComment (anywhere in it, beside a site's own text), or None when
    there is none or it is malformed: a hostile or garbled comment is never half-believed."""
    body = find(comment)
    if body is None:
        return None
    body = body.lower()  # what 22.05's sacctmgr stored (see the module's docstring)
    fields: Dict[str, str] = {}
    for part in body.split(";"):
        key, eq, value = part.partition("=")
        if not eq or key in fields:
            return None
        fields[key] = value
    verdict = _BY_LOWER.get(fields.get("v", ""))
    if verdict is None:
        return None
    out: Dict[str, object] = {"verdict": verdict}
    for key, attr in _INT_KEYS.items():
        if key in fields:
            if not fields[key].isdigit() or not fields[key].isascii() or \
                    int(fields[key]) > _MAX_INT:
                return None
            out[attr] = int(fields[key])
    for key, attr in _FLOAT_KEYS.items():
        if key in fields:
            try:
                x = float(fields[key])
            except ValueError:
                return None
            if not (math.isfinite(x) and 0 <= x <= _MAX_GBPS):
                return None
            out[attr] = x
    if fields.get("f"):
        codes = fields["f"].split("+")
        if not all(_CODE_RE.fullmatch(c) for c in codes):
            return None
        out["findings"] = tuple(codes)
    return Summary(**out)  # type: ignore[arg-type]  # keys are Summary's fields


def merge(existing: Optional[str], token: str, policy: str) -> Tuple[Optional[str], str]:
    """(the AdminComment to write, or None to write nothing; why). Our own token is replaced
    in place; a site's own text is kept: `append` adds ours after it (one space), `skip`
    leaves such a job alone. Nothing is written when the comment already says the same."""
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r} is not one of {POLICIES}")
    if policy == "off":
        return None, "off"
    old = (existing or "").strip()
    if not old:
        return token, "written"
    matches = list(_TOKEN_RE.finditer(old))
    if matches:
        if len(matches) == 1 and matches[0].group(0) == token:
            return None, "unchanged"
        # Ours goes where it was (the first of ours replaced, any later one dropped); the
        # site's text around it is kept byte for byte.
        pieces, pos = [], 0
        for i, m in enumerate(matches):
            pieces += [old[pos:m.start()], token if i == 0 else ""]
            pos = m.end()
        return ("".join(pieces) + old[pos:]).strip(), "replaced"
    if policy == "skip":
        return None, "skipped: the AdminComment holds the site's own text"
    return f"{old} {token}", "appended"


def sacctmgr_alters(value: str, slurm_version: Tuple[int, int]) -> bool:
    """True when `sacctmgr modify job ... set AdminComment=<value>` would not store `value`
    as given: it turns quotes into backticks (every version), slurmdbd's SQL takes a
    backslash as an escape, 22.05 lower-cases everything, and a newline cannot be passed.
    A site's own text that would change is left alone rather than rewritten."""
    if any(c in value for c in "\"'\\\n"):
        return True
    return slurm_version < (23, 2) and value != value.lower()
