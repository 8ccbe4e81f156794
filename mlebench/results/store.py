"""The results store: every run, every metric and the per-sample counts behind them, in an SQLite
file or a PostgreSQL database (``--results PATH`` or ``--results URL``; :mod:`.target`). It only
stores: rows and provenance are their own modules (:mod:`.rows`, :mod:`.provenance`), formatting
lives in :mod:`mlebench.report`.

Tables (schema version 4, :mod:`.schema`; one schema on both back ends)::

    runs(id, method, variant, dataset, train_modalities, preset, protocol, split, miou_convention,
         group_id, config, seed, git_commit, versions, provenance, pid, host, started_at,
         ended_at, status, error, heartbeat_at)
    results(run_id, protocol, test_modalities, condition, corruption, metric, class, value,
            ci_low, ci_high, terms, position, ci_unit)  -- ci_unit: what the interval resampled,
                                                "scene" or "image" (NULL: no interval, or an
                                                older run's image interval)
    run_samples(run_id, sample_ids, scenes)  -- the run's scored sample ids and their scenes
                                                (JSON, zlib; scenes NULL where not recorded)
    case_counts(run_id, protocol, test_modalities, condition, corruption, n_samples, n_classes,
                sample_index, counts, position) -- per case: int32 indices into run_samples and
                                                an int32 (N, 3, K) array of tp, fp, fn (zlib)
    artifacts(run_id, name, data)            -- figures a run made (t-SNE grid, predictions), PNG
    mlebench_alembic_version(version_num)    -- the migration the store is at

``config``, ``versions``, ``provenance`` and ``terms`` are JSON, times are ISO-8601 UTC,
``status`` is ``running``, ``finished`` or ``failed``; modality lists are stored joined with
``","`` in the given order. ``class`` is ``''`` for aggregate metrics and the class name for
per-class values. A NaN ``value`` (or interval bound) is stored as SQL NULL and read back as NaN.
``group_id`` ties the runs of one multi-seed command together; ``position`` keeps the order rows
were written in.

A run is written in two steps: :meth:`ResultsStore.start_run` records it as ``running`` (with
the pid and host of the process and a first heartbeat), and :meth:`ResultsStore.finish_run`
writes all its result rows and counts *and* marks it finished in one transaction. A process
killed in between (or inside ``finish_run``) leaves the run row ``running`` and no result rows
at all; readers see only finished runs unless asked otherwise. While it runs, a job beats
(:class:`~.heartbeat.Heartbeat`); :meth:`ResultsStore.runs` gives each run's ``state`` as it
stands now (:func:`~.liveness.run_state`): ``stale (process gone)`` for a dead process of this
host, ``stale (no heartbeat since ...)`` for a run of any host silent longer than the grace
period. :meth:`ResultsStore.reap` marks stale runs failed.

Opening guards the store before anything is written (:mod:`.backends`): a foreign file or
database, a corrupt file, a store of a newer schema and one that cannot be written (read-only
file or folder, read-only role) are refused with one line naming them, and left as they are. A
store of an older schema is refused with a message naming ``mlebench results migrate``, which
upgrades it through Alembic in one transaction (:func:`migrate`; an SQLite file is copied aside
first); nothing is ever upgraded silently. Reading needs no write access:
:func:`open_store_for_reading` reads read-only files, files in read-only folders and databases
through a read-only role, and changes nothing.

Several processes may write to one store at once, on one machine (an SQLite file: WAL, every
write a ``BEGIN IMMEDIATE`` transaction waiting up to 30 s for the lock) or on many (PostgreSQL).
Connections are opened per operation, so a store object survives ``fork``.
"""

from __future__ import annotations

import json
import uuid
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mlebench.errors import ConfigError
from mlebench.results import schema as tables
from mlebench.results.backends import Backend, open_backend
from mlebench.results.codec import iso, join_modalities, pack, result_record, unpack
from mlebench.results.liveness import DEFAULT_GRACE_S, STALE, run_state
from mlebench.results.provenance import git_commit, package_versions, process_identity
from mlebench.results.rows import CaseCounts, CaseKey, ResultRow
from mlebench.results.schema import APPLICATION_ID, RESULT_COLUMNS, RUN_COLUMNS, RUN_RESULT_COLUMNS, SCHEMA_VERSION
from mlebench.results.target import StoreTarget, parse_target

_runs, _results = tables.runs, tables.results


