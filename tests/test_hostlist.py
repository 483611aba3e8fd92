"""Hostlists fold and expand without Slurm, as `scontrol show hostnames` / `show hostlist` do."""
from __future__ import annotations

import pytest

from efajob.errors import UsageError
from efajob.slurm.hostlist import expand, fold


@pytest.mark.parametrize("expr,hosts", [
    ("n[1-4,7]", ["n1", "n2", "n3", "n4", "n7"]),
    ("gpu-[01-03]", ["gpu-01", "gpu-02", "gpu-03"]),
    ("gpu-[08-11]", ["gpu-08", "gpu-09", "gpu-10", "gpu-11"]),
    ("n[9-10]", ["n9", "n10"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
    ("a,b[3-4],c", ["a", "b3", "b4", "c"]),
    ("n1,n1,n[1-2]", ["n1", "n2"]),
    ("ip-10-0-1-[5,7]", ["ip-10-0-1-5", "ip-10-0-1-7"]),
    ("queue1-st-p5-[1-2]", ["queue1-st-p5-1", "queue1-st-p5-2"]),
    ("n[1-2]x", ["n1x", "n2x"]),
    ("", []),
    (None, []),
])
def test_expand(expr, hosts):
    assert expand(expr) == hosts


@pytest.mark.parametrize("hosts,folded", [
    (["n1", "n2", "n3", "n4", "n7"], "n[1-4,7]"),
    (["gpu-01", "gpu-02", "gpu-12"], "gpu-[01-02,12]"),
    (["gpu-09", "gpu-10"], "gpu-[09-10]"),
    (["n9", "n10"], "n[9-10]"),
    (["n3"], "n3"),
    (["c", "a", "b4", "b3"], "a,b[3-4],c"),
    (["ip-10-0-1-5", "ip-10-0-1-7"], "ip-10-0-1-[5,7]"),
    (["n1x", "n2x", "n1"], "n1,n[1-2]x"),
    (["n2", "n1", "n2"], "n[1-2]"),
    ([], ""),
])
def test_fold(hosts, folded):
    assert fold(hosts) == folded


@pytest.mark.parametrize("expr", ["n[1-3,5]", "gpu-[01-12]", "a,b[3-4],c", "x[007-011]"])
def test_roundtrip(expr):
    assert fold(expand(expr)) == expr


@pytest.mark.parametrize("bad", ["n[1-3", "n1-3]", "n[[1]]", "n[3-1]", "n[a-b]", "n[1-2]/x",
                                 "n[0-99999999]", "a[1-1000]b[1-1000]c[1-10]"])
def test_expand_rejects(bad):
    with pytest.raises(UsageError):
        expand(bad)


def test_expand_limit():
    with pytest.raises(UsageError):
        expand("n[1-11]", limit=10)
