"""Progress for output that is not a terminal (CI logs, ``> log``): a line every so many seconds
with what is done, the rate and the time left, for training steps and evaluation samples."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from mlebench.distributed import rank, world_size
from mlebench.engine.evaluate import ShardSampler


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


class ProgressLines:
    """A progress line every ``every`` seconds of ``clock`` (none in between), for output that is
    not a terminal: ``what: unit done/total (pct)[, detail], N samples/s, elapsed, ETA``.

    ``samples_per_unit`` turns the rate of units (steps, batches) into samples per second.
    ``every=0`` writes a line at every update.
    """

    def __init__(self, echo: Callable[[str], None], what: str, total: int, unit: str = "step", every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, done: int = 0, samples_per_unit: float = 1.0) -> None:
        self.echo, self.what, self.total, self.unit, self.every, self.clock = echo, what, total, unit, every, clock
        self.samples_per_unit = samples_per_unit
        self.t0 = self.last = clock()
        self.done0 = done

    def update(self, done: int, detail: str = "") -> bool:
        """Report ``done`` units if the pace says so; True when a line was written."""
        now = self.clock()
        if now - self.last < self.every:
            return False
        self.last = now
        elapsed = now - self.t0
        rate = (done - self.done0) / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - done) / rate if rate > 0 else None
        percent = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        self.echo(f"{self.what}: {self.unit} {done}/{self.total}{percent}{detail}, "
                  f"{rate * self.samples_per_unit:.1f} samples/s, elapsed {_duration(elapsed)}, ETA {_duration(eta)}")
        return True


class CountingDataset:
    """The evaluation data set, passed through to the evaluator, reporting progress lines
    (batches and samples of all passes, samples/s, ETA) at a steady pace as samples are read."""

    def __init__(self, dataset: Any, report: Callable[[str], None], passes: int, batch_size: int,
                 every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.dataset, self.passes, self.batch_size = dataset, passes, batch_size
        self.per_pass = len(ShardSampler(len(dataset), rank(), world_size()))
        self.read = 0
        self.lines = ProgressLines(report, "eval", passes * self.per_pass, "sample", every, clock)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        self.read += 1
        done_pass, in_pass = divmod(self.read - 1, self.per_pass)
        batches = math.ceil(self.per_pass / self.batch_size)
        batch = done_pass * batches + in_pass // self.batch_size + 1
        where = f" of pass {done_pass + 1}/{self.passes}" if self.passes > 1 else ""
        self.lines.update(self.read, f", batch {batch}/{self.passes * batches}{where}")
        return item

    def __getattr__(self, name: str) -> Any:  # info, refs, root, ...: the data set's
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
