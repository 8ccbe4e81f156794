"""The SQLite back end: a results store in one file, how it is opened, guarded and written (the
rules are in :mod:`mlebench.results.store`'s docstring). The store's queries go through
SQLAlchemy; the guards that must run before anything is written read the file with ``sqlite3``
directly."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from mlebench.errors import ConfigError
from mlebench.results.backends.base import Backend
from mlebench.results.migration import create_schema
from mlebench.results.schema import APPLICATION_ID, BUSY_TIMEOUT_S, SCHEMA_VERSION
from mlebench.results.target import StoreTarget

_SQLITE_MAGIC = b"SQLite format 3\x00"
# Primary SQLite result codes (sqlite3.Error.sqlite_errorcode & 0xFF).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 5, 6, 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26
_SHM_PAGE = 32 * 1024  # a -shm file grows in pieces of this size


def _disk_full(folder: Path) -> bool:
    """Whether ``folder``'s file system has (next to) no space left: SQLite reports a full disk
    while it grows its -shm file as a plain "disk I/O error"."""
    try:
        return shutil.disk_usage(folder).free < 2 * _SHM_PAGE
    except OSError:
        return False


class SQLiteBackend(Backend):
    """A results store in an SQLite file: opening (for writing, read-only, refusing foreign,
    newer, corrupt or unwritable files), connections and write transactions."""

    kind = "results file"

    def __init__(self, target: StoreTarget, *, readonly: bool = False, migrating: bool = False) -> None:
        """Open the results file ``target.path``; for writing (the default) create it (and its
        folders) if absent, with ``readonly=True`` only read it.

        Raises :class:`ConfigError` if the path exists but is not an mlebench results file, was
        written by a newer mlebench (schema version above :data:`SCHEMA_VERSION`), is corrupt,
        or (for writing) cannot be written. None of these cases changes the file.
        """
        super().__init__(target, readonly=readonly, migrating=migrating)
        assert target.path is not None
        self.path = target.path
        self._read_uri: str | None = None  # read-only stores: what every connection opens
        self._snapshot: tempfile.TemporaryDirectory | None = None
        self._engine = sa.create_engine("sqlite://", creator=self._connect, poolclass=NullPool)
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

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def begin(self, conn: sa.Connection, writing: bool) -> None:
        # The driver leaves transactions to us (isolation_level=None): a writer takes the write
        # lock at once, and waits up to BUSY_TIMEOUT_S for it, instead of failing on upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")

    def now(self, conn: sa.Connection) -> datetime:
        return datetime.now(timezone.utc)  # a file is read by the machines that mount it

    # -- opening ---------------------------------------------------------------------------

    def _not_ours(self, why: str) -> ConfigError:
        return ConfigError(f"{self.path} is not an mlebench results file ({why})")

    def error(self, exc: BaseException, writing: bool) -> ConfigError:
        """A one-line :class:`ConfigError` naming the file for an error SQLite reported."""
        if not isinstance(exc, sqlite3.Error):
            return super().error(exc, writing)
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
        if primary == _SQLITE_FULL or (primary == _SQLITE_IOERR and _disk_full(self.path.parent)):
            if writing:
                self._remove_broken_shm()
                return ConfigError(f"cannot write results file {self.path}: the disk is full (no space left on "
                                   f"device in {self.path.parent}); nothing was written and the file is as it was")
            return ConfigError(f"cannot read results file {self.path}: the disk is full (no space left on device "
                               f"in {self.path.parent}; SQLite needs a little to read)")
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return ConfigError(f"results file {self.path} stayed locked by another process for "
                               f"{BUSY_TIMEOUT_S:.0f} s: {text}")
        return ConfigError(f"cannot {'write' if writing else 'read'} results file {self.path}: {text}")

    def _remove_broken_shm(self) -> None:
        """A write that ran out of space can leave a -shm file too short to be one (SQLite's is a
        multiple of 32 KiB); every later reader would fail on it with "disk I/O error". Such a
        file holds nothing: remove it (SQLite makes a new one)."""
        shm = Path(f"{self.path}-shm")
        with contextlib.suppress(OSError):
            if shm.stat().st_size % _SHM_PAGE:
                shm.unlink()

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
            raise self.error(exc, writing=False) from exc

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
            self.reads_as_empty()
            return
        base = self.path.resolve().as_uri()
        try:
            self._read_uri = base + "?mode=ro"
            try:
                with contextlib.closing(self._connect()) as conn:
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", None)
                if code is not None and code & 0xFF not in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_IOERR):
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
                    self.reads_as_empty()
        except sqlite3.DatabaseError as exc:
            raise self.error(exc, writing=False) from exc
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
            refusal = self.version_refusal(version, str(version))
            if refusal is not None:
                raise refusal
            self.version = version
            return True
        if app_id != 0:
            raise self._not_ours(f"SQLite application_id {app_id:#x}")
        if n_tables:
            raise self._not_ours("SQLite database with other tables")
        if version:
            raise self._not_ours(f"SQLite user_version {version} without the mlebench marker")
        return False

    def _create_schema(self, conn: sa.Connection) -> None:
        """The schema, its Alembic stamp and the file's marker (in the caller's transaction)."""
        create_schema(conn)
        conn.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.version = SCHEMA_VERSION

    def _create_new(self) -> None:
        """Create the file complete (WAL, schema, marker) in a temporary file, then link it in.

        ``os.link`` fails if the path exists, so of several processes creating the same store
        exactly one wins and nobody ever sees a half-initialised file. Where hard links are not
        supported, :meth:`_initialise` initialises the file in place instead.
        """
        # Not mkstemp: sqlite creates the file with the usual umask-based permissions.
        tmp = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex}.tmp"
        engine = sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(tmp, isolation_level=None),
                                  poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode = WAL")
                conn.commit()
                self.begin(conn, writing=True)
                self._create_schema(conn)
                conn.commit()
            with contextlib.suppress(OSError):  # exists already, or no hard links here
                os.link(tmp, self.path)
        except sa.exc.DBAPIError as exc:
            raise ConfigError(f"cannot create results file {self.path}: {exc.orig} (is its folder "
                              f"{self.path.parent} writable?)") from exc
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                with contextlib.suppress(OSError):  # absent, or a read-only folder where nothing was made
                    leftover.unlink()

    def _initialise(self) -> None:
        """Check the marker; initialise an empty file in place (safe against racing processes)."""
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                if self._check_marker(raw):
                    return
                self._use_wal(raw)
                self.begin(conn, writing=True)
                # Check again under the write lock: another process may have got here first.
                if not self._check_marker(raw):
                    self._create_schema(conn)
                conn.commit()
        except sa.exc.DBAPIError as exc:
            raise self.error(exc.orig, writing=True) from exc
        except sqlite3.DatabaseError as exc:
            raise self.error(exc, writing=True) from exc

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

    def copy_to(self, backup: Path) -> None:
        """Copy the file to ``backup``, its WAL folded in first (a copy of the file alone would
        miss what only the WAL holds)."""
        try:
            with contextlib.closing(self._connect()) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            raise self.error(exc, writing=True) from exc
        shutil.copy2(self.path, backup)

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            conn = sqlite3.connect(self._read_uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute("PRAGMA query_only = ON")
        else:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn
