"""The HTML report: self-contained, charts per node, hostile strings escaped. Checked as text and
in headless Chromium (the DOM the browser builds: charts present, no script element, hostile
names shown as text)."""
from __future__ import annotations

import re

import pytest

from efajob.report.render.html import MAX_POINTS, _downsample, render_html
from efajob.report.build import build_report
from efajob.slurm.adapter import JobInfo

from conftest import chromium_dump_dom
from jobsim import T0, NodePool, NodeSpec, healthy, job_records

HOSTILE_NAME = "<script>document.title='pwned-name'</script>"
HOSTILE_USER = "\"><img src=x onerror=\"document.title='pwned-user'\">"
HOSTILE_DEVICE = "<svg onload=alert(1)>"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pool = NodePool(str(tmp_path_factory.mktemp("sim")))
    specs = healthy(3)
    specs["n3"] = NodeSpec(tx_gbps=50, rx_gbps=50, fault="dead-device")
    records = job_records(pool, specs, job_id="66", user=HOSTILE_USER)
    records[0]["devices"][0]["name"] = HOSTILE_DEVICE  # a record file anyone could have edited
    info = JobInfo(job_id="66", name=HOSTILE_NAME, user=HOSTILE_USER, state="COMPLETED",
                   exit_code="0:0", nodes=["n1", "n2", "n3"], start=T0, end=T0 + 60)
    return build_report(records, job_id="66", cluster="test", job_info=info, now=T0 + 100)


def test_self_contained_and_escaped(report):
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    # No resource of any kind: no tag carries src=, and href= only to a row of this page
    # (escaped text may say "src=").
    assert re.search(r"<[^>]*\bsrc=", page) is None
    assert set(re.findall(r'href="([^"]*)"', page)) <= {"#node-n1", "#node-n2", "#node-n3"}
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "&lt;script&gt;document.title=&#x27;pwned-name&#x27;&lt;/script&gt;" in page
    assert re.search(r"<[^>]*\bonerror=", page) is None
    assert "&quot;&gt;&lt;img src=x onerror=&quot;" in page
    assert "&lt;svg onload=alert(1)&gt;" in page
    assert page.count('<svg class="series"') == 3 and page.count("<polyline") == 6


def test_verdict_and_findings_first_linked_to_their_nodes(report):
    """Issue 17: the findings were ~3,300 px down for 4 nodes, below every device row."""
    page = render_html(report)
    assert page.index('id="verdict"') < page.index('id="findings"') < page.index("<h2>Job</h2>") \
        < page.index("Per node (ranked")
    linked = re.findall(r'<a href="#(node-[\w.-]+)">', page)
    assert linked and all(f'id="{a}"' in page for a in linked)
    assert "node-n3" in linked  # the dead device's node
    # Device rows collapsed per node; a flagged node's open.
    assert page.count("<details") == 3 and page.count("<details open>") >= 1
    assert "<summary>8 device(s) of n1</summary>" in page


def test_advice_is_text_without_backticks(report):
    from efajob.report.render.html import advice_html

    page = render_html(report)
    advice = re.findall(r'<p class="advice">(.*?)</p>', page)
    assert advice and not any("`" in a for a in advice) and any("<code>" in a for a in advice)
    assert advice_html("run `efajob doctor` then <b>") == "run <code>efajob doctor</code> then &lt;b&gt;"
    assert advice_html("a ` alone") == "a ` alone"


def test_downsample_keeps_shape():
    t = list(range(1, 1001))
    ys = [float(i % 10) for i in t]
    tt, yy = _downsample(t, ys)
    assert len(tt) <= MAX_POINTS and tt[-1] == 1000
    assert sum(yy) / len(yy) == pytest.approx(4.5, abs=0.2)
    assert _downsample([1, 2], [None, 3.0]) == ([1, 2], [None, 3.0])


@pytest.mark.integration
@pytest.mark.chromium
def test_in_headless_chromium(report, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    p = chromium_dump_dom(page.as_uri(), str(tmp_path / "profile"))
    assert p.returncode == 0, p.stderr[-2000:]
    dom = p.stdout
    # The browser parsed what we meant: three charts, each with a sent and a received line.
    assert dom.count('<svg class="series"') == 3
    assert len(re.findall(r'<polyline class="tx"[^>]* points="[0-9]', dom)) == 3
    assert len(re.findall(r'<polyline class="rx"[^>]* points="[0-9]', dom)) == 3
    assert 'id="verdict">Failure<' in dom
    # Hostile strings are text, not markup: no script element, no injected attribute, and the
    # title is ours (a script that ran would have changed it).
    assert "<script" not in dom.lower()
    assert "<img" not in dom and "onload=" not in dom.replace("onload=alert(1)&gt;", "")
    assert "<title>EFA job report: job 66, cluster test</title>" in dom
    assert "&lt;script&gt;document.title='pwned-name'&lt;/script&gt;" in dom
