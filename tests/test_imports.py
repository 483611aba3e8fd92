"""Imports: the hook path stays standard library only, the package layout keeps its one-way
dependencies, and entry points written by older installs still run.

- The hook path imports only the standard library (DESIGN: no click, no boto3, no
  prometheus_client), checked in fresh interpreters after real prolog and epilog runs, so lazy
  imports inside the hooks are covered too; and nothing of the daemon, sinks, store, report,
  dashboard, simulator, CLI or the Slurm adapter loads with it.
- No import cycle between efajob's modules, counting every import: module level, inside
  functions and under TYPE_CHECKING (a lazy or type-only import is still a dependency).
- Every import between subpackages is one the table in docs/architecture.md allows: the table
  is the rule, this test enforces it, so the two cannot drift apart.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
from typing import Dict, List, Set

import pytest

from conftest import HOOK_WAIT_ENV

from efajob.sim import build_node

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(REPO, "efajob")

# Off the hook path: third-party packages, subprocess, and every stage above the hooks.
FORBIDDEN_TOP = {"click", "boto3", "botocore", "prometheus_client", "pyslurm", "subprocess"}
FORBIDDEN_PKGS = ("efajob.cli", "efajob.daemon", "efajob.sinks", "efajob.store", "efajob.report",
                  "efajob.dashboard", "efajob.sim", "efajob.slurm.adapter")

PROBE = """
import json, sys
from efajob.hooks import entry
entry.main([sys.argv[1]])
print(json.dumps(sorted(sys.modules)))
"""


def modules_after(args, env, probe=PROBE):
    p = subprocess.run([sys.executable, "-c", probe] + args, env=env, capture_output=True,
                       text=True, timeout=120, cwd="/")
    assert p.returncode == 0, p.stderr
    return set(json.loads(p.stdout.strip().splitlines()[-1]))


def check(mods):
    bad = sorted(m for m in mods if m.split(".")[0] in FORBIDDEN_TOP
                 or any(m == f or m.startswith(f + ".") for f in FORBIDDEN_PKGS))
    assert bad == []
    std = getattr(sys, "stdlib_module_names", None)  # Python 3.10+; 3.9: the list above only
    if std is not None:
        foreign = sorted(m for m in mods if "." not in m and m not in std and m != "efajob"
                         and not m.startswith("_") and m != "tomli")
        assert foreign == []


def test_import_hook_alone():
    p = subprocess.run([sys.executable, "-c", "import efajob.hooks.entry, json, sys; "
                        "print(json.dumps(sorted(sys.modules)))"],
                       capture_output=True, text=True, timeout=120, env={})
    mods = set(json.loads(p.stdout))
    check(mods)
    # Importing the entry point costs nothing beyond it: everything else loads when used.
    assert not {"efajob.hooks.records", "efajob.node.localstore", "sqlite3", "logging.handlers"} & mods
    assert {m for m in mods if m.startswith("efajob")} == {"efajob", "efajob.hooks",
                                                           "efajob.hooks.entry"}


def _hook_env(tmp_path, job_id="5"):
    build_node(str(tmp_path / "sys"), "p4d.24xlarge")
    (tmp_path / "c.toml").write_text('cluster = "c1"\n')
    return {"EFAJOB_SYSFS_ROOT": str(tmp_path / "sys"), "EFAJOB_RUN_DIR": str(tmp_path / "run"),
            "EFAJOB_STATE_DIR": str(tmp_path / "state"), "EFAJOB_STORE": str(tmp_path / "store"),
            "SLURMD_NODENAME": "n1", "SLURM_JOB_ID": job_id,
            "EFAJOB_CONFIG": str(tmp_path / "c.toml"), **HOOK_WAIT_ENV}


def test_prolog_and_epilog_paths(tmp_path):
    env = _hook_env(tmp_path)
    prolog = modules_after(["prolog"], env)
    check(prolog)
    # The prolog never opens the local store, and logs nothing when all is well.
    assert not {"sqlite3", "logging", "efajob.hooks.records", "efajob.hooks.outbox"} & prolog
    epilog = modules_after(["epilog"], env)
    check(epilog)
    assert os.listdir(tmp_path / "store" / "c1" / "jobs" / "5") == ["n1.json"]  # it did run


# -- entry points written by efajob 0.1.0 (before the package layout) ------------------------------
# The two wrapper bodies `efajob install hooks` wrote, byte for byte but for the paths, and the
# ExecStart of its systemd unit: sites keep these files across upgrades.
OLD_WRAPPER_S = ("import sys; sys.path[:0] = {paths}; from efajob.hook import main; "
                 "sys.exit(main())")


def test_hook_wrappers_from_an_older_install_still_record(tmp_path):
    env = _hook_env(tmp_path, job_id="6")
    # What 0.1.0 wrote: efajob's directory and its site-packages (tomli lives there on 3.9).
    paths = json.dumps([REPO, sysconfig.get_paths()["purelib"]])
    for kind in ("prolog", "epilog"):
        p = subprocess.run([sys.executable, "-I", "-S", "-c", OLD_WRAPPER_S.format(paths=paths),
                            kind], env=env, capture_output=True, text=True, timeout=120, cwd="/")
        assert p.returncode == 0 and p.stderr == "", p.stderr
    env["SLURM_JOB_ID"] = "7"
    pypath = dict(env, PYTHONPATH=REPO)
    for kind in ("prolog", "epilog"):  # the other form: `"$PY" -I -m efajob.hook <kind>`
        p = subprocess.run([sys.executable, "-m", "efajob.hook", kind], env=pypath,
                           capture_output=True, text=True, timeout=120, cwd="/")
        assert p.returncode == 0 and p.stderr == "", p.stderr
    jobs = tmp_path / "store" / "c1" / "jobs"
    assert sorted(os.listdir(jobs)) == ["6", "7"]
    assert os.listdir(jobs / "6") == ["n1.json"] and os.listdir(jobs / "7") == ["n1.json"]


def test_systemd_unit_from_an_older_install_still_starts_the_cli():
    p = subprocess.run([sys.executable, "-m", "efajob.cli_node", "daemon", "--help"],
                       capture_output=True, text=True, timeout=120, cwd="/",
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Usage: efajob daemon")


# -- the package layout ----------------------------------------------------------------------------
def _modules() -> Dict[str, str]:
    out = {}
    for d, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), REPO)[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = \
                    os.path.join(d, f)
    return out


MODULES = _modules()


def imports_of(path: str, modules=MODULES) -> Set[str]:
    """Every efajob module `path` imports, wherever the import statement stands."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    here = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").split(".")
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "efajob")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here[:len(here) - node.level]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "efajob":
                continue
            for a in node.names:  # `from efajob.x import y` names module efajob.x.y when it is one
                out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod)
    return out


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[List[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph[v]:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_finds_cycles():
    # The finder itself, on graphs whose answer is known (a test that cannot fail is no test).
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert cycles({"a": {"a"}}) == [["a"]]


def test_no_import_cycles():
    graph = {m: imports_of(p) for m, p in MODULES.items()}
    assert cycles(graph) == []


def stage(module: str, stages) -> str:
    """The row of docs/architecture.md's table a module belongs to: the deepest documented
    package that holds it ("report/render", "sinks" for sinks/cloudwatch/), "base" for the
    top-level modules, or the module itself for the entry points and compatibility modules."""
    parts = module.split(".")
    for depth in range(len(parts) - 1, 1, -1):
        name = "/".join(parts[1:depth])
        if name in stages and os.path.isdir(os.path.join(PKG, *parts[1:depth])):
            return name
    if len(parts) >= 2 and os.path.isdir(os.path.join(PKG, parts[1])):
        return parts[1]
    if module in ("efajob", "efajob.errors", "efajob.config", "efajob.values", "efajob.atomicfile", "efajob.fmt",
                  "efajob.fastjson", "efajob.minitoml", "efajob.frozen"):
        return "base"
    return module


def documented_layers() -> Dict[str, Set[str]]:
    """{stage: stages it may import} from the table in docs/architecture.md ("| `efajob/node/` |
    ... | base |" rows; "anything" for the top)."""
    text = open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8").read()
    table = text.split("## Packages", 1)[1].split("\n## ", 1)[0]
    layers: Dict[str, Set[str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`efajob/([\w/]*?)/?`.*|`(efajob(?:\.\w+)+)`.*", cells[0]) if cells else None
        if not m or len(cells) < 3:
            continue
        name = m.group(2) or m.group(1) or "base"
        layers[name] = {
            c.strip(" `") for c in cells[-1].split(",") if c.strip(" `") not in ("", "-")}
    return layers


def test_architecture_table_names_every_stage():
    layers = documented_layers()
    assert set(layers) == {stage(m, layers) for m in MODULES}


def test_imports_between_stages_follow_the_architecture_table():
    layers = documented_layers()
    wrong = []
    for m, path in sorted(MODULES.items()):
        a = stage(m, layers)
        for dep in sorted(imports_of(path)):
            b = stage(dep, layers)
            if b != a and b not in layers.get(a, set()) and "anything" not in layers.get(a, ()):
                wrong.append(f"{m} imports {dep} ({a} -> {b})")
    assert wrong == []


def test_architecture_table_is_layered():
    # Dependencies point one way: ordering the stages by what they may import leaves no stage
    # allowed to import one above it.
    layers = {k: v - {"anything"} for k, v in documented_layers().items()}
    order: List[str] = []
    pending = dict(layers)
    while pending:
        ready = sorted(k for k, deps in pending.items() if deps <= set(order))
        assert ready, f"no layering: {pending}"
        order += ready
        for k in ready:
            del pending[k]


@pytest.mark.parametrize("pkg", ["efajob", "efajob.node", "efajob.slurm", "efajob.hooks"])
def test_hook_path_package_inits_import_nothing(pkg):
    # Importing efajob.hooks.entry runs these: an import in them would cost every job.
    tree = ast.parse(open(MODULES[pkg], encoding="utf-8").read())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
