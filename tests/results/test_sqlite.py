"""The results store's SQLite file handling: read-only stores (run as another user: a read-only
file or folder, with or without a WAL, an empty file) read fully and refuse writes in one line,
and the reading commands work on them; corrupt stores, damaged before or after opening, and
undecodable stored values are named as corrupt; a missing store is named. Nothing is ever
changed: files are compared byte for byte before and after."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from mlebench.errors import ConfigError
from mlebench.report.console import format_run_list
from mlebench.report.export import export_results
from mlebench.results import ResultRow
from mlebench.results.store import ResultsStore, open_store_for_reading

from ..helpers import REPO_ROOT, invoke, subprocess_env
from .stores import make_store, make_store_with_wal

NOBODY = 65534


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` by name, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- read-only stores, read and written by another user --------------------------------------------
def _reading_outputs(store: ResultsStore) -> dict[str, Any]:
    """What `results list`, `results export` and `report` show, from the API."""
    from mlebench.report.markdown import table_to_markdown
    from mlebench.report.tables import TableOptions, build_tables

    buffer = io.StringIO()
    export_results(store, "csv", buffer)
    return {"list": format_run_list(store), "export": buffer.getvalue(),
            "report": "\n\n".join(table_to_markdown(t) for t in build_tables(store, None, None, TableOptions())),
            "counts": sum(len(store.case_counts(r)) for r in store.runs()["id"])}


_READER = r"""
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.results.test_sqlite import _reading_outputs, _try_writes
from mlebench.errors import ConfigError
from mlebench.results.store import open_store_for_reading
for path in map(Path, sys.argv[2:]):
    out = {"uid": os.geteuid()}
    try:
        out.update(_reading_outputs(open_store_for_reading(path)))
    except ConfigError as exc:
        out["read_error"] = str(exc)
    out["write_errors"] = _try_writes(path)
    print(json.dumps(out))
"""


def _try_writes(path: Path) -> list[str]:
    """Every way of writing: the messages (one per attempt)."""
    messages = []
    for attempt in ("open", "readonly-start"):
        try:
            if attempt == "open":
                store = ResultsStore(path)
            else:
                store = ResultsStore(path, readonly=True)
            store.start_run(method="m", variant="v", dataset="synthetic", train_modalities=["rgb"], preset="tiny",
                            config={}, seed=0, versions={})
            messages.append("written")
        except ConfigError as exc:
            messages.append(str(exc))
    return messages


def _drop_privileges() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _as_other_user(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run ``args`` as a user without write access to what the test made read-only: root
    ignores file modes, so as root the child runs as ``nobody`` (through ``setpriv`` where there
    is one)."""
    preexec = None
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv:
            args = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args]
        else:
            preexec = _drop_privileges
    return subprocess.run(args, preexec_fn=preexec, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                          **kwargs)


@functools.lru_cache(maxsize=None)
def _other_user_problem() -> str:
    """Why a child cannot run as another user here ('' when it can, or when not root)."""
    if os.geteuid() != 0:
        return ""
    try:
        probe = _as_other_user([sys.executable, "-c", "import mlebench"], env=subprocess_env())
    except OSError as exc:  # e.g. the interpreter lives in a folder only root may enter
        return str(exc)
    return "" if probe.returncode == 0 else probe.stderr.strip()[-200:]


def _shared_dir() -> Path:
    """A folder another user can enter (pytest's tmp_path is private to its owner)."""
    problem = _other_user_problem()
    if problem:
        pytest.skip(f"cannot run as an unprivileged user here: {problem}")
    folder = Path(tempfile.mkdtemp(prefix="mlebench-ro-"))
    folder.chmod(0o755)
    scratch = folder / "scratch"
    scratch.mkdir()
    scratch.chmod(0o777)
    return folder


def _remove_shared_dir(folder: Path) -> None:
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)
    shutil.rmtree(folder)


def _child_env(shared: Path) -> dict[str, str]:
    return subprocess_env(MPLCONFIGDIR=str(shared / "scratch"), HOME=str(shared / "scratch"))


def _make_read_only(folder: Path, file_only: bool) -> None:
    for p in folder.iterdir():
        p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(0o777 if file_only else 0o555)


