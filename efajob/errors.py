"""Typed errors. The library raises these; only the CLI turns them into messages and exit codes.

Exit codes are part of the user-facing contract (docs/cli.md): scripts around efajob test them.
"""
from __future__ import annotations


class EfajobError(Exception):
    """Base of every error efajob raises on purpose."""

    exit_code = 1


class ConfigError(EfajobError):
    """Bad configuration: unknown key, wrong type, unreadable file."""

    exit_code = 2


class UsageError(EfajobError):
    """A bad argument that click could not catch (e.g. a malformed job id)."""

    exit_code = 2


class SysfsError(EfajobError):
    """The sysfs root itself is unusable (not a missing counter: those are just absent)."""

    exit_code = 3


class StoreError(EfajobError):
    """The local SQLite store or the job store cannot be opened, read or written."""

    exit_code = 4


class RecordError(EfajobError):
    """A job record or run-dir file is malformed."""

    exit_code = 4


class JobNotFoundError(EfajobError):
    """No record of the job in the store."""

    exit_code = 5


class AmbiguousJobError(EfajobError):
    """A job id matches records of several clusters or restarts; the user must choose."""

    exit_code = 6


class SlurmError(EfajobError):
    """A Slurm command failed, timed out or printed something we cannot parse."""

    exit_code = 7


class SinkError(EfajobError):
    """A metrics sink (CloudWatch, Prometheus) failed in a way the caller must see."""

    exit_code = 8


class SimulatorError(EfajobError):
    """The simulator was asked for something it cannot build or drive."""

    exit_code = 9


class JobIndexError(StoreError):
    """The job index (efajob/index/) is unreadable, of another version, or busy with another
    writer. `efajob jobs` falls back to scanning the store; `efajob index` exits 4."""


class NativeBuildError(EfajobError):
    """The optional C reader could not be built here (no compiler, no Python headers, or the
    built module does not load): the sampler goes on reading in Python."""

    exit_code = 10
