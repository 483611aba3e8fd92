"""`efajob-check-node` (and `efajob check-node`): a node health check in the shape Slurm's
HealthCheckProgram and LBNL NHC expect (docs/operations.md).

Exit 0 and silent when the node is fit (`-v` prints what was looked at); exit 1 with one line
`efajob: <reason>` on stdout when an EFA device is missing, erroring, or idle in jobs while
its siblings moved traffic (node/health.py says exactly when); 2 for a usage or config error,
which never drains. `--drain` adds the `scontrol update nodename=... state=drain reason=...`
line; `--drain --run` runs it (argument list, no shell, 10 s timeout), except from a Prolog or
Epilog (SLURM_SCRIPT_CONTEXT set), where it only prints it: efajob never drains from a hook.

Fast: standard library only, no click, nothing imported that the check does not use. It reads
sysfs once and the local store (node/localstore.py, read-only), never the network or the
shared store. The error counters of the previous check (`<state_dir>/check-node.json`,
written when the state directory is writable and they changed) are what "rising" is measured
against.
"""
from __future__ import annotations

import os
import sys
TYPE_CHECKING = False  # no `typing` at run time (a few ms of every check)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

    from efajob.node.health import DeviceNow

STATE_FILE = "check-node.json"
WINDOW_S = 300.0  # the local store's last 5 minutes: NHC's and HealthCheckInterval's usual period
MAX_SAMPLES = 7200
SCONTROL_DIRS = ("/usr/bin", "/usr/local/bin", "/opt/slurm/bin")


def _devices(cfg) -> "List[DeviceNow]":
    """Each EFA device's error counters and one traffic counter (is it readable at all): a
    third of the files a full snapshot opens (the open() calls are most of its cost)."""
    from efajob.node.counters import is_device_error, is_wr_error
    from efajob.node.health import DeviceNow
    from efajob.node.sysfs import discover_devices

    out = []
    for info in discover_devices(cfg.sysfs_root):
        portdir = os.path.join(info.path, "ports", str(info.port), "hw_counters")
        port = _read_counters(portdir, [n for n in info.port_counter_names
                                        if is_wr_error(n) or n == "tx_bytes"])
        dev = _read_counters(os.path.join(info.path, "hw_counters"),
                             [n for n in info.device_counter_names if is_device_error(n)])
        out.append(DeviceNow(info.name, port, dev))
    return out


_DIR_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0)
# Non-blocking: a FIFO where a counter should be (a broken or hostile tree) must not hang the
# check; regular files and sysfs attributes read the same either way.
_FILE_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK


def _read_counters(directory: str, names: Sequence[str]) -> "dict":
    """{name: value} of the files that hold one unsigned decimal; others are absent.

    os.open relative to the directory's descriptor and os.read: no path joins and no Python
    file objects, which were a tenth of the check's CPU for its ~450 files (names come from
    listing that directory: none holds a '/')."""
    out: "Dict[str, int]" = {}
    try:
        dfd = os.open(directory, _DIR_FLAGS)
    except OSError:
        return out
    try:
        for n in names:
            try:
                fd = os.open(n, _FILE_FLAGS, dir_fd=dfd)
            except OSError:
                continue
            try:
                text = os.read(fd, 32).strip()
            except OSError:
                continue
            finally:
                os.close(fd)
            if text.isdigit():
                out[n] = int(text)
    finally:
        os.close(dfd)
    return out


def _window(cfg, now: float, window_s: float):
    from efajob.errors import StoreError
    from efajob.node.health import Window, window_from_sums
    from efajob.node.localstore import LocalStore

    if not os.path.exists(cfg.db_path):
        return Window()  # no daemon on this node (yet): sysfs alone
    try:
        with LocalStore.open(cfg.db_path, readonly=True, timeout=1.0) as store:
            n = min(MAX_SAMPLES, int(window_s / max(cfg.interval, 0.1)) + 5)
            return window_from_sums(store.recent_sums(n, now - window_s))
    except StoreError:
        return Window()  # unreadable (not root under private_records): sysfs alone


def _previous(cfg, boot_id: str):
    from efajob.node.health import parse_state
    from efajob.values import loads_checked, read_regular

    try:
        return parse_state(loads_checked(read_regular(os.path.join(cfg.state_dir, STATE_FILE),
                                                      1 << 20)), boot_id)
    except (OSError, ValueError):
        return None


def _save(cfg, doc: dict) -> None:
    """Best effort: a check run by a user cannot write root's state directory, and that must
    not fail the check (the next root run compares with the last root run)."""
    from efajob.fastjson import dumps

    path = os.path.join(cfg.state_dir, STATE_FILE)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(dumps(doc))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def check(cfg, *, now: float, boot_id: str, window_s: float = WINDOW_S,
          save: bool = True) -> Tuple[List, str]:
    """(problems, the healthy summary line). No sysfs tree is no EFA device (missing, when the
    instance type says how many there should be)."""
    from efajob.node.health import judge, state_doc, summary
    from efajob.node.instances import lookup, read_cached_instance_type

    devices = _devices(cfg)
    itype = cfg.instance_type or read_cached_instance_type(cfg.state_dir)
    known = lookup(itype)
    window = _window(cfg, now, window_s)
    previous = _previous(cfg, boot_id)
    problems = judge(devices, expected=known.devices if known else None, instance_type=itype,
                     window=window, previous=previous,
                     busy_bytes=float(cfg.thresholds["efa_unused_bytes_per_node"]))
    doc = state_doc(boot_id, now, devices)
    if save and doc["devices"] != previous:
        # Rewritten only when a counter moved (or a device came or went, or the boot changed):
        # on a healthy node most checks write nothing, and replacing the file cost more wall
        # time than any other step of the check (docs/operations.md).
        _save(cfg, doc)
    return problems, summary(devices, window, previous)