LAYOUTS = {
    # name: (how the store is left, read-only file only (folder writable), files left)
    "folder, checkpointed": ("clean", False, ["r.sqlite"]),
    "folder, WAL with -shm": ("wal", False, ["r.sqlite", "r.sqlite-shm", "r.sqlite-wal"]),
    "folder, WAL without -shm": ("wal-no-shm", False, ["r.sqlite", "r.sqlite-wal"]),
    "file only": ("wal-no-shm", True, ["r.sqlite", "r.sqlite-wal"]),
    "folder, empty file": ("empty", False, ["r.sqlite"]),
    "folder only, writable file": ("clean", None, ["r.sqlite"]),
}


@pytest.fixture(scope="module")
def read_only_stores() -> Iterator[dict[str, dict[str, Any]]]:
    """Every layout of LAYOUTS made read-only, then read and written by one child process run as
    another user; per layout what it saw and the folder's files before and after."""
    shared = _shared_dir()
    cases: dict[str, dict[str, Any]] = {}
    try:
        for number, (layout, (how, file_only, left)) in enumerate(LAYOUTS.items()):
            folder = shared / f"store{number}"
            folder.mkdir()
            path = folder / "r.sqlite"
            if how == "clean":
                make_store(path)
            elif how == "empty":
                path.touch()
            else:
                make_store_with_wal(path)
                if how == "wal":  # and a -shm file, as a reader leaves it
                    probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                    probe.execute("SELECT count(*) FROM runs").fetchone()
                    probe.close()
            files = sorted(p.name for p in folder.iterdir())
            # What a reader with write access sees, from a copy.
            reference = shared / "scratch" / f"reference{number}"
            shutil.copytree(folder, reference)
            expected = _reading_outputs(open_store_for_reading(reference / "r.sqlite"))
            if file_only is None:  # the file stays writable, its folder does not
                path.chmod(0o666)
                folder.chmod(0o555)
            else:
                _make_read_only(folder, file_only)
            cases[layout] = {"path": path, "folder": folder, "files": files, "left": left, "expected": expected,
                             "before": _files(folder)}
        paths = [str(c["path"]) for c in cases.values()]
        child = _as_other_user([sys.executable, "-c", _READER, str(REPO_ROOT), *paths], env=_child_env(shared))
        assert child.returncode == 0, child.stderr
        for case, line in zip(cases.values(), child.stdout.strip().splitlines()[-len(cases):]):
            case["got"] = json.loads(line)
            case["after"] = _files(case["folder"])
        yield cases
    finally:
        _remove_shared_dir(shared)


@pytest.mark.parametrize("layout", [k for k in LAYOUTS if LAYOUTS[k][1] is not None])
def test_read_only_store_reads_fully_refuses_writes_and_changes_nothing(read_only_stores, layout: str):
    case = read_only_stores[layout]
    how, file_only, _ = LAYOUTS[layout]
    path, got, expected = case["path"], case["got"], case["expected"]
    assert case["files"] == case["left"]
    assert got["uid"] != 0
    assert "read_error" not in got, got.get("read_error")
    assert {k: got[k] for k in expected} == expected
    if how != "empty":
        assert expected["list"].count(" finished ") == 2 and expected["counts"] == 6
    else:
        assert expected["list"] == "no runs"
    assert got["write_errors"] == [
        f"cannot write results file {path}: the file is read-only (reading it works: `mlebench results list "
        f"--results {path}`)",
        f"results file {path} was opened read-only; cannot write to it",
    ]
    before, after = case["before"], case["after"]
    if file_only:  # a writable folder: SQLite may leave an empty -shm; the store and its WAL never change
        assert after["r.sqlite"] == before["r.sqlite"] and after["r.sqlite-wal"] == before["r.sqlite-wal"]
    else:
        assert after == before


def test_writable_file_in_read_only_folder_is_refused_for_writing(read_only_stores):
    case = read_only_stores["folder only, writable file"]
    path, folder, got = case["path"], case["folder"], case["got"]
    assert got["uid"] != 0
    assert got["list"].count(" finished ") == 2
    assert got["write_errors"][0] == (
        f"cannot write results file {path}: its folder {folder} is read-only, and SQLite needs to create "
        f"r.sqlite-wal and r.sqlite-shm there (reading it works: `mlebench results list --results {path}`)")
    assert case["after"] == case["before"]


