"""slurm/parallelcluster/efajob-node-configured.sh against fake roots: a p5 compute node gets
the package, the config, the hooks and the daemon's unit; a CPU node and a GPU node without EFA
get nothing; the head node gets the job store, the dashboard's unit and (in the background) the
CloudWatch dashboard. Twice, the same result. Failing steps (a dead package index, S3
unreachable, a read-only Slurm dir, bad arguments) leave exit 0 and a clear log line.

The pip step runs offline: the session builds efajob's wheel once, and the virtualenvs it makes
see this interpreter's dependencies (click, boto3, ...) through a .pth file, so pip installs the
wheel alone."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from conftest import require, wait_until
from efajob.sim.tree import build_node

# Tests that build the wheel, make virtualenvs or start servers; the rest are unit tests.
integration = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "slurm", "parallelcluster", "efajob-node-configured.sh")
HOOKS = ("opt/slurm/etc/scripts/prolog.d/00_efajob", "opt/slurm/etc/scripts/epilog.d/99_efajob")
NODE_UNIT = "etc/systemd/system/efajob-node.service"
DASH_UNIT = "etc/systemd/system/efajob-dashboard.service"
CONFIG = "etc/efajob/config.toml"
LOG = "var/log/efajob-bootstrap.log"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The wheel upload.sh builds for the nodes: pure (py3-none-any), the C reader's source
    in it and no compiled module (the node script builds that: `efajob install native`)."""
    out = tmp_path_factory.mktemp("wheel")
    p = subprocess.run(["bash", os.path.join(PC_DIR, "upload.sh"), "--bucket", "b", "--dist",
                        str(out), "--python", sys.executable, "--dry-run"],
                       capture_output=True, text=True, timeout=600)
    require("pip wheel", p.returncode == 0, p.stderr[-500:])
    (whl,) = [f for f in os.listdir(out) if f.endswith(".whl")]
    assert whl.endswith("-py3-none-any.whl"), whl
    with zipfile.ZipFile(out / whl) as z:
        names = z.namelist()
    assert "efajob/node/_fastread.c" in names and not [n for n in names if n.endswith(".so")]
    return str(out / whl)


@pytest.fixture(scope="session")
def deps_dir(tmp_path_factory):
    """This interpreter's site-packages without efajob (and without pip/setuptools): what the
    wheel needs, so that pip has nothing to download."""
    d = tmp_path_factory.mktemp("deps")
    site = sysconfig.get_paths()["purelib"]
    for name in os.listdir(site):
        if name.startswith(("efajob", "__editable__", "_distutils_hack", "pip", "setuptools",
                            "distutils-precedence")) or name.endswith(".pth"):
            continue
        os.symlink(os.path.join(site, name), d / name)
    return str(d)


def make_venv(path, deps_dir):
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=600,
                   capture_output=True)
    py = os.path.join(str(path), "bin", "python3")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=120).stdout.strip()
    with open(os.path.join(site, "zz_efajob_test_deps.pth"), "w") as f:
        f.write(deps_dir + "\n")
    return str(path)


@pytest.fixture
def venv(tmp_path, deps_dir):
    return make_venv(tmp_path / "venv", deps_dir)


def run(role, root, *args, env=None, venv=None):
    argv = ["bash", SCRIPT, role, "--root", str(root)]
    if venv:
        argv += ["--venv", venv]
    p = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=900,
                       env={**os.environ, **(env or {})})
    assert p.returncode == 0, p.stderr
    return p


def log_of(root):
    with open(os.path.join(str(root), LOG)) as f:
        return f.read()


def tree(root, skip=(LOG,)):
    """Every file under the root with its mode and checksum (symlinks by target)."""
    out = {}
    for d, dirs, names in os.walk(str(root)):
        if os.path.relpath(d, str(root)).split(os.sep)[0] == "sys":
            dirs[:] = []
            continue
        for n in names:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, str(root))
            if rel in skip:
                continue
            with open(p, "rb") as f:
                out[rel] = (stat.S_IMODE(os.lstat(p).st_mode), hashlib.sha256(f.read()).hexdigest())
    return out


def p5_root(tmp_path):
    root = tmp_path / "root"
    build_node(str(root / "sys"), "p5.48xlarge", device_limit=4)
    return root


