"""`efajob doctor`: is this node set up to account for every job? One check per line, each
`pass`, `warn`, `fail` or `skip` (not checked) with the fix. Pure: every check is a function of
the `Facts` that deploy/doctorfacts.py gathers (roots, clocks and command runners injected
there), so each can be tested on a healthy and on a broken simulated node.

Exit status (the CLI's): 0 nothing worse than pass/skip, 1 a warning, 2 a failure, so it can
gate automation (a bootstrap script, a health check).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence

from efajob.fmt import fmt_time

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
EXIT = {PASS: 0, SKIP: 0, WARN: 1, FAIL: 2}
# A node clock before this cannot be right (efajob did not exist): the RTC lost power or NTP
# never ran. Times are compared with the job store's server clock too (clock_skew).
CLOCK_FLOOR = 1735689600.0  # 2025-01-01T00:00:00Z
# Beyond this the node and the file server disagree enough to reorder records and make the
# dashboard call fresh status files stale (its staleness unit is a status_interval, 15 s).
CLOCK_SKEW_WARN = 2.0
# Where Slurm looks, with `Prolog=DIR/prolog.d/*`: efajob's wrapper must be the lexically
# smallest name in prolog.d (runs last: reverse order) and the largest in epilog.d (first).
HOOK_NAMES = {"prolog": "00_efajob", "epilog": "99_efajob"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    message: str
    fix: Optional[str] = None

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "message": self.message,
                "fix": self.fix}


@dataclass(frozen=True)
class HookFile:
    """One entry of prolog.d/epilog.d: executable? and for efajob's wrapper, the interpreter
    it names (`PY=`) and whether that is an executable file."""

    name: str
    executable: bool
    interpreter: Optional[str] = None
    interpreter_ok: bool = False


@dataclass(frozen=True)
class HookFacts:
    """What Slurm runs as Prolog (or Epilog): the setting (`scontrol show config`, or built
    from --slurm-scripts-dir: `source`), and the files of its directory when it is a glob."""

    kind: str
    setting: Optional[str]  # None: Slurm could not be asked and no directory was given
    source: str  # "slurm" or "--slurm-scripts-dir"
    files: Optional[Sequence[HookFile]] = None  # None: the directory cannot be listed
    error: Optional[str] = None


@dataclass(frozen=True)
class StoreProbe:
    """A file written to the job store and removed: the error if that failed, else the
    mtime the file server gave it (its clock) next to ours when it was written."""

    path: str
    error: Optional[str] = None
    server_mtime: Optional[float] = None
    local_time: Optional[float] = None


@dataclass(frozen=True)
class Facts:
    sysfs_root: str
    devices: Sequence[str]  # EFA devices (PCI vendor 0x1d0f), natural order
    instance_type: Optional[str]
    expected_devices: Optional[int]
    counters: Mapping[str, int]  # device -> port counters read (0: none readable)
    status: dict  # nodestatus.build_local_status
    prolog: HookFacts
    epilog: HookFacts
    slurm_config: Optional[Mapping[str, str]]
    slurm_error: Optional[str]
    store: StoreProbe
    now_wall: float
    prometheus_enabled: bool = False
    prometheus_address: str = ""
    prometheus_error: Optional[str] = None  # None: it answered with efajob's metrics
    cloudwatch_enabled: bool = False
    delivery_error: Optional[str] = None  # the daemon's last delivery failure (outbox.py)
    outbox_pending: int = 0
    # sysfs.native_reader(): the C reader's module file, or None and why samples are read
    # in Python (this install's answer: the daemon runs from the same one).
    reader: Optional[str] = None
    reader_problem: Optional[str] = None


def check_devices(f: Facts) -> Check:
    n = len(f.devices)
    if n == 0:
        return Check("efa devices", FAIL, f"no EFA device (PCI vendor 0x1d0f) under "
                     f"{f.sysfs_root}/class/infiniband",
                     "an EFA instance needs the EFA driver (aws-efa-installer) and EFA enabled "
                     "on its network interfaces; on a node without EFA, do not install efajob")
    if f.expected_devices is None:
        return Check("efa devices", WARN, f"{n} EFA device(s); instance type "
                     f"{f.instance_type or 'unknown'}: count not checked",
                     "set `instance_type` in the config (the daemon learns it from IMDS on EC2)")
    if n < f.expected_devices:
        return Check("efa devices", FAIL, f"{n} of the {f.expected_devices} EFA devices a "
                     f"{f.instance_type} has",
                     "devices can appear late after boot (p5en): run doctor again in a minute; "
                     "else check `fi_info -p efa` and stop/start the instance")
    return Check("efa devices", PASS, f"{n} EFA devices, as a {f.instance_type} has")


def check_counters(f: Facts) -> Check:
    if not f.devices:
        return Check("counters", SKIP, "no EFA device to read")
    dead = [d for d in f.devices if not f.counters.get(d)]
    if dead:
        return Check("counters", FAIL, f"no readable port counter on {len(dead)} of "
                     f"{len(f.devices)} device(s): {', '.join(dead[:4])}"
                     f"{' ...' if len(dead) > 4 else ''}",
                     "run doctor as root; a device whose counters all fail has a closed admin "
                     "queue (dmesg | grep efa): reload the efa module or replace the instance")
    total = sum(f.counters.get(d, 0) for d in f.devices)
    return Check("counters", PASS, f"{total} port counters read on {len(f.devices)} device(s)")


def check_reader(f: Facts) -> Check:
    if f.reader:
        return Check("reader", PASS, f"counters read in C ({f.reader})")
    from efajob.node.sysfs import NATIVE_OFF

    why = f.reader_problem or "not loaded"
    if why == NATIVE_OFF:  # chosen by whoever set it: not a fault
        return Check("reader", PASS, f"counters read in Python: the C reader is {why}")
    return Check("reader", WARN, f"counters read in Python: the C reader is {why}",
                 "efajob install native (needs a C compiler and the Python headers); a sample "
                 "then costs about half the CPU, docs/performance.md")


def check_daemon(f: Facts) -> Check:
    st = f.status.get("state")
    age = (f.status.get("daemon") or {}).get("last_sample_age")
    problems = "; ".join(f.status.get("problems") or [])
    if st == "not running":
        return Check("daemon", FAIL, f"not running{': ' + problems if problems else ''}",
                     "systemctl enable --now efajob-node; journalctl -u efajob-node")
    if st == "stale":
        return Check("daemon", FAIL, f"stale: newest sample {age:g} s old" if age is not None
                     else "stale", "journalctl -u efajob-node (hung, starved or its store is "
                     "locked); systemctl restart efajob-node")
    # "degraded" (devices missing, records undelivered) is the devices' and the job store's
    # check to report, each with its own fix: the daemon itself runs and samples.
    return Check("daemon", PASS, f"running, newest sample {age:g} s old" if age is not None
                 else "running")


def _glob_dir(setting: str) -> Optional[str]:
    return setting[:-2] if setting.endswith("/*") else None


def check_hook(h: HookFacts) -> Check:
    name, ours = f"{h.kind} hook", HOOK_NAMES[h.kind]
    key = h.kind.capitalize()
    fix_conf = (f"slurm.conf: {key}=DIR/{h.kind}.d/* (and `efajob install hooks "
                "--slurm-scripts-dir DIR`), then scontrol reconfigure")
    if h.setting is None:
        return Check(name, WARN, "Slurm could not be asked where the hooks are",
                     "run doctor where scontrol works, or give --slurm-scripts-dir")
    if h.setting in ("", "(null)"):
        return Check(name, FAIL, f"Slurm runs no {key}", fix_conf)
    d = _glob_dir(h.setting)
    if d is None:
        if h.setting.rsplit("/", 1)[-1] == ours:
            return Check(name, PASS, f"{key}={h.setting} is efajob's wrapper")
        return Check(name, WARN, f"{key}={h.setting} is one script: efajob's runs only if it "
                     f"calls {ours}", fix_conf)
    if h.files is None:
        return Check(name, FAIL, f"cannot list {d}: {h.error}", fix_conf)
    by_name = {x.name: x for x in h.files}
    mine = by_name.get(ours)
    if mine is None:
        return Check(name, FAIL, f"{d}/{ours} is missing ({key}={h.setting}, from {h.source})",
                     f"efajob install hooks --slurm-scripts-dir {d.rsplit('/', 1)[0]}")
    if not mine.executable:
        return Check(name, FAIL, f"{d}/{ours} is not executable: Slurm fails it and drains "
                     "the node", f"chmod 0755 {d}/{ours}")
    if not mine.interpreter_ok:
        return Check(name, FAIL, f"{d}/{ours} runs {mine.interpreter or '?'}, which is not an "
                     "executable file: every job goes unaccounted",
                     f"efajob install hooks --slurm-scripts-dir {d.rsplit('/', 1)[0]} (from the "
                     "installation that should run them)")
    # Slurm runs a glob's scripts in reverse lexical order.
    names = sorted(by_name)
    wrong = names[0] != ours if h.kind == "prolog" else names[-1] != ours
    if wrong:
        other = names[0] if h.kind == "prolog" else names[-1]
        when = "last" if h.kind == "prolog" else "first"
        return Check(name, WARN, f"{ours} does not run {when}: {other} sorts "
                     f"{'before' if h.kind == 'prolog' else 'after'} it (Slurm runs {d}/* in "
                     "reverse lexical order)", f"rename {other} so that {ours} runs {when}")
    executable_others = [x.name for x in h.files if x.name != ours and not x.executable]
    note = f"; not executable: {', '.join(executable_others)}" if executable_others else ""
    return Check(name, PASS, f"{d}/{ours} runs {'last' if h.kind == 'prolog' else 'first'} of "
                 f"{len(names)}{note}")


def check_prolog_flags(f: Facts) -> Check:
    if f.slurm_config is None:
        return Check("PrologFlags", WARN, f"cannot ask Slurm: {f.slurm_error}",
                     "run doctor where `scontrol show config` answers")
    flags = f.slurm_config.get("PrologFlags", "(null)")
    if "alloc" in {x.strip().lower() for x in flags.split(",")}:
        return Check("PrologFlags", PASS, f"PrologFlags={flags}")
    return Check("PrologFlags", FAIL, f"PrologFlags={flags}: without Alloc the Prolog runs only "
                 "where a job step starts, and jobs lose their start snapshot elsewhere",
                 "slurm.conf: PrologFlags=Alloc (ParallelCluster: CustomSlurmSettings), then "
                 "scontrol reconfigure")


def check_store(f: Facts) -> Check:
    if f.store.error:
        return Check("job store", FAIL, f"cannot write {f.store.path}: {f.store.error}",
                     "mount the shared store here, writable by root (no root_squash for the "
                     "daemon's writes), or fix `store` in the config")
    if f.delivery_error:
        return Check("job store", WARN, f"{f.store.path} is writable, but the daemon cannot "
                     f"deliver records: {f.delivery_error} ({f.outbox_pending} waiting)",
                     "journalctl -u efajob-node; with private_records the store must allow "
                     "chown (no root_squash)")
    return Check("job store", PASS, f"{f.store.path} is writable")


def check_clock(f: Facts) -> Check:
    if f.now_wall < CLOCK_FLOOR:
        return Check("clock", FAIL, f"the clock says {fmt_time(f.now_wall)}",
                     "start time sync (chrony; on EC2 the Amazon Time Sync Service, "
                     "169.254.169.123)")
    s = f.store
    if s.server_mtime is None or s.local_time is None:
        return Check("clock", PASS, f"{fmt_time(f.now_wall)} (skew to the job store not "
                     "measured)")
    skew = s.local_time - s.server_mtime
    if abs(skew) > CLOCK_SKEW_WARN:
        return Check("clock", WARN, f"{abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} "
                     "the job store's file server", "run time sync (chrony) on this node and "
                     "the file server")
    return Check("clock", PASS, f"within {CLOCK_SKEW_WARN:g} s of the job store's file server")


def check_prometheus(f: Facts) -> Check:
    if not f.prometheus_enabled:
        return Check("prometheus", SKIP, "disabled in the config")
    if f.prometheus_error:
        return Check("prometheus", FAIL, f"{f.prometheus_address}: {f.prometheus_error}",
                     "is the daemon running? its log says `cannot serve Prometheus metrics` "
                     "when the port is taken: change [prometheus] port")
    return Check("prometheus", PASS, f"{f.prometheus_address} serves efajob's metrics")


def check_cloudwatch(f: Facts) -> Check:
    if not f.cloudwatch_enabled:
        return Check("cloudwatch", SKIP, "disabled in the config")
    return Check("cloudwatch", SKIP, "enabled; reachability not checked (doctor makes no AWS "
                 "call): watch efajob_daemon_errors_total{kind=\"cloudwatch\"} or the daemon's log")


CHECKS: Sequence[Callable[[Facts], Check]] = (
    check_devices, check_counters, check_reader, check_daemon, lambda f: check_hook(f.prolog),
    lambda f: check_hook(f.epilog), check_prolog_flags, check_store, check_clock,
    check_prometheus, check_cloudwatch)


def run_checks(f: Facts) -> List[Check]:
    return [c(f) for c in CHECKS]


def exit_code(checks: Sequence[Check]) -> int:
    return max((EXIT[c.status] for c in checks), default=0)


def render_text(checks: Sequence[Check]) -> str:
    """One line per check, then a summary line."""
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        fix = f" (fix: {c.fix})" if c.fix and c.status in (WARN, FAIL) else ""
        lines.append(f"{c.status:<4}  {c.name:<{width}}  {c.message}{fix}")
    counts = {s: sum(1 for c in checks if c.status == s) for s in (PASS, WARN, FAIL, SKIP)}
    lines.append(f"{len(checks)} checks: {counts[PASS]} pass, {counts[WARN]} warn, "
                 f"{counts[FAIL]} fail, {counts[SKIP]} not checked")
    return "\n".join(lines) + "\n"


def render_json(checks: Sequence[Check]) -> str:
    code = exit_code(checks)
    return json.dumps({"checks": [c.to_dict() for c in checks],
                       "result": {0: PASS, 1: WARN, 2: FAIL}[code], "exit_code": code},
                      indent=2) + "\n"