def find_scontrol(env: Mapping[str, str]) -> Optional[str]:
    import shutil

    return shutil.which("scontrol", path=os.pathsep.join(
        [p for p in env.get("PATH", "").split(os.pathsep) if p] + list(SCONTROL_DIRS)))


def in_hook(env: Mapping[str, str]) -> bool:
    """Run from a Prolog or Epilog (slurmd's or slurmctld's): SLURM_SCRIPT_CONTEXT says so."""
    ctx = env.get("SLURM_SCRIPT_CONTEXT", "")
    return ctx.startswith(("prolog", "epilog"))


def run_drain(argv: Sequence[str]) -> Optional[str]:
    """Run scontrol; None on success, else why not."""
    import subprocess

    try:
        p = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if p.returncode:
        return (p.stderr.decode("utf-8", "replace").strip() or f"exit {p.returncode}")[:300]
    return None


USAGE = """usage: efajob-check-node [--drain [--run]] [--node NAME] [--window SECONDS]
                         [--sysfs-root DIR] [--config FILE] [-v]

Health check of this node's EFA devices for Slurm's HealthCheckProgram or NHC: exit 0
silent when fit, 1 with a one-line reason when not, 2 on a usage or config error.

  --drain            when unfit, also print the scontrol line that drains the node
  --run              with --drain: run it (never from a Prolog/Epilog)
  --node NAME        Slurm's node name (default: $SLURMD_NODENAME, else config)
  --window SECONDS   seconds of the local store looked at (default 300)
  --sysfs-root DIR   root of the sysfs tree (default: config sysfs_root)
  --config FILE      config file (default: $EFAJOB_CONFIG, else /etc/efajob/config.toml)
  -v, --verbose      print the ok line too
"""
_FLAGS = {"--drain": "drain", "--run": "run", "-v": "verbose", "--verbose": "verbose"}
_VALUES = {"--node": "node", "--window": "window", "--sysfs-root": "sysfs_root",
           "--config": "config"}


class Usage(Exception):
    pass


def parse_args(argv: Sequence[str]) -> Dict[str, object]:
    """The options (argparse would cost the check a tenth of its time: it imports shutil and
    gettext). `--opt value` and `--opt=value`; Usage on anything else."""
    opts: Dict[str, object] = {"drain": False, "run": False, "verbose": False, "node": None,
                               "window": WINDOW_S, "sysfs_root": None, "config": None,
                               "help": False}
    args = list(argv)
    while args:
        a = args.pop(0)
        name, eq, value = a.partition("=")
        if a in ("-h", "--help"):
            opts["help"] = True
        elif a in _FLAGS:
            opts[_FLAGS[a]] = True
        elif name in _VALUES:
            if not eq:
                if not args:
                    raise Usage(f"{name} needs a value")
                value = args.pop(0)
            opts[_VALUES[name]] = value
        else:
            raise Usage(f"unknown argument {a!r}")
    try:
        opts["window"] = float(opts["window"])  # type: ignore[arg-type]
    except ValueError:
        raise Usage(f"--window: not a number: {opts['window']!r}") from None
    if opts["run"] and not opts["drain"]:
        raise Usage("--run needs --drain")
    return opts


def main(argv: Optional[Sequence[str]] = None, *, env: Optional[Mapping[str, str]] = None,
         out: Callable[[str], None] = print,
         err: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
         now: Optional[float] = None, boot_id: Optional[str] = None,
         drain_runner: Callable[[Sequence[str]], Optional[str]] = run_drain) -> int:
    """The check; returns the exit code (the console script exits with it)."""
    from efajob.errors import EfajobError

    env = os.environ if env is None else env
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv)
    except Usage as e:
        err(f"efajob-check-node: {e}\n{USAGE}")
        return 2
    if a["help"]:
        out(USAGE.rstrip("\n"))
        return 0
    try:
        return _main(a, env, out, err, now, boot_id, drain_runner)
    except EfajobError as e:
        err(f"efajob-check-node: {e}")
        return 2


def _main(a, env, out, err, now, boot_id, drain_runner) -> int:
    import time

    from efajob.config import load_config
    from efajob.node.health import drain_argv, drain_line, reason
    from efajob.node.localstore import current_boot_id

    # os.uname(): the host name config's default would import socket for (a few ms)
    node = (env.get("SLURMD_NODENAME") or env.get("EFAJOB_NODE")
            or os.uname().nodename.split(".")[0] or None)
    cfg = load_config(a["config"], env=env, node=node)
    if a["sysfs_root"]:
        cfg = cfg.replace(sysfs_root=a["sysfs_root"])
    now = time.time() if now is None else now
    problems, ok_line = check(cfg, now=now, boot_id=boot_id or current_boot_id(),
                              window_s=a["window"])
    if not problems:
        if a["verbose"]:
            out(ok_line)
        return 0
    why = reason(problems)
    out(why)
    if a["drain"]:
        node = a["node"] or env.get("SLURMD_NODENAME") or cfg.node
        line = drain_line(node, why)
        out(line)
        if a["run"]:
            if in_hook(env):
                err("efajob-check-node: not draining from a Prolog/Epilog "
                    f"(SLURM_SCRIPT_CONTEXT={env.get('SLURM_SCRIPT_CONTEXT')}); run it "
                    "from HealthCheckProgram or NHC")
            else:
                scontrol = find_scontrol(env)
                failed = ("scontrol not found" if scontrol is None
                          else drain_runner(drain_argv(node, why, scontrol)))
                if failed:
                    err(f"efajob-check-node: drain failed: {failed}")
    return 1


def console() -> None:  # pragma: no cover - the console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    console()
