"""Whether a ``running`` run's process still lives (this host's ``/proc``), so that a run killed
without a chance to mark itself failed shows as stale."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from mlebench.results.provenance import process_identity


#: How much later than its run a process may seem to have started (``/proc`` start times are
#: rounded to the boot time's second) before its pid counts as reused by another process.
PID_REUSE_TOLERANCE_S = 2.0
STALE = "stale (process gone)"
UNKNOWN_LIVENESS = "running?"


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


def run_state(status: str, pid: int | None, host: str | None, started_at: str | None) -> str:
    """A run's status as it stands now: ``finished`` and ``failed`` as stored; a ``running``
    run stays ``running`` while its process lives, reads :data:`STALE` once the process is gone
    (killed without a chance to mark the run failed: SIGKILL, power loss, out of memory), and
    :data:`UNKNOWN_LIVENESS` when this machine cannot tell (another host, no pid recorded)."""
    if status != "running":
        return status
    if pid is None or host is None or host != process_identity()["host"]:
        return UNKNOWN_LIVENESS
    alive = process_alive(int(pid), started_at)
    if alive is None:
        return UNKNOWN_LIVENESS
    return "running" if alive else STALE