@integration
def test_p5_compute_node_gets_package_config_hooks_and_unit_and_a_second_run_changes_nothing(
        tmp_path, wheel, venv):
    root = p5_root(tmp_path)
    first = run("compute", root, "--wheel", wheel, "--prometheus", "--cluster", "pc1", venv=venv)
    files = tree(root)
    for f in HOOKS:
        assert files[f][0] == 0o755
    assert NODE_UNIT in files and DASH_UNIT not in files
    assert "etc/logrotate.d/efajob" in files
    cfg = (root / CONFIG).read_text()
    assert 'cluster = "pc1"' in cfg and 'store = "/opt/parallelcluster/shared/efajob"' in cfg
    assert '[prometheus]\nenabled = true\nbind = "0.0.0.0"' in cfg
    hook = (root / HOOKS[0]).read_text()
    assert f"PY={venv}/bin/python3" in hook and "EFAJOB_CONFIG=/etc/efajob/config.toml" in hook
    manifest = json.loads((root / "var/lib/efajob/installed.json").read_text())
    assert {"/" + h for h in HOOKS} | {"/" + NODE_UNIT} <= {f["path"] for f in manifest["files"]}
    log = log_of(root)
    assert "4 EFA device(s)" in log and "installed efajob 0.1.0 into" in log
    # The C reader, built on the node from the wheel's source (.ci/run installs gcc).
    require("a C compiler", shutil.which("cc") is not None)
    assert "C reader: built " in log and "the sampler reads counters in C" in log, log
    assert "skipped: systemctl enable --now efajob-node.service (--root)" in log
    assert first.stderr.splitlines()[-1].startswith("efajob-node-configured[compute]: finished: "
                                                    "done: efajob 0.1.0 in")

    second = run("compute", root, "--wheel", wheel, "--prometheus", "--cluster", "pc1", venv=venv)
    assert tree(root) == files
    assert f"efajob 0.1.0 already in {venv}" in second.stderr
    assert "/etc/efajob/config.toml unchanged" in second.stderr
    assert second.stderr.splitlines()[-1] == first.stderr.splitlines()[-1]


@integration
def test_an_edited_config_is_kept(tmp_path, wheel, venv):
    root = p5_root(tmp_path)
    (root / "etc/efajob").mkdir(parents=True)
    (root / CONFIG).write_text('cluster = "mine"\n')
    p = run("compute", root, "--wheel", wheel, venv=venv)
    assert (root / CONFIG).read_text() == 'cluster = "mine"\n'
    assert "/etc/efajob/config.toml exists and was not written by this script: kept" in p.stderr
    assert all(os.path.exists(root / h) for h in HOOKS)


@integration
@pytest.mark.parametrize("kind", ["cpu", "gpu-without-efa"])
def test_a_node_without_efa_is_left_alone(tmp_path, wheel, kind):
    root = tmp_path / "root"
    if kind == "cpu":
        (root / "sys/class").mkdir(parents=True)  # no infiniband class at all
        gpus = 0
    else:
        # An RDMA device that is not EFA (ConnectX, vendor 0x15b3) and eight NVIDIA GPUs.
        dev = root / "sys/devices/pci0000:00/0000:10:00.0"
        (dev / "infiniband/mlx5_0").mkdir(parents=True)
        (dev / "vendor").write_text("0x15b3\n")
        os.symlink(dev, dev / "infiniband/mlx5_0/device")
        (root / "sys/class/infiniband").mkdir(parents=True)
        os.symlink(dev / "infiniband/mlx5_0", root / "sys/class/infiniband/mlx5_0")
        for i in range(8):
            (root / f"proc/driver/nvidia/gpus/0000:{i:02x}:00.0").mkdir(parents=True)
        gpus = 8
    for _ in range(2):
        p = run("compute", root, "--wheel", wheel)
        assert tree(root, skip=()).keys() == {LOG} | {
            os.path.relpath(os.path.join(d, n), str(root))
            for d, _, ns in os.walk(str(root / "proc")) for n in ns}
        assert (f"skipped: everything: no EFA device (vendor 0x1d0f) under /sys/class/infiniband, "
                f"{gpus} NVIDIA GPU(s)") in p.stderr
        assert not (root / "opt/efajob/venv").exists()


@integration
def test_head_node_gets_store_config_and_dashboard_unit_twice_the_same(tmp_path, wheel, venv):
    root = tmp_path / "root"
    p = run("head", root, "--wheel", wheel, "--prometheus", venv=venv)
    store = root / "opt/parallelcluster/shared/efajob"
    assert store.is_dir() and stat.S_IMODE(store.stat().st_mode) == 0o755
    files = tree(root)
    assert DASH_UNIT in files and NODE_UNIT not in files and not any(h in files for h in HOOKS)
    assert "skipped: CloudWatch dashboard (no --cloudwatch)" in p.stderr
    assert (root / "etc/cron.d/efajob-prometheus-targets").read_text().splitlines()[1] == (
        f"* * * * * root {venv}/bin/efajob prometheus targets --config /etc/efajob/config.toml "
        "--out /etc/prometheus/efajob-targets.json >/dev/null 2>&1")
    assert "skipped: first /etc/prometheus/efajob-targets.json (--root)" in p.stderr
    run("head", root, "--wheel", wheel, "--prometheus", venv=venv)
    assert tree(root) == files