class ResultsStore:
    """A results store shared by any number of processes (see the module docstring)."""

    def __init__(self, target: str | Path | StoreTarget, *, readonly: bool = False,
                 _for_migration: bool = False) -> None:
        """Open the store ``target`` names (a path or a database URL); for writing (the default)
        create it if absent, with ``readonly=True`` only read it. Raises :class:`ConfigError`
        for a store that is not ours, newer, older, corrupt or (for writing) not writable."""
        self.target = parse_target(target)
        #: the SQLite file (None for a database server)
        self.path = self.target.path
        self.readonly = readonly
        self.backend: Backend = open_backend(self.target, readonly=readonly, migrating=_for_migration)

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.target)!r}{', readonly=True' if self.readonly else ''})"

    @property
    def label(self) -> str:
        return self.backend.label

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
        process died can be told from one still running, and a first heartbeat.
        """
        if versions is None:
            versions = package_versions()
        run_id = uuid.uuid4().hex
        who = process_identity()
        record = {
            "id": run_id, "method": method, "variant": variant, "dataset": dataset,
            "train_modalities": join_modalities(train_modalities, "train_modalities"), "preset": preset,
            "protocol": protocol, "split": split, "miou_convention": miou_convention, "group_id": group_id,
            "config": json.dumps(config, sort_keys=True, default=str), "seed": int(seed), "git_commit": git_commit,
            "versions": json.dumps(versions, sort_keys=True, default=str),
            "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
            "pid": who["pid"], "host": who["host"], "status": "running",
        }  # fmt: skip
        with self.backend.transaction(writing=True) as conn:
            now = iso(self.backend.now(conn))
            conn.execute(_runs.insert(), {**record, "started_at": now, "heartbeat_at": now})
        return run_id

    def beat(self, run_id: str) -> bool:
        """Write ``run_id``'s heartbeat (the database's time); False if it is no longer running."""
        with self.backend.transaction(writing=True) as conn:
            done = conn.execute(_runs.update().where(_runs.c.id == run_id, _runs.c.status == "running")
                                .values(heartbeat_at=iso(self.backend.now(conn))))
            return done.rowcount == 1

    def _end_run(self, conn: sa.Connection, run_id: str, status: str, error: str | None) -> None:
        found = conn.execute(sa.select(_runs.c.status).where(_runs.c.id == run_id).with_for_update()).first()
        if found is None:
            raise ConfigError(f"no run {run_id!r} in {self.label}")
        if found[0] != "running":
            raise ConfigError(f"run {run_id} in {self.label} has already ended ({found[0]})")
        conn.execute(_runs.update().where(_runs.c.id == run_id)
                     .values(status=status, ended_at=iso(self.backend.now(conn)), error=error))

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
        scene_of = {i: s for c in counts if c.scenes is not None for i, s in zip(c.sample_ids, c.scenes)}
        scenes = [scene_of[i] for i in all_ids] if len(scene_of) == len(all_ids) else None
        with self.backend.transaction(writing=True) as conn:
            self._end_run(conn, run_id, status, None)
            records = [result_record(run_id, row, i) for i, row in enumerate(rows)]
            if records:
                conn.execute(_results.insert(), records)
            if counts:
                conn.execute(tables.run_samples.insert(),
                             {"run_id": run_id, "sample_ids": zlib.compress(json.dumps(all_ids).encode()),
                              "scenes": zlib.compress(json.dumps(scenes).encode()) if scenes is not None else None})
                conn.execute(tables.case_counts.insert(),
                             [self._counts_record(run_id, c, position, i) for i, c in enumerate(counts)])
            if artifacts:
                conn.execute(tables.artifacts.insert(), [{"run_id": run_id, "name": name, "data": bytes(data)}
                                                         for name, data in sorted(artifacts.items())])

    @staticmethod
    def _counts_record(run_id: str, c: CaseCounts, position: dict[str, int], order: int) -> dict[str, Any]:
        array = np.asarray(c.counts)
        n = len(c.sample_ids)
        if array.ndim != 3 or array.shape[:2] != (n, 3):
            raise ValueError(f"counts of {c.key.label} must be (N={n}, 3, K), got {array.shape}")
        if array.size and (array.min() < 0 or array.max() > np.iinfo(np.int32).max):
            raise ValueError(f"counts of {c.key.label} do not fit 0..2^31-1")
        index = np.array([position[i] for i in c.sample_ids], dtype=np.int64)
        return {"run_id": run_id, "protocol": c.key.protocol,
                "test_modalities": join_modalities(c.key.test_modalities, "test_modalities"),
                "condition": c.key.condition, "corruption": c.key.corruption, "n_samples": n,
                "n_classes": array.shape[2], "sample_index": pack(index), "counts": pack(array), "position": order}

    def fail_run(self, run_id: str, message: str) -> None:
        """Mark a running run ``failed`` with ``message`` in its ``error`` column."""
        with self.backend.transaction(writing=True) as conn:
            self._end_run(conn, run_id, "failed", str(message))

    def reap(self, grace: float = DEFAULT_GRACE_S, run_ids: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """Mark every stale run (:meth:`runs` with ``grace``; only ``run_ids`` if given) failed;
        returns (run id, state) of each run reaped. A run whose heartbeat arrives meanwhile is
        left running."""
        reaped = []
        stale = self.runs(grace=grace)
        stale = stale[stale["status"].eq("running") & stale["state"].str.startswith("stale")]
        if run_ids is not None:
            stale = stale[stale["id"].isin(list(run_ids))]
        for run in stale.itertuples():
            with self.backend.transaction(writing=True) as conn:
                seen = (_runs.c.heartbeat_at.is_(None) if run.heartbeat_at is None
                        else _runs.c.heartbeat_at == run.heartbeat_at)
                done = conn.execute(_runs.update().where(_runs.c.id == run.id, _runs.c.status == "running", seen)
                                    .values(status="failed", ended_at=iso(self.backend.now(conn)),
                                            error=f"reaped: {run.state} (grace {grace:g} s)"))
                if done.rowcount == 1:
                    reaped.append((run.id, run.state))
        return reaped

    # -- reading ---------------------------------------------------------------------------

    def runs(self, grace: float = DEFAULT_GRACE_S) -> pd.DataFrame:
        """All runs, newest first, with columns :data:`RUN_COLUMNS` and then ``state``.

        ``config`` and ``versions`` are decoded into dicts; ``train_modalities`` stays the
        comma-joined string it is stored as; a missing ``git_commit``, ``ended_at`` or
        ``error`` is ``None``. ``state`` is the status as it stands now (:func:`run_state`,
        with ``grace`` seconds without a heartbeat before a run is stale).
        """
        with self.backend.transaction() as conn:
            now = self.backend.now(conn)
            records = conn.execute(sa.select(*[_runs.c[c] for c in RUN_COLUMNS])
                                   .order_by(_runs.c.started_at.desc(), _runs.c.id.desc())).all()
        frame = pd.DataFrame.from_records([tuple(r) for r in records], columns=list(RUN_COLUMNS))
        with self.backend.decoding():
            for column in ("config", "versions", "provenance"):
                frame[column] = pd.Series([json.loads(t) if isinstance(t, str) else {} for t in frame[column]],
                                          dtype=object)
        frame["seed"] = frame["seed"].astype("int64")
        for column in ("git_commit", "ended_at", "error", "protocol", "split", "miou_convention", "group_id",
                       "pid", "host", "heartbeat_at"):  # missing is None, never NaN
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        frame["state"] = pd.Series(
            [run_state(r.status, r.pid, r.host, r.started_at, r.heartbeat_at, now, grace)
             for r in frame.itertuples()], dtype=object)
        return frame

    def results(
        self, run_ids: Iterable[str] | None = None, include_unfinished: bool = False
    ) -> pd.DataFrame:
        """Result rows joined with their run, columns exactly :data:`RESULT_COLUMNS`.

        Only finished runs unless ``include_unfinished``; only ``run_ids`` if given (an unknown
        id is a :class:`ConfigError`). Rows come in run start order, then write order; a NaN
        value reads back as NaN.
        """
        columns = [(_runs.c[c] if c in RUN_RESULT_COLUMNS else _results.c[c]).label(c) for c in RESULT_COLUMNS]
        query = sa.select(*columns).select_from(_results.join(_runs, _runs.c.id == _results.c.run_id))
        if not include_unfinished:
            query = query.where(_runs.c.status == "finished")
        with self.backend.transaction() as conn:
            if run_ids is not None:
                wanted = list(dict.fromkeys([run_ids] if isinstance(run_ids, str) else run_ids))
                known = set(conn.execute(sa.select(_runs.c.id).where(_runs.c.id.in_(wanted))).scalars())
                unknown = [r for r in wanted if r not in known]
                if unknown:
                    raise ConfigError(f"no run {', '.join(unknown)} in {self.label}")
                query = query.where(_runs.c.id.in_(wanted))
            query = query.order_by(_runs.c.started_at, _runs.c.id, _results.c.position)
            records = [tuple(r) for r in conn.execute(query)]
        frame = pd.DataFrame.from_records(records, columns=list(RESULT_COLUMNS))
        for column in ("value", "ci_low", "ci_high"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        frame["seed"] = frame["seed"].astype("int64")
        # Rows of runs written before schema 4 have an interval over images and no unit.
        has_interval = frame["ci_low"].notna()
        frame["ci_unit"] = (frame["ci_unit"].astype(object).where(frame["ci_unit"].notna(),
                                                                  has_interval.map({True: "image", False: ""}))
                            .astype("str"))
        for column in ("split", "miou_convention", "group_id"):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        return frame

    def summary_terms(self, run_id: str) -> dict[tuple[str, str, str, str, str], list[tuple[CaseKey, float]]]:
        """The terms of a run's summary rows: (protocol, test_modalities, condition, corruption,
        metric) -> [(case, weight), ...]."""
        r = _results.c
        with self.backend.transaction() as conn:
            records = conn.execute(sa.select(r.protocol, r.test_modalities, r.condition, r.corruption, r.metric,
                                             r.terms).where(r.run_id == run_id, r.terms.is_not(None))).all()
        out = {}
        with self.backend.decoding():
            for protocol, mods, condition, corruption, metric, terms in records:
                out[(protocol, mods, condition, corruption, metric)] = [
                    (CaseKey(protocol, tuple(m.split(",")), c, k), float(w)) for m, c, k, w in json.loads(terms)]
        return out

    def artifacts(self, run_id: str) -> dict[str, bytes]:
        """The files (figures) a run stored, by name."""
        a = tables.artifacts.c
        with self.backend.transaction() as conn:
            return {name: bytes(data) for name, data in
                    conn.execute(sa.select(a.name, a.data).where(a.run_id == run_id).order_by(a.name))}

    def case_counts(self, run_id: str) -> list[CaseCounts]:
        """The per-sample counts of every case of ``run_id`` (empty for runs without any)."""
        s, c = tables.run_samples.c, tables.case_counts.c
        with self.backend.transaction() as conn:
            found = conn.execute(sa.select(s.sample_ids, s.scenes).where(s.run_id == run_id)).first()
            if found is None:
                return []
            records = conn.execute(
                sa.select(c.protocol, c.test_modalities, c.condition, c.corruption, c.n_samples, c.n_classes,
                          c.sample_index, c.counts).where(c.run_id == run_id).order_by(c.position)).all()
        out = []
        with self.backend.decoding():
            ids = json.loads(zlib.decompress(found[0]))
            scenes = json.loads(zlib.decompress(found[1])) if found[1] is not None else None
            for protocol, mods, condition, corruption, n, k, index, counts in records:
                key = CaseKey(protocol, tuple(mods.split(",")), condition, corruption)
                positions = unpack(index, (n,))
                out.append(CaseCounts(key, tuple(ids[i] for i in positions), unpack(counts, (n, 3, k)),
                                      tuple(scenes[i] for i in positions) if scenes is not None else None))
        return out


def migrate(target: str | Path | StoreTarget, backup: str | Path | None = None) -> tuple[int, Path | None]:
    """Upgrade the store ``target`` names to :data:`SCHEMA_VERSION` in one transaction.

    An SQLite file is first copied to ``backup`` (default ``<path>.v<old version>.bak``; an
    existing backup is never overwritten). Returns (old version, backup path; None for a database
    server). A store already at the current version is left alone (backup path: the file itself).
    """
    from mlebench.results.migration import upgrade

    target = parse_target(target)
    if target.path is not None and not target.path.is_file():
        raise ConfigError(f"results file {target.path} does not exist")
    store = ResultsStore(target, _for_migration=True)  # refuses foreign stores and newer schemas
    version = store.backend.version
    if version == SCHEMA_VERSION or version is None:  # current, or just created (an empty database)
        return SCHEMA_VERSION, target.path
    path = target.path
    if path is not None:
        backup = Path(backup) if backup is not None else path.with_name(f"{path.name}.v{version}.bak")
        if backup.exists():
            raise ConfigError(f"backup {backup} already exists; move it away or pass another backup path")
        store.backend.copy_to(backup)
    with store.backend.transaction(writing=True) as conn:
        if hasattr(store.backend, "lock_for_migration"):
            store.backend.lock_for_migration(conn)
        legacy = None
        if path is not None:
            found = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
            if found != version:
                raise ConfigError(f"{store.label} changed while migrating; try again")
            legacy = version
        upgrade(conn, legacy_version=legacy)
    return version, backup if path is not None else None


def open_store_for_reading(target: str | Path | StoreTarget) -> ResultsStore:
    """The store ``target`` names, opened read-only: what every command that only reads
    (``results list``/``export``, ``report``, ``compare``) uses. Works in read-only folders, on
    read-only files and through read-only roles, and never changes the store; a missing, foreign,
    newer or corrupt store is a :class:`ConfigError` naming it."""
    return ResultsStore(target, readonly=True)


__all__ = [
    "APPLICATION_ID", "RESULT_COLUMNS", "RUN_COLUMNS", "SCHEMA_VERSION", "STALE", "ResultRow", "ResultsStore",
    "git_commit", "migrate", "open_store_for_reading",
]  # fmt: skip
