"""The node daemon: sample every `interval`, store the baseline, feed sinks, publish status.

Threads:
- the main thread runs the sampling loop on a drift-free monotonic schedule: tick k is due at
  start + k * interval; a tick that runs late skips the ticks it missed instead of bunching
  them (counting them in `skipped_ticks`), so a slow disk never makes samples pile up;
- one worker thread does everything that may block on a shared filesystem: delivering outbox
  records to the job store, reconciling jobs whose epilog never came, writing the node status
  file. A hung NFS mount stalls the worker, never sampling.

Nothing in a tick raises out of the loop: bad counters are absent (sysfs.Sampler), a locked or
unwritable store keeps rows in a bounded queue and is retried, a failing sink is counted and
logged (rate-limited). Only start-up problems are fatal: another daemon on the same state dir,
a corrupt store (docs/daemon.md says how to recover), a bad config.
"""
from __future__ import annotations

import collections
import fcntl
import logging
import logging.handlers
import os
import select
import signal
import socket
import sys
import threading
from dataclasses import replace
import time
from types import SimpleNamespace
from typing import (TYPE_CHECKING, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple,
                    TypeVar)

from efajob import __version__
from efajob.config import Config
from efajob.node.counters import diff_snapshots
from efajob.errors import ConfigError, StoreError
from efajob.node.localstore import LocalStore, SampleRow, current_boot_id, encode_jobs
from efajob.daemon.recent import RecentWindow
from efajob.sinks.base import DaemonHealth, Sink, Tick
from efajob.sinks.registry import build_sinks

if TYPE_CHECKING:
    from efajob.hooks.runfiles import ActiveJob, ActiveJobsReader
    from efajob.node.readings import Snapshot
    from efajob.node.sysfs import Sampler

log = logging.getLogger("efajob.daemon")
T = TypeVar("T")

MAX_PENDING_ROWS = 600  # ~10 min at 1 Hz kept while the store is locked (a few MB)
ROWS_PER_TICK = 100  # pending rows flushed per tick once the store is back
STORE_RETRY_SECONDS = 30.0
DELIVER_SECONDS = 5.0  # while records wait in the outbox (the job store is unreachable)
# New records wake the worker at once (the main thread watches the outbox's mtime each tick);
# this sweep only catches what that misses, e.g. two renames within a coarse mtime tick.
DELIVER_SWEEP_SECONDS = 30.0
RECONCILE_SECONDS = 60.0
LOG_EVERY_SECONDS = 60.0


class RateLimiter:
    """Logs one message per key per period, then says how many were suppressed."""

    def __init__(self, clock: Callable[[], float], period: float = LOG_EVERY_SECONDS):
        self._clock, self._period = clock, period
        self._last: Dict[str, Tuple[float, int]] = {}

    def __call__(self, key: str, level: int, msg: str, *args) -> None:
        now = self._clock()
        last, suppressed = self._last.get(key, (None, 0))
        if last is not None and now - last < self._period:
            self._last[key] = (last, suppressed + 1)
            return
        if suppressed:
            msg += f" ({suppressed} similar messages suppressed)"
        log.log(level, msg, *args)
        self._last[key] = (now, 0)