@integration
@pytest.mark.moto
def test_head_node_puts_the_cloudwatch_dashboard_in_the_background(tmp_path, wheel, venv):
    from tests.test_cw_moto import MotoServer

    server = MotoServer(tmp_path)
    server.start()
    try:
        root = tmp_path / "root"
        env = {"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "NO_PROXY": "127.0.0.1"}
        p = run("head", root, "--wheel", wheel, "--cloudwatch", "--region", "us-east-1",
                "--cluster", "pc1", env=env, venv=venv)
        assert "CloudWatch dashboard: being put in the background" in p.stderr
        # The bound only limits a hang; the verdict is the log line.
        assert wait_until(lambda: "CloudWatch dashboard:" in log_of(root).split("background")[-1])
        assert "done: CloudWatch dashboard: dashboard efajob-pc1 put in us-east-1" in log_of(root)
        import boto3

        cw = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=server.url,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        assert [d["DashboardName"] for d in cw.list_dashboards()["DashboardEntries"]] == ["efajob-pc1"]
    finally:
        server.stop()


@integration
def test_cloudwatch_unreachable_is_logged_in_the_background(tmp_path, wheel, venv):
    root = tmp_path / "root"
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    run("head", root, "--wheel", wheel, "--cloudwatch", "--region", "us-east-1", env=env,
        venv=venv)
    assert wait_until(lambda: "CloudWatch dashboard:" in log_of(root).split("background")[-1])
    assert "failed: CloudWatch dashboard: " in log_of(root)


@integration
def test_a_dead_package_index_skips_everything_after_it_and_exits_0(tmp_path):
    root = p5_root(tmp_path)
    # A fresh venv made by the script; its pip asks a port nobody listens on.
    p = run("compute", root, "--index-url", "http://127.0.0.1:9/simple", "--version", "0.1.0")
    venv = root / "opt/efajob/venv"
    assert f"pip install --index-url http://127.0.0.1:9/simple efajob==0.1.0 into {venv} failed" \
        in p.stderr
    assert "skipped: Slurm hooks, node daemon (no efajob to run)" in p.stderr
    assert not any(os.path.exists(root / h) for h in HOOKS)
    assert p.stderr.splitlines()[-1] == (
        "efajob-node-configured[compute]: finished: done: nothing; skipped: efajob package, "
        "Slurm hooks, node daemon (no efajob to run)")


def fake_aws(tmp_path, body):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "aws").write_text("#!/bin/sh\n" + body)
    (bindir / "aws").chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


@integration
def test_s3_unreachable_is_logged_and_exits_0(tmp_path, venv):
    root = p5_root(tmp_path)
    env = fake_aws(tmp_path, 'echo "fatal error: Could not connect to the endpoint URL" >&2\n'
                             "exit 1\n")
    p = run("compute", root, "--wheel", "s3://bucket/efajob-0.1.0-py3-none-any.whl", env=env,
            venv=venv)
    assert "Could not connect to the endpoint URL" in log_of(root)
    assert ("aws s3 cp s3://bucket/efajob-0.1.0-py3-none-any.whl failed (see the lines above; "
            "the node's role needs s3:GetObject on it)") in p.stderr
    assert "skipped: efajob package" in p.stderr and not (root / HOOKS[0]).exists()


@integration
def test_the_wheel_from_s3_is_installed(tmp_path, wheel, venv):
    root = p5_root(tmp_path)
    # `aws s3 cp s3://bucket/KEY DEST` copies the session's wheel (any key).
    env = fake_aws(tmp_path, f'[ "$1 $2" = "s3 cp" ] || exit 2\ncp {wheel} "$5"\n')
    p = run("compute", root, "--wheel", "s3://bucket/efajob-0.1.0-py3-none-any.whl", env=env,
            venv=venv)
    assert "installed efajob 0.1.0 into" in p.stderr
    assert (root / "var/tmp/efajob-wheel/efajob-0.1.0-py3-none-any.whl").is_file()
    assert all((root / h).is_file() for h in HOOKS)


