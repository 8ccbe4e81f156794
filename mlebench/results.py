"""The results store: one SQLite file that records every run and every metric it produced.

Two tables::

    runs(id, method, variant, dataset, train_modalities, preset, config, seed, git_commit,
         versions, started_at, ended_at, status, error)
    results(run_id, protocol, test_modalities, condition, corruption, metric, class, value)

``config`` and ``versions`` are JSON, times are ISO-8601 UTC, ``status`` is ``running``,
``finished`` or ``failed``; modality lists are stored joined with ``","`` in the given order.
``class`` is ``''`` for aggregate metrics (mIoU, ...) and the class name for per-class values.
A NaN ``value`` is stored as SQL NULL and read back as NaN.

A run is written in two steps: :meth:`ResultsStore.start_run` records it as ``running``, and
:meth:`ResultsStore.finish_run` writes all its result rows *and* marks it finished in one
transaction. A process killed in between (or inside ``finish_run``) leaves the run row
``running`` and no result rows at all; readers see only finished runs unless asked otherwise.

Several processes may write to one file at once: the file uses WAL journaling, every write is a
``BEGIN IMMEDIATE`` transaction and every connection waits up to :data:`BUSY_TIMEOUT_S` for the
write lock. Connections are opened per operation, so a store object survives ``fork``.

The file is marked as ours with ``PRAGMA application_id`` (:data:`APPLICATION_ID`, "MLEB") and
``PRAGMA user_version`` (:data:`SCHEMA_VERSION`). A file that is not SQLite, or SQLite written by
someone else, is refused with :class:`~mlebench.errors.ConfigError` and never modified.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

import pandas as pd

from mlebench.errors import ConfigError

APPLICATION_ID = int.from_bytes(b"MLEB", "big")  # 0x4D4C4542
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
EXPORT_FORMATS = ("csv", "json")
RUN_STATUSES = ("running", "finished", "failed")

#: Columns of :meth:`ResultsStore.results` and of every export, in order.
RESULT_COLUMNS = (
    "run_id",
    "method",
    "variant",
    "dataset",
    "train_modalities",
    "protocol",
    "test_modalities",
    "condition",
    "corruption",
    "metric",
    "class",
    "value",
)

#: Columns of :meth:`ResultsStore.runs`, in order.
RUN_COLUMNS = (
    "id",
    "method",
    "variant",
    "dataset",
    "train_modalities",
    "preset",
    "config",
    "seed",
    "git_commit",
    "versions",
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
    config TEXT NOT NULL,
    seed INTEGER NOT NULL,
    git_commit TEXT,
    versions TEXT NOT NULL,
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
    value REAL
);
CREATE INDEX IF NOT EXISTS results_run_id ON results(run_id);
"""

_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class ResultRow:
    """One metric value of a run under one evaluation setting.

    ``class_name`` is ``""`` for aggregate metrics and the class name for per-class values.
    """

    protocol: str
    test_modalities: tuple[str, ...]
    condition: str
    corruption: str
    metric: str
    value: float
    class_name: str = ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _join_modalities(modalities: Sequence[str], what: str) -> str:
    if isinstance(modalities, str) or not all(isinstance(m, str) for m in modalities):
        raise TypeError(f"{what} must be a sequence of modality names, got {modalities!r}")
    return ",".join(modalities)


def _row_tuple(run_id: str, row: ResultRow) -> tuple[Any, ...]:
    if not isinstance(row, ResultRow):
        raise TypeError(f"result rows must be ResultRow, got {type(row).__name__}")
    value = float(row.value)
    return (
        run_id,
        row.protocol,
        _join_modalities(row.test_modalities, "test_modalities"),
        row.condition,
        row.corruption,
        row.metric,
        row.class_name,
        None if math.isnan(value) else value,
    )