class Notifier:
    """sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET. A no-op without it."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        addr = env.get("NOTIFY_SOCKET") or ""
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: Optional[socket.socket] = None
        usec = env.get("WATCHDOG_USEC", "")
        # Ping at half the watchdog period (systemd's advice) even while waiting for a tick.
        self.watchdog_period = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None

    def notify(self, msg: str) -> None:
        if not self._addr:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block: a manager that stops reading its socket (a full queue of ten
            # datagrams) must not stall sampling; a lost WATCHDOG=1 is resent next period.
            self._sock.sendto(msg.encode(), socket.MSG_DONTWAIT, self._addr)
        except OSError as e:
            log.debug("sd_notify %s failed: %s", msg, e)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def configure_logging(cfg: Config) -> None:
    """stderr (journald adds time and unit) or `log_file` through a WatchedFileHandler, which
    reopens the file after logrotate moves it. A `log_file` that cannot be opened is a
    ConfigError, and the handlers in place stay (a SIGHUP with a bad path keeps logging)."""
    root = logging.getLogger("efajob")
    if cfg.log_file:
        try:
            handler: logging.Handler = logging.handlers.WatchedFileHandler(cfg.log_file)
        except OSError as e:  # a missing directory, a read-only file: the config's mistake
            raise ConfigError(f"config key 'log_file': cannot open {cfg.log_file}: "
                              f"{e.strerror}") from None
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for h in list(root.handlers):
        if getattr(h, "_efajob_daemon", False):
            root.removeHandler(h)
            h.close()
    handler._efajob_daemon = True  # type: ignore[attr-defined]  # our marker on a stdlib object
    root.addHandler(handler)
    root.setLevel(getattr(logging, cfg.log_level.upper(), logging.INFO))
    root.propagate = False


def acquire_lock(state_dir: str) -> int:
    """One daemon per state dir: flock(2) on `<state_dir>/daemon.lock` (released at exit)."""
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, "daemon.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = (os.pread(fd, 32, 0).decode("ascii", "replace").split() or ["?"])[0]
        os.close(fd)
        raise StoreError(f"another efajob daemon (pid {other}) holds {path}: stop it first, "
                         "or give this one its own state_dir") from None
    os.ftruncate(fd, 0)
    # "<pid> <fd>": lets an epilog check this very descriptor's lock in /proc/<pid>/fdinfo
    # (outbox.daemon_alive) instead of reading /proc/locks, which waits ~10 ms for RCU.
    os.pwrite(fd, f"{os.getpid()} {fd}\n".encode(), 0)
    return fd


class Daemon:
    """Build, `start()`, then `run()`; `stop()` and `reload()` are signal-safe requests."""

    def __init__(self, cfg: Config, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, proc_root: str = "/proc",
                 sinks: Optional[Sequence[Sink]] = None,
                 load_config: Optional[Callable[[], Config]] = None,
                 notifier: Optional[Notifier] = None, worker: bool = True, lock: bool = True,
                 wait: Optional[Callable[[float], None]] = None, manage_logging: bool = False,
                 store_timeout: float = 2.0):
        self.cfg = cfg
        self._clock, self._wall = clock, wall_clock
        self._boot_id = current_boot_id(proc_root)
        self._given_sinks = list(sinks) if sinks is not None else None
        self._load_config = load_config
        self.notifier = notifier or Notifier()
        self._use_worker, self._use_lock = worker, lock
        self._manage_logging = manage_logging
        self._store_timeout = store_timeout
        self._wait = wait or self._pipe_wait
        # Self-pipe: stop()/reload() run in signal handlers, where taking a lock (as
        # threading.Event.set does) can deadlock against the interrupted main thread.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stop = self._reload = False
        self._lock_fd: Optional[int] = None
        self.sinks: List[Sink] = []
        self.sampler: Optional[Sampler] = None
        self._cached_discovery = -1  # Sampler.discoveries when the device cache was written
        self.store: Optional[LocalStore] = None
        self.store_error: Optional[str] = None
        self._store_retry_at = 0.0
        self._pending: Deque[SampleRow] = collections.deque(maxlen=MAX_PENDING_ROWS)
        self._prev: Optional[Snapshot] = None
        self.last_tick: Optional[Tick] = None
        self._status_snapshot: Optional["Snapshot"] = None  # of the last status written
        self.ticks = self.skipped = 0
        self.errors: Dict[str, int] = collections.Counter()
        self._tick_seconds = 0.0
        self._started_wall = wall_clock()
        self._limited = RateLimiter(clock)
        self._worker: Optional[threading.Thread] = None
        self._worker_stop = threading.Event()
        self._worker_kick = threading.Event()  # wakes the worker early (outbox, stop)
        self._deliver_now = False
        self._outbox_seen: Tuple[Optional[int], Optional[int]] = (None, None)
        # From IMDSv2 (worker thread) when the config names no instance type; None until known.
        self._instance_type: Optional[str] = None
        self._jobs_reader: Optional[ActiveJobsReader] = None
        self.recent = RecentWindow()  # the last minute, for the status file (worker reads it)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Take the lock, open the store, the sampler and the sinks. Raises on fatal problems."""
        cfg = self.cfg
        if self._use_lock:
            self._lock_fd = acquire_lock(cfg.state_dir)
        try:
            self._open_store(fatal=True)
            sampler = self._open_sampler()
            self.sinks = self._given_sinks if self._given_sinks is not None else build_sinks(
                cfg, clock=self._clock)
        except BaseException:
            self.close()
            raise
        self._outbox_seen = self._outbox_mtime()  # the worker's first round covers what is there
        if self._use_worker:
            self._worker = threading.Thread(target=self._worker_loop, name="efajob-worker",
                                            daemon=True)
            self._worker.start()
        log.info("efajob daemon %s: node %s, cluster %s, %d EFA devices, interval %gs, "
                 "store %s, sinks: %s", __version__, cfg.node, cfg.cluster,
                 len(sampler.devices), cfg.interval, cfg.db_path,
                 ", ".join(s.name for s in self.sinks) or "none")

    def _open_sampler(self) -> Sampler:
        from efajob.node.ethtool import ethtool_reader_from_config
        from efajob.hooks.runfiles import ActiveJobsReader
        from efajob.node.sysfs import Sampler

        self.sampler = Sampler(self.cfg.sysfs_root, rediscover_interval=self.cfg.rediscover_interval,
                               device_counter_interval=self.cfg.device_counter_interval,
                               ethtool=ethtool_reader_from_config(self.cfg),
                               clock=self._clock, wall_clock=self._wall)
        self._prev = None
        self.recent.clear()
        self._jobs_reader = ActiveJobsReader(self.cfg.run_dir)
        self._cached_discovery = -1
        self._save_devices()
        return self.sampler

    def _save_devices(self) -> None:
        """The discovery the hooks reuse (node/devcache.py), rewritten after each full one."""
        from efajob.hooks.runfiles import ensure_dir
        from efajob.node.devcache import cache_path, save

        sampler = self.sampler
        if sampler is None or sampler.discoveries == self._cached_discovery or sampler.listing is None:
            return
        self._cached_discovery = sampler.discoveries
        try:
            ensure_dir(self.cfg.run_dir)
            save(cache_path(self.cfg.run_dir), self.cfg.sysfs_root, sampler.listing, sampler.devices)
        except OSError as e:  # costs the hooks a discovery each, nothing else
            self._limited("devcache", logging.WARNING, "cannot write the device cache for the "
                          "hooks in %s: %s", self.cfg.run_dir, e)

    def _open_store(self, fatal: bool = False) -> None:
        cfg = self.cfg
        try:
            store = LocalStore.open(cfg.db_path, timeout=self._store_timeout,
                                    retention_hours=cfg.retention_hours,
                                    rollup_days=cfg.rollup_days,
                                    private=cfg.private_records)
            if fatal:
                store.check()
        except StoreError as e:
            # A damaged or newer store, or another writer, at start: say so and stop. Later
            # (unwritable, locked for a while) keep sampling and retry.
            if fatal and ("corrupt" in str(e) or "newer" in str(e)):
                raise
            self.store_error = str(e)
            self._store_retry_at = self._clock() + STORE_RETRY_SECONDS
            self.errors["store"] += 1
            self._limited("store-open", logging.ERROR, "%s (retrying every %gs)", e,
                          STORE_RETRY_SECONDS)
            return
        self.store, self.store_error = store, None

    def stop(self) -> None:
        """Signal-safe: end the loop after the current tick."""
        self._stop = True
        self._wake()

    def reload(self) -> None:
        """Signal-safe: reload the config before the next tick."""
        self._reload = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:  # pipe full (already woken) or closed (already stopped)
            pass

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.reload())

    def close(self, flush_timeout: float = 5.0) -> None:
        """Flush and close sinks, write a last status file, close the store, release the lock."""
        self._worker_stop.set()
        self._worker_kick.set()
        if self._worker is not None:
            # The worker may hang on a dead shared filesystem: give it a moment, no more.
            self._worker.join(timeout=flush_timeout)
            self._worker = None
        self._last_status(flush_timeout)
        for s in self.sinks:
            self._guard("sink", s.flush, flush_timeout)
            self._guard("sink", s.close)
        self.sinks = []
        if self.store is not None:
            self._flush_pending()
            self.store.close()
            self.store = None
        if self.sampler is not None:
            self.sampler.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
            log.info("stopped after %d ticks", self.ticks)
        self.notifier.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    # -- the loop --------------------------------------------------------------------------
    def _pipe_wait(self, seconds: float) -> None:
        if select.select([self._wake_r], [], [], max(0.0, seconds))[0]:
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                pass

    def run(self, *, max_ticks: Optional[int] = None) -> int:
        """Sample until stopped (or `max_ticks`); returns the exit status (0)."""
        self.notifier.notify("READY=1\nSTATUS=sampling")
        next_at = self._clock()
        done = 0
        while not self._stop:
            if self._reload:
                self._reload = False
                self._apply_reload()
                next_at = self._clock()
            now = self._clock()
            if now < next_at:
                wd = self.notifier.watchdog_period
                self._wait(min(next_at - now, wd) if wd else next_at - now)
                self.notifier.notify("WATCHDOG=1")
                continue
            interval = self.cfg.interval
            late = now - next_at
            if late >= interval:
                missed = int(late // interval)
                self.skipped += missed
                next_at += missed * interval
                self._limited("late", logging.WARNING, "tick ran %.2fs late: skipped %d tick(s)",
                              late, missed)
            next_at += interval
            self.tick()
            self._check_outbox()
            self.notifier.notify("WATCHDOG=1")
            done += 1
            if max_ticks is not None and done >= max_ticks:
                break
        self.notifier.notify("STOPPING=1")
        return 0

    def tick(self) -> Tick:
        """One sample: read, diff, tag, store, feed sinks. Never raises for data problems."""
        sampler = self.sampler
        assert sampler is not None  # start() opened it
        t0 = self._clock()
        snap = sampler.sample()
        t1 = self._clock()
        if sampler.discoveries != self._cached_discovery:
            self._save_devices()
        prev, self._prev = self._prev, snap
        self.recent.add(snap)
        jobs = tuple(self._read_jobs())
        delta = diff_snapshots(prev, snap) if prev is not None else None
        rates: Dict[str, float] = {}
        if delta is not None and delta.seconds > 0:
            secs = delta.seconds
            totals = delta.port_totals()
            rates = {k: v / secs for k, v in totals.items()}
            self._note_changes(delta)
            self._store_row(SampleRow(
                boot_id=self._boot_id, mono=snap.mono, wall=snap.wall, seconds=secs,
                deltas=totals,
                device_tx_bytes=delta.port_column("tx_bytes"),
                device_rx_bytes=delta.port_column("rx_bytes"),
                jobs=encode_jobs(j.key for j in jobs),
                resets=delta.resets,
            ))
        self.ticks += 1
        tick = Tick(
            snapshot=snap, delta=delta, rates=rates, jobs=jobs,
            devices=sampler.devices, instance_type=self.cfg.instance_type or self._instance_type,
            cluster=self.cfg.cluster, node=self.cfg.node, boot_id=self._boot_id,
            health=DaemonHealth(
                started_wall=self._started_wall, ticks=self.ticks, skipped_ticks=self.skipped,
                sample_seconds=t1 - t0, tick_seconds=self._tick_seconds,
                errors=dict(self.errors), store_ok=self.store is not None and not self._pending,
                store_pending=len(self._pending), store_error=self.store_error),
        )
        for s in self.sinks:
            self._guard("sink", s.on_tick, tick)
        self.last_tick = tick
        self._tick_seconds = self._clock() - t0
        return tick

    def _read_jobs(self) -> List[ActiveJob]:
        if self._jobs_reader is None:
            return []
        try:
            return self._jobs_reader.read()
        except Exception as e:  # the reader promises not to raise; a bug must not stop sampling
            self.errors["sample"] += 1
            self._limited("jobs", logging.ERROR, "reading active jobs failed: %s", e)
            return []

    def _note_changes(self, delta) -> None:
        if delta.resets:
            self._limited("reset", logging.WARNING, "counters reset (delta = value since the "
                          "reset): %s", ", ".join(delta.resets[:8]))
        if delta.vanished:
            self._limited("vanished", logging.WARNING, "devices vanished: %s", ", ".join(delta.vanished))
        if delta.appeared:
            log.info("devices appeared: %s", ", ".join(delta.appeared))

    def _store_row(self, row: SampleRow) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.errors["store"] += 1  # the oldest pending row is about to be dropped
        self._pending.append(row)
        if self.store is None and self._clock() >= self._store_retry_at:
            self._open_store()
            if self.store is not None:
                log.info("local store %s is open again", self.cfg.db_path)
        if self.store is not None:
            self._flush_pending(ROWS_PER_TICK)

    def _flush_pending(self, limit: Optional[int] = None) -> None:
        n = 0
        while self._pending and (limit is None or n < limit) and self.store is not None:
            try:
                self.store.add_sample(self._pending[0])
            except StoreError as e:
                self.errors["store"] += 1
                self.store_error = str(e)
                self._limited("store-write", logging.ERROR, "%s (%d rows waiting)", e,
                              len(self._pending))
                if "locked" not in str(e):
                    # Corrupt or gone: reopen later rather than hammer a broken file.
                    self.store.close()
                    self.store = None
                    self._store_retry_at = self._clock() + STORE_RETRY_SECONDS
                return
            self._pending.popleft()
            n += 1
        if not self._pending:
            self.store_error = None

    def _guard(self, kind: str, fn: Callable[..., T], *args) -> Optional[T]:
        try:
            return fn(*args)
        except Exception as e:
            self.errors[kind] += 1
            self._limited(f"{kind}:{getattr(fn, '__qualname__', fn)}", logging.ERROR,
                          "%s failed: %s: %s", getattr(fn, "__qualname__", fn), type(e).__name__, e)
            return None

    # -- reload ----------------------------------------------------------------------------
    def _apply_reload(self) -> None:
        if self._load_config is None:
            log.info("SIGHUP: no config source to reload")
            return
        try:
            new = self._load_config()
        except Exception as e:
            self.errors["worker"] += 1
            log.error("SIGHUP: keeping the old config: %s", e)
            return
        old, self.cfg = self.cfg, new
        if self._manage_logging:
            self._guard("worker", configure_logging, new)
        if (old.sysfs_root, old.rediscover_interval) != (new.sysfs_root, new.rediscover_interval):
            if self.sampler is not None:
                self.sampler.close()
            self._guard("sample", self._open_sampler)
        elif old.run_dir != new.run_dir:
            from efajob.hooks.runfiles import ActiveJobsReader

            self._jobs_reader = ActiveJobsReader(new.run_dir)
        if (old.db_path, old.retention_hours, old.rollup_days) != (
                new.db_path, new.retention_hours, new.rollup_days):
            if self.store is not None:
                self.store.close()
                self.store = None
            self._open_store()
        if self._given_sinks is None and (old.prometheus, old.cloudwatch, old.instance_type) != (
                new.prometheus, new.cloudwatch, new.instance_type):
            for s in self.sinks:
                self._guard("sink", s.flush, 2.0)
                self._guard("sink", s.close)
            self.sinks = self._guard("sink", build_sinks, new) or []
        log.info("reloaded config%s: interval %gs, sinks: %s",
                 f" from {new.source}" if new.source else "", new.interval,
                 ", ".join(s.name for s in self.sinks) or "none")

    # -- worker thread ---------------------------------------------------------------------
    def _worker_loop(self) -> None:
        self._guard("worker", self.resolve_instance_type)
        due = {"deliver": 0.0, "reconcile": 0.0, "status": 0.0}
        while not self._worker_stop.is_set():
            self.run_worker_once(due)
            # Sleep until the next job is due or the main thread kicks (an epilog put a record
            # in the outbox, or stop): no periodic wake-up, which on an idle node cost more
            # CPU than the work itself (docs/performance.md).
            self._worker_kick.wait(max(0.05, min(due.values()) - self._clock()))
            self._worker_kick.clear()
            if self._deliver_now:
                self._deliver_now = False
                due["deliver"] = 0.0

    def _check_outbox(self) -> None:
        """Main thread, once a tick: an epilog renamed a record into the outbox (its mtime
        moved), so have the worker deliver it now: `efajob report` then sees a job about a
        second after it ends. Two stat(2)s a tick, on node-local directories."""
        mtime = self._outbox_mtime()
        if mtime != self._outbox_seen:
            self._outbox_seen = mtime
            if self._worker is not None:
                self._deliver_now = True
                self._worker_kick.set()

    def resolve_instance_type(self, fetch=None) -> Optional[str]:
        """When the config names no instance type: the one cached in the state dir, else IMDSv2's
        (short timeouts, worker thread only), cached there for the hooks, which must never use
        the network. The type picks the link rate for utilisation (node/instances.py)."""
        from efajob.node.instances import read_cached_instance_type, write_cached_instance_type

        if self.cfg.instance_type:
            return self.cfg.instance_type
        found = read_cached_instance_type(self.cfg.state_dir)
        if found is None:
            if fetch is None:
                from efajob.node.imds import fetch_identity as fetch
            found = fetch().get("instance_type")
            if found:
                write_cached_instance_type(self.cfg.state_dir, found)
                log.info("instance type %s (IMDSv2), cached for the hooks", found)
        self._instance_type = found
        return found

    def _outbox_mtime(self) -> Tuple[Optional[int], Optional[int]]:
        """Both outboxes' mtimes: the spare one (run dir) takes records when the local disk is
        full. Two stat(2)s of local directories a tick."""
        out: List[Optional[int]] = []
        for d in (self.cfg.outbox_dir, self.cfg.spare_outbox_dir):
            try:
                out.append(os.stat(d).st_mtime_ns)
            except OSError:
                out.append(None)
        return out[0], out[1]

    def run_worker_once(self, due: Optional[Dict[str, float]] = None) -> None:
        """Do whichever worker jobs are due (all of them when `due` is None)."""
        now = self._clock()
        every = {"deliver": DELIVER_SWEEP_SECONDS, "reconcile": RECONCILE_SECONDS,
                 "status": self.cfg.status_interval}
        for job, fn in (("status", self.write_status), ("deliver", self._deliver),
                        ("reconcile", self._reconcile)):
            if due is None or now >= due[job]:
                wait = every[job]
                if job == "status" and self.last_tick is None:
                    wait = min(wait, self.cfg.interval)  # no sample yet: look again soon
                elif self._guard(job, fn) is WAITING:
                    wait = DELIVER_SECONDS  # records wait in the outbox (store down): retry
                if due is not None:
                    due[job] = now + wait

    def _last_status(self, timeout: float) -> None:
        """A clean stop writes a last status file listing no job: the dashboard would show the
        node's last jobs as running until the file went stale. In a thread of its own, for at
        most `timeout`: the shared filesystem may be what hangs."""
        if self.last_tick is None:
            return
        self.last_tick = replace(self.last_tick, jobs=())
        t = threading.Thread(target=self._guard, args=("status", self.write_status),
                             name="efajob-last-status", daemon=True)
        t.start()
        t.join(timeout)

    def write_status(self) -> None:
        from efajob.daemon.nodestatus import build_node_status, node_status_path, write_node_status
        from efajob.node.sysfs import read_efa_driver_version

        tick = self.last_tick
        if tick is None:
            return
        cfg = self.cfg
        # One small file read per status file (worker thread, every status_interval): which
        # driver the node runs, for the dashboard; never on the sampling path.
        doc = build_node_status(tick, interval=cfg.interval, pid=os.getpid(), version=__version__,
                                now_mono=self._clock(), now_wall=self._wall(),
                                private=cfg.private_records, recent=self.recent.summary(),
                                job_recent=self.recent.job_windows(tick.jobs, self._boot_id),
                                efa_driver=read_efa_driver_version(cfg.sysfs_root),
                                previous=self._status_snapshot, thresholds=cfg.thresholds)
        write_node_status(node_status_path(cfg.store, cfg.cluster, cfg.node), doc)
        # Error rates in the next status cover the time since this one.
        self._status_snapshot = tick.snapshot

    def _deliver(self) -> object:
        outbox = _outbox()
        if outbox is None:
            return None
        result = outbox.deliver_pending(self.cfg)
        for record in getattr(result, "records", None) or ():
            for s in list(self.sinks):
                self._guard("sink", s.on_record, record)
        # The outbox keeps its own backoff (deliver_pending skips a round that is not due).
        return WAITING if getattr(result, "pending", 0) else None

    def _reconcile(self) -> None:
        outbox = _outbox()
        if outbox is None:
            return
        tick = self.last_tick
        jobs = list(tick.jobs) if tick is not None else list(self._read_jobs())
        made = outbox.reconcile(self.cfg, jobs, self._wall())
        if made:
            log.info("reconciled jobs whose epilog never ran: %s", ", ".join(made))
        from efajob.hooks.runfiles import ACTIVE_DIR, START_DIR, sweep_temp_files

        cfg = self.cfg
        swept = sweep_temp_files([os.path.join(cfg.run_dir, ACTIVE_DIR),
                                  os.path.join(cfg.run_dir, START_DIR), cfg.run_dir,
                                  cfg.outbox_dir, cfg.spare_outbox_dir, cfg.state_dir],
                                 self._wall())
        if swept:
            log.info("removed %d temp file(s) killed writers left: %s", len(swept),
                     ", ".join(os.path.basename(p) for p in swept[:5]))


WAITING = object()  # _deliver: records are still waiting in the outbox
_outbox_module: Optional[SimpleNamespace] = None
_outbox_missing = False


def _outbox() -> Optional[SimpleNamespace]:
    """Delivery (hooks/outbox.py) and reconcile (reconcile.py), imported on first use (None,
    logged once, when they cannot be imported)."""
    global _outbox_module, _outbox_missing
    if _outbox_module is None and not _outbox_missing:
        try:
            from efajob.daemon.reconcile import reconcile
            from efajob.hooks.outbox import deliver_pending

            _outbox_module = SimpleNamespace(deliver_pending=deliver_pending, reconcile=reconcile)
        except ImportError as e:
            log.warning("outbox delivery disabled: %s", e)
            _outbox_missing = True
    return _outbox_module
