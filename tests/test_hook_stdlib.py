"""The hook path's stand-ins for standard modules (efajob/fastjson.py, minitoml.py, frozen.py)
give what the modules they replace give, and the hooks really do without those modules.

The last test is the regression guard for the hooks' cost (bench/hooks.py measures it; no
test here depends on timing): a prolog and an epilog that reads daemon rows, run as the
installed wrapper runs them (`python -I -S`), must not import json, re, typing, dataclasses,
tomllib, sqlite3's Python layer, datetime, inspect, enum or logging.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import HOOK_WAIT_ENV

from efajob import fastjson, minitoml
from efajob.errors import ConfigError
from efajob.frozen import Frozen, FrozenError, factory
from efajob.sim import build_node

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - CI's oldest Python
    import tomli as tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- fastjson ----------------------------------------------------------------------------------
JSON_DOCS = [
    '{"a": 1, "b": [1, 2.5, -3e5, true, false, null], "c": {"d": "x\\u00e9\\n\\"q\\""}}',
    "  [1, 2]  \n", "3", '"s"', "[]", "{}", '{"big": 123456789012345678901234567890}',
    '{"nan": NaN, "inf": Infinity, "ninf": -Infinity}', '{"a": 1, "a": 2}',
    '{"deep": ' + "[" * 50 + "]" * 50 + "}", '"\\ud83d\\ude00"', "1.5e300", "-0",
]
BAD_JSON = ["", "   ", "[1,]", '{"a" 1}', "[1] x", "{'a': 1}", "[1", "nul", '"\\x"', "01"]


@pytest.mark.parametrize("text", JSON_DOCS)
def test_fastjson_loads_as_json(text):
    want, got = json.loads(text), fastjson.loads(text)
    assert repr(got) == repr(want)  # repr: nan != nan, and types must match too
    assert repr(fastjson.loads(text.encode())) == repr(want)


@pytest.mark.parametrize("text", BAD_JSON)
def test_fastjson_refuses_what_json_refuses(text):
    with pytest.raises(ValueError) as want:
        json.loads(text)
    with pytest.raises(ValueError) as got:
        fastjson.loads(text)
    assert str(got.value) == str(want.value)


def test_fastjson_number_hooks_and_encodings():
    def no_nan(s):
        raise ValueError(f"{s} refused")

    with pytest.raises(ValueError, match="NaN refused"):
        fastjson.loads(b'{"x": NaN}', parse_constant=no_nan)
    assert fastjson.loads(b"[1, 2.0]", parse_int=str, parse_float=str) == ["1", "2.0"]
    for data in ('{"a": "\u00e9"}'.encode("utf-16"), '{"a": 1}'.encode("utf-8-sig"), b"\xff\xfe"):
        try:
            want = json.loads(data)
        except ValueError as e:
            with pytest.raises(ValueError, match=re.escape(str(e))):
                fastjson.loads(data)
        else:
            assert fastjson.loads(data) == want


@pytest.mark.parametrize("obj", [
    {"b": [1, 2.5, None, True, "\u00e9\"\n"], "a": {"z": 1e300, "y": -0.0}}, [], {}, "x", 3,
    [float("nan"), float("inf")], {"k": (1, 2)}, {2: "i", 1.5: "f", False: "b"}, 12345678901234567890,
])
def test_fastjson_dumps_as_json(obj):
    for sort in (False, True):
        assert fastjson.dumps(obj, sort_keys=sort) == json.dumps(obj, sort_keys=sort,
                                                                 separators=(",", ":"))
        assert fastjson.dumps(obj, sort_keys=sort, compact=False) == json.dumps(obj, sort_keys=sort)


def test_fastjson_dumps_refuses_what_json_refuses():
    for obj in ({"s": {1, 2}}, [object()]):
        with pytest.raises(TypeError):
            json.dumps(obj)
        with pytest.raises(TypeError):
            fastjson.dumps(obj)
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError):
        fastjson.dumps(loop)


# -- minitoml ----------------------------------------------------------------------------------
IN_SUBSET = [
    'cluster = "c1"\nsysfs_root = "/sys"\ninterval = 1.5\nretention_hours = 48\n',
    '# comment\n\ncluster = "c1"  # trailing\n[prometheus]\nenabled = true\nport = 9814\n'
    'bind = "127.0.0.1"\n\n[cloudwatch]\nenabled = false\nregion = \'us-east-1\'\n',
    '[thresholds]\nstraggler_ratio = 0.25\nrx_drops = -1\nx = +7\n',
    'a = "with # hash and \'quote\'"\nb = \'C:\\path\'\n\t c\t=\t"tabbed"\t\n', "", "\n\n# only\n",
    'a = ""\nb = 0\nc = 0.0\nd = -0.5\n',
]
NOT_IN_SUBSET = [  # parsed by tomllib (or refused by it), never by the subset
    'a = "esc\\n"', "a = [1, 2]", "a = { b = 1 }", "a.b = 1", '"a" = 1', "a = 1979-05-27",
    "a = 1_000", "a = 1e3", "a = 0x10", "a = inf", 'a = """x"""', "[a.b]\nc = 1", "[[a]]\nb = 1",
    "a = 1\na = 2", "[a]\n[a]", "a = 1\n[a]", "a = 01", "a = 1.", "a = .5", "a =", "a = 1 b",
    'a = "x" y', "a = true1", "= 1", "[a", "a = 1\r\n", "a = '''x'''", 'a = "open',
]


@pytest.mark.parametrize("text", IN_SUBSET)
def test_minitoml_parses_the_subset_as_tomllib(text):
    got = minitoml.parse(text.encode())
    assert got is not None
    assert repr(got) == repr(tomllib.loads(text))


@pytest.mark.parametrize("text", NOT_IN_SUBSET)
def test_minitoml_leaves_the_rest_to_tomllib(text):
    assert minitoml.parse(text.encode()) is None


def test_minitoml_refuses_bad_utf8_and_controls():
    assert minitoml.parse(b'a = "\xff"') is None
    assert minitoml.parse(b'a = "x\x01"') is None


def test_config_files_outside_the_subset_still_load(tmp_path):
    from efajob.config import load_config

    p = tmp_path / "c.toml"
    p.write_text('cluster = "c1"\n[thresholds]\nstraggler_ratio = 2.5e-1\n')
    cfg = load_config(str(p), env={}, node="n1")
    assert cfg.cluster == "c1" and cfg.thresholds["straggler_ratio"] == 0.25
    p.write_text("cluster = [1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(p), env={}, node="n1")


# -- frozen ------------------------------------------------------------------------------------
class _Rec(Frozen):
    a: int
    b: str = "x"
    c: dict = factory(dict)


def test_frozen_records():
    r = _Rec(1)
    assert (r.a, r.b, r.c) == (1, "x", {}) and r == _Rec(a=1, b="x", c={})
    assert _Rec(1).c is not _Rec(1).c  # a fresh default each time
    assert r.replace(b="y") == _Rec(1, "y") and r.b == "x"
    assert repr(r) == "_Rec(a=1, b='x', c={})"
    assert _Rec(1, "y").to_dict() == {"a": 1, "b": "y", "c": {}}
    with pytest.raises(FrozenError):
        r.a = 2  # type: ignore[misc]
    for bad in (lambda: _Rec(), lambda: _Rec(1, z=2), lambda: _Rec(1, a=1), lambda: _Rec(1, 2, 3, 4),
                lambda: r.replace(z=1)):
        with pytest.raises(TypeError):
            bad()
    assert hash(_Rec(1, "y", None)) == hash(_Rec(1, "y", None))  # type: ignore[arg-type]
    assert _Rec(1) != (1, "x", {})


# -- the hooks without those modules -------------------------------------------------------------
HEAVY = {"json", "re", "typing", "dataclasses", "tomllib", "tomli", "sqlite3", "datetime",
         "inspect", "enum", "logging", "socket", "subprocess", "ast", "urllib"}
# (functools comes with _sqlite3 itself, which needs it; the cost is its own ~1 ms)

# No json in the probe itself: sys.modules is printed with repr and read back with literal_eval.
PROBE = ("import sys; sys.path[:0] = [{repo!r}]; from efajob.hooks.entry import main; "
         "main([sys.argv[1]]); print(sorted(sys.modules))")


def test_hooks_import_none_of_the_heavy_modules(tmp_path):
    from efajob.config import load_config
    from efajob.node.localstore import LocalStore, SampleRow
    from efajob.hooks.runfiles import read_boot_id

    build_node(str(tmp_path / "sys"), "p4d.24xlarge")
    conf = tmp_path / "c.toml"
    conf.write_text(f'cluster = "c1"\nsysfs_root = "{tmp_path}/sys"\nrun_dir = "{tmp_path}/run"\n'
                    f'state_dir = "{tmp_path}/state"\nstore = "{tmp_path}/store"\n')
    cfg = load_config(str(conf), env={}, node="n1")
    env = {"EFAJOB_CONFIG": str(conf), "SLURMD_NODENAME": "n1", "SLURM_JOB_ID": "5",
           "SLURM_JOB_USER": "alice", **HOOK_WAIT_ENV}
    seen = {}
    for kind in ("prolog", "epilog"):
        if kind == "epilog":  # daemon rows inside the job's window: the epilog opens the store
            os.makedirs(cfg.state_dir, exist_ok=True)
            st = LocalStore.open(cfg.db_path)
            now_m, now_w = time.monotonic(), time.time()
            for i in range(5):
                st.add_sample(SampleRow(read_boot_id(), now_m - 4 + i, now_w - 4 + i, 1.0,
                                        {"tx_bytes": 10, "rx_bytes": 10}, {}, {}, ("5",), ()))
            st.close()
        p = subprocess.run([sys.executable, "-I", "-S", "-c", PROBE.format(repo=REPO), kind],
                           env=env, capture_output=True, text=True, timeout=120, cwd="/")
        assert p.returncode == 0 and p.stderr == "", p.stderr
        seen[kind] = set(ast.literal_eval(p.stdout.strip().splitlines()[-1]))
    record = tmp_path / "store" / "c1" / "jobs" / "5" / "n1.json"
    assert json.loads(record.read_text())["daemon_samples"] > 0  # it ran, with the store
    assert "_sqlite3" in seen["epilog"]
    for kind, mods in seen.items():
        assert sorted(HEAVY & mods) == [], kind


@pytest.mark.parametrize("path", ["/var/lib/efajob/efajob.db", "/a b/c?d#e%f/\u00e9/x~y",
                                  "/t/\u2603;,=&+$@:'()*!"])
def test_store_uri_path_is_urllib_quote(path):
    from urllib.parse import quote

    from efajob.node.localstore import _uri_path

    assert _uri_path(path) == quote(path)