def git_commit(path: str | Path | None = None) -> str | None:
    """HEAD commit of the git checkout containing ``path`` (default: this package's source).

    ``None`` when ``path`` is not in a git checkout, git is not installed or it fails.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    if proc.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
        return None
    return commit


class ResultsStore:
    """A results file shared by any number of processes (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        """Open the results file at ``path``, creating it (and its folders) if absent.

        Raises :class:`ConfigError` if ``path`` exists but is not an mlebench results file, or
        was written by a newer mlebench (schema version above :data:`SCHEMA_VERSION`).
        """
        self.path = Path(path)
        if self.path.exists():
            if not self.path.is_file():
                raise ConfigError(f"{self.path} is not an mlebench results file (not a file)")
            self._check_existing()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create_new()
        self._initialise()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    # -- opening ---------------------------------------------------------------------------

    def _not_ours(self, why: str) -> ConfigError:
        return ConfigError(f"{self.path} is not an mlebench results file ({why})")

    def _check_existing(self) -> None:
        """Refuse a foreign file without writing to it (reads only, read-only connection)."""
        try:
            with open(self.path, "rb") as fh:
                header = fh.read(100)
        except OSError as exc:
            raise ConfigError(f"cannot read results file {self.path}: {exc}") from exc
        if not header:
            return  # an empty file is adopted as a new store
        if not header.startswith(_SQLITE_MAGIC) or len(header) < 100:
            raise self._not_ours("not an SQLite database")
        header_app_id = int.from_bytes(header[68:72], "big")
        if header_app_id not in (0, APPLICATION_ID):
            raise self._not_ours(f"SQLite application_id {header_app_id:#x}")
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                self._check_marker(conn)
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
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
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    def _initialise(self) -> None:
        """Check the marker; initialise an empty file in place (safe against racing processes)."""
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            try:
                if self._check_marker(conn):
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    if version == SCHEMA_VERSION:
                        return
                self._use_wal(conn)
                with self._write(conn):
                    # Check again under the write lock: another process may have got here first.
                    if not self._check_marker(conn) or (
                        conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION
                    ):
                        self._create_schema(conn)
            except sqlite3.DatabaseError as exc:
                raise ConfigError(f"cannot open results file {self.path}: {exc}") from exc
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
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    @staticmethod
    @contextlib.contextmanager
    def _write(conn: sqlite3.Connection) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
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
    ) -> str:
        """Record a new run as ``running`` and return its id (a uuid4 hex string).

        ``versions`` defaults to :func:`mlebench.engine.checkpoint.package_versions`.
        ``config`` is stored as JSON (values JSON cannot hold are stored as their ``str``).
        """
        if versions is None:
            from mlebench.engine.checkpoint import package_versions

            versions = package_versions()
        run_id = uuid.uuid4().hex
        record = (
            run_id,
            method,
            variant,
            dataset,
            _join_modalities(train_modalities, "train_modalities"),
            preset,
            json.dumps(config, sort_keys=True, default=str),
            int(seed),
            git_commit,
            json.dumps(versions, sort_keys=True, default=str),
            _now(),
            "running",
        )
        with self._connection() as conn, self._write(conn):
            conn.execute(
                "INSERT INTO runs (id, method, variant, dataset, train_modalities, preset, config,"
                " seed, git_commit, versions, started_at, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                record,
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

    def finish_run(self, run_id: str, rows: Iterable[ResultRow], status: str = "finished") -> None:
        """Write all of ``rows`` for ``run_id`` and end the run, in one transaction.

        Either every row is written and the run is marked ``status`` with ``ended_at`` set, or
        (on any exception, or if the process dies) nothing is written and the run stays
        ``running``. Raises :class:`ConfigError` for an unknown run or one that already ended.
        """
        if status not in ("finished", "failed"):
            raise ConfigError(f"run status must be 'finished' or 'failed', got {status!r}")
        with self._connection() as conn, self._write(conn):
            self._end_run(conn, run_id, status, None)
            conn.executemany(
                "INSERT INTO results (run_id, protocol, test_modalities, condition, corruption,"
                " metric, class, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (_row_tuple(run_id, row) for row in rows),
            )

    def fail_run(self, run_id: str, message: str) -> None:
        """Mark a running run ``failed`` with ``message`` in its ``error`` column."""
        with self._connection() as conn, self._write(conn):
            self._end_run(conn, run_id, "failed", str(message))

    # -- reading ---------------------------------------------------------------------------

    def runs(self) -> pd.DataFrame:
        """All runs, newest first, with columns :data:`RUN_COLUMNS`.

        ``config`` and ``versions`` are decoded into dicts; ``train_modalities`` stays the
        comma-joined string it is stored as; a missing ``git_commit``, ``ended_at`` or
        ``error`` is ``None``.
        """
        with self._connection() as conn:
            records = conn.execute(
                f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY started_at DESC, rowid DESC"
            ).fetchall()
        frame = pd.DataFrame.from_records(records, columns=list(RUN_COLUMNS))
        for column in ("config", "versions"):
            frame[column] = pd.Series([json.loads(t) for t in frame[column]], dtype=object)
        frame["seed"] = frame["seed"].astype("int64")
        for column in ("git_commit", "ended_at", "error"):  # missing is None, never NaN
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
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
        columns = ", ".join(
            f"runs.{c}" if c in ("method", "variant", "dataset", "train_modalities")
            else f"results.{c}"
            for c in RESULT_COLUMNS
        )
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
        frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
        return frame

    def export(
        self,
        fmt: str,
        out: TextIO | None = None,
        *,
        run_ids: Iterable[str] | None = None,
        include_unfinished: bool = False,
    ) -> str:
        """The rows of :meth:`results` as ``"csv"`` or ``"json"`` text; also written to ``out``.

        CSV has a header row of :data:`RESULT_COLUMNS`; a NaN value is an empty cell. JSON is a
        list of records (one object per row); a NaN (or infinite) value is ``null``.
        """
        fmt = fmt.lower()
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(
                f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}"
            )
        frame = self.results(run_ids=run_ids, include_unfinished=include_unfinished)
        if fmt == "csv":
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, lineterminator="\n")
            text = buffer.getvalue()
        else:
            records = [
                {
                    column: (
                        (float(value) if math.isfinite(value) else None)
                        if column == "value"
                        else value
                    )
                    for column, value in zip(RESULT_COLUMNS, record)
                }
                for record in frame.itertuples(index=False, name=None)
            ]
            text = json.dumps(records, indent=1, allow_nan=False) + "\n"
        if out is not None:
            out.write(text)
        return text


__all__ = [
    "APPLICATION_ID",
    "EXPORT_FORMATS",
    "RESULT_COLUMNS",
    "RUN_COLUMNS",
    "SCHEMA_VERSION",
    "ResultRow",
    "ResultsStore",
    "git_commit",
]
