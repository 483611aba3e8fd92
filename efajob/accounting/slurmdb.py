"""Reading and writing jobs' AdminComment in slurmdbd: `sacct` and `sacctmgr`, thin.

Writes go through `sacctmgr -i modify job where jobid=N cluster=C [user=U] set
AdminComment=...`, never `scontrol update`: slurmctld refuses to update a job once it has
finished (ESLURM_JOB_FINISHED, "Job has already finished", _update_job() in
src/slurmctld/job_mgr.c, checked on 22.05 here and current master), and a summary is written
after the job's last epilog, so the job has always finished by then. sacctmgr needs a Slurm
administrator (AdminLevel Operator or root), i.e. the head node's root.

Reads are one `sacct` per 200 jobs: JobIDRaw, JobID, User, State and AdminComment, with an
ASCII unit separator as the delimiter (a site's AdminComment may hold `|`) and continuation
lines joined back (it may hold newlines too).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from efajob.errors import SlurmError
from efajob.slurm.adapter import summarize_stderr

SEP = "\x1f"
CHUNK = 200  # job ids per sacct call: its argv, and slurmdbd's query, stay small
_ROW_RE = re.compile(r"[0-9]+" + SEP)
# Still running for slurmdbd: the job's end has not reached the database yet, and writing
# now would race slurmctld's job-complete message.
ACTIVE_STATES = ("PENDING", "RUNNING", "SUSPENDED", "REQUEUED", "RESIZING", "COMPLETING",
                 "CONFIGURING", "STAGE_OUT", "SIGNALING", "REQUEUE_HOLD", "REQUEUE_FED")


@dataclass(frozen=True)
class AcctJob:
    job_id_raw: str
    job_id: str  # as sacct prints it (123_4 for an array task)
    user: str
    state: str  # the first word: "CANCELLED by 0" -> CANCELLED
    admin_comment: str

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES


def split_rows(text: str, fields: int) -> List[List[str]]:
    """`sacct -n -P --delimiter=SEP` output of `fields` fields, the last an AdminComment ->
    rows of `fields` strings. A line that does not start a row (`<digits>SEP`, the JobIDRaw
    first) continues the last row's AdminComment, which may hold newlines; a line that
    starts none and follows none is dropped."""
    rows: List[List[str]] = []
    for line in text.split("\n"):
        if _ROW_RE.match(line) and line.count(SEP) >= fields - 1:
            rows.append(line.split(SEP, fields - 1))
        elif rows:
            rows[-1][-1] += "\n" + line
    for r in rows:
        r[-1] = r[-1].rstrip("\n")
    return rows


def parse_sacct(text: str) -> List[AcctJob]:
    """`sacct -X -n -P --delimiter=SEP -o JobIDRaw,JobID,User,State,AdminComment` -> rows."""
    return [AcctJob(raw, jid, user, (state.split() or [""])[0], comment)
            for raw, jid, user, state, comment in split_rows(text, 5)]


class SlurmDB:
    """sacct and sacctmgr through a CommandBackend's runner (its timeout, its errors)."""

    def __init__(self, backend) -> None:
        self.backend = backend

    def read(self, job_ids: Sequence[str], cluster: Optional[str]) -> Dict[str, List[AcctJob]]:
        """{job id: [its rows in slurmdbd]} (several when Slurm reused the id), keyed by
        JobIDRaw and by JobID; `cluster` None: sacct's own (the local one). SlurmError when
        sacct fails."""
        out: Dict[str, List[AcctJob]] = {}
        ids = sorted(set(job_ids))
        for i in range(0, len(ids), CHUNK):
            p = self.backend._cmd(["sacct", "-X", "-n", "-P", f"--delimiter={SEP}",
                                   *(["-M", cluster] if cluster else []),
                                   "-j", ",".join(ids[i:i + CHUNK]),
                                   "-o", "JobIDRaw,JobID,User,State,AdminComment"])
            if p.returncode != 0:
                raise SlurmError(f"sacct failed: {summarize_stderr(p.stderr)}")
            for row in parse_sacct(p.stdout):
                for key in {row.job_id_raw, row.job_id}:
                    out.setdefault(key, []).append(row)
        return out

    def write(self, job_id: str, cluster: str, user: Optional[str], value: str) -> None:
        """Set the AdminComment of job `job_id` in slurmdbd. SlurmError when sacctmgr fails
        or modified nothing."""
        where = [f"jobid={job_id}", f"cluster={cluster}"] + ([f"user={user}"] if user else [])
        p = self.backend._cmd(["sacctmgr", "-i", "modify", "job", "where", *where, "set",
                               f"AdminComment={value}"])
        said = f"{p.stdout or ''}\n{p.stderr or ''}"
        # Success lists the job ("  123 submitted at ..."): current sacctmgr prints
        # " Modified jobs..." before it knows, then "Nothing modified" or an error.
        if p.returncode != 0 or f" {job_id} submitted at " not in said:
            raise SlurmError(f"sacctmgr modify job {job_id}: {summarize_stderr(said)}")


def pick(rows: Iterable[AcctJob], user: Optional[str]) -> Optional[AcctJob]:
    """The row of our job among slurmdbd's rows of its id: the one of its user; None when
    none, or several, match (an id reused by the same user is not guessed between)."""
    mine = [r for r in rows if not user or r.user == user]
    uniq = {(r.job_id_raw, r.user) for r in mine}
    return mine[-1] if len(uniq) == 1 else None
