"""A running job's heartbeat: a background thread that writes the run's ``heartbeat_at`` every
``interval`` seconds until the run ends, so that any host can tell a live run from a dead one
(:mod:`mlebench.results.liveness`)."""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Callable

from mlebench.errors import ConfigError

if TYPE_CHECKING:
    from mlebench.results.store import ResultsStore


class Heartbeat:
    """``with Heartbeat(store, run_id, interval):`` beats while the block runs and stops (joining
    its thread) when the block ends, however it ends.

    A beat that fails (the database unreachable for a while) is reported once on stderr and the
    thread keeps trying: the job goes on, and a store that stays unreachable makes the run stale,
    which is the truth. A beat that finds the run no longer ``running`` (reaped by ``mlebench
    results reap`` after a long silence) says so and stops beating.
    """

    def __init__(self, store: "ResultsStore", run_id: str, interval: float,
                 warn: Callable[[str], None] | None = None) -> None:
        if not interval > 0:
            raise ConfigError(f"heartbeat_interval must be > 0 seconds, got {interval!r}")
        self.store = store
        self.run_id = run_id
        self.interval = float(interval)
        self.beats = 0
        self._warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"mlebench-heartbeat-{run_id[:8]}", daemon=True)
        self._failing = False

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                alive = self.store.beat(self.run_id)
            except ConfigError as exc:
                if not self._failing:
                    self._warn(f"warning: heartbeat of run {self.run_id} not written ({exc}); retrying every "
                               f"{self.interval:g} s")
                self._failing = True
                continue
            if self._failing:
                self._warn(f"heartbeat of run {self.run_id} written again")
                self._failing = False
            if not alive:
                self._warn(f"warning: run {self.run_id} is no longer running in {self.store.target} (reaped?); "
                           f"its results will not be stored")
                return
            self.beats += 1
