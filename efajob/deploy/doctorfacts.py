"""The facts `efajob doctor` judges (deploy/doctor.py), read from this node: thin I/O only,
every root, clock, command runner and URL opener injectable so tests build a healthy or a
broken node in a temp dir."""
from __future__ import annotations

import os
import shlex
import time
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from efajob.config import Config
from efajob.deploy.doctor import Facts, HookFacts, HookFile, StoreProbe, HOOK_NAMES

# Bounds for what doctor waits on: a hung NFS mount, a slurmctld that does not answer, a
# port that accepts and never replies. Doctor reports each as a failure instead of hanging.
STORE_TIMEOUT = 10.0
SLURM_TIMEOUT = 10.0
HTTP_TIMEOUT = 5.0


def read_hook_facts(kind: str, setting: Optional[str], source: str) -> HookFacts:
    """List the glob's directory (`DIR/*`) and look into efajob's wrapper."""
    if setting is None or not setting.endswith("/*"):
        return HookFacts(kind, setting, source)
    d = setting[:-2]
    try:
        names = sorted(n for n in os.listdir(d) if not n.startswith("."))
    except OSError as e:
        return HookFacts(kind, setting, source, None, e.strerror)
    files: List[HookFile] = []
    for n in names:
        p = os.path.join(d, n)
        if not os.path.isfile(p):
            continue
        executable = os.access(p, os.X_OK)
        interpreter = _wrapper_interpreter(p) if n == HOOK_NAMES[kind] else None
        runs = interpreter is not None and os.path.isfile(interpreter) \
            and os.access(interpreter, os.X_OK)
        files.append(HookFile(n, executable, interpreter, runs))
    return HookFacts(kind, setting, source, files)


