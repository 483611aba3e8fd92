"""NCCL's log as evidence for efa_unused (report/nccllog.py): the fixtures from public issue
threads (tests/nccl_logs/README.md), hostile and huge files, the one hook point in
assemble.py and the config switch."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from types import SimpleNamespace

import pytest

from efajob.config import Config, build_config
from efajob.report.assemble import with_nccl_log
from efajob.report.findings import Finding
from efajob.report.model import JobMeta, JobReport, Overall
from efajob.report.nccllog import (CONFIRMED, HEAD, QUOTE_CHARS, TAIL, parse_nccl_log, quote,
                                   read_bounded, read_evidence)
from efajob.slurm.adapter import parse_scontrol_job

FIXTURES = os.path.join(os.path.dirname(__file__), "nccl_logs")


def fixture(name):
    return os.path.join(FIXTURES, name)


@pytest.mark.parametrize("name,efa,not_efa", [
    ("efa_success.log", 1, 0),  # two ranks said it: one quote
    ("socket_fallback.log", 0, 3),
    ("tcp_provider.log", 0, 2),
    ("no_plugin.log", 0, 3),
])
def test_fixtures(name, efa, not_efa):
    with open(fixture(name)) as f:
        got = parse_nccl_log(f.read())
    assert (len(got[0]), len(got[1])) == (efa, not_efa), got


def test_what_each_fixture_quotes():
    ev = read_evidence(fixture("tcp_provider.log"))
    assert ev is not None and ev.confirms_fallback and not ev.partial
    assert ev.not_efa == (
        "libfabric:85:1747438790::core:core:fi_getinfo_():1392<warn> fi_getinfo: provider efa "
        "output empty list",
        "node-c:80:2500 [0] NCCL INFO NET/OFI Selected Provider is tcp (found 1 nics)")
    ok = read_evidence(fixture("efa_success.log"))
    assert ok is not None and not ok.confirms_fallback
    assert ok.efa == ("node-a:18064:18134 [7] NCCL INFO NET/OFI Selected Provider is efa "
                      "(found 4 nics)",)


def _report():
    f = Finding("efa_unused", "critical", "The job ran on 2 nodes but moved only 1.0 kB per "
                "node over EFA.", "advice")
    return JobReport(meta=JobMeta(job_id="7", cluster="c"), nodes=[], overall=Overall(),
                     findings=[f, Finding("short_job", "info", "short")], verdict="Failure")


def test_confirmed_beside_efa_unused():
    r = with_nccl_log(Config(), _report(), SimpleNamespace(stdout=fixture("socket_fallback.log")))
    msg = r.findings[0].message
    assert msg.startswith("The job ran on 2 nodes but moved only 1.0 kB per node over EFA. "
                          f"{CONFIRMED} (socket_fallback.log): \"")
    assert "NET/Socket : Using [0]eth0:10.0.1.17<0>" in msg
    assert r.findings[1].message == "short" and r.verdict == "Failure"
    said_efa = with_nccl_log(Config(), _report(),
                             SimpleNamespace(stdout=fixture("efa_success.log")))
    assert "says it selected EFA" in said_efa.findings[0].message
    assert CONFIRMED not in said_efa.findings[0].message


def test_off_under_private_records_unless_asked(tmp_path):
    info = SimpleNamespace(stdout=fixture("socket_fallback.log"))
    base = _report()
    assert with_nccl_log(Config(private_records=True), base, info) is base
    assert with_nccl_log(Config(nccl_log=False), base, info) is base
    assert CONFIRMED in with_nccl_log(Config(private_records=True, nccl_log=True), base,
                                      info).findings[0].message
    # no efa_unused: the file is not even opened
    quiet = replace(base, findings=[Finding("short_job", "info", "short")])
    assert with_nccl_log(Config(), quiet, SimpleNamespace(stdout="/nonexistent")) is quiet
    assert with_nccl_log(Config(), base, SimpleNamespace(stdout=None)) is base
    assert with_nccl_log(Config(), base, None) is base
    cfg = build_config({}, env={"EFAJOB_NCCL_LOG": "yes"})
    assert cfg.nccl_log is True and cfg.reads_nccl_log


def test_hostile_lines_are_quoted_as_text(tmp_path):
    p = tmp_path / "out.log"
    evil = ("n1:1:1 [0] NCCL INFO NET/Socket : Using \x1b[2J\x1b]0;pwned\x07<script>alert(1)"
            "</script> \u202e\u00e9\x00" + "A" * 5000 + "\r(a carriage return ends a line)")
    p.write_bytes(evil.encode() + b"\xff\xfe\n")
    ev = read_evidence(str(p))
    assert ev is not None and len(ev.not_efa) == 1
    q = ev.not_efa[0]
    assert len(q) == QUOTE_CHARS and q.endswith("...")
    assert all(0x20 <= ord(c) < 0x7f for c in q) and "\\x1b[2J" in q and "\\u202e" in q
    from efajob.report.render.html import render_html

    r = with_nccl_log(Config(), _report(), SimpleNamespace(stdout=str(p)))
    page = render_html(r)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "\x1b" not in page
    from efajob.report.render.json import render_json

    assert "\\x1b[2J" in json.loads(render_json(r))["findings"][0]["message"]
    assert quote("a\tb") == "a\\tb"


def test_huge_file_head_and_tail_only(tmp_path):
    p = tmp_path / "big.log"
    filler = b"x" * 1023 + b"\n"
    with open(p, "wb") as f:
        f.write(b"n1:1:1 [0] NCCL INFO NET/OFI Could not find any optimal provider\n")
        for _ in range(3 * 1024):  # 3 MiB of other output
            f.write(filler)
        f.write(b"n1:1:1 [0] NCCL INFO Using network Socket (in the middle: not read)\n")
        for _ in range(2 * 1024):
            f.write(filler)
        f.write(b"n1:1:1 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.1<0>\n")
    text, partial = read_bounded(str(p))
    assert partial and len(text) <= HEAD + TAIL + 1
    ev = read_evidence(str(p))
    assert ev is not None and ev.partial and len(ev.not_efa) == 2
    assert not any("middle" in q for q in ev.not_efa)
    r = with_nccl_log(Config(), _report(), SimpleNamespace(stdout=str(p)))
    assert r.findings[0].message.endswith("(its first and last MiB read)")


def test_not_regular_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_evidence(str(fifo)) is None  # O_NONBLOCK: no writer, no hang
    assert read_evidence(str(tmp_path)) is None
    assert read_evidence(str(tmp_path / "missing")) is None
    (tmp_path / "plain").write_text("no NCCL here\n")
    assert read_evidence(str(tmp_path / "plain")) is None


def test_scontrol_stdout_is_parsed():
    line = ("JobId=42 JobName=train UserId=alice(1000) JobState=COMPLETED NumNodes=2 "
            "StdOut=/home/alice/slurm-42.out StdErr=/home/alice/slurm-42.out")
    info, = parse_scontrol_job(line)
    assert info.stdout == "/home/alice/slurm-42.out"
    info2, = parse_scontrol_job("JobId=43 JobState=RUNNING StdOut=(null)")
    assert info2.stdout is None
