"""Build the sampler's optional C reader (efajob/node/_fastread.c) into an installed package.

`pip install` from source builds it when a compiler exists (pyproject.toml). A pure wheel
(slurm/parallelcluster/upload.sh builds one on the admin's machine, for nodes of any Python)
has only the C source; `efajob install native` compiles it on the node with the system's
compiler and this interpreter's headers, next to the package's modules, and checks that the
result loads. Thin I/O around `plan()`: the command line is built from sysconfig facts the
tests can inject.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from typing import Callable, List, NamedTuple, Optional

from efajob.errors import NativeBuildError

SOURCE = "_fastread.c"
MODULE = "efajob.node._fastread"
COMPILE_TIMEOUT = 120.0


class Plan(NamedTuple):
    source: str
    output: str  # the module file (<package dir>/_fastread<EXT_SUFFIX>)
    argv: List[str]  # the compiler command, writing to output + ".tmp"


def package_dir() -> str:
    import efajob.node

    return os.path.dirname(os.path.abspath(efajob.node.__file__))


def plan(pkg_dir: str, *, cc: Optional[str] = None, include: Optional[str] = None,
         ext_suffix: Optional[str] = None,
         which: Callable[[str], Optional[str]] = shutil.which) -> Plan:
    """The compile command for `pkg_dir`'s C source; NativeBuildError says what is missing."""
    source = os.path.join(pkg_dir, SOURCE)
    if not os.path.isfile(source):
        raise NativeBuildError(f"no C source {source}: this efajob install does not ship it")
    include = include or sysconfig.get_paths()["include"]
    if not os.path.isfile(os.path.join(include, "Python.h")):
        raise NativeBuildError(
            f"no Python headers (Python.h) in {include}: install them (python3-devel on "
            f"Amazon Linux and Rocky, python3-dev on Ubuntu and Debian) and run this again")
    compiler = cc or os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    path = which(compiler) or which("cc")
    if path is None:
        raise NativeBuildError(f"no C compiler ({compiler!r} or cc on PATH): install gcc and "
                               "run this again")
    suffix = ext_suffix or sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    output = os.path.join(pkg_dir, "_fastread" + suffix)
    argv = [path, "-O2", "-shared", "-fPIC", "-Wall", "-I", include, source,
            "-o", output + ".tmp"]
    return Plan(source, output, argv)


def build(p: Plan, *, run: Callable[..., "subprocess.CompletedProcess[str]"] = subprocess.run,
          python: str = sys.executable) -> None:
    """Compile, check in a fresh interpreter that the module loads and reads, then move it in
    place (a half-written or broken module is never left where the sampler imports it)."""
    tmp = p.output + ".tmp"
    try:
        try:
            done = run(p.argv, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NativeBuildError(f"{p.argv[0]} failed to run: {e}") from None
        if done.returncode != 0:
            raise NativeBuildError(f"{os.path.basename(p.argv[0])} failed (exit "
                                   f"{done.returncode}): {done.stderr.strip()[-800:]}")
        # Load the new file under the module's name, in a child: this process may already
        # hold an older module of that name.
        check = ("import importlib.machinery as im, importlib.util as iu, os, sys\n"
                 "loader = im.ExtensionFileLoader(sys.argv[2], sys.argv[1])\n"
                 "m = iu.module_from_spec(iu.spec_from_loader(sys.argv[2], loader))\n"
                 "loader.exec_module(m)\n"
                 "assert m.API == int(sys.argv[3]), m.API\n"
                 "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
                 "assert m.Reader([fd]).read()[0] is False\n")
        from efajob.node.sysfs import NATIVE_API

        try:
            done = run([python, "-I", "-c", check, tmp, MODULE, str(NATIVE_API)],
                       capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NativeBuildError(f"cannot check the built module: {e}") from None
        if done.returncode != 0:
            raise NativeBuildError("the built module does not load: "
                                   f"{done.stderr.strip()[-800:]}")
        os.replace(tmp, p.output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
