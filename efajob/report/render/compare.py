"""`efajob compare` as text (and the history section of the text report). Pure."""
from __future__ import annotations

import textwrap
from datetime import tzinfo
from typing import List, Optional

from efajob.fmt import NA, Column, fit_table, fmt_bytes, fmt_duration, fmt_gbps, fmt_time
from efajob.report.compare import Comparison
from efajob.report.findings import short_verdict
from efajob.report.render.text import MAX_PROSE

COLUMNS = (Column("JOB"), Column("START", drop=3), Column("ELAPSED", True, drop=2),
           Column("NODES", True, drop=2), Column("BYTES/NODE-S", True),
           Column("PEAK/NODE", True, drop=1), Column("VERDICT", drop=1),
           Column("FINDINGS", drop=4, flex=True))


def _row(r: dict, tz: Optional[tzinfo], mark: str) -> List[str]:
    bps, peak = r.get("bytes_per_node_s"), r.get("peak_gbps_per_node")
    return [r["job_id"] + (f".{r['restart']}" if r.get("restart") else "") + mark,
            fmt_time(r.get("start"), tz)[:16] if r.get("start") else NA,
            fmt_duration(r.get("elapsed_s")), str(r.get("num_nodes") or NA),
            fmt_bytes(bps) if bps is not None else NA,
            fmt_gbps(peak) + " Gbps" if peak is not None else NA,
            short_verdict(r["verdict"]) if r.get("verdict") else NA,
            ",".join(r.get("findings") or ()) or "-"]


def render_comparison(c: Comparison, *, tz: Optional[tzinfo] = None,
                      width: Optional[int] = 80, title: bool = True) -> str:
    j = c.job
    lines = []
    if title:
        who = f"{j.get('name') or NA}, user {j.get('user') or NA}"
        lines.append(f"Job {j['job_id']} ({who}) beside its previous runs of the same name "
                     "and user")
    if j.get("name") and j.get("user"):
        body = [_row(j, tz, " *")] + [_row(r, tz, "") for r in c.previous]
        table, _ = fit_table(COLUMNS, body, width, indent="  ")
        lines += table
    lines += textwrap.wrap(c.summary, width=min(width or MAX_PROSE, MAX_PROSE),
                           initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines) + "\n"
