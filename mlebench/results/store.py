"""The results store: one SQLite file that records every run, every metric and the per-sample
counts behind them. It only stores: rows and provenance are their own modules
(:mod:`mlebench.results.rows`, :mod:`mlebench.results.provenance`), formatting lives in
:mod:`mlebench.report`.

Tables (schema version 2)::

    runs(id, method, variant, dataset, train_modalities, preset, protocol, split, miou_convention,
         group_id, config, seed, git_commit, versions, provenance, pid, host, started_at,
         ended_at, status, error)
    results(run_id, protocol, test_modalities, condition, corruption, metric, class, value,
            ci_low, ci_high, terms)
    run_samples(run_id, sample_ids)          -- the run's scored sample ids (JSON, zlib)
    case_counts(run_id, protocol, test_modalities, condition, corruption, n_samples, n_classes,
                sample_index, counts)        -- per case: int32 indices into run_samples and an
                                                int32 (N, 3, K) array of tp, fp, fn (zlib)
    artifacts(run_id, name, data)            -- figures a run made (t-SNE grid, predictions), PNG

``config``, ``versions``, ``provenance`` and ``terms`` are JSON, times are ISO-8601 UTC,
``status`` is ``running``, ``finished`` or ``failed``; modality lists are stored joined with
``","`` in the given order. ``class`` is ``''`` for aggregate metrics and the class name for
per-class values. A NaN ``value`` (or interval bound) is stored as SQL NULL and read back as NaN.
``group_id`` ties the runs of one multi-seed command together. A 500-sample split with 25
classes keeps about 46 KB of counts per case (compressed, measured on realistic counts).

A run is written in two steps: :meth:`ResultsStore.start_run` records it as ``running`` (with
the pid and host of the process), and :meth:`ResultsStore.finish_run` writes all its result rows
and counts *and* marks it finished in one transaction. A process killed in between (or inside
``finish_run``) leaves the run row ``running`` and no result rows at all; readers see only
finished runs unless asked otherwise. :meth:`ResultsStore.runs` adds each run's ``state`` as it
stands now: a ``running`` run of this host whose process no longer exists (or whose pid now
belongs to a process younger than the run) is ``stale (process gone)``; one of another host is
``running?``, since this machine cannot tell.

Reading needs no write access: :func:`open_store_for_reading` (``ResultsStore(path,
readonly=True)``) opens the file with ``mode=ro`` and, in a read-only folder where SQLite cannot
create the ``-wal``/``-shm`` files, ``immutable=1`` (or reads a private copy of the file and its
WAL when the WAL holds data). Every command that only reads uses it. A file that cannot be
written (read-only file or folder) is refused for writing when it is opened, before a run starts.
A damaged file (``PRAGMA quick_check`` on opening, or a page or blob that does not decode) is
reported as corrupt and never written to; neither it nor its ``-wal`` file changes.

Several processes may write to one file at once: the file uses WAL journaling, every write is a
``BEGIN IMMEDIATE`` transaction and every connection waits up to :data:`BUSY_TIMEOUT_S` for the
write lock. Connections are opened per operation, so a store object survives ``fork``.

The file is marked as ours with ``PRAGMA application_id`` (:data:`APPLICATION_ID`, "MLEB") and
``PRAGMA user_version`` (:data:`SCHEMA_VERSION`). A file that is not SQLite, or SQLite written by
someone else, is refused with :class:`~mlebench.errors.ConfigError` and never modified. A file
of an older schema is refused with a message naming ``mlebench results migrate``, which upgrades
it in one transaction after copying the original aside (:func:`migrate`); nothing is ever
upgraded silently.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sqlite3
import tempfile
import time
import zlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from mlebench.errors import ConfigError
from mlebench.results.provenance import git_commit, package_versions, process_identity
from mlebench.results.rows import CaseCounts, CaseKey, ResultRow

APPLICATION_ID = int.from_bytes(b"MLEB", "big")  # 0x4D4C4542
SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 30.0
RUN_STATUSES = ("running", "finished", "failed")

#: Columns of :meth:`ResultsStore.results`, in order.
RESULT_COLUMNS = (
    "run_id",
    "method",
    "variant",
    "dataset",
    "train_modalities",
    "preset",
    "seed",
    "split",
    "miou_convention",
    "group_id",
    "protocol",
    "test_modalities",
    "condition",
    "corruption",
    "metric",
    "class",
    "value",
    "ci_low",
    "ci_high",
)
#: Result columns that come from the run.
_RUN_RESULT_COLUMNS = ("method", "variant", "dataset", "train_modalities", "preset", "seed", "split",
                       "miou_convention", "group_id")

#: Columns of :meth:`ResultsStore.runs`, in order.
RUN_COLUMNS = (
    "id",
    "method",
    "variant",
    "dataset",
    "train_modalities",
    "preset",
    "protocol",
    "split",
    "miou_convention",
    "group_id",
    "config",
    "seed",
    "git_commit",
    "versions",
    "provenance",
    "pid",
    "host",
    "started_at",
    "ended_at",
    "status",
    "error",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    variant TEXT NOT NULL,
    dataset TEXT NOT NULL,
    train_modalities TEXT NOT NULL,
    preset TEXT NOT NULL,
    protocol TEXT,
    split TEXT,
    miou_convention TEXT,
    group_id TEXT,
    config TEXT NOT NULL,
    seed INTEGER NOT NULL,
    git_commit TEXT,
    versions TEXT NOT NULL,
    provenance TEXT,
    pid INTEGER,
    host TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
    error TEXT
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs(id),
    protocol TEXT NOT NULL,
    test_modalities TEXT NOT NULL,
    condition TEXT NOT NULL,
    corruption TEXT NOT NULL,
    metric TEXT NOT NULL,
    class TEXT NOT NULL DEFAULT '',
    value REAL,
    ci_low REAL,
    ci_high REAL,
    terms TEXT
);
CREATE INDEX IF NOT EXISTS results_run_id ON results(run_id);
CREATE TABLE IF NOT EXISTS run_samples (
    run_id TEXT PRIMARY KEY REFERENCES runs(id),
    sample_ids BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS case_counts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    protocol TEXT NOT NULL,
    test_modalities TEXT NOT NULL,
    condition TEXT NOT NULL,
    corruption TEXT NOT NULL,
    n_samples INTEGER NOT NULL,
    n_classes INTEGER NOT NULL,
    sample_index BLOB NOT NULL,
    counts BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS case_counts_run_id ON case_counts(run_id);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""

# Schema 1 -> 2: new run columns (backfilled from the config JSON), intervals, per-sample counts.
_MIGRATE_1_TO_2 = """
ALTER TABLE runs ADD COLUMN protocol TEXT;
ALTER TABLE runs ADD COLUMN split TEXT;
ALTER TABLE runs ADD COLUMN miou_convention TEXT;
ALTER TABLE runs ADD COLUMN group_id TEXT;
ALTER TABLE runs ADD COLUMN provenance TEXT;
ALTER TABLE runs ADD COLUMN pid INTEGER;
ALTER TABLE runs ADD COLUMN host TEXT;
UPDATE runs SET protocol = json_extract(config, '$.protocol'),
                split = json_extract(config, '$.eval_split'),
                miou_convention = json_extract(config, '$.miou_convention');
