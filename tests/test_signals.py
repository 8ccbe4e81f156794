"""SIGTERM and Ctrl-C: a run stopped by a signal is marked failed and the command exits with one
line and the conventional status (143, 130); ``terminate_as_exception`` installs its handler for
a block or a decorated call, restores the previous one and leaves ignored signals ignored."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from mlebench.results.store import ResultsStore
from mlebench.signals import Terminated, exit_interrupted, terminate_as_exception

from .results.stores import start_runner, store_run


@pytest.mark.parametrize("signum, status, line, error", [
    (signal.SIGTERM, 143, "Error: terminated by SIGTERM", "Terminated: terminated by SIGTERM"),
    (signal.SIGINT, 130, "Error: interrupted by Ctrl-C (SIGINT)", "KeyboardInterrupt: "),
], ids=["SIGTERM", "SIGINT"])
def test_signal_marks_the_run_failed_and_exits_with_one_line(tmp_path: Path, signum, status, line, error):
    path = tmp_path / "r.sqlite"
    store = ResultsStore(path)
    keep = store_run(store, "mlesam", 0.6, 0)
    kept = store.results(run_ids=[keep])
    child, run_id = start_runner(path)
    assert store.runs().set_index("id").loc[run_id, "state"] == "running"
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == status, stderr
    assert stderr.strip().splitlines() == [line]
    run = store.runs().set_index("id").loc[run_id]
    assert (run["status"], run["state"], run["error"]) == ("failed", "failed", error)
    assert run["ended_at"] is not None
    assert len(kept) > 50 and store.results(run_ids=[keep]).equals(kept)  # the other run is intact


def test_terminate_as_exception_restores_handlers_and_respects_ignored_signals():
    before = signal.getsignal(signal.SIGTERM)
    with terminate_as_exception():
        assert signal.getsignal(signal.SIGTERM) not in (before, signal.SIG_DFL)
        with pytest.raises(Terminated) as err:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**7):  # the handler runs between bytecodes, at once
                pass
        assert (err.value.code, str(err.value), err.value.signum) == (143, "terminated by SIGTERM", signal.SIGTERM)
        assert isinstance(err.value, SystemExit)
    assert signal.getsignal(signal.SIGTERM) == before
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with terminate_as_exception():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # nohup stays nohup
    finally:
        signal.signal(signal.SIGHUP, old)


def test_exit_interrupted_one_line_and_status(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as err:
        exit_interrupted(KeyboardInterrupt())
    assert err.value.code == 130
    with pytest.raises(SystemExit) as err:
        exit_interrupted(Terminated(signal.SIGTERM))
    assert err.value.code == 143
    assert capsys.readouterr().err.splitlines() == ["Error: interrupted by Ctrl-C (SIGINT)",
                                                    "Error: terminated by SIGTERM"]


def test_terminate_as_exception_as_a_decorator():
    """``@terminate_as_exception()`` on ``run_job``: installed for each call, removed after."""
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    @terminate_as_exception()
    def job() -> None:
        seen.append(signal.getsignal(signal.SIGTERM))
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**7):
            pass

    for _ in range(2):
        with pytest.raises(Terminated, match="terminated by SIGTERM"):
            job()
        assert signal.getsignal(signal.SIGTERM) == before
    assert len(seen) == 2 and before not in seen
