"""A job's efajob summary as slurmdbd holds it: `efajob accounting show`, and `efajob report`
for a job whose records were pruned from the store. The lookup is one `sacct`; the
rendering is pure."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Optional, Tuple

from efajob.accounting.slurmdb import AcctJob, SlurmDB
from efajob.accounting.summary import Summary, decode
from efajob.errors import JobNotFoundError


def summary_of(backend, job_id: str, cluster: Optional[str]) -> Tuple[AcctJob, Summary]:
    """(slurmdbd's row of the job, the summary in its AdminComment). JobNotFoundError when
    slurmdbd does not know the job or its AdminComment holds no (valid) efajob summary;
    SlurmError when sacct fails."""
    # No `scontrol show config` for the cluster: sacct defaults to the local one, and a
    # controller that is down would cost its MessageTimeout here.
    rows = SlurmDB(backend).read([job_id], cluster).get(job_id, [])
    if not rows:
        raise JobNotFoundError(f"job {job_id} is not in Slurm's accounting"
                               + (f" (cluster {cluster})" if cluster else ""))
    job = rows[-1]  # sacct lists the newest submission of a reused id last
    found = decode(job.admin_comment)
    if found is None:
        raise JobNotFoundError(f"job {job_id} has no efajob summary in Slurm's accounting "
                               f"(AdminComment: {job.admin_comment[:200]!r})")
    return job, found


def as_dict(job: AcctJob, s: Summary) -> dict:
    return dict(asdict(s), job_id=job.job_id, user=job.user, state=job.state,
                findings=list(s.findings), source="slurm_accounting")


def render(found: Tuple[AcctJob, Summary], job_id: str, as_json: bool,
           pruned: bool = False) -> str:
    """Text or JSON. `pruned`: for `efajob report` of a job the store no longer holds."""
    from efajob.fmt import fmt_bytes, fmt_duration, fmt_bandwidth

    job, s = found
    if as_json:
        return json.dumps(dict(as_dict(job, s), **({"pruned": True} if pruned else {})),
                          indent=2, sort_keys=True)
    nodes = f"{s.num_nodes} node{'s' if s.num_nodes != 1 else ''}" if s.num_nodes else "? nodes"
    lines = [
        f"Job {job.job_id} ({job.user}, {job.state}): {s.verdict}, from Slurm's accounting "
        "(the summary efajob wrote into its AdminComment"
        + ("; the job's records are no longer in the store)" if pruned else ")"),
        f"  {nodes}, {fmt_duration(s.elapsed_s)}; EFA tx {fmt_bytes(s.tx_bytes)}, "
        f"rx {fmt_bytes(s.rx_bytes)}; per node avg {fmt_bandwidth(s.avg_gbps_per_node)}, "
        f"peak {fmt_bandwidth(s.peak_gbps_per_node)}",
        "  findings: " + (", ".join(s.findings) if s.findings else "none"),
    ]
    if s.restart:
        lines.append(f"  restart {s.restart} (the job's latest run)")
    return "\n".join(lines)