_CLI_READER = r"""
import json, sys
from click.testing import CliRunner
from mlebench.cli import main
out = {}
for name, args in (("list", ["results", "list"]), ("export", ["results", "export", "--format", "csv"]),
                   ("report", ["report", "--format", "markdown"])):
    r = CliRunner().invoke(main, args + ["--results", sys.argv[1]])
    out[name] = [r.exit_code, r.output]
print(json.dumps(out))
"""


def test_cli_reading_commands_work_on_a_read_only_store():
    """`results list`, `results export` and `report` in a read-only folder (needs the CLI to open
    stores with ``open_store_for_reading``)."""
    shared = _shared_dir()
    try:
        folder = shared / "store"
        folder.mkdir()
        path = folder / "r.sqlite"
        make_store_with_wal(path)
        _make_read_only(folder, file_only=False)
        before = _files(folder)
        child = _as_other_user([sys.executable, "-c", _CLI_READER, str(path)], env=_child_env(shared))
        assert child.returncode == 0, child.stderr
        got = json.loads(child.stdout.strip().splitlines()[-1])
        assert got["list"][0] == 0, got["list"][1]
        assert got["list"][1].count(" finished ") == 2
        assert got["export"][0] == 0 and got["export"][1].startswith("run_id,") and got["export"][1].count("\n") > 20
        assert got["report"][0] == 0, got["report"][1]
        assert "mlesam" in got["report"][1] and "cmnext" in got["report"][1]
        assert _files(folder) == before
    finally:
        _remove_shared_dir(shared)


# -- corrupt stores and undecodable values ---------------------------------------------------------
def _page_size(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:18], "big")


def _wal_pages(wal: Path, page_size: int) -> set[int]:
    data = wal.read_bytes()
    return {int.from_bytes(data[o:o + 4], "big") for o in range(32, len(data), 24 + page_size)}


