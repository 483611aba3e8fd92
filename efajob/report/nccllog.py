"""Evidence from NCCL's own log for `efa_unused`: when the job's output (Slurm's StdOut, readable
on the head node) holds NCCL_DEBUG=INFO lines that say which network NCCL used, the report
quotes them beside the finding, and the finding says "confirmed by NCCL's log".

The lines that matter (NCCL and aws-ofi-nccl, fixtures in tests/nccl_logs/ from public
issue threads):
- EFA: `NET/OFI Selected Provider is efa` (aws-ofi-nccl; newer ones say `Selected provider is
  efa, fabric is efa-direct`); not `Using network AWS Libfabric`, which says only that NCCL
  took the plugin (libfabric may have handed it the tcp provider);
- not EFA: `NET/Socket : Using eth0:...`, `Using network Socket` (NCCL's internal sockets),
  `NET/OFI Selected Provider is tcp` or `sockets` (libfabric over TCP), `NET/OFI Could not
  find any optimal provider`, `fi_getinfo: provider efa output empty list`, `NET/Plugin : No
  plugin found` (no aws-ofi-nccl at all).

The file is the job's, so untrusted: read bounded (its first and last MiB: NCCL logs its
choices at start-up, a crash at the end), never executed or interpreted, a regular file only
(a FIFO would block), opened without blocking; quoted lines are cut to QUOTE_CHARS and every
non-printable character is escaped (`\\x1b`), so a terminal, an HTML page or a CSV shows them
as text. Off by default under private_records (config `nccl_log`): a job's output is the
user's. Pure parsing apart from `read_bounded`.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from efajob.report.model import JobReport

HEAD = TAIL = 1 << 20
QUOTE_CHARS = 240
MAX_QUOTES = 3  # per side: enough to show the choice, short in a report

# `Using network AWS Libfabric` only says NCCL took the plugin: libfabric may have given it tcp.
_EFA = [re.compile(r"NET/OFI Selected provider is efa\b", re.I)]
_NOT_EFA = [re.compile(p, re.I) for p in (
    r"NET/Socket : Using",
    r"Using network Socket",
    r"NET/OFI Selected provider is (?:tcp|sockets|udp|shm)\b",
    r"NET/OFI Could not find any optimal provider",
    r"fi_getinfo: provider efa output empty list",
    r"NET/Plugin ?: No plugin found",
)]
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class NcclEvidence:
    path: str
    efa: Tuple[str, ...]  # quoted lines that say NCCL used EFA
    not_efa: Tuple[str, ...]  # quoted lines that say it did not
    partial: bool = False  # the file was bigger than HEAD + TAIL: its middle was not read

    @property
    def confirms_fallback(self) -> bool:
        return bool(self.not_efa) and not self.efa


def quote(line: str) -> str:
    """A log line safe to show anywhere: printable ASCII, others as \\xNN/\\uNNNN, bounded."""
    text = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"),
                            line.strip())
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS - 3] + "..."


def parse_nccl_log(text: str) -> Tuple[List[str], List[str]]:
    """(EFA lines, not-EFA lines), quoted, distinct by what they say (the same line from 64
    ranks is one line), at most MAX_QUOTES each, in file order."""
    efa: List[str] = []
    not_efa: List[str] = []
    seen = set()
    for line in text.splitlines():
        if "NCCL" not in line and "fi_getinfo" not in line:
            continue
        for patterns, out in ((_EFA, efa), (_NOT_EFA, not_efa)):
            for p in patterns:
                m = p.search(line)
                if m is None:
                    continue
                key = (p.pattern, line[m.start():].strip())
                if key not in seen and len(out) < MAX_QUOTES:
                    seen.add(key)
                    out.append(quote(line))
                break
    return efa, not_efa


def read_bounded(path: str, head: int = HEAD, tail: int = TAIL) -> Tuple[str, bool]:
    """(the first `head` and last `tail` bytes of a regular file, as text; partial). Raises
    OSError (also for a file that is not regular)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: not a regular file")
        if st.st_size <= head + tail:
            data, partial = os.pread(fd, head + tail, 0), False
        else:
            first = os.pread(fd, head, 0)
            last = os.pread(fd, tail, st.st_size - tail)
            # the tail's first line is cut: drop it
            data, partial = first + b"\n" + last[last.find(b"\n") + 1:], True
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace"), partial


def read_evidence(path: str) -> Optional[NcclEvidence]:
    """What the file says about NCCL's network, or None (unreadable, or nothing about it)."""
    try:
        text, partial = read_bounded(path)
    except OSError:
        return None
    efa, not_efa = parse_nccl_log(text)
    if not efa and not not_efa:
        return None
    return NcclEvidence(path=path, efa=tuple(efa), not_efa=tuple(not_efa), partial=partial)


CONFIRMED = "Confirmed by NCCL's log"


def confirm(report: "JobReport", ev: NcclEvidence) -> "JobReport":
    """The report with its efa_unused finding quoting the log: "Confirmed by NCCL's log" when
    the log shows NCCL off EFA; when it shows NCCL on EFA instead, that is quoted too (the
    counters and the log disagree: a job that set up EFA and then moved nothing)."""
    name = quote(os.path.basename(ev.path))
    findings = []
    for f in report.findings:
        if f.code == "efa_unused":
            if ev.confirms_fallback:
                extra = f" {CONFIRMED} ({name}): " + " | ".join(f'"{q}"' for q in ev.not_efa)
            elif ev.efa and not ev.not_efa:
                extra = (f" NCCL's log ({name}) says it selected EFA: "
                         + " | ".join(f'"{q}"' for q in ev.efa)
                         + "; yet the EFA counters moved almost nothing.")
            else:
                extra = (f" NCCL's log ({name}) is mixed (some ranks on EFA, some not): "
                         + " | ".join(f'"{q}"' for q in ev.not_efa + ev.efa))
            if ev.partial:
                extra += " (its first and last MiB read)"
            f = replace(f, message=f.message + extra)
        findings.append(f)
    return replace(report, findings=findings)