def _wrapper_interpreter(path: str) -> Optional[str]:
    """The `PY=` line `efajob install hooks` writes (cli/hooks.py render_wrapper)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("PY="):
                    words = shlex.split(line[3:])
                    return words[0] if words else None
    except (OSError, ValueError):
        return None
    return None


def probe_store(cfg: Config, *, clock: Callable[[], float] = time.time,
                timeout: float = STORE_TIMEOUT) -> StoreProbe:
    """Write a small file where this node's status files go, read its mtime (set by the file
    server on NFS: its clock), remove it. A store that does not answer in `timeout` s fails."""
    from efajob.errors import StoreError
    from efajob.hooks.runfiles import atomic_write, ensure_dir
    from efajob.store.watchdog import call_watched

    d = os.path.join(cfg.store, cfg.cluster)
    path = os.path.join(d, f".doctor.{cfg.node}.{os.getpid()}")

    def run() -> Tuple[float, float]:
        ensure_dir(d)
        now = clock()
        atomic_write(path, b"efajob doctor\n")
        try:
            return os.stat(path).st_mtime, now
        finally:
            os.unlink(path)

    try:
        mtime, now = call_watched(run, store=cfg.store, timeout=timeout)
    except StoreError as e:
        return StoreProbe(d, str(e))
    except OSError as e:
        return StoreProbe(d, e.strerror or str(e))
    return StoreProbe(d, None, mtime, now)


def probe_prometheus(cfg: Config, *, opener: Optional[Callable] = None,
                     timeout: float = HTTP_TIMEOUT) -> Tuple[str, Optional[str]]:
    """GET /metrics from the daemon's exporter: (address, None) when it answers with efajob's
    metrics, else (address, why not). A wildcard bind is asked on loopback."""
    import urllib.request

    host = cfg.prometheus.bind
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    addr = f"[{host}]:{cfg.prometheus.port}" if ":" in host else f"{host}:{cfg.prometheus.port}"
    open_ = opener or urllib.request.urlopen
    try:
        with open_(f"http://{addr}/metrics", timeout=timeout) as r:
            body = r.read(1 << 20).decode("utf-8", "replace")
    except OSError as e:  # URLError, ConnectionRefused, timeout
        return addr, f"no answer ({getattr(e, 'reason', None) or e})"
    if "efajob_" not in body:
        return addr, "answers, but not with efajob's metrics (another program has the port?)"
    return addr, None


def gather(cfg: Config, *, slurm_scripts_dir: Optional[str] = None,
           slurm_config: Optional[Callable[[], Mapping[str, str]]] = None,
           clock: Callable[[], float] = time.time,
           mono_clock: Callable[[], float] = time.monotonic,
           fs_clock: Callable[[], float] = time.time,
           prometheus_opener: Optional[Callable] = None,
           native: Optional[Callable[[], Tuple[Optional[str], Optional[str]]]] = None) -> Facts:
    """Everything doctor judges. `slurm_config` returns `scontrol show config` as a dict
    (default: the Slurm adapter); a SlurmError becomes `slurm_error`. `clock`/`mono_clock`
    judge the daemon's freshness and the date; `fs_clock` is compared with the mtime the job
    store's file server gives a new file (both real time outside tests); `native` says
    whether samples are read in C (default: sysfs.native_reader, this process's answer)."""
    from efajob.daemon.nodestatus import read_local_status
    from efajob.errors import SlurmError
    from efajob.hooks.outbox import delivery_error, pending
    from efajob.node.instances import lookup, read_cached_instance_type
    from efajob.node.sysfs import discover_devices, native_reader, read_snapshot

    devices = discover_devices(cfg.sysfs_root) if os.path.isdir(cfg.sysfs_root) else []
    counters: Dict[str, int] = {}
    if devices:
        snap = read_snapshot(cfg.sysfs_root, include_net=False)
        counters = {name: len(d.port_counters) for name, d in snap.devices.items()}
    itype_name = cfg.instance_type or read_cached_instance_type(cfg.state_dir)
    itype = lookup(itype_name)
    if itype_name and not cfg.instance_type:
        cfg = cfg.replace(instance_type=itype_name)  # as the daemon would: status judges it
    status = read_local_status(cfg, now_mono=mono_clock(), now_wall=clock())

    if slurm_config is None:
        from efajob.slurm.adapter import CommandBackend

        slurm_config = CommandBackend(timeout=SLURM_TIMEOUT).show_config
    conf: Optional[Mapping[str, str]] = None
    slurm_error = None
    try:
        conf = slurm_config()
    except SlurmError as e:
        slurm_error = str(e)

    def hook(kind: str) -> HookFacts:
        if slurm_scripts_dir:  # the admin says where: trust it over Slurm's answer
            return read_hook_facts(kind, os.path.join(os.path.abspath(slurm_scripts_dir),
                                                      f"{kind}.d", "*"), "--slurm-scripts-dir")
        setting = conf.get(kind.capitalize(), "(null)") if conf is not None else None
        return read_hook_facts(kind, setting, "slurm")

    failing = delivery_error(cfg)
    reader, reader_problem = (native or native_reader)()
    prom_addr, prom_error = "", None
    if cfg.prometheus.enabled:
        prom_addr, prom_error = probe_prometheus(cfg, opener=prometheus_opener)
    return Facts(
        sysfs_root=cfg.sysfs_root, devices=[d.name for d in devices], instance_type=itype_name,
        expected_devices=itype.devices if itype else None, counters=counters, status=status,
        prolog=hook("prolog"), epilog=hook("epilog"), slurm_config=conf,
        slurm_error=slurm_error, store=probe_store(cfg, clock=fs_clock), now_wall=clock(),
        prometheus_enabled=cfg.prometheus.enabled, prometheus_address=prom_addr,
        prometheus_error=prom_error, cloudwatch_enabled=cfg.cloudwatch.enabled,
        delivery_error=failing, outbox_pending=len(pending(cfg)) if failing else 0,
        reader=reader, reader_problem=reader_problem)
