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

import json
import shutil
import sqlite3
import uuid
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from mlebench.errors import ConfigError
from mlebench.results.codec import _join_modalities, _now, _pack, _row_tuple, _unpack
from mlebench.results.liveness import STALE, UNKNOWN_LIVENESS, process_alive, run_state
from mlebench.results.provenance import git_commit, package_versions, process_identity
from mlebench.results.rows import CaseCounts, CaseKey, ResultRow
from mlebench.results.schema import (
    _MIGRATE_1_TO_2, _RUN_RESULT_COLUMNS, APPLICATION_ID, RESULT_COLUMNS, RUN_COLUMNS, SCHEMA_VERSION,
)  # fmt: skip
from mlebench.results.sqlite import SQLiteFile


class ResultsStore(SQLiteFile):
    """A results file shared by any number of processes (see the module docstring)."""

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
