"""`efajob install native` (efajob/deploy/native.py): compiling the C reader on a node whose
efajob came as a pure wheel. The plan's errors say what is missing; a build that fails or
does not load leaves nothing where the sampler imports it; a good one reads counters."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from conftest import cli_runner, require
from efajob.cli.main import main
from efajob.deploy.native import SOURCE, build, package_dir, plan
from efajob.errors import NativeBuildError

HEADERS = sysconfig.get_paths()["include"]


@pytest.fixture
def pkg(tmp_path):
    shutil.copy(os.path.join(package_dir(), SOURCE), tmp_path / SOURCE)
    return str(tmp_path)


def _load(path):
    loader = importlib.machinery.ExtensionFileLoader("efajob.node._fastread", path)
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(mod)
    return mod


def test_no_source_no_headers_no_compiler_each_say_so(tmp_path, pkg):
    with pytest.raises(NativeBuildError, match="no C source"):
        plan(str(tmp_path / "empty"))
    with pytest.raises(NativeBuildError, match=r"no Python headers .*python3-devel"):
        plan(pkg, include=str(tmp_path))
    with pytest.raises(NativeBuildError, match="no C compiler .*install gcc"):
        plan(pkg, include=HEADERS, cc="nope-cc", which=lambda name: None)
    assert NativeBuildError.exit_code == 10


def test_the_plan_writes_beside_the_package_under_the_interpreters_suffix(pkg):
    p = plan(pkg, include=HEADERS, cc="cc", ext_suffix=".cpython-399-test.so",
             which=lambda name: f"/usr/bin/{name}")
    assert p.output == os.path.join(pkg, "_fastread.cpython-399-test.so")
    assert p.argv[0] == "/usr/bin/cc" and p.argv[-2:] == ["-o", p.output + ".tmp"]
    assert ["-I", HEADERS] == p.argv[p.argv.index("-I"):p.argv.index("-I") + 2]


def test_a_build_loads_and_reads(pkg, tmp_path):
    require("a C compiler", shutil.which("cc") is not None)
    require("Python headers", os.path.isfile(os.path.join(HEADERS, "Python.h")))
    p = plan(pkg)
    build(p)
    assert sorted(os.listdir(pkg)) == sorted([SOURCE, os.path.basename(p.output)])
    mod = _load(p.output)
    counter = tmp_path / "tx_bytes"
    counter.write_bytes(b"12345\n")
    fd = os.open(counter, os.O_RDONLY)
    try:
        assert mod.Reader([fd]).read() == (True, [12345])
    finally:
        os.close(fd)


def test_a_failed_compile_leaves_nothing_behind(pkg):
    require("a C compiler", shutil.which("cc") is not None)
    with open(os.path.join(pkg, SOURCE), "a") as f:
        f.write("\nthis is not C;\n")
    p = plan(pkg)
    with pytest.raises(NativeBuildError, match=r"failed \(exit 1\)"):
        build(p)
    assert os.listdir(pkg) == [SOURCE]


def test_a_module_that_does_not_load_is_not_installed(pkg, tmp_path_factory):
    # A compiler that "succeeds" with garbage: the check in a fresh interpreter refuses it.
    fake = tmp_path_factory.mktemp("bin") / "fakecc"
    fake.write_text('#!/bin/sh\nfor a; do out=$a; done\necho garbage > "$out"\n')
    fake.chmod(0o755)
    p = plan(pkg, include=HEADERS, cc=str(fake), which=lambda name: name)
    with pytest.raises(NativeBuildError, match="does not load"):
        build(p)
    assert os.listdir(pkg) == [SOURCE]


def test_cli_dry_run_prints_the_command_and_writes_nothing():
    require("a C compiler", shutil.which("cc") is not None)
    require("Python headers", os.path.isfile(os.path.join(HEADERS, "Python.h")))
    before = sorted(os.listdir(package_dir()))
    r = cli_runner().invoke(main, ["install", "native", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert os.path.join(package_dir(), SOURCE) in r.output and "check that it loads" in r.output
    assert sorted(os.listdir(package_dir())) == before


def test_cli_without_a_compiler_exits_10_with_one_error_line(tmp_path):
    env = dict(os.environ, CC="nope-cc", PATH=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "efajob", "install", "native"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 10
    assert p.stderr.startswith("error: no C compiler") and p.stderr.count("\n") == 1
