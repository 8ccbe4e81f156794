"""Whether a ``running`` run still lives, so that a run killed without a chance to mark itself
failed (SIGKILL, a lost node, out of memory, a time limit) shows as stale, whatever host ran it.

Two signs, the first that can tell wins:

- on the host that runs it, its process (``/proc``; a pid reused by a younger process counts
  as gone): the fast path, exact and immediate;
- anywhere, its heartbeat: a running job writes ``heartbeat_at`` every ``heartbeat_interval``
  (:mod:`mlebench.results.heartbeat`) on the database's clock; a run whose last heartbeat is
  older than the grace period (:data:`DEFAULT_GRACE_S`) is stale.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path

from mlebench.errors import ConfigError
from mlebench.results.provenance import process_identity


#: How much later than its run a process may seem to have started (``/proc`` start times are
#: rounded to the boot time's second) before its pid counts as reused by another process.
PID_REUSE_TOLERANCE_S = 2.0
STALE = "stale (process gone)"
#: how often a running job writes its heartbeat (seconds)
DEFAULT_HEARTBEAT_S = 60.0
#: how long without a heartbeat before a run counts as stale (seconds): ten missed beats
DEFAULT_GRACE_S = 600.0
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float, option: str = "--grace") -> float:
    """Seconds from ``600``, ``30s``, ``10m``, ``2h`` or ``1d``; a bad value is a
    :class:`ConfigError` naming ``option``."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", str(text))
        if found is None:
            raise ConfigError(f"{option} {text!r} is not a duration (seconds, or a number with s, m, h or d: "
                              f"30s, 10m)")
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{option} {text!r} must be a finite number of seconds >= 0")
    return seconds


def stale_since(when: str) -> str:
    """The state of a run whose last sign of life was at ``when`` (ISO-8601)."""
    try:
        shown = datetime.fromisoformat(when).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        shown = when
    return f"stale (no heartbeat since {shown})"


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _proc_start(pid: int) -> tuple[bool, float | None] | None:
    """From ``/proc/<pid>/stat``: (alive, start time in seconds since the epoch or None);
    ``None`` when there is no ``/proc`` to ask. A zombie counts as gone."""
    if not Path("/proc/self/stat").exists():
        return None
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except FileNotFoundError:
        return False, None
    except OSError:
        return True, None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    if not fields or fields[0] in ("Z", "X", "x"):
        return False, None
    boot = _boot_time()
    try:
        ticks = float(fields[19])  # field 22 of the line: start time in clock ticks after boot
        return True, None if boot is None else boot + ticks / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, OSError):
        return True, None


def process_alive(pid: int, started_before: str | None = None) -> bool | None:
    """Whether process ``pid`` of this host still exists and, where ``/proc`` tells its start
    time, started no later than ``started_before`` (ISO-8601; a later start means the pid was
    reused). ``None`` when it cannot be told."""
    if pid <= 0:
        return None
    probe = _proc_start(pid)
    if probe is None:  # no /proc: existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        except OSError:
            return None
        return True
    alive, started = probe
    if not alive:
        return False
    if started is not None and started_before is not None:
        try:
            run_start = datetime.fromisoformat(started_before).timestamp()
        except ValueError:
            return True
        if started > run_start + PID_REUSE_TOLERANCE_S:
            return False  # the pid now belongs to a younger process
    return True


def run_state(status: str, pid: int | None, host: str | None, started_at: str | None,
              heartbeat_at: str | None, now: datetime, grace: float = DEFAULT_GRACE_S) -> str:
    """A run's status as it stands at ``now`` (the database's clock): ``finished`` and ``failed``
    as stored; a ``running`` run of this host stays ``running`` while its process lives and reads
    :data:`STALE` once it is gone; otherwise (another host, or no ``/proc`` to tell) it is
    ``running`` while its last heartbeat (its start, for runs from before heartbeats) is at most
    ``grace`` seconds old, and ``stale (no heartbeat since ...)`` after. ``grace=0``: every run
    but one whose process this host sees alive is stale."""
    if status != "running":
        return status
    if pid is not None and host is not None and host == process_identity()["host"]:
        alive = process_alive(int(pid), started_at)
        if alive is not None:
            return "running" if alive else STALE
    last = heartbeat_at or started_at
    if last is None:
        return stale_since("never")
    try:
        age = (now - datetime.fromisoformat(last)).total_seconds()
    except (TypeError, ValueError):
        return stale_since(last)
    return "running" if grace > 0 and age <= grace else stale_since(last)