@integration
def test_a_read_only_slurm_dir_skips_the_hooks_only(tmp_path, wheel, venv):
    from conftest import mount_tmpfs

    root = p5_root(tmp_path)
    scripts = root / "opt/slurm/etc/scripts"
    scripts.mkdir(parents=True)
    with mount_tmpfs(scripts, "1m"):
        r = subprocess.run(["mount", "-o", "remount,ro", str(scripts)], capture_output=True,
                           timeout=120)
        require("read-only remount", r.returncode == 0, r.stderr.decode())
        p = run("compute", root, "--wheel", wheel, venv=venv)
    assert "efajob install hooks failed: " in p.stderr and "Read-only file system" in p.stderr
    assert "skipped: Slurm hooks" in p.stderr
    assert (root / NODE_UNIT).is_file()
    assert "done: efajob-node.service" in p.stderr


@pytest.mark.parametrize("args", [[], ["worker"], ["compute", "--wheel"], ["compute", "--bogus"]])
def test_bad_arguments_say_so_and_exit_0(tmp_path, args):
    log = tmp_path / "boot.log"
    p = subprocess.run(["bash", SCRIPT, *args, "--log", str(log)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0
    assert "usage: " in p.stderr and p.stderr.splitlines()[-1].endswith("nothing done")
    assert "nothing done" in log.read_text()


PC_DIR = os.path.join(REPO, "slurm", "parallelcluster")

# boto3 method -> the IAM action it needs. The policies must grant exactly the calls efajob
# makes: a new call without its action fails on a real cluster, an action no code uses is
# more than the least privilege.
IAM_ACTIONS = {"put_metric_data": "cloudwatch:PutMetricData", "put_log_events": "logs:PutLogEvents",
               "create_log_group": "logs:CreateLogGroup", "create_log_stream": "logs:CreateLogStream",
               "put_dashboard": "cloudwatch:PutDashboard",
               "put_metric_alarm": "cloudwatch:PutMetricAlarm"}
HEAD_ONLY = {"cloudwatch:PutDashboard", "cloudwatch:PutMetricAlarm"}


def aws_calls_in_code():
    import re

    # The modules that hold botocore clients (boto3 is imported nowhere else).
    paths = [os.path.join(REPO, "efajob", "cli", "cloudwatch.py")]
    cw = os.path.join(REPO, "efajob", "sinks", "cloudwatch")
    paths += [os.path.join(cw, n) for n in os.listdir(cw) if n.endswith(".py")]
    calls = set()
    for path in paths:
        with open(path) as f:
            calls |= set(re.findall(r"\.(put_[a-z_]+|create_log_[a-z_]+|delete_[a-z_]+)\b", f.read()))
    return calls


def policy_actions(name):
    with open(os.path.join(PC_DIR, name)) as f:
        doc = json.load(f)
    out = set()
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow" and "*" not in json.dumps(st["Action"])
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        out |= set(acts)
    return doc, out


def test_iam_policies_grant_exactly_the_calls_efajob_makes():
    calls = aws_calls_in_code()
    assert calls - set(IAM_ACTIONS) == set(), "a new AWS call: add it to IAM_ACTIONS and a policy"
    needed = {IAM_ACTIONS[c] for c in calls}
    node_doc, node = policy_actions("iam-node-policy.json")
    head_doc, head = policy_actions("iam-head-policy.json")
    assert node - {"s3:GetObject"} == needed - HEAD_ONLY
    assert head - {"s3:GetObject"} == HEAD_ONLY
    # PutMetricData has no resource ARN: the namespace condition is what narrows it.
    (metrics,) = [s for s in node_doc["Statement"] if s["Action"] == "cloudwatch:PutMetricData"]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "EFAJob"}}
    (dash,) = [s for s in head_doc["Statement"] if s["Action"] == "cloudwatch:PutDashboard"]
    assert dash["Resource"] == "arn:aws:cloudwatch::*:dashboard/efajob-*"
    (alarm,) = [s for s in head_doc["Statement"] if s["Action"] == "cloudwatch:PutMetricAlarm"]
    assert alarm["Resource"] == "arn:aws:cloudwatch:*:*:alarm:efajob-*"


@integration
def test_the_cluster_config_snippet_runs_the_script_with_arguments_it_accepts(tmp_path, wheel, venv):
    try:
        import yaml
    except ImportError:
        require("pyyaml", False, "pip install pyyaml")
    with open(os.path.join(PC_DIR, "cluster-config-snippet.yaml")) as f:
        cfg = yaml.safe_load(f)
    assert cfg["Scheduling"]["SlurmSettings"]["CustomSlurmSettings"] == [{"PrologFlags": "Alloc"}]
    head = cfg["HeadNode"]["CustomActions"]["OnNodeConfigured"]
    (queue,) = cfg["Scheduling"]["SlurmQueues"]
    compute = queue["CustomActions"]["OnNodeConfigured"]
    for action, role in ((head, "head"), (compute, "compute")):
        assert action["Script"].endswith("/efajob-node-configured.sh") and action["Args"][0] == role
    assert queue["Iam"]["AdditionalIamPolicies"][0]["Policy"].endswith(":policy/efajob-node")
    # The compute node's Args, run on a p5 with `aws s3 cp` serving the session's wheel.
    root = p5_root(tmp_path)
    env = fake_aws(tmp_path, f'cp {wheel} "$5"\n')
    p = run(compute["Args"][0], root, *compute["Args"][1:], env=env, venv=venv)
    assert "skipped: Slurm hooks" not in p.stderr and all((root / h).is_file() for h in HOOKS)
    assert '[prometheus]' in (root / CONFIG).read_text()


