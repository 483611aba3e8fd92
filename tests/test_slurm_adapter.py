"""The Slurm adapter: pure parsers on literal outputs, the command backend on a fake runner,
the pyslurm mapping on a fake object, and `scontrol show hostnames` against hostlist.expand.

The scontrol lines below were captured from Slurm 22.05.8 (Debian 12) on a two-node test
cluster: a cancelled 2-node job, a failed job (exit 3), array tasks 7_7/7_8, het job 8+0/8+1,
a requeued job. sacct's JSON is written from the 22.05 (v0.0.38) and 23.11+ (v0.0.40) shapes.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from types import SimpleNamespace

import pytest

from conftest import require_binary
from efajob.errors import SlurmError, UsageError
from efajob.slurm.hostlist import expand
from efajob.slurm.adapter import (CommandBackend, JobInfo, PyslurmBackend, from_pyslurm,
                                  get_backend, job_is_running, parse_kv_line, parse_sacct_json,
                                  parse_scontrol_job, parse_slurm_time, parse_time_limit, pick,
                                  summarize_stderr)

# fmt: off
CANCEL = (
    "JobId=1 JobName=my job UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 Nice=0 Account=(null) QOS=(null) JobState=CANCELLED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=143:0 RunTime=00:00:08 TimeLimit=01:30:00 TimeMin=N/A SubmitTime=2026-11-28T12:24:25 EligibleTime=2026-11-28T12:24:25 AccrueTime=2026-11-28T12:24:25 StartTime=2026-11-28T12:24:25 EndTime=2026-11-28T12:24:33 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-28T12:24:25 Scheduler=Main Partition=gpu AllocNode:Sid=localhost:3819 ReqNodeList=(null) ExcNodeList=(null) NodeList=n[1-2] BatchHost=n1 NumNodes=2 NumCPUs=2 NumTasks=2 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=2,node=2,billing=2 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp StdErr=/tmp/slurm-1.out StdIn=/dev/null StdOut=/tmp/slurm-1.out Power= \n"
)

FAILED = (
    "JobId=3 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901757 Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:00 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-28T12:24:25 EligibleTime=2026-11-28T12:24:25 AccrueTime=2026-11-28T12:24:25 StartTime=2026-11-28T12:24:33 EndTime=2026-11-28T12:24:33 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-28T12:24:33 Scheduler=Main Partition=gpu AllocNode:Sid=localhost:3819 ReqNodeList=(null) ExcNodeList=(null) NodeList=n2 BatchHost=n2 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp StdErr=/tmp/slurm-3.out StdIn=/dev/null StdOut=/tmp/slurm-3.out Power= \n"
)

ARRAY = (
    "JobId=7 ArrayJobId=7 ArrayTaskId=8 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901754 Nice=0 Account=(null) QOS=(null) JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-28T12:24:43 EligibleTime=2026-11-28T12:24:43 AccrueTime=2026-11-28T12:24:43 StartTime=2026-11-28T12:24:43 EndTime=2026-11-28T12:24:43 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-28T12:24:43 Scheduler=Main Partition=gpu AllocNode:Sid=localhost:3819 ReqNodeList=(null) ExcNodeList=(null) NodeList=n1 BatchHost=n1 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/sl StdErr=/tmp/sl/slurm-7_8.out StdIn=/dev/null StdOut=/tmp/sl/slurm-7_8.out Power= \n"
    "JobId=10 ArrayJobId=7 ArrayTaskId=7 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901754 Nice=0 Account=(null) QOS=(null) JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-28T12:24:43 EligibleTime=2026-11-28T12:24:43 AccrueTime=2026-11-28T12:24:43 StartTime=2026-11-28T12:24:43 EndTime=2026-11-28T12:24:43 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-28T12:24:43 Scheduler=Main Partition=gpu AllocNode:Sid=localhost:3819 ReqNodeList=(null) ExcNodeList=(null) NodeList=n1 BatchHost=n1 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/sl StdErr=/tmp/sl/slurm-7_7.out StdIn=/dev/null StdOut=/tmp/sl/slurm-7_7.out Power= \n"
)

HET = (
    "JobId=8 HetJobId=8 HetJobOffset=0 JobName=wrap HetJobIdSet=8-9 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901753 Nice=0 Account=(null) QOS=(null) JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-28T12:24:43 EligibleTime=2026-11-28T12:24:43 AccrueTime=2026-11-28T12:24:43 StartTime=2026-11-28T12:24:49 EndTime=2026-11-28T12:24:49 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-28T12:24:49 Scheduler=Backfill Partition=gpu AllocNode:Sid=localhost:3819 ReqNodeList=(null) ExcNodeList=(null) NodeList=n1 BatchHost=n1 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/sl StdErr=/tmp/sl/slurm-8.out StdIn=/dev/null StdOut=/tmp/sl/slurm-8.out Power= \n"
    "JobId=9 HetJobId=8 HetJobOffset=1 JobName=wrap HetJobIdSet=8-9 UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901752 Nice=0 Account=(null) QOS=(null) JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-28T12:24:43 EligibleTime=2026-11-28T12:24:43 AccrueTime=2026-11-28T12:24:43 StartTime=2026-11-28T12:24:49 EndTime=2026-11-28T12:24:49 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-28T12:24:49 Scheduler=Backfill Partition=gpu AllocNode:Sid=localhost:3819 ReqNodeList=(null) ExcNodeList=(null) NodeList=n2 BatchHost=n2 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/sl StdErr=/tmp/sl/slurm-9.out StdIn=/dev/null StdOut=/tmp/sl/slurm-9.out Power= \n"
)

REQUEUED = (
    "JobId=11 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901751 Nice=0 Account=(null) QOS=(null) JobState=PENDING Reason=BeginTime Dependency=(null) Requeue=1 Restarts=1 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-28T12:25:01 EligibleTime=2026-11-28T12:27:02 AccrueTime=2026-11-28T12:27:02 StartTime=2026-11-28T12:27:02 EndTime=2026-11-28T12:32:02 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-28T12:24:59 Scheduler=Main Partition=gpu AllocNode:Sid=localhost:3819 ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=1000M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/sl StdErr=/tmp/sl/slurm-11.out StdIn=/dev/null StdOut=/tmp/sl/slurm-11.out Power= \n"
)
# fmt: on


def t(s):  # tests run with TZ=UTC (conftest); scontrol prints local time
    return time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S"))


def test_parse_kv_line_keeps_spaces_and_empty_values():
    kv = parse_kv_line("JobId=1 JobName=my job NodeList= NumNodes=2 AllocNode:Sid=h:1 TRES=cpu=2,node=2")
    assert kv == {"JobId": "1", "JobName": "my job", "NodeList": "", "NumNodes": "2",
                  "AllocNode:Sid": "h:1", "TRES": "cpu=2,node=2"}


@pytest.mark.parametrize("text,field,expected", [
    (CANCEL, "job_id", "1"), (CANCEL, "name", "my job"), (CANCEL, "user", "root"),
    (CANCEL, "state", "CANCELLED"), (CANCEL, "exit_code", "143:0"), (CANCEL, "num_nodes", 2),
    (CANCEL, "nodes", ["n1", "n2"]), (CANCEL, "nodelist", "n[1-2]"), (CANCEL, "partition", "gpu"),
    (CANCEL, "account", None), (CANCEL, "time_limit", 90), (CANCEL, "restarts", 0),
    (CANCEL, "start", t("2026-11-28T12:24:25")), (CANCEL, "end", t("2026-11-28T12:24:33")),
    (FAILED, "state", "FAILED"), (FAILED, "exit_code", "3:0"), (FAILED, "nodes", ["n2"]),
    (REQUEUED, "state", "PENDING"), (REQUEUED, "restarts", 1), (REQUEUED, "nodes", []),
])
def test_parse_scontrol_fields(text, field, expected):
    (job,) = parse_scontrol_job(text)
    assert getattr(job, field) == expected


def test_parse_scontrol_array_and_het():
    arr = parse_scontrol_job(ARRAY)
    assert [(j.job_id, j.slurm_job_id) for j in arr] == [("7_8", "7"), ("7_7", "10")]
    assert pick(arr, "7").job_id == "7_8"  # the numeric id the hooks filed it under
    assert pick(arr, "10").job_id == "7_7"
    assert pick(arr, "7_7").slurm_job_id == "10"
    het = parse_scontrol_job(HET)
    assert [(j.job_id, j.slurm_job_id) for j in het] == [("8+0", "8"), ("8+1", "9")]
    assert pick(het, "9").job_id == "8+1"
    assert pick([], "9") is None


def test_parts_of_array_and_het_queries():
    from efajob.slurm.adapter import parts_of, with_parts

    arr, het = parse_scontrol_job(ARRAY), parse_scontrol_job(HET)
    assert parts_of(arr, "7") == ("7_7", "7_8")  # the array's id: every task
    assert with_parts(arr, "7").parts == ("7_7", "7_8")
    assert parts_of(arr, "10") == () and with_parts(arr, "10").parts == ()  # one task's raw id
    assert parts_of(arr, "7_7") == ()
    assert parts_of(het, "8") == ("8+0", "8+1") and parts_of(het, "9") == ()
    pending = [JobInfo(job_id="7_[10-12]"), JobInfo(job_id="7_9"), JobInfo(job_id="7_10")]
    assert parts_of(pending, "7") == ("7_9", "7_10", "7_[10-12]")
    assert with_parts([], "7") is None


@pytest.mark.parametrize("value,minutes", [
    ("01:30:00", 90), ("00:05:00", 5), ("1-00:00:00", 1440), ("10:30", 11), ("45", 45),
    ("UNLIMITED", None), ("Partition_Limit", None), ("", None), (None, None),
])
def test_parse_time_limit(value, minutes):
    assert parse_time_limit(value) == minutes


@pytest.mark.parametrize("value", ["Unknown", "None", "", None, "garbage"])
def test_parse_slurm_time_unknown(value):
    assert parse_slurm_time(value) is None


def _set(n, is_set=True, infinite=False):
    return {"set": is_set, "infinite": infinite, "number": n}


SACCT_2205 = {"meta": {"Slurm": {"version": {"major": 22, "micro": 8, "minor": 5}}}, "errors": [],
              "jobs": [
    {"account": "research", "allocation_nodes": 2, "cluster": "testc", "job_id": 1, "name": "my job",
     "array": {"job_id": 0, "limits": {"max": {"running": {"tasks": 0}}}, "task": None, "task_id": None},
     "het": {"job_id": 0, "job_offset": None}, "nodes": "n[1-2]", "partition": "gpu", "user": "alice",
     "state": {"current": "CANCELLED", "reason": "None"},
     "exit_code": {"status": "SIGNALED", "return_code": 0, "signal": {"signal_id": 15, "name": "TERM"}},
     "time": {"elapsed": 8, "end": 1700000008, "start": 1700000000, "submission": 1699999990, "limit": 90}},
    {"account": "research", "allocation_nodes": 1, "cluster": "testc", "job_id": 10, "name": "wrap",
     "array": {"job_id": 7, "task_id": 7}, "het": {"job_id": 0, "job_offset": None}, "nodes": "n1",
     "partition": "gpu", "user": "alice", "state": {"current": "COMPLETED", "reason": "None"},
     "exit_code": {"status": "SUCCESS", "return_code": 0},
     "time": {"elapsed": 1, "end": 1700000101, "start": 1700000100, "limit": 5}},
]}

SACCT_2311 = {"meta": {"slurm": {"version": {"major": "23", "micro": "4", "minor": "11"}}}, "errors": [],
              "jobs": [
    {"account": "research", "allocation_nodes": 2, "cluster": "testc", "job_id": 1, "name": "my job",
     "array": {"job_id": 0, "limits": {}, "task_id": _set(0, False), "task": ""},
     "het": {"job_id": 0, "job_offset": _set(0, False)}, "nodes": "n[1-2]", "partition": "gpu",
     "user": "alice", "restart_cnt": 0, "state": {"current": ["CANCELLED"], "reason": "None"},
     "exit_code": {"status": ["SIGNALED"], "return_code": _set(0),
                   "signal": {"id": _set(15), "name": "SIGTERM"}},
     "time": {"elapsed": 8, "end": 1700000008, "start": 1700000000, "limit": _set(90)}},
    {"account": "research", "allocation_nodes": 1, "cluster": "testc", "job_id": 9, "name": "wrap",
     "array": {"job_id": 0, "task_id": _set(0, False)}, "het": {"job_id": 8, "job_offset": _set(1)},
     "nodes": "n2", "partition": "gpu", "user": "alice", "restart_cnt": 2,
     "state": {"current": ["COMPLETED"], "reason": "None"},
     "exit_code": {"status": ["SUCCESS"], "return_code": _set(0), "signal": {"id": _set(0, False), "name": ""}},
     "time": {"end": _set(1700000201), "start": _set(1700000200), "limit": _set(0, True, True)}},
    {"account": "research", "allocation_nodes": 0, "cluster": "testc", "job_id": 12, "name": "pending",
     "array": {"job_id": 0, "task_id": _set(0, False)}, "het": {"job_id": 0, "job_offset": _set(0, False)},
     "nodes": "None assigned", "partition": "gpu", "user": "alice",
     "state": {"current": ["PENDING"], "reason": "Resources"},
     "exit_code": {"status": ["PENDING"], "return_code": _set(0, False)},
     "time": {"end": 0, "start": 0, "limit": _set(5)}},
]}


@pytest.mark.parametrize("doc,job_id,expected", [
    (SACCT_2205, "1", dict(job_id="1", state="CANCELLED", exit_code="0:15", nodes=["n1", "n2"], num_nodes=2,
                           start=1700000000.0, end=1700000008.0, time_limit=90, cluster="testc", user="alice")),
    (SACCT_2205, "10", dict(job_id="7_7", slurm_job_id="10", state="COMPLETED", exit_code="0:0")),
    (SACCT_2311, "1", dict(job_id="1", state="CANCELLED", exit_code="0:15", nodes=["n1", "n2"],
                           start=1700000000.0, end=1700000008.0, time_limit=90, restarts=0)),
    (SACCT_2311, "9", dict(job_id="8+1", state="COMPLETED", exit_code="0:0", time_limit=None,
                           start=1700000200.0, restarts=2)),
    (SACCT_2311, "12", dict(state="PENDING", nodes=[], nodelist=None, start=None, end=None, exit_code=None)),
])
def test_parse_sacct_json_both_shapes(doc, job_id, expected):
    job = pick(parse_sacct_json(json.dumps(doc)), job_id)
    for k, v in expected.items():
        assert getattr(job, k) == v, k


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"jobs": 3}'])
def test_parse_sacct_json_rejects(text):
    with pytest.raises(SlurmError):
        parse_sacct_json(text)


# -- the command backend on a fake runner -------------------------------------------------------
class FakeRunner:
    def __init__(self, answers):
        self.answers = answers  # argv[1:] tuple -> (rc, stdout, stderr) or an exception
        self.calls = []

    def __call__(self, argv, **kw):
        assert kw["timeout"] > 0 and kw.get("shell") is not True
        self.calls.append(tuple(argv))
        a = self.answers[tuple(argv[1:])]
        if isinstance(a, BaseException):
            raise a
        rc, out, err = a
        return subprocess.CompletedProcess(argv, rc, out, err)


def backend(answers, **kw):
    runner = FakeRunner(answers)
    return CommandBackend(runner=runner, which=lambda n: f"/usr/bin/{n}", **kw), runner


INVALID = (1, "", "slurm_load_jobs error: Invalid job id specified\n")
NO_ACCT = (1, "", "Slurm accounting storage is disabled\n")


def test_backend_scontrol_first():
    b, r = backend({("-o", "show", "job", "3"): (0, FAILED, "")})
    assert b.job("3").state == "FAILED"
    assert r.calls == [("/usr/bin/scontrol", "-o", "show", "job", "3")]


def test_backend_falls_back_to_sacct():
    b, r = backend({("-o", "show", "job", "1"): INVALID,
                    ("-j", "1", "--json"): (0, json.dumps(SACCT_2311), "")})
    assert b.job("1").exit_code == "0:15"
    assert [c[0] for c in r.calls] == ["/usr/bin/scontrol", "/usr/bin/sacct"]


def test_backend_unknown_job_without_accounting_is_none():
    b, _ = backend({("-o", "show", "job", "99"): INVALID, ("-j", "99", "--json"): NO_ACCT})
    assert b.job("99") is None


@pytest.mark.parametrize("answer", [
    (1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"),
    subprocess.TimeoutExpired("scontrol", 10),
    FileNotFoundError(2, "No such file or directory"),
])
def test_backend_errors_are_slurm_errors(answer):
    b, _ = backend({("-o", "show", "job", "5"): answer})
    with pytest.raises(SlurmError):
        b.job("5")


def test_backend_sacct_failure_is_an_error():
    b, _ = backend({("-o", "show", "job", "5"): INVALID,
                    ("-j", "5", "--json"): (1, "", "sacct: error: slurmdbd: connection refused\n")})
    with pytest.raises(SlurmError):
        b.job("5")


CONFIGLESS = ("scontrol: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host\n"
              "scontrol: error: fetch_config: DNS SRV lookup failed\n"
              "scontrol: error: _establish_config_source: failed to fetch config\n"
              "scontrol: fatal: Could not establish a configuration source\n")


@pytest.mark.parametrize("stderr,want", [
    (CONFIGLESS, "Could not establish a configuration source"),
    ("slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
     "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"),
    ("sacct: error: Problem talking to the database: Connection refused\n",
     "Problem talking to the database: Connection refused"),
    ("  lots   of\tspace  \n\n", "lots of space"),
    ("", "no message"), (None, "no message"),
])
def test_summarize_stderr_is_one_clean_line(stderr, want):
    assert summarize_stderr(stderr) == want


def test_summarize_stderr_cuts_at_a_word():
    out = summarize_stderr("error: " + "averyveryverylongword " * 20, limit=50)
    assert out.endswith(" ...") and len(out) <= 54 and "\n" not in out
    assert all(w in ("averyveryverylongword", "...") for w in out.split())


def test_backend_error_is_summarised_and_logged_in_full(caplog):
    import logging

    b, _ = backend({("-o", "show", "job", "5"): (1, "", CONFIGLESS)})
    with caplog.at_level(logging.DEBUG, logger="efajob.slurm"):
        with pytest.raises(SlurmError) as e:
            b.job("5")
    assert str(e.value) == "scontrol show job 5 failed: Could not establish a configuration source"
    assert "DNS SRV lookup failed" in caplog.text  # the whole chain, for --debug


def test_backend_missing_command():
    b = CommandBackend(which=lambda n: None)
    with pytest.raises(SlurmError, match="not found"):
        b.job("1")


def test_backend_validates_job_id_before_running_anything():
    b, r = backend({})
    with pytest.raises(UsageError):
        b.job("1; rm -rf /")
    assert r.calls == []


def test_backend_hostnames():
    b, _ = backend({("show", "hostnames", "n[1-2]"): (0, "n1\nn2\n", "")})
    assert b.hostnames("n[1-2]") == ["n1", "n2"]


@pytest.mark.parametrize("text,restart,expected", [
    (CANCEL, 0, False), (FAILED, 0, False), (HET, 0, False),
    (REQUEUED, 0, False),  # PENDING again, but with Restarts=1: run 0 is over
    (REQUEUED, 1, True),
    (CANCEL.replace("JobState=CANCELLED", "JobState=COMPLETING"), 0, True),
    (CANCEL.replace("JobState=CANCELLED", "JobState=RUNNING"), 0, True),
])
def test_job_is_running(text, restart, expected):
    job_id = parse_scontrol_job(text)[0].slurm_job_id
    b, _ = backend({("-o", "show", "job", job_id): (0, text, "")})
    assert job_is_running(job_id, restart, backend=b) is expected


def test_job_is_running_unknown_and_unreachable():
    b, _ = backend({("-o", "show", "job", "99"): INVALID, ("-j", "99", "--json"): NO_ACCT})
    assert job_is_running("99", backend=b) is False
    b, _ = backend({("-o", "show", "job", "99"): subprocess.TimeoutExpired("scontrol", 5)})
    assert job_is_running("99", backend=b) is None


# -- pyslurm, faked with pyslurm 25.11's attribute names ----------------------------------------
def fake_pyslurm_job(**kw):
    base = dict(id=10, name="wrap", user_name="alice", account="research", partition="gpu",
                state="COMPLETED", exit_code=0, exit_code_signal=0, num_nodes=2,
                allocated_nodes="n[1-2]", start_time=1700000000, end_time=1700000060,
                cluster="testc", time_limit=90, requeue_count=0, array_id=7, array_task_id=7,
                heterogeneous_id=None, heterogeneous_offset=None)
    base.update(kw)
    return SimpleNamespace(**base)


class RPCError(Exception):
    pass


def fake_pyslurm_module(live, db):
    def load(job_id):
        if job_id not in live:
            raise RPCError("Invalid job id specified")
        return live[job_id]

    return SimpleNamespace(
        Job=SimpleNamespace(load=load),
        db=SimpleNamespace(JobFilter=lambda ids: ids,
                           Jobs=SimpleNamespace(load=lambda ids: {j.id: j for j in db if str(j.id) in ids})))


def test_from_pyslurm_mapping():
    info = from_pyslurm(fake_pyslurm_job(exit_code=1, exit_code_signal=9))
    assert info == JobInfo(job_id="7_7", name="wrap", user="alice", account="research",
                           partition="gpu", state="COMPLETED", exit_code="1:9", num_nodes=2,
                           nodes=["n1", "n2"], nodelist="n[1-2]", start=1700000000.0,
                           end=1700000060.0, cluster="testc", time_limit=90, restarts=0,
                           slurm_job_id="10")
    het = from_pyslurm(fake_pyslurm_job(id=9, array_id=None, array_task_id=None,
                                        heterogeneous_id=8, heterogeneous_offset=1, end_time=None))
    assert (het.job_id, het.end) == ("8+1", None)


def test_pyslurm_backend_live_then_db():
    mod = fake_pyslurm_module({10: fake_pyslurm_job()}, [fake_pyslurm_job(id=4, array_id=None)])
    b = PyslurmBackend(mod)
    assert b.job("10").job_id == "7_7"
    assert b.job("4").job_id == "4"  # gone from slurmctld: from the database
    assert b.job("5") is None
    assert b.hostnames("n[1-2]") == ["n1", "n2"]


def test_get_backend_without_pyslurm():
    # pyslurm cannot be built against Debian's Slurm, so here the commands are the backend.
    try:
        import pyslurm  # noqa: F401
        pytest.skip("pyslurm is installed")
    except ImportError:
        pass
    assert get_backend().name == "commands"
    with pytest.raises(SlurmError):
        get_backend("pyslurm")


# -- the real scontrol, when installed ----------------------------------------------------------
def test_expand_agrees_with_scontrol(tmp_path):
    scontrol = require_binary("scontrol")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=t\nSlurmctldHost=localhost\nNodeName=n1 CPUs=1\n"
                    "PartitionName=p Nodes=n1\n")
    env = dict(os.environ, SLURM_CONF=str(conf))
    for expr in ("n[1-4,7]", "gpu-[01-12]", "rack[1-2]-n[01-02]", "a,b[3-4],c", "n[9-10],x"):
        p = subprocess.run([scontrol, "show", "hostnames", expr], capture_output=True, text=True,
                           timeout=10, env=env)
        assert p.returncode == 0, p.stderr
        assert expand(expr) == p.stdout.split(), expr


def test_all_jobs_is_one_scontrol_call_for_every_job():
    b, r = backend({("-o", "show", "job"): (0, FAILED + "\n" + FAILED.replace("JobId=3 ", "JobId=4 "), "")})
    jobs = b.all_jobs()
    assert [j.slurm_job_id for j in jobs] == ["3", "4"] and r.calls == [
        ("/usr/bin/scontrol", "-o", "show", "job")]
    b, _ = backend({("-o", "show", "job"): (0, "No jobs in the system\n", "")})
    assert b.all_jobs() == []
    b, _ = backend({("-o", "show", "job"): (1, "", "Unable to contact slurm controller\n")})
    with pytest.raises(SlurmError):
        b.all_jobs()
