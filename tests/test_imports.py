"""The hook path imports only the standard library (DESIGN: no click, no boto3, no
prometheus_client), checked in fresh interpreters after real prolog and epilog runs, so lazy
imports inside the hooks are covered too. And the Slurm adapter stays out of it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from efajob.simulate import build_node

FORBIDDEN = {"click", "boto3", "botocore", "prometheus_client", "pyslurm", "subprocess",
             "efajob.slurm", "efajob.cli", "efajob.daemon", "efajob.sinks", "efajob.report"}

PROBE = """
import json, sys
from efajob import hook
hook.main([sys.argv[1]])
print(json.dumps(sorted(sys.modules)))
"""




def modules_after(args, env):
    p = subprocess.run([sys.executable, "-c", PROBE] + args, env=env, capture_output=True,
                       text=True, timeout=30, cwd="/")
    assert p.returncode == 0, p.stderr
    return set(json.loads(p.stdout.strip().splitlines()[-1]))


def check(mods):
    bad = sorted(m for m in mods if m in FORBIDDEN or m.split(".")[0] in FORBIDDEN)
    assert bad == []
    std = getattr(sys, "stdlib_module_names", None)  # Python 3.10+; 3.9: the list above only
    if std is not None:
        foreign = sorted(m for m in mods if "." not in m and m not in std and m != "efajob"
                         and not m.startswith("_") and m != "tomli")
        assert foreign == []


def test_import_hook_alone():
    p = subprocess.run([sys.executable, "-c", "import efajob.hook, json, sys; "
                        "print(json.dumps(sorted(sys.modules)))"],
                       capture_output=True, text=True, timeout=30, env={})
    mods = set(json.loads(p.stdout))
    check(mods)
    # Importing the entry point costs nothing beyond it: everything else loads when used.
    assert not {"efajob.records", "efajob.localstore", "sqlite3", "logging.handlers"} & mods


def test_prolog_and_epilog_paths(tmp_path):
    build_node(str(tmp_path / "sys"), "p4d.24xlarge")
    env = {"EFAJOB_SYSFS_ROOT": str(tmp_path / "sys"), "EFAJOB_RUN_DIR": str(tmp_path / "run"),
           "EFAJOB_STATE_DIR": str(tmp_path / "state"), "EFAJOB_STORE": str(tmp_path / "store"),
           "SLURMD_NODENAME": "n1", "SLURM_JOB_ID": "5", "EFAJOB_CONFIG": str(tmp_path / "c.toml")}
    (tmp_path / "c.toml").write_text('cluster = "c1"\n')
    prolog = modules_after(["prolog"], env)
    check(prolog)
    # The prolog never opens the local store, and logs nothing when all is well.
    assert not {"sqlite3", "logging", "efajob.records", "efajob.outbox"} & prolog
    epilog = modules_after(["epilog"], env)
    check(epilog)
    assert os.listdir(tmp_path / "store" / "c1" / "jobs" / "5") == ["n1.json"]  # it did run