def _corrupt_page(path: Path, target: str) -> int:
    """Overwrite the first 64 bytes of a page of ``path`` that no WAL frame replaces: one in the
    middle of the file, or the root page of an index (preferably one of table ``target``);
    returns its number (1-based)."""
    size = _page_size(path)
    in_wal = _wal_pages(Path(f"{path}-wal"), size) if Path(f"{path}-wal").exists() else set()
    n_pages = path.stat().st_size // size
    if target == "middle":
        candidates = range(n_pages // 2, n_pages + 1)
    else:
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as conn:  # the main file only
            candidates = [r[0] for r in conn.execute(
                "SELECT rootpage FROM sqlite_master WHERE type = 'index' ORDER BY tbl_name != ?, rootpage", (target,))]
    page = next(p for p in candidates if p not in in_wal)
    with open(path, "r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xa5" * 64)
    return page


CORRUPT = re.escape(" is corrupt: ") + r"[^\n]+" + re.escape(" (it was left as it is; restore it from a backup)")


@pytest.mark.parametrize("target", ["middle", "results"], ids=["middle page", "index page"])
@pytest.mark.parametrize("with_wal", [False, True], ids=["checkpointed", "with WAL"])
def test_corrupt_store_is_named_and_never_modified(tmp_path: Path, with_wal: bool, target: str):
    path = tmp_path / "store" / "r.sqlite"
    if with_wal:
        make_store_with_wal(path)
    else:
        make_store(path)
    _corrupt_page(path, target)
    before = _files(path.parent)
    message = re.escape(f"results file {path}") + CORRUPT

    for opening in (lambda: open_store_for_reading(path), lambda: ResultsStore(path)):
        with pytest.raises(ConfigError) as err:
            opening().start_run(method="m", variant="v", dataset="d", train_modalities=["rgb"], preset="p",
                                config={}, seed=0, versions={})
        assert re.fullmatch(message, str(err.value)), str(err.value)
    for args in (["results", "list"], ["results", "export"], ["report"], ["compare", "a", "b"]):
        result = invoke(*args, "--results", str(path))
        assert result.exit_code == 1, result.output
        assert re.fullmatch("Error: " + message + "\n", result.output), result.output
    after = _files(path.parent)
    assert after["r.sqlite"] == before["r.sqlite"]
    if with_wal:
        assert after["r.sqlite-wal"] == before["r.sqlite-wal"]
    else:  # a read-only connection may leave an empty WAL behind, never one with content
        assert after.get("r.sqlite-wal", b"") == b""


def test_store_damaged_after_opening_is_named_and_never_modified(tmp_path: Path):
    """Damage that appears while a store is open: every read and write names the file as corrupt."""
    path = tmp_path / "r.sqlite"
    run_id = make_store(path, runs=1)[0]
    reader, writer = open_store_for_reading(path), ResultsStore(path)
    with sqlite3.connect(path) as conn:
        runs_root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    conn.close()
    size = _page_size(path)
    with open(path, "r+b") as fh:
        fh.seek((runs_root - 1) * size)
        fh.write(b"\xa5" * 64)
    before = _files(tmp_path)
    message = re.escape(f"results file {path}") + CORRUPT
    calls = [reader.runs, writer.runs, lambda: reader.results(run_ids=[run_id]),
             lambda: writer.start_run(method="m", variant="v", dataset="d", train_modalities=["rgb"], preset="p",
                                      config={}, seed=0, versions={}),
             lambda: writer.fail_run(run_id, "x")]
    for call in calls:
        with pytest.raises(ConfigError) as err:
            call()
        assert re.fullmatch(message, str(err.value)), str(err.value)
    after = _files(tmp_path)
    assert after["r.sqlite"] == before["r.sqlite"] and after.get("r.sqlite-wal", b"") == b""


def test_undecodable_stored_values_are_reported_as_corrupt(tmp_path: Path):
    path = tmp_path / "r.sqlite"
    run_id = make_store(path, runs=1)[0]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE run_samples SET sample_ids = x'00ff00'")
    with pytest.raises(ConfigError, match=re.escape(f"results file {path} is corrupt: error: ")):
        open_store_for_reading(path).case_counts(run_id)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET config = '{not json'")
    with pytest.raises(ConfigError, match=re.escape(f"results file {path} is corrupt: JSONDecodeError: ")):
        open_store_for_reading(path).runs()


# -- a missing store -------------------------------------------------------------------------------
def test_missing_store_for_reading_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match=re.escape(f"results file {tmp_path / 'nope.sqlite'} does not exist")):
        open_store_for_reading(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()


def test_a_store_on_a_full_disk_says_so_and_stays_readable(tmpfs):
    """A disk that fills while a run is open: the write is refused naming the full disk (not a
    "disk I/O error"), nothing is half-written, no broken -shm file is left behind, and the store
    reads while the disk is still full and takes writes again once space is freed."""
    from ..helpers import fill

    folder = tmpfs("store", size="600k")
    path = folder / "r.sqlite"
    store = ResultsStore(path)
    run = store.start_run(method="mlesam", variant="v", dataset="synthetic", train_modalities=["rgb"],
                          preset="tiny", config={}, seed=0)
    fill(folder)
    rows = [ResultRow("full", ("rgb",), "all", "none", "miou", 0.5)] * 2000
    with pytest.raises(ConfigError) as raised:
        store.finish_run(run, rows)
    assert str(raised.value) == (f"cannot write results file {path}: the disk is full (no space left on device in "
                                 f"{folder}); nothing was written and the file is as it was")
    shm = Path(f"{path}-shm")
    assert not shm.exists() or shm.stat().st_size % (32 * 1024) == 0
    reader = open_store_for_reading(path)
    assert list(reader.runs()["status"]) == ["running"] and reader.results(include_unfinished=True).empty
    (folder / ".filler").unlink()
    store.finish_run(run, rows[:3])
    assert list(open_store_for_reading(path).runs()["status"]) == ["finished"]


def test_a_store_that_cannot_be_created_in_a_read_only_folder_is_one_line(tmpfs):
    """The temporary file's clean-up must not hide the refusal (unlink fails there too)."""
    folder = tmpfs("ro", readonly=True)
    with pytest.raises(ConfigError) as info:
        ResultsStore(folder / "r.sqlite")
    assert str(info.value) == (f"cannot create results file {folder / 'r.sqlite'}: unable to open database file "
                               f"(is its folder {folder} writable?)")
    assert list(folder.iterdir()) == []