@integration
def test_upload_builds_the_wheel_and_copies_it_and_the_script(tmp_path):
    calls = tmp_path / "calls"
    env = fake_aws(tmp_path, f'echo "$@" >> {calls}\n')
    argv = ["bash", os.path.join(PC_DIR, "upload.sh"), "--bucket", "b1", "--dist",
            str(tmp_path / "dist"), "--python", sys.executable]
    dry = subprocess.run(argv + ["--dry-run"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, **env})
    assert dry.returncode == 0, dry.stderr
    assert not calls.exists()
    assert "would run: aws s3 cp " in dry.stdout
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env={**os.environ, **env})
    assert p.returncode == 0, p.stderr
    whl = tmp_path / "dist" / "efajob-0.1.0-py3-none-any.whl"
    assert whl.is_file()
    assert calls.read_text().splitlines() == [
        f"s3 cp --only-show-errors {whl} s3://b1/efajob/efajob-0.1.0-py3-none-any.whl",
        f"s3 cp --only-show-errors {SCRIPT} s3://b1/efajob/efajob-node-configured.sh"]


@integration
@pytest.mark.slurm
def test_the_hooks_the_script_installs_run_jobs_under_a_real_slurm(tmp_path, wheel, venv):
    """The one-host Slurm harness with its prolog.d/epilog.d being what the script wrote (on
    a fake root, with the harness's config via --config, the package from the session's
    wheel): a two-node job leaves a record from each node in the job store."""
    import shutil

    import slurm_cluster as sc

    require("root", os.geteuid() == 0, "slurmd runs the test jobs and hooks as root")
    if sc.missing_binaries() and not shutil.which("apt-get"):
        require("Slurm", False, f"missing {', '.join(sc.missing_binaries())}")

    class Cluster(sc.SlurmCluster):
        def install_hooks(self):
            pc = self.lay.p("pcroot")
            build_node(os.path.join(pc, "sys"), "p5.48xlarge", device_limit=2)
            # The script checks the config under its root; the wrappers name the node path,
            # which on this host is the harness's own config.
            conf_copy = os.path.join(pc, self.lay.efajob_conf.lstrip("/"))
            os.makedirs(os.path.dirname(conf_copy))
            shutil.copy(self.lay.efajob_conf, conf_copy)
            p = run("compute", pc, "--wheel", wheel, "--config", self.lay.efajob_conf,
                    "--slurm-etc", "/opt/slurm/etc", venv=venv)
            assert "done: Slurm hooks" in p.stderr, p.stderr
            os.makedirs(self.lay.scripts, exist_ok=True)
            for kind in ("prolog.d", "epilog.d"):
                os.symlink(os.path.join(pc, "opt/slurm/etc/scripts", kind),
                           os.path.join(self.lay.scripts, kind))

    c = Cluster(str(tmp_path / "slurm"), nodes=2, alloc=True, interval=0.2)
    try:
        try:
            c.start()
        except sc.HarnessError as e:
            if sc.missing_binaries():
                require("Slurm", False, str(e))
            raise
        with open(os.path.join(c.lay.scripts, "prolog.d", "00_efajob")) as f:
            assert f"PY={venv}/bin/python3" in f.read()
        job = c.sbatch("-N2", wrap="sleep 1")
        assert c.wait_done(job) == "COMPLETED", c.diagnostics(job)
        recs = c.wait_records(job, c.nodes)
        assert sorted(recs) == ["n1", "n2"]
        assert all(r["job_id"] == job for r in recs.values())
        assert c.node_states() == {"n1": "idle", "n2": "idle"}
    finally:
        c.stop()


def test_deploy_md_shows_the_snippet_as_shipped():
    with open(os.path.join(REPO, "docs", "deploy.md")) as f:
        doc = f.read()
    with open(os.path.join(PC_DIR, "cluster-config-snippet.yaml")) as f:
        assert "```yaml\n" + f.read() + "```\n" in doc
