"""Job names from Slurm for index rows whose records carry none.

slurmd's Prolog/Epilog environment has no SLURM_JOB_NAME (only the slurmctld hooks do;
shared/notes/slurm.md), so most records arrive nameless. The head node's `efajob index
update` runs every minute or two, while slurmctld still holds a job that just ended (for
MinJobAge, 300 s by default): one `scontrol -o show job` per run names every job indexed in
that run, instead of one query per node per job from the compute nodes. A name is taken only
when Slurm's job has the same numeric id, cluster and user as the row (job ids restart at 1
when a cluster is rebuilt). Pure apart from the one `lookup()` call.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from efajob.errors import SlurmError

Row = Tuple[str, str, Optional[str]]  # (cluster, job_id, user) of a row without a name


def match_names(rows: Iterable[Row], jobs: Iterable, cluster: Optional[str]
                ) -> Dict[Tuple[str, str], str]:
    """{(cluster, job_id): name} for the rows Slurm's jobs (JobInfo) name. `cluster` is the
    ClusterName of the Slurm asked: rows of other clusters in the store are not its jobs."""
    return {k: j.name for k, j in match_jobs(rows, jobs, cluster).items() if j.name}


def match_jobs(rows: Iterable[Row], jobs: Iterable, cluster: Optional[str]
               ) -> Dict[Tuple[str, str], Any]:
    """{(cluster, job_id): Slurm's JobInfo} for the rows that are those jobs (same numeric
    id, cluster and user), as match_names decides."""
    by_id = {}
    for j in jobs:
        if j.slurm_job_id:
            by_id[j.slurm_job_id] = j
    out: Dict[Tuple[str, str], Any] = {}
    for c, job_id, user in rows:
        j = by_id.get(job_id)
        if j is None or (cluster and c != cluster) or (j.cluster and j.cluster != c):
            continue
        if user and j.user and user != j.user:
            continue  # another job under a reused id
        out[(c, job_id)] = j
    return out


Lookup = Callable[[], Tuple[List, Optional[str]]]  # -> (JobInfos, Slurm's ClusterName)


def scontrol_lookup(timeout: float = 10.0) -> Lookup:
    """The default lookup: `scontrol -o show job` and the controller's ClusterName."""
    def lookup() -> Tuple[List, Optional[str]]:
        from efajob.slurm.adapter import CommandBackend

        backend = CommandBackend(timeout=timeout)
        return backend.all_jobs(), backend.show_config().get("ClusterName")
    return lookup


def names_from_slurm(rows: List[Row], lookup: Lookup) -> Tuple[Dict[Tuple[str, str], Any],
                                                               Optional[str]]:
    """({(cluster, job_id): JobInfo} found, why Slurm could not be asked or None). No rows:
    Slurm is not asked."""
    if not rows:
        return {}, None
    try:
        jobs, cluster = lookup()
    except SlurmError as e:
        return {}, str(e)
    return match_jobs(rows, jobs, cluster), None


# Slurm's final states that the records cannot tell (the epilog runs before Slurm decides:
# a cancelled or timed-out job's epilog sees exit code 0:0 or a signal): the row takes
# Slurm's word for them. COMPLETED and FAILED stay as the records say.
SLURM_ONLY_STATES = frozenset({"CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                               "PREEMPTED", "BOOT_FAIL", "DEADLINE"})