ALTER TABLE results ADD COLUMN ci_low REAL;
ALTER TABLE results ADD COLUMN ci_high REAL;
ALTER TABLE results ADD COLUMN terms TEXT
"""

_SQLITE_MAGIC = b"SQLite format 3\x00"
# Primary SQLite result codes (sqlite3.Error.sqlite_errorcode & 0xFF).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_CORRUPT = 5, 6, 8, 11
_SQLITE_CANTOPEN, _SQLITE_NOTADB = 14, 26


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _join_modalities(modalities: Sequence[str], what: str) -> str:
    if isinstance(modalities, str) or not all(isinstance(m, str) for m in modalities):
        raise TypeError(f"{what} must be a sequence of modality names, got {modalities!r}")
    return ",".join(modalities)


def _nullable(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _row_tuple(run_id: str, row: ResultRow) -> tuple[Any, ...]:
    if not isinstance(row, ResultRow):
        raise TypeError(f"result rows must be ResultRow, got {type(row).__name__}")
    terms = None
    if row.terms:
        terms = json.dumps([[",".join(k.test_modalities), k.condition, k.corruption, w] for k, w in row.terms])
    return (
        run_id,
        row.protocol,
        _join_modalities(row.test_modalities, "test_modalities"),
        row.condition,
        row.corruption,
        row.metric,
        row.class_name,
        _nullable(row.value),
        _nullable(row.ci_low),
        _nullable(row.ci_high),
        terms,
    )


def _pack(array: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(array, dtype="<i4").tobytes(), 6)


def _unpack(blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype="<i4").reshape(shape).astype(np.int64)


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


class ResultsStore:
    """A results file shared by any number of processes (see the module docstring)."""

    def __init__(self, path: str | Path, *, readonly: bool = False, _for_migration: bool = False) -> None:
        """Open the results file at ``path``; for writing (the default) create it (and its
        folders) if absent, with ``readonly=True`` only read it (see :func:`open_store_for_reading`).

        Raises :class:`ConfigError` if ``path`` exists but is not an mlebench results file, was
        written by a newer mlebench (schema version above :data:`SCHEMA_VERSION`), is corrupt,
        or (for writing) cannot be written. None of these cases changes the file.
        """
        self.path = Path(path)
        self.readonly = readonly
        self._migrating = _for_migration  # only migrate() may open an older schema
        self._read_uri: str | None = None  # read-only stores: what every connection opens
        self._empty = False  # read-only stores: an empty file reads as a store without runs
        self._snapshot: tempfile.TemporaryDirectory | None = None
        if readonly:
            self._open_readonly()
            return
        if self.path.exists():
            if not self.path.is_file():
                raise ConfigError(f"{self.path} is not an mlebench results file (not a file)")
            self._check_writable()
            if self._check_header():
                self._check_existing()
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create results file {self.path}: {exc}") from exc
            self._create_new()
        self._initialise()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r}{', readonly=True' if self.readonly else ''})"

    # -- opening ---------------------------------------------------------------------------

    def _not_ours(self, why: str) -> ConfigError:
        return ConfigError(f"{self.path} is not an mlebench results file ({why})")

    def _database_error(self, exc: sqlite3.Error, writing: bool) -> ConfigError:
        """A one-line :class:`ConfigError` naming the file for an error SQLite reported."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc)
        if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or (
            primary is None and ("malformed" in text or "not a database" in text)
        ):
            return ConfigError(f"results file {self.path} is corrupt: {text} (it was left as it is; "
                               f"restore it from a backup)")
        if primary == _SQLITE_READONLY or (primary is None and "readonly" in text):
            return ConfigError(f"cannot write results file {self.path}: {text} (the file or its folder "
                               f"{self.path.parent} is read-only)")
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return ConfigError(f"results file {self.path} stayed locked by another process for "
                               f"{BUSY_TIMEOUT_S:.0f} s: {text}")
        return ConfigError(f"cannot {'write' if writing else 'read'} results file {self.path}: {text}")

    def _check_header(self) -> bool:
        """Refuse a foreign file from its first 100 bytes; False for an empty file."""
        try:
            with open(self.path, "rb") as fh:
                header = fh.read(100)
        except OSError as exc:
            raise ConfigError(f"cannot read results file {self.path}: {exc}") from exc
        if not header:
            return False  # an empty file is adopted as a new store
        if not header.startswith(_SQLITE_MAGIC) or len(header) < 100:
            raise self._not_ours("not an SQLite database")
        header_app_id = int.from_bytes(header[68:72], "big")
        if header_app_id not in (0, APPLICATION_ID):
            raise self._not_ours(f"SQLite application_id {header_app_id:#x}")
        return True

    def _check_writable(self) -> None:
        """Refuse, before anything is written, a file that this process cannot write to."""
        if not os.access(self.path, os.W_OK):
            raise ConfigError(f"cannot write results file {self.path}: the file is read-only "
                              f"(reading it works: `mlebench results list --results {self.path}`)")
        folder = self.path.parent
        sidecars = [Path(f"{self.path}-wal"), Path(f"{self.path}-shm")]
        if not os.access(folder, os.W_OK | os.X_OK) and not all(
            p.is_file() and os.access(p, os.W_OK) for p in sidecars
        ):
            raise ConfigError(
                f"cannot write results file {self.path}: its folder {folder} is read-only, and SQLite "
                f"needs to create {sidecars[0].name} and {sidecars[1].name} there "
                f"(reading it works: `mlebench results list --results {self.path}`)"
            )

    def _check_existing(self) -> None:
        """Refuse a foreign, newer or corrupt file without writing to it (read-only connection)."""
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                if self._check_marker(conn):
                    self._check_integrity(conn)
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise self._database_error(exc, writing=False) from exc

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        """``PRAGMA quick_check``: a damaged page is found before anything reads or writes it
        (a writer's connection would otherwise fold the WAL into a corrupt file on closing)."""
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            lines = [line.strip() for p in problems for line in str(p).splitlines()]
            found = "; ".join(line for line in lines if line and not line.startswith("***"))
            raise ConfigError(f"results file {self.path} is corrupt: {found} (it was left as it is; "
                              f"restore it from a backup)")

    def _open_readonly(self) -> None:
        """Find a way to read the file that writes nothing to it, its -wal or its folder's
        contents the caller cannot write: ``mode=ro``; in a read-only folder where SQLite cannot
        create the -wal/-shm files, ``immutable=1`` when there is no WAL content to miss, else
        a private copy of the file and its WAL (a read-only connection can read a WAL only
        through a -shm file)."""
        if not self.path.exists():
            raise ConfigError(f"results file {self.path} does not exist")
        if not self.path.is_file():
            raise ConfigError(f"{self.path} is not an mlebench results file (not a file)")
        if not self._check_header():
            self._empty = True
            return
        base = self.path.resolve().as_uri()
        try:
            self._read_uri = base + "?mode=ro"
            try:
                with contextlib.closing(self._connect()) as conn:
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", None)
                if code is not None and code & 0xFF not in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
                    raise
                wal = Path(f"{self.path}-wal")
                if not wal.exists() or wal.stat().st_size == 0:
                    self._read_uri = base + "?mode=ro&immutable=1"
                else:
                    self._snapshot = tempfile.TemporaryDirectory(prefix="mlebench-store-")
                    copy = Path(self._snapshot.name) / self.path.name
                    shutil.copyfile(self.path, copy)
                    shutil.copyfile(wal, Path(f"{copy}-wal"))
                    self._read_uri = copy.as_uri() + "?mode=ro"
            with contextlib.closing(self._connect()) as conn:
                if self._check_marker(conn):
                    self._check_integrity(conn)
                else:
                    self._empty = True
        except sqlite3.DatabaseError as exc:
            raise self._database_error(exc, writing=False) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read results file {self.path}: {exc}") from exc

    def _check_marker(self, conn: sqlite3.Connection) -> bool:
        """True if ``conn``'s database carries our marker, False if it is empty; else raise.

        Reads only. ``conn`` must be in autocommit mode and outside a transaction, or inside
        one (then the caller's snapshot is used).
        """
        own_transaction = not conn.in_transaction
        if own_transaction:
            conn.execute("BEGIN")  # one snapshot for all three reads
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            n_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            if own_transaction:
                conn.execute("COMMIT")
        if app_id == APPLICATION_ID:
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"results file {self.path} has schema version {version}, newer than this "
                    f"mlebench supports ({SCHEMA_VERSION}); upgrade mlebench"
                )
            if version < SCHEMA_VERSION and not self._migrating:
                raise ConfigError(
                    f"results file {self.path} has schema version {version}; this mlebench reads "
                    f"version {SCHEMA_VERSION}. Upgrade the file with `mlebench results migrate "
                    f"--results {self.path}` (the original is kept beside it); it is not changed "
                    f"until you do"
                )
            return True
        if app_id != 0:
            raise self._not_ours(f"SQLite application_id {app_id:#x}")
        if n_tables:
            raise self._not_ours("SQLite database with other tables")
        if version:
            raise self._not_ours(f"SQLite user_version {version} without the mlebench marker")
        return False

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        for statement in filter(str.strip, _SCHEMA.split(";")):
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _create_new(self) -> None:
        """Create the file complete (WAL, schema, marker) in a temporary file, then link it in.

        ``os.link`` fails if the path exists, so of several processes creating the same store
        exactly one wins and nobody ever sees a half-initialised file. Where hard links are not
        supported, :meth:`_initialise` initialises the file in place instead.
        """
        # Not mkstemp: sqlite creates the file with the usual umask-based permissions.
        tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex}.tmp"
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                with self._write(conn):
                    self._create_schema(conn)
            finally:
                conn.close()
            with contextlib.suppress(OSError):  # exists already, or no hard links here
                os.link(tmp, self.path)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot create results file {self.path}: {exc} (is its folder "
                              f"{self.path.parent} writable?)") from exc
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    def _initialise(self) -> None:
        """Check the marker; initialise an empty file in place (safe against racing processes)."""
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._database_error(exc, writing=True) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            try:
                if self._check_marker(conn):
                    return
                self._use_wal(conn)
                with self._write(conn):
                    # Check again under the write lock: another process may have got here first.
                    if not self._check_marker(conn):
                        self._create_schema(conn)
            except sqlite3.DatabaseError as exc:
                raise self._database_error(exc, writing=True) from exc
        finally:
            conn.close()

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL journaling; the switch does not wait on the busy timeout, so retry."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            if mode.lower() != "wal":
                raise ConfigError(f"cannot use WAL journaling on results file {self.path}")
            return

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            if self._empty:  # an empty file: read as a store without runs
                conn = sqlite3.connect(":memory:", isolation_level=None)
                self._create_schema(conn)
            else:
                conn = sqlite3.connect(self._read_uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute("PRAGMA query_only = ON")
        else:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextlib.contextmanager
    def _connection(self, writing: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection for one operation; SQLite's errors become one-line :class:`ConfigError`
        naming the file."""
        if writing and self.readonly:
            raise ConfigError(f"results file {self.path} was opened read-only; cannot write to it")
        try:
            conn = self._connect()
            try:
                yield conn
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise self._database_error(exc, writing) from exc

    @contextlib.contextmanager
    def _decoding(self) -> Iterator[None]:
        """Stored JSON or compressed blobs that do not decode: the file is corrupt."""
        try:
            yield
        except (zlib.error, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise ConfigError(f"results file {self.path} is corrupt: {type(exc).__name__}: {exc} "
                              f"(it was left as it is; restore it from a backup)") from exc

    @staticmethod
    @contextlib.contextmanager
    def _write(conn: sqlite3.Connection) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            # A failed rollback (e.g. on a corrupt page) must not hide the original error;
            # closing the connection rolls back anyway.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- writing ---------------------------------------------------------------------------

    def start_run(
        self,
        *,
        method: str,
        variant: str,
        dataset: str,
        train_modalities: Sequence[str],
        preset: str,
        config: dict[str, Any],
        seed: int,
        git_commit: str | None = None,
        versions: dict[str, str] | None = None,
        protocol: str | None = None,
        split: str | None = None,
        miou_convention: str | None = None,
        group_id: str | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> str:
        """Record a new run as ``running`` and return its id (a uuid4 hex string).

        ``versions`` defaults to :func:`mlebench.results.provenance.package_versions`.
        ``config`` and ``provenance`` are stored as JSON (values JSON cannot hold are stored as
        their ``str``). The pid and host of this process are recorded, so that a run whose
        process died can be told from one still running.
        """
        if versions is None:
            versions = package_versions()
        run_id = uuid.uuid4().hex
        who = process_identity()
        record = {
            "id": run_id,
            "method": method,
            "variant": variant,
            "dataset": dataset,
            "train_modalities": _join_modalities(train_modalities, "train_modalities"),
            "preset": preset,
            "protocol": protocol,
            "split": split,
            "miou_convention": miou_convention,
            "group_id": group_id,
            "config": json.dumps(config, sort_keys=True, default=str),
            "seed": int(seed),
            "git_commit": git_commit,
            "versions": json.dumps(versions, sort_keys=True, default=str),
            "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
            "pid": who["pid"],
            "host": who["host"],
            "started_at": _now(),
            "status": "running",
        }
        with self._connection(writing=True) as conn, self._write(conn):
            conn.execute(
                f"INSERT INTO runs ({', '.join(record)}) VALUES ({', '.join('?' * len(record))})",
                tuple(record.values()),
            )
        return run_id

    def _end_run(
        self, conn: sqlite3.Connection, run_id: str, status: str, error: str | None
    ) -> None:
        found = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if found is None:
            raise ConfigError(f"no run {run_id!r} in results file {self.path}")
        if found[0] != "running":
            raise ConfigError(f"run {run_id} in {self.path} has already ended ({found[0]})")
        conn.execute(
            "UPDATE runs SET status = ?, ended_at = ?, error = ? WHERE id = ?",
            (status, _now(), error, run_id),
        )

    def finish_run(
        self,
        run_id: str,
        rows: Iterable[ResultRow],
        status: str = "finished",
        counts: Sequence[CaseCounts] = (),
        artifacts: dict[str, bytes] | None = None,
    ) -> None:
        """Write all of ``rows`` (and the per-sample ``counts``) for ``run_id`` and end the run,
        in one transaction.

        Either everything is written and the run is marked ``status`` with ``ended_at`` set, or
        (on any exception, or if the process dies) nothing is written and the run stays
        ``running``. Raises :class:`ConfigError` for an unknown run or one that already ended.
        """
        if status not in ("finished", "failed"):
            raise ConfigError(f"run status must be 'finished' or 'failed', got {status!r}")
        counts = list(counts)
        all_ids = list(dict.fromkeys(i for c in counts for i in c.sample_ids))
        position = {sample_id: i for i, sample_id in enumerate(all_ids)}
        with self._connection(writing=True) as conn, self._write(conn):
            self._end_run(conn, run_id, status, None)
            conn.executemany(
                "INSERT INTO results (run_id, protocol, test_modalities, condition, corruption,"
                " metric, class, value, ci_low, ci_high, terms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_row_tuple(run_id, row) for row in rows),
            )
            if counts:
                conn.execute("INSERT INTO run_samples (run_id, sample_ids) VALUES (?, ?)",
                             (run_id, zlib.compress(json.dumps(all_ids).encode())))
                conn.executemany(
                    "INSERT INTO case_counts (run_id, protocol, test_modalities, condition, corruption,"
                    " n_samples, n_classes, sample_index, counts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self._counts_tuple(run_id, c, position) for c in counts),
                )
            conn.executemany("INSERT INTO artifacts (run_id, name, data) VALUES (?, ?, ?)",
                             [(run_id, name, bytes(data)) for name, data in sorted((artifacts or {}).items())])

    @staticmethod
    def _counts_tuple(run_id: str, c: CaseCounts, position: dict[str, int]) -> tuple[Any, ...]:
        array = np.asarray(c.counts)
        n = len(c.sample_ids)
        if array.ndim != 3 or array.shape[:2] != (n, 3):
            raise ValueError(f"counts of {c.key.label} must be (N={n}, 3, K), got {array.shape}")
        if array.size and (array.min() < 0 or array.max() > np.iinfo(np.int32).max):
            raise ValueError(f"counts of {c.key.label} do not fit 0..2^31-1")
        index = np.array([position[i] for i in c.sample_ids], dtype=np.int64)
        return (run_id, c.key.protocol, _join_modalities(c.key.test_modalities, "test_modalities"),
                c.key.condition, c.key.corruption, n, array.shape[2], _pack(index), _pack(array))

    def fail_run(self, run_id: str, message: str) -> None:
        """Mark a running run ``failed`` with ``message`` in its ``error`` column."""
        with self._connection(writing=True) as conn, self._write(conn):
            self._end_run(conn, run_id, "failed", str(message))

    # -- reading ---------------------------------------------------------------------------

    def runs(self) -> pd.DataFrame:
        """All runs, newest first, with columns :data:`RUN_COLUMNS` and then ``state``.

        ``config`` and ``versions`` are decoded into dicts; ``train_modalities`` stays the
        comma-joined string it is stored as; a missing ``git_commit``, ``ended_at`` or
        ``error`` is ``None``. ``state`` is the status as it stands now (:func:`run_state`):
        a ``running`` run whose process is gone reads ``stale (process gone)``.
        """
        with self._connection() as conn:
            records = conn.execute(
                f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY started_at DESC, rowid DESC"
            ).fetchall()
        frame = pd.DataFrame.from_records(records, columns=list(RUN_COLUMNS))
        with self._decoding():
            for column in ("config", "versions", "provenance"):
                frame[column] = pd.Series([json.loads(t) if isinstance(t, str) else {} for t in frame[column]],
                                          dtype=object)
        frame["seed"] = frame["seed"].astype("int64")
        for column in ("git_commit", "ended_at", "error", "protocol", "split", "miou_convention", "group_id",
                       "pid", "host"):  # missing is None, never NaN
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        frame["state"] = pd.Series(
            [run_state(r.status, r.pid, r.host, r.started_at) for r in frame.itertuples()], dtype=object)
        return frame

    def _result_records(
        self, run_ids: Iterable[str] | None, include_unfinished: bool
    ) -> list[tuple[Any, ...]]:
        where = []
        params: list[Any] = []
        if run_ids is not None:
            if isinstance(run_ids, str):
                run_ids = [run_ids]
            wanted = list(dict.fromkeys(run_ids))
            with self._connection() as conn:
                known = {
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM runs WHERE id IN (SELECT value FROM json_each(?))",
                        (json.dumps(wanted),),
                    )
                }
            unknown = [r for r in wanted if r not in known]
            if unknown:
                raise ConfigError(f"no run {', '.join(unknown)} in results file {self.path}")
            where.append("runs.id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(wanted))
        if not include_unfinished:
            where.append("runs.status = 'finished'")
        columns = ", ".join(f"runs.{c}" if c in _RUN_RESULT_COLUMNS else f"results.{c}" for c in RESULT_COLUMNS)
        sql = f"SELECT {columns} FROM results JOIN runs ON runs.id = results.run_id"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY runs.started_at, runs.rowid, results.rowid"
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def results(
        self, run_ids: Iterable[str] | None = None, include_unfinished: bool = False
    ) -> pd.DataFrame:
        """Result rows joined with their run, columns exactly :data:`RESULT_COLUMNS`.

        Only finished runs unless ``include_unfinished``; only ``run_ids`` if given (an unknown
        id is a :class:`ConfigError`). Rows come in run start order, then write order; a NaN
        value reads back as NaN.
        """
        records = self._result_records(run_ids, include_unfinished)
        frame = pd.DataFrame.from_records(records, columns=list(RESULT_COLUMNS))
        for column in ("value", "ci_low", "ci_high"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        frame["seed"] = frame["seed"].astype("int64")
        for column in ("split", "miou_convention", "group_id"):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        return frame

    def summary_terms(self, run_id: str) -> dict[tuple[str, str, str, str, str], list[tuple[CaseKey, float]]]:
        """The terms of a run's summary rows: (protocol, test_modalities, condition, corruption,
        metric) -> [(case, weight), ...]."""
        with self._connection() as conn:
            records = conn.execute(
                "SELECT protocol, test_modalities, condition, corruption, metric, terms FROM results"
                " WHERE run_id = ? AND terms IS NOT NULL", (run_id,)).fetchall()
        out = {}
        with self._decoding():
            for protocol, mods, condition, corruption, metric, terms in records:
                out[(protocol, mods, condition, corruption, metric)] = [
                    (CaseKey(protocol, tuple(m.split(",")), c, k), float(w)) for m, c, k, w in json.loads(terms)]
        return out

    def artifacts(self, run_id: str) -> dict[str, bytes]:
        """The files (figures) a run stored, by name."""
        with self._connection() as conn:
            return {name: bytes(data) for name, data in conn.execute(
                "SELECT name, data FROM artifacts WHERE run_id = ? ORDER BY name", (run_id,))}

    def case_counts(self, run_id: str) -> list[CaseCounts]:
        """The per-sample counts of every case of ``run_id`` (empty for runs without any)."""
        with self._connection() as conn:
            found = conn.execute("SELECT sample_ids FROM run_samples WHERE run_id = ?", (run_id,)).fetchone()
            if found is None:
                return []
            records = conn.execute(
                "SELECT protocol, test_modalities, condition, corruption, n_samples, n_classes, sample_index,"
                " counts FROM case_counts WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall()
        out = []
        with self._decoding():
            ids = json.loads(zlib.decompress(found[0]))
            for protocol, mods, condition, corruption, n, k, index, counts in records:
                key = CaseKey(protocol, tuple(mods.split(",")), condition, corruption)
                positions = _unpack(index, (n,))
                out.append(CaseCounts(key, tuple(ids[i] for i in positions), _unpack(counts, (n, 3, k))))
        return out


def migrate(path: str | Path, backup: str | Path | None = None) -> tuple[int, Path]:
    """Upgrade the results file at ``path`` to :data:`SCHEMA_VERSION` in one transaction.

    The original is first copied to ``backup`` (default ``<path>.v<old version>.bak``; an
    existing backup is never overwritten). Returns (old version, backup path). A file already at
    the current version is left alone (backup path is the file itself).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"results file {path} does not exist")
    store = ResultsStore(path, _for_migration=True)  # refuses foreign files and newer schemas
    with store._connection() as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return version, path
    backup = Path(backup) if backup is not None else path.with_name(f"{path.name}.v{version}.bak")
    if backup.exists():
        raise ConfigError(f"backup {backup} already exists; move it away or pass another backup path")
    with store._connection(writing=True) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file first
    shutil.copy2(path, backup)
    with store._connection(writing=True) as conn, store._write(conn):
        if conn.execute("PRAGMA user_version").fetchone()[0] != version:
            raise ConfigError(f"results file {path} changed while migrating; try again")
        if version == 1:
            for statement in filter(str.strip, _MIGRATE_1_TO_2.split(";")):
                conn.execute(statement)
        store._create_schema(conn)  # the new tables and the version
    return version, backup


def open_store_for_reading(path: str | Path) -> ResultsStore:
    """The results file at ``path``, opened read-only: what every command that only reads
    (``results list``/``export``, ``report``, ``compare``) uses. Works in read-only folders and
    on read-only files and never changes the file; a missing, foreign, newer or corrupt file is
    a :class:`ConfigError` naming it."""
    return ResultsStore(path, readonly=True)


__all__ = [
    "APPLICATION_ID",
    "RESULT_COLUMNS",
    "RUN_COLUMNS",
    "SCHEMA_VERSION",
    "STALE",
    "UNKNOWN_LIVENESS",
    "ResultRow",
    "ResultsStore",
    "git_commit",
    "migrate",
    "open_store_for_reading",
    "process_alive",
    "run_state",
]
