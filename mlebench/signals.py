"""Termination signals as exceptions, so that a run stopped from outside is recorded as failed.

Python turns Ctrl-C (SIGINT) into :class:`KeyboardInterrupt`, which unwinds the stack: the run
loop's ``except BaseException`` marks the run failed and the results file stays consistent. A
SIGTERM (``kill PID``, a batch scheduler's time limit, ``docker stop``, torchrun stopping its
workers) or a SIGHUP (the terminal closed) kills the process by default without running any
Python code, leaving its run ``running`` forever. :func:`terminate_as_exception` makes them
raise :class:`Terminated` instead, for the duration of a ``with`` block::

    with terminate_as_exception():
        ...  # a SIGTERM here raises Terminated: "terminated by SIGTERM"

:class:`Terminated` is a :class:`SystemExit` with the shell's exit status for the signal
(128 + its number: 143 for SIGTERM), so no ``except Exception`` swallows it and, uncaught, the
process exits with that status. :func:`exit_interrupted` is what the command line does with it
(and with Ctrl-C): one line on stderr and the conventional status (130 for Ctrl-C).

A SIGKILL cannot be caught; :meth:`mlebench.results.store.ResultsStore.runs` shows such a run
as stale once its process is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator, NoReturn, Sequence

#: What :func:`terminate_as_exception` catches by default.
TERMINATING_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)

#: Exit status of a command stopped by Ctrl-C (the shell's 128 + SIGINT).
INTERRUPT_EXIT_STATUS = 128 + int(signal.SIGINT)


class Terminated(SystemExit):
    """Raised in the main thread when a termination signal arrives inside
    :func:`terminate_as_exception`; ``code`` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    def __str__(self) -> str:
        return f"terminated by {self.signal_name}"


@contextlib.contextmanager
def terminate_as_exception(signals: Sequence[int] = TERMINATING_SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`Terminated` in the main thread.

    The previous handlers are restored on leaving the block (so blocks nest). A signal whose
    handler is ``SIG_IGN`` (e.g. SIGHUP under ``nohup``) stays ignored. Only the first signal
    raises: later ones, arriving while the exception unwinds (and the run is being marked
    failed), are ignored until the block ends; SIGKILL still stops the process. A process forked
    inside the block (a data-loader worker) that receives one of the signals dies of it as it
    would have without the block. Outside the main thread the block changes nothing (Python
    delivers signals to the main thread only).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()
    raised = False

    def handler(signum: int, frame: object) -> None:
        nonlocal raised
        if os.getpid() != owner:  # a forked child inherited the handler: the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if raised:
            return
        raised = True
        raise Terminated(signum)

    previous: dict[int, object] = {}
    try:
        for signum in signals:
            old = signal.getsignal(signum)
            if old == signal.SIG_IGN:
                continue
            signal.signal(signum, handler)
            previous[signum] = old
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


def exit_interrupted(exc: BaseException) -> NoReturn:
    """End the command for a Ctrl-C or a :class:`Terminated`: one line on stderr and exit status
    130 (Ctrl-C) or 128 + the signal number."""
    if isinstance(exc, Terminated):
        message, status = f"{exc}", int(exc.code)
    else:
        message, status = "interrupted by Ctrl-C (SIGINT)", INTERRUPT_EXIT_STATUS
    print(f"Error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


__all__ = [
    "INTERRUPT_EXIT_STATUS",
    "TERMINATING_SIGNALS",
    "Terminated",
    "exit_interrupted",
    "terminate_as_exception",
]
